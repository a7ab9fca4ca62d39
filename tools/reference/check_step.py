#!/usr/bin/python3
"""check_step.py: checks a step dump of `dsc pretrain` against an independent float64 recomputation.

    /usr/bin/python3 tools/reference/check_step.py DUMP.safetensors [--tol CLASS=VALUE ...] [--quiet]
    /usr/bin/python3 tools/reference/check_step.py --selftest

Reads DUMP (spec/INTERFACES.md "The step dump"), takes the configuration from its __metadata__
(the INI keys written `section.key`, plus `step`, `lr_step`, `total_steps`), recomputes the step
with dsc_torch.reference_step in float64 from input.a, input.b, the tensors before the step,
perm.key and km.init, and compares every dumped tensor: loss.*, grad.*, after.*, and the discrete
choices match.c, nei.idx, km.history, ce.target.

- Float tensors: err = max|dump - ref| / (max|ref| + 1e-30), the worst per tensor, against the
  bound of the tensor's class (TOLERANCES below; --tol CLASS=VALUE overrides). Integer tensors
  (queue.ptr, num_batches_tracked) must match exactly.
- Discrete choices (argmax / top-k / nearest centroid): where the reference's choice differs from the
  dump's, the two candidates' scores must differ by at most the `tie` bound (a near-tie, counted and
  reported); a larger gap is a failure. The recomputation then continues with the dump's choice, so
  one near-tie does not cascade.
- ReLU near-ties (DESIGN.md §8): inputs of the online encoder's ReLUs within 1e-5 * max|x| of 0 are
  counted per layer. When only gradient-like tensors (grad.*, after.*) fail, the closest of them are
  tried with the other sign, greedily (at most `relu_flips` = 6 accepted); accepted flips are listed, and the
  tensors are judged with them (float32 code may give such an input either sign).
- The learning rate of the step is metadata `lr_step`; it is also recomputed from METHOD.md §5
  (optim.lr, data.batch, total_steps, optim.warmup_steps, step) and the two must agree.
- km.init: equal to km.centroids before the step when those are initialized; otherwise (first step,
  centroids all zero) every row must be one of the reference's key pixels v^b, all different.

Prints a table (tensor, max rel err, bound, ok). Exit status: 0 all pass, 1 some check failed,
2 malformed dump (a message names the missing tensor or key, or the bad shape).
`--selftest` writes synthetic dumps with make_step_dump.py for all seven methods and checks that each
passes, that each fails once one tensor is perturbed, that a dump missing a tensor or a metadata
key is reported as malformed, and that a float32 dsc-km step with a ReLU near-tie in the dense neck
passes once the search finds that flip; it also checks two pieces of dsc_torch against PyTorch's own
(grouped BN with one group = nn.BatchNorm2d, the SGD update = torch.optim.SGD).
"""

import argparse
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsc_torch  # noqa: E402
import safetensors_py  # noqa: E402

# Bounds on max|dump - ref| / max|ref| for float32 code against the float64 reference.
TOLERANCES = {
    # Losses: the float32 forward of resnet18 small is ~2e-6 relative (tools/reference/README.md);
    # normalizations and log-sum-exp over the queue add ~1e-7.
    "loss": 1e-4,
    # Gradients pass backwards through the whole ResNet with batch-statistics BN: ~3e-6 in float32 on
    # resnet18 small, but 2-5e-2 on resnet50 with very few values per BN group (README), where
    # --tol grad=1e-1 is the honest bound.
    "grad": 1e-3,
    # Parameters after SGD: theta - lr * update; float32 rounding of theta (6e-8) plus lr times the
    # gradient's error, relative to the parameter's size.
    "param": 1e-4,
    # SGD momentum buffers after the step: mu*buf + g + wd*theta, as accurate as the gradient.
    "buf": 1e-3,
    # Momentum-encoder parameters after the EMA: one elementwise float32 multiply-add.
    "ema": 1e-5,
    # BN running statistics: batch statistics of the forward, ~2e-7 in float32 (README).
    "bn": 1e-4,
    # Queues after enqueue: the new columns are the key embeddings after the whole momentum forward.
    "queue": 1e-4,
    # k-means centroids after the step: normalized means of key embeddings (with the dump's labels).
    "km": 1e-4,
    # A copy (km.init = km.centroids before the step): only float32 -> float64 conversion.
    "copy": 1e-6,
    # km.init rows on the first step: key pixels of the float32 forward, like the queue's columns.
    "kminit": 1e-4,
    # Score gap below which a differing discrete choice is a near-tie: cosine similarities of
    # float32 deep features are good to ~1e-6..1e-5.
    "tie": 1e-4,
    # lr_step against METHOD.md §5: the metadata holds %.9g of a double or float32 value.
    "lr": 1e-6,
    # Not a bound: ReLU inputs of the online encoder with |x| <= relu * max|x| are counted and
    # reported, because float32 code may give them the other sign, and one such flip in a layer
    # with few values (the necks see N*P pixels) moves gradients by percents (DESIGN.md §8).
    "relu": 1e-5,
    # Not a bound: when only gradient-like tensors (grad.*, after.*) fail, up to this many of the
    # closest ReLU near-ties are tried with the other sign (greedy, at most relu_flips accepted; 0 disables);
    # accepted flips are listed, like the near-ties of the discrete choices.
    "relu_search": 32,
    # At most this many flips are accepted: a small ResNet-18 step on 16x16 images has had 0-3
    # inputs within 1e-8..2e-6 of max|x| that float32 rounding put on the other side
    # (tests/cli/test_pretrain.sh prints them).
    "relu_flips": 6,
}

CHOICE_KINDS = ("match.c", "nei.idx", "km.history", "ce.target")


class Malformed(Exception):
    """The dump lacks a tensor or key, or a tensor has the wrong shape (exit status 2)."""


def tolerance_class(name):
    """The TOLERANCES key of a compared tensor (None: integers, compared exactly)."""
    if name.endswith("num_batches_tracked") or name == "after.queue.ptr":
        return None
    if name.startswith("loss."):
        return "loss"
    if name.startswith("grad."):
        return "grad"
    if name.startswith("after.optim.momentum."):
        return "buf"
    if "running_" in name:
        return "bn"
    if name.startswith("after.momentum."):
        return "ema"
    if name.startswith("after.queue."):
        return "queue"
    if name == "after.km.centroids":
        return "km"
    return "param"


def required_names(cfg, state_names, param_names):
    """Every tensor a dump of this configuration must hold."""
    names = ["input.a", "input.b", "perm.key", "loss.ins", "loss.pix", "loss.sem", "loss.total"]
    names += list(state_names)
    names += ["grad." + n for n in param_names]
    names += ["after." + n for n in state_names]
    if cfg.uses_kmeans:
        names += ["km.init", "km.history"]
    if cfg.dense:
        names.append("match.c")
    if cfg.uses_neighbors:
        names.append("nei.idx")
    if cfg.method == "dsc-ce":
        names.append("ce.target")
    return names


def rel_err(dump, ref):
    """max|dump - ref| / (max|ref| + 1e-30), in float64."""
    d = torch.as_tensor(np.asarray(dump, dtype=np.float64))
    r = torch.as_tensor(ref).to(torch.float64).reshape(d.shape)
    if d.numel() == 0:
        return 0.0
    return float((d - r).abs().max() / (r.abs().max() + 1e-30))


def recompute(tensors, meta, tol):
    """(cfg, lr, reference outputs) for a dump; Malformed on a missing or mis-shaped input."""
    try:
        cfg = dsc_torch.config_from_metadata(meta)
    except KeyError as e:
        raise Malformed(f"metadata key {e.args[0]} is missing") from None
    except ValueError as e:
        raise Malformed(str(e)) from None
    for key in ("lr_step",):
        if key not in meta:
            raise Malformed(f"metadata key {key} is missing")
    try:
        lr = float(meta["lr_step"])
    except ValueError:
        raise Malformed(f"metadata lr_step = {meta['lr_step']!r} is not a number") from None
    model = dsc_torch.Model(cfg, dtype=torch.float64)
    own = model.state()
    params = model.params()
    for name in required_names(cfg, own, params):
        if name not in tensors:
            raise Malformed(f"tensor {name} is missing")
    for name, t in own.items():
        for full in (name, "after." + name):
            if tuple(tensors[full].shape) != tuple(t.shape):
                raise Malformed(f"tensor {full} has shape {list(tensors[full].shape)}, expected {list(t.shape)}")
    for name, t in params.items():
        if tuple(tensors["grad." + name].shape) != tuple(t.shape):
            raise Malformed(f"tensor grad.{name} has shape {list(tensors['grad.' + name].shape)}, "
                            f"expected {list(t.shape)}")
    xa, xb = tensors["input.a"], tensors["input.b"]
    if xa.ndim != 4 or xa.shape[1] != 3 or xa.shape != xb.shape or xa.shape[0] != cfg.batch:
        raise Malformed(f"input.a {list(xa.shape)} / input.b {list(xb.shape)}: expected equal "
                        f"[{cfg.batch},3,H,W] (data.batch {cfg.batch})")
    if tuple(tensors["perm.key"].shape) != (cfg.batch,):
        raise Malformed(f"perm.key has shape {list(tensors['perm.key'].shape)}, expected [{cfg.batch}]")
    if cfg.uses_kmeans and tuple(tensors["km.init"].shape) != (cfg.clusters, cfg.dim):
        raise Malformed(f"km.init has shape {list(tensors['km.init'].shape)}, expected [{cfg.clusters}, {cfg.dim}]")
    n = cfg.batch
    p = dsc_torch.c5_size(cfg.stem, xa.shape[2]) * dsc_torch.c5_size(cfg.stem, xa.shape[3])
    shapes = {"match.c": (n, p), "nei.idx": (n, p, cfg.k_nei), "km.history": (cfg.km_iters, n, p),
              "ce.target": (n, p)}
    for kind, shape in shapes.items():
        if kind in tensors and tuple(tensors[kind].shape) != shape:
            raise Malformed(f"tensor {kind} has shape {list(tensors[kind].shape)}, expected {list(shape)}")
    state = {k: torch.from_numpy(np.asarray(tensors[k])) for k in own}
    inputs = {k: torch.from_numpy(np.asarray(tensors[k])) for k in ("input.a", "input.b", "perm.key", "km.init")
              if k in tensors and (k != "km.init" or cfg.uses_kmeans)}
    discrete = {k: torch.from_numpy(np.asarray(tensors[k])) for k in CHOICE_KINDS if k in tensors}
    perm = sorted(int(i) for i in tensors["perm.key"])
    if perm != list(range(cfg.batch)):
        raise Malformed("perm.key is not a permutation of 0..N-1")

    def rerun(flips=()):
        return dsc_torch.reference_step(state, inputs, cfg, discrete=discrete, lr=lr,
                                        relu_tie=tol["relu"], relu_flips=flips)

    try:
        ref = rerun()
    except ValueError as e:
        raise Malformed(str(e)) from None
    return cfg, lr, ref, rerun


def compare(tensors, meta, cfg, lr, ref, tol):
    """Rows (tensor, err text, bound, ok) of every check."""
    rows = []
    lr_formula = dsc_torch.lr_at(cfg, cfg.step)
    err = abs(lr - lr_formula) / max(abs(lr_formula), 1e-30)
    rows.append((f"lr_step {lr:.9g} vs METHOD.md §5 {lr_formula:.9g}", err, tol["lr"], err <= tol["lr"]))
    names = [n for n in tensors if n.startswith(("loss.", "grad.", "after."))]
    for name in sorted(names):
        if name not in ref:
            continue  # an extra tensor: reported below
        cls = tolerance_class(name)
        if cls is None:
            d = np.asarray(tensors[name]).astype(np.int64)
            r = ref[name].numpy().astype(np.int64).reshape(d.shape)
            ok = bool((d == r).all())
            rows.append((name, 0.0 if ok else float(np.abs(d - r).max()), 0.0, ok))
            continue
        e = rel_err(tensors[name], ref[name])
        rows.append((name, e, tol[cls], e <= tol[cls]))
    choices = ref["choices"]
    for kind in CHOICE_KINDS:
        if kind not in choices.counts:
            continue
        gaps = choices.gaps[kind]
        n = choices.counts[kind]
        bad = int((gaps > tol["tie"]).sum())
        near = int(gaps.numel()) - bad
        worst = float(gaps.max()) if gaps.numel() else 0.0
        text = f"{kind}: {gaps.numel()} of {n} differ, {near} near-ties, {bad} beyond"
        rows.append((text, worst, tol["tie"], bad == 0))
    if cfg.uses_kmeans:
        init = torch.from_numpy(np.asarray(tensors["km.init"], dtype=np.float64))
        before = torch.from_numpy(np.asarray(tensors["km.centroids"], dtype=np.float64))
        if bool(before.abs().sum() > 0):
            e = rel_err(init, before)
            rows.append(("km.init = km.centroids (before)", e, tol["copy"], e <= tol["copy"]))
        else:
            vb = ref["vb"].reshape(-1, ref["vb"].shape[-1])
            dist = (init.unsqueeze(1) - vb.unsqueeze(0)).abs().amax(-1)  # (K, N*P)
            best = dist.min(dim=1)
            e = float(best.values.max())
            distinct = len(set(best.indices.tolist())) == init.shape[0]
            rows.append(("km.init rows = distinct key pixels v^b" + ("" if distinct else " (NOT distinct)"),
                         e, tol["kminit"], e <= tol["kminit"] and distinct))
    extra = sorted(n for n in names if n not in ref)
    for name in extra:
        rows.append((f"{name} (not expected for {cfg.method})", math.nan, math.nan, False))
    return rows


def excess(rows):
    """How far rows are from passing: the sum over float rows of max(err / bound, 1)."""
    return sum(max(e / b, 1.0) for _, e, b, _ in rows if b > 0 and not math.isnan(e) and not math.isnan(b))


def search_relu_flips(tensors, meta, cfg, lr, ref, rerun, rows, tol, out):
    """Greedy search for ReLU near-ties that the dump took with the other sign (DESIGN.md §8).

    Candidates: the online encoder's ReLU inputs within tol['relu'] * max|x| of 0, the
    `relu_search` closest first. Each round recomputes the step with each remaining candidate
    flipped (ReluProbe) and keeps the one that brings the rows closest to passing; it stops when all
    pass, nothing improves, or after tol['relu_flips'] flips. Returns (rows, ref, accepted flips)."""
    cands = sorted(ref["relu.probe"].candidates)[:int(tol["relu_search"])]
    flips = []
    best = excess(rows)
    for _ in range(int(tol["relu_flips"])):
        if all(r[3] for r in rows) or not cands:
            break
        found = None
        for cand in cands:
            if cand in flips:
                continue
            trial = rerun([f[1:] for f in flips + [cand]])
            trial_rows = compare(tensors, meta, cfg, lr, trial, tol)
            score = excess(trial_rows)
            if score < best:
                best, found = score, (cand, trial, trial_rows)
                if all(r[3] for r in trial_rows):
                    break
        if found is None:
            break
        flips.append(found[0])
        ref, rows = found[1], found[2]
    out(f"ReLU sign search: {len(cands)} candidates, {len(flips)} flip(s) accepted" +
        "".join(f"; {name} call {call} element {i} (|x| = {ratio:.1e} max|x|)" for ratio, name, call, i in flips))
    return rows, ref, flips


def check(tensors, meta, tol, out=print, quiet=False, computed=None):
    """Checks one dump; returns (exit status, computed) where computed = (cfg, lr, ref, rerun) can be
    passed back to check a modified copy of the same dump's outputs without recomputing."""
    try:
        computed = computed or recompute(tensors, meta, tol)
    except Malformed as e:
        out(f"malformed dump: {e}")
        return 2, None
    cfg, lr, ref, rerun = computed
    rows = compare(tensors, meta, cfg, lr, ref, tol)
    flips = []
    gradient_like = ("grad.", "after.")
    if tol["relu_search"] > 0 and any(not r[3] and r[0].startswith(gradient_like) for r in rows) \
            and all(r[3] for r in rows if not r[0].startswith(gradient_like)):
        rows, ref, flips = search_relu_flips(tensors, meta, cfg, lr, ref, rerun, rows, tol, out)
    width = max(len(r[0]) for r in rows)
    out(f"step {cfg.step} of {cfg.method}, {cfg.arch} {cfg.stem}, batch {cfg.batch}, lr {lr:.9g}")
    out(f"{'tensor':<{width}}  {'max rel err':>11}  {'bound':>8}  ok")
    worst = {}
    for name, e, bound, ok in rows:
        cls = tolerance_class(name) if name.startswith(("loss.", "grad.", "after.")) else name
        if cls is not None and cls in TOLERANCES and not (e <= worst.get(cls, -1.0)):
            worst[cls] = e
        if not quiet or not ok:
            out(f"{name:<{width}}  {e:11.3e}  {bound:8.1e}  {'ok' if ok else 'FAIL'}")
    failed = [r for r in rows if not r[3]]
    near = {k: v for k, v in ref["relu.probe"].near.items() if v}
    out(f"ReLU inputs of the online encoder within {tol['relu']:.0e} * max|x| of 0 (possible sign flips "
        f"in float32; a gradient failure downstream of one may be such a near-tie): {sum(near.values())}"
        + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(near.items())) + ")" if near else ""))
    out("worst per class: " + ", ".join(f"{k} {v:.2e} (bound {tol[k]:.0e})" for k, v in sorted(worst.items())))
    out(f"{len(rows) - len(failed)} of {len(rows)} checks pass" + (f", {len(failed)} FAIL" if failed else ""))
    return (1 if failed else 0), computed


def parse_tol(items):
    tol = dict(TOLERANCES)
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in TOLERANCES:
            raise ValueError(f"--tol {item!r}: expected CLASS=VALUE with CLASS one of {', '.join(TOLERANCES)}")
        tol[key] = float(value)
    return tol


def selftest_pieces():
    """dsc_torch's grouped BN (one group) and SGD against PyTorch's own modules; returns failures."""
    failures = []
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    ours = dsc_torch.GroupedBatchNorm2d(3, 1).double()
    theirs = torch.nn.BatchNorm2d(3).double().train()
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(torch.tensor([1.5, 0.5, 1.0]))
            m.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    y1, y2 = ours(x), theirs(x)
    for what, a, b in (("BN output", y1, y2), ("BN running_mean", ours.running_mean, theirs.running_mean),
                       ("BN running_var", ours.running_var, theirs.running_var)):
        if float((a - b).abs().max()) > 1e-12:
            failures.append(what)
    # Grouped: two groups = the mean of two one-group BNs' running updates.
    two = dsc_torch.GroupedBatchNorm2d(3, 2).double()
    two(x)
    halves = [torch.nn.BatchNorm2d(3).double().train() for _ in range(2)]
    for h, xg in zip(halves, x.chunk(2)):
        h(xg)
    if float((two.running_var - (halves[0].running_var + halves[1].running_var) / 2).abs().max()) > 1e-12:
        failures.append("grouped BN running_var")
    # SGD: three steps of the Model's update rule against torch.optim.SGD.
    cfg = dsc_torch.Config(optim_momentum=0.9, weight_decay=1e-4, nesterov=1)
    p = torch.nn.Parameter(torch.randn(7, generator=g, dtype=torch.float64))
    q = p.detach().clone()
    buf = torch.zeros_like(q)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    for _ in range(3):
        grad = torch.randn(7, generator=g, dtype=torch.float64)
        p.grad = grad.clone()
        opt.step()
        gg = grad + cfg.weight_decay * q
        buf = cfg.optim_momentum * buf + gg
        q = q - 0.1 * (gg + cfg.optim_momentum * buf)
    if float((p.detach() - q).abs().max()) > 1e-12:
        failures.append("SGD Nesterov")
    # A near-tie: the given choice differs by 1e-7 in score; it is recorded and followed.
    scores = torch.tensor([[0.5, 0.5 - 1e-7, 0.1], [0.9, 0.2, 0.3]], dtype=torch.float64)
    ch = dsc_torch.Choices({"x": torch.tensor([1, 0])})
    got = ch.resolve("x", scores, dsc_torch.first_argmax(scores))
    if got.tolist() != [1, 0] or ch.gaps["x"].numel() != 1 or not float(ch.gaps["x"][0]) < 1e-6:
        failures.append("near-tie followed")
    return failures


def selftest():
    """See the module docstring; returns the exit status."""
    import make_step_dump
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tol = dict(TOLERANCES)
    failures = selftest_pieces()
    print("dsc_torch pieces (grouped BN and SGD vs PyTorch's, a near-tie followed): " + ("ok" if not failures else "FAIL " + ", ".join(failures)))
    perturb = {"moco-v2": "grad.backbone.conv1.weight", "densecl": "after.queue.dense",
               "dsc-nei": "loss.sem", "dsc-tri": "grad.neck.mlp2.0.weight", "dsc-ce": "after.prototypes.weight",
               "dsc-km": "after.km.centroids", "dsc-pm": "grad.prototypes.weight"}
    quiet = []
    for method in dsc_torch.METHODS:
        tensors, meta = make_step_dump.make_dump(method, seed=1)
        if method == "moco-v2":  # through the file format once (bytes in memory)
            tensors, meta = safetensors_py.decode(safetensors_py.encode(tensors, meta))
        status, computed = check(tensors, meta, tol, out=quiet.append, quiet=True)
        result = [f"clean {'pass' if status == 0 else 'FAIL (exit %d)' % status}"]
        if status != 0:
            failures.append(method + " clean")
            print("\n".join(quiet))
        quiet.clear()
        # One element of one tensor moved by 1% of the tensor's largest magnitude.
        name = perturb[method]
        bad = dict(tensors)
        t = bad[name].copy()
        flat = t.reshape(-1)
        flat[flat.size // 2] += np.float32(0.01 * max(float(np.abs(flat).max()), 1e-3))
        bad[name] = t
        # The ReLU sign search (which cannot explain a perturbed element) once, with few candidates.
        tol2 = dict(tol, relu_search=8 if method == "moco-v2" else 0)
        status2, _ = check(bad, meta, tol2, out=quiet.append, quiet=True, computed=computed)
        caught = status2 == 1 and any(name in line and "FAIL" in line for line in quiet)
        result.append(f"{name} perturbed {'caught' if caught else 'MISSED'}")
        if not caught:
            failures.append(f"{method} perturbed {name}")
        quiet.clear()
        if method == "densecl":  # a wrong correspondence at one pixel
            bad = dict(tensors)
            c = bad["match.c"].copy()
            c[0, 0] = (c[0, 0] + 1) % c.shape[1]
            bad["match.c"] = c
            status3, _ = check(bad, meta, tol, out=quiet.append, quiet=True)
            caught = status3 == 1 and any(line.startswith("match.c") and "FAIL" in line for line in quiet)
            result.append(f"match.c changed {'caught' if caught else 'MISSED'}")
            if not caught:
                failures.append("densecl match.c")
            quiet.clear()
        if method == "dsc-pm":  # malformed: a tensor and a metadata key missing
            bad = dict(tensors)
            del bad["after.neck.mlp.0.bias"]
            status4, _ = check(bad, meta, tol, out=quiet.append)
            ok4 = status4 == 2 and "after.neck.mlp.0.bias" in quiet[-1]
            quiet.clear()
            meta5 = dict(meta)
            del meta5["method.tau_pm"]
            status5, _ = check(tensors, meta5, tol, out=quiet.append)
            ok5 = status5 == 2 and "method.tau_pm" in quiet[-1]
            quiet.clear()
            result.append(f"missing tensor / key {'reported' if ok4 and ok5 else 'NOT reported'}")
            if not (ok4 and ok5):
                failures.append("malformed")
        print(f"{method:8s} " + "; ".join(result))
    # A float32 step (as the C side computes it) with a ReLU near-tie in the dense neck: the
    # gradients fail unless the search finds that flip, then everything passes.
    tensors, meta = make_step_dump.make_dump("dsc-km", seed=0, dtype=torch.float32)
    status, _ = check(tensors, meta, tol, out=quiet.append, quiet=True)
    found = [line for line in quiet if line.startswith("ReLU sign search") and "1 flip" in line and "neck.mlp2.1" in line]
    print(f"float32 dsc-km (seed 0) {'pass' if status == 0 else 'FAIL'}" + (f"; {found[0]}" if found else "; no flip found"))
    if status != 0 or not found:
        failures.append("float32 dsc-km ReLU near-tie")
        print("\n".join(quiet))
    quiet.clear()
    print("selftest " + ("passed" if not failures else "FAILED: " + ", ".join(failures)))
    return 0 if not failures else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dump", nargs="?")
    p.add_argument("--tol", action="append", metavar="CLASS=VALUE",
                   help="override a bound; classes: " + ", ".join(TOLERANCES))
    p.add_argument("--quiet", action="store_true", help="print only failing rows and the summary")
    p.add_argument("--selftest", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.selftest:
        sys.exit(selftest())
    if not a.dump:
        p.error("a dump file (or --selftest) is required")
    try:
        tol = parse_tol(a.tol)
    except ValueError as e:
        p.error(str(e))
    try:
        tensors, meta = safetensors_py.read(a.dump)
    except (OSError, ValueError) as e:
        print(f"malformed dump: {a.dump}: {e}")
        sys.exit(2)
    status, _ = check(tensors, meta, tol, quiet=a.quiet)
    sys.exit(status)


if __name__ == "__main__":
    main()
