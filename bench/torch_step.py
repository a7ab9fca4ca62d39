#!/usr/bin/python3
"""The training step of `dsc bench step`, timed in PyTorch (Debian's python3-torch).

Same step as dsc_backbone_synthetic_step: torchvision ResNet without fc, channels_last,
training-mode BN, loss = <mean-pooled C5, weights>, backward, SGD(momentum 0.9, Nesterov,
weight decay 1e-4). Prints one JSON object (what, impl, threads, img_per_s, step_s,
min_step_s, peak_rss_mb) like `dsc bench step --json`. Run it in its own process so that
peak RSS is its own.

    /usr/bin/python3 bench/torch_step.py --arch resnet50 --size 224 --batch 8 --threads 2
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torchvision


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
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
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
    median = statistics.median(times)
    what = f"step {a.arch}{'-small' if a.stem == 'small' else ''} {a.size}x{a.size} b{a.batch}"
    print(json.dumps({
        "what": what, "impl": "torch " + torch.__version__, "threads": a.threads,
        "img_per_s": round(a.batch / median, 3), "step_s": round(median, 5),
        "min_step_s": round(min(times), 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }))


if __name__ == "__main__":
    main()
