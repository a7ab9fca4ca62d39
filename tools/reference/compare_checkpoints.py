#!/usr/bin/python3
"""compare_checkpoints.py: are two safetensors files' tensors bitwise identical (or close)?

    /usr/bin/python3 tools/reference/compare_checkpoints.py A.safetensors B.safetensors [--meta KEY ...]
        [--rtol R]

With --rtol, a floating-point tensor passes when ||a - b|| <= R * max(||b||, 1e-30) (2-norms over
the tensor, in float64) instead of bitwise; integer tensors are still compared exactly. With
--by-role as well, the norms are taken over each role of METHOD.md §8 at once (the online
parameters backbone.*/neck.*/prototypes.*, their BN statistics, the momentum encoder, the SGD
buffers, the queues, the centroids) rather than per tensor: a tensor whose values nearly cancel
(the gradient of a BN bias just before another BN) has a large relative error from float rounding
alone, which says nothing about the computation. Used by the multi-process test
(tests/cli/test_distributed.sh), which reports the largest relative error.

Compares the set of tensor names, then every tensor's dtype, shape and bytes; with --meta, also the
named metadata values. Metadata is otherwise ignored (two runs of the same training differ in
run.out). Prints the first differences; exit status 0 when identical, 1 otherwise. Used by the
resume test (tests/cli/test_pretrain.sh).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402


def role(name):
    """The role of a checkpoint tensor (METHOD.md §8) for --by-role."""
    if name.startswith("optim.momentum."):
        return "SGD buffers"
    if name.startswith("momentum."):
        return "momentum encoder" + (" BN statistics" if "running_" in name else "")
    if name.startswith("queue."):
        return name
    if "running_" in name:
        return "BN statistics"
    if name.startswith(("backbone.", "neck.", "prototypes.")):
        return "parameters"
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--meta", nargs="*", default=[])
    ap.add_argument("--rtol", type=float, default=None)
    ap.add_argument("--by-role", action="store_true")
    ap.add_argument("--report-only", nargs="*", default=[],
                    help="roles whose relative error is printed but not checked")
    args = ap.parse_args()
    ta, ma = safetensors_py.read(args.a)
    tb, mb = safetensors_py.read(args.b)
    problems = []
    worst, worst_name = 0.0, ""
    roles = {}
    for name in sorted(set(ta) ^ set(tb)):
        problems.append(f"{name}: only in {'A' if name in ta else 'B'}")
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
        elif args.rtol is not None and args.by_role and x.dtype.kind == "f":
            r = role(name)
            d2, n2 = roles.get(r, (0.0, 0.0))
            a64, b64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
            roles[r] = (d2 + float(np.dot(a64 - b64, a64 - b64)), n2 + float(np.dot(b64, b64)))
        elif args.rtol is not None and x.dtype.kind == "f":
            a64, b64 = x.astype(np.float64), y.astype(np.float64)
            rel = np.linalg.norm((a64 - b64).ravel()) / max(np.linalg.norm(b64.ravel()), 1e-30)
            if not rel <= worst:
                worst, worst_name = rel, name
            if not rel <= args.rtol:
                problems.append(f"{name}: relative error {rel:.3g} > {args.rtol:g}")
        elif x.tobytes() != y.tobytes():
            diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
            problems.append(f"{name}: differs in {int((diff > 0).sum())} of {x.size} values "
                            f"(max |a-b| {diff.max():.3g})")
    reported = []
    for r, (d2, n2) in sorted(roles.items()):
        rel = np.sqrt(d2) / max(np.sqrt(n2), 1e-30)
        if r in args.report_only:
            reported.append(f"{r} {rel:.3g} (not checked)")
            continue
        if not rel <= worst:
            worst, worst_name = rel, r
        if not rel <= args.rtol:
            problems.append(f"role {r}: relative error {rel:.3g} > {args.rtol:g}")
    for key in args.meta:
        if (ma or {}).get(key) != (mb or {}).get(key):
            problems.append(f"metadata {key}: {(ma or {}).get(key)!r} vs {(mb or {}).get(key)!r}")
    for p in problems[:20]:
        print(p)
    if problems:
        print(f"{len(problems)} differences between {args.a} and {args.b}")
        return 1
    if args.rtol is not None:
        print(f"within rtol {args.rtol:g}: {len(ta)} tensors, largest relative error {worst:.3g} ({worst_name})"
              + "".join("; " + r for r in reported))
    else:
        print(f"identical: {len(ta)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
