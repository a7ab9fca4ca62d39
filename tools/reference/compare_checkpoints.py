#!/usr/bin/python3
"""compare_checkpoints.py: are two safetensors files' tensors bitwise identical?

    /usr/bin/python3 tools/reference/compare_checkpoints.py A.safetensors B.safetensors [--meta KEY ...]

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--meta", nargs="*", default=[])
    args = ap.parse_args()
    ta, ma = safetensors_py.read(args.a)
    tb, mb = safetensors_py.read(args.b)
    problems = []
    for name in sorted(set(ta) ^ set(tb)):
        problems.append(f"{name}: only in {'A' if name in ta else 'B'}")
    for name in sorted(set(ta) & set(tb)):
        x, y = ta[name], tb[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
        elif x.tobytes() != y.tobytes():
            diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
            problems.append(f"{name}: differs in {int((diff > 0).sum())} of {x.size} values "
                            f"(max |a-b| {diff.max():.3g})")
    for key in args.meta:
        if (ma or {}).get(key) != (mb or {}).get(key):
            problems.append(f"metadata {key}: {(ma or {}).get(key)!r} vs {(mb or {}).get(key)!r}")
    for p in problems[:20]:
        print(p)
    if problems:
        print(f"{len(problems)} differences between {args.a} and {args.b}")
        return 1
    print(f"identical: {len(ta)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
