#!/usr/bin/python3
"""make_step_dump.py: synthetic step dumps written by dsc_torch.py itself, to test check_step.py.

    /usr/bin/python3 tools/reference/make_step_dump.py OUTDIR [--method M ...] [--seed S]

writes OUTDIR/<method>.safetensors for every method (or the ones named), each laid out exactly like
`dsc pretrain ... run.dump_step=DIR` (spec/INTERFACES.md "The step dump"): input.a/b, perm.key,
every checkpoint tensor before the step, km.init, the discrete choices, loss.*, grad.*, after.*
and the configuration in __metadata__. All stored floats are F32; the step is computed in float64
from the F32 values, so check_step.py on such a dump sees only float32 rounding. With
--dtype float32 the step is computed in float32 instead, as the C side does, and check_step.py
measures the float32-vs-float64 distance of every tensor.

The configuration is tiny (resnet18, small stem, 4 images of 16x16 so C5 is 2x2, bn_groups 2,
queue 8, dim 16, 3 clusters, 5 prototypes) and the state is not the initial one: the momentum
encoder differs from the online one, BN statistics and SGD buffers are nonzero, the queue pointer
wraps, the prototypes are not row-normalized, so every part of the step is exercised. dsc-km is the
first step of a run (step 0: zero SGD buffers, centroids uninitialized, km.init drawn from the key
pixels); dsc-ce has frozen prototypes (freeze_prototypes_steps 5 > step 3).
A dump is about 320 MB (resnet18 has 11M parameters, stored 8 times).
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsc_torch  # noqa: E402
import safetensors_py  # noqa: E402

BATCH, SIZE = 4, 16


def tiny_config(method):
    """The synthetic dumps' configuration (METHOD.md defaults except the sizes)."""
    first = method == "dsc-km"
    return dsc_torch.Config(
        method=method, lambda_ins=1.0 if method == "moco-v2" else 0.5, queue=8, bn_groups=2,
        arch="resnet18", stem="small", dim=16, clusters=3, prototypes=5, km_iters=4,
        freeze_prototypes_steps=5 if method == "dsc-ce" else 0, lr=0.3, warmup_steps=2,
        batch=BATCH, step=0 if first else 3, total_steps=10)


def random_state(cfg, g):
    """A non-initial state (float32 values held in float64 tensors), see the module docstring."""
    model = dsc_torch.Model(cfg, dtype=torch.float64, seed=int(torch.randint(0, 1 << 30, (1,), generator=g)))
    state = model.state()
    first = cfg.step == 0

    def rnd(shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)

    for name, t in list(state.items()):
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(cfg.step, dtype=torch.long)
        elif name.endswith("running_mean"):
            state[name] = 0.1 * rnd(t.shape)
        elif name.endswith("running_var"):
            state[name] = 1.0 + 0.25 * rnd(t.shape).abs()
        elif name.startswith("backbone.") and (".bn" in name or ".downsample.1." in name):
            state[name] = (1.0 if name.endswith("weight") else 0.0) + 0.1 * rnd(t.shape)
        elif name.startswith("optim.momentum."):
            state[name] = torch.zeros_like(t) if first else 1e-3 * rnd(t.shape)
    for name in list(state):
        if name.startswith(("backbone.", "neck.")) and state[name].is_floating_point() and "running" not in name:
            state["momentum." + name] = state[name] * (1.0 + 0.05 * rnd(state[name].shape))
    state["queue.ptr"] = torch.tensor(cfg.queue - cfg.batch, dtype=torch.long)  # wraps to 0
    if cfg.uses_kmeans:
        state["km.centroids"] = torch.zeros_like(state["km.centroids"]) if first else \
            dsc_torch.norm(rnd(state["km.centroids"].shape), dim=1)
    return {k: (v.float().double() if v.is_floating_point() else v) for k, v in state.items()}


def make_dump(method, seed=0, dtype=torch.float64):
    """(tensors as numpy arrays, metadata) of a synthetic dump of `method`, the step computed in
    `dtype` (float32 imitates the C side: check_step.py then measures float32 against float64)."""
    cfg = tiny_config(method)
    g = torch.Generator().manual_seed(seed * 7919 + dsc_torch.METHODS.index(method))
    state = random_state(cfg, g)
    inputs = {
        "input.a": torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64).float().double(),
        "input.b": torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64).float().double(),
        "perm.key": torch.randperm(BATCH, generator=g),
    }
    if cfg.uses_kmeans:
        centroids = state["km.centroids"]
        if bool(centroids.abs().sum() > 0):
            inputs["km.init"] = centroids.clone()
        else:  # first step: K distinct key pixels (METHOD.md §4.5 step 1), found by a first pass
            probe = dict(inputs, **{"km.init": dsc_torch.norm(torch.ones_like(centroids), dim=1)})
            vb = dsc_torch.reference_step(state, probe, cfg)["vb"]
            rows = vb.reshape(-1, vb.shape[-1])
            pick = torch.randperm(rows.shape[0], generator=g)[:cfg.clusters]
            inputs["km.init"] = rows[pick].float().double()
    lr = float(np.float32(dsc_torch.lr_at(cfg, cfg.step)))
    out = dsc_torch.reference_step(state, inputs, cfg, lr=lr, dtype=dtype)
    tensors = {}
    for name, t in list(state.items()) + list(inputs.items()):
        tensors[name] = t
    for name, t in out.items():
        if name.startswith(("loss.", "grad.", "after.")) or name in ("match.c", "nei.idx", "km.history", "ce.target"):
            tensors[name] = t
    arrays = {k: (v.detach().numpy().astype(np.float32) if v.is_floating_point() else v.numpy().astype(np.int64))
              for k, v in tensors.items()}
    return arrays, dsc_torch.config_to_metadata(cfg, lr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outdir")
    p.add_argument("--method", action="append", choices=dsc_torch.METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="precision of the step (float32: what float32 code would dump)")
    a = p.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.outdir, exist_ok=True)
    for method in a.method or dsc_torch.METHODS:
        arrays, meta = make_dump(method, a.seed, getattr(torch, a.dtype))
        path = os.path.join(a.outdir, method + ".safetensors")
        size = safetensors_py.write(path, arrays, meta)
        print(f"{path}: {len(arrays)} tensors, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
