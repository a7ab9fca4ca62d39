#!/usr/bin/python3
"""The training step of `dsc bench step`, timed in PyTorch (Debian's python3-torch).

Same step as dsc_backbone_synthetic_step: torchvision ResNet without fc, channels_last,
training-mode BN, loss = <mean-pooled C5, weights>, backward, SGD(momentum 0.9, Nesterov,
weight decay 1e-4). Prints one JSON object (what, impl, threads, img_per_s, step_s,
min_step_s, peak_rss_mb) like `dsc bench step --json`. Run it in its own process so that
peak RSS is its own.

    /usr/bin/python3 bench/torch_step.py --arch resnet50 --size 224 --batch 8 --threads 2

With --method moco-v2|densecl|dsc-nei|dsc-tri|dsc-ce|dsc-km|dsc-pm it times instead the full
pretraining step of that method (spec/METHOD.md §5: EMA, key forward with shuffle-BN, query
forward, losses, backward, SGD, enqueue) in float32 with tools/reference/dsc_torch.py, at the
METHOD.md defaults (queue 65536, dim 128, bn_groups 8, clusters 100, prototypes 150, ...; override
with --queue, --dim, --bn-groups); the JSON gains "method". The two reference configurations:

    /usr/bin/python3 bench/torch_step.py --method dsc-km --arch resnet50 --size 224 --batch 8
    /usr/bin/python3 bench/torch_step.py --method dsc-km --arch resnet18 --stem small --size 64 --batch 64
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "reference"))
import dsc_torch  # noqa: E402


def build(arch, stem):
    net = getattr(torchvision.models, arch)()
    if stem == "small":
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()  # the backbone ends at C5 -> pooled features
    return net


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--stem", default="standard")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--method", choices=dsc_torch.METHODS)
    p.add_argument("--queue", type=int, default=65536)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--bn-groups", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.method:
        times = time_method(a)
        report(a, times, method=a.method)
        return
    net = build(a.arch, a.stem).to(memory_format=torch.channels_last).train()
    x = torch.randn(a.batch, 3, a.size, a.size).to(memory_format=torch.channels_last)
    with torch.no_grad():
        c = net(x[:2]).shape[1]
    weights = torch.randn(a.batch, c) / a.batch
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    times = []
    for s in range(a.warmup + a.steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = (net(x) * weights).sum()
        loss.backward()
        opt.step()
        if s >= a.warmup:
            times.append(time.perf_counter() - t)
    report(a, times)


def time_method(a):
    """Step times of the full pretraining step of a.method (dsc_torch.Model.step, float32)."""
    cfg = dsc_torch.Config(method=a.method, lambda_ins=1.0 if a.method == "moco-v2" else 0.5,
                           queue=a.queue, bn_groups=a.bn_groups, arch=a.arch, stem=a.stem,
                           dim=a.dim, batch=a.batch, total_steps=1000)
    model = dsc_torch.Model(cfg, dtype=torch.float32)
    for enc in (model.online, model.key):
        enc.to(memory_format=torch.channels_last).train()
    g = torch.Generator().manual_seed(0)
    xa = torch.randn(a.batch, 3, a.size, a.size, generator=g).to(memory_format=torch.channels_last)
    xb = torch.randn(a.batch, 3, a.size, a.size, generator=g).to(memory_format=torch.channels_last)
    km_init = dsc_torch.norm(torch.randn(cfg.clusters, cfg.dim, generator=g), dim=1)
    lr = dsc_torch.lr_at(cfg, 0)
    times = []
    for s in range(a.warmup + a.steps):
        perm = torch.randperm(a.batch, generator=g)
        t = time.perf_counter()
        model.step(xa, xb, perm, lr, km_init=km_init if s == 0 else None)
        if s >= a.warmup:
            times.append(time.perf_counter() - t)
    return times


def report(a, times, method=None):
    """Prints the JSON line of `dsc bench step --json` (plus "method" for a pretraining step)."""
    median = statistics.median(times)
    what = f"step {a.arch}{'-small' if a.stem == 'small' else ''} {a.size}x{a.size} b{a.batch}"
    out = {
        "what": what, "impl": "torch " + torch.__version__, "threads": a.threads,
        "img_per_s": round(a.batch / median, 3), "step_s": round(median, 5),
        "min_step_s": round(min(times), 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    if method:
        out["method"] = method
    print(json.dumps(out))


if __name__ == "__main__":
    main()
