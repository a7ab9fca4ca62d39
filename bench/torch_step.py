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

--device cuda times either step on the GPU (model, inputs, queues and SGD state there, channels_last,
torch.cuda.synchronize() before and after each timed step); --precision bf16 runs the forward passes
and the losses under torch.autocast(dtype=torch.bfloat16) on either device (logits enter log-sum-exp
and softmax in float32; master weights, SGD, EMA and queues stay float32). The JSON gains "device",
"precision", "gpu" (the GPU's name, null on cpu) and "peak_gpu_mb" (torch.cuda.max_memory_allocated
over the timed steps in MiB, null on cpu) and, on cuda, "gpu_used_mb" (total - free after the timed
steps: the driver's view, the same measure as `dsc bench step`'s). On cuda, cudnn.benchmark is on (autotuned in the warm-up)
and fp32 keeps PyTorch's default TF32 settings (cuDNN convolutions may use TF32, matmuls do not).
Issue #6's comparison, e.g.:

    python3 bench/torch_step.py --device cuda --precision bf16 --method densecl --batch 256
"""
import argparse
import contextlib
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
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True  # autotuned during the warm-up steps
    if a.method:
        times = time_method(a)
        report(a, times, method=a.method)
        return
    dev = torch.device(a.device)
    net = build(a.arch, a.stem).to(device=dev, memory_format=torch.channels_last).train()
    x = torch.randn(a.batch, 3, a.size, a.size).to(device=dev, memory_format=torch.channels_last)
    with torch.no_grad():
        c = net(x[:2]).shape[1]
    weights = (torch.randn(a.batch, c) / a.batch).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)

    def step(_s):
        opt.zero_grad(set_to_none=False)
        with amp(a):
            loss = (net(x) * weights).sum()
        loss.backward()
        opt.step()
    report(a, timed(a, step))


def amp(a):
    """The autocast of --precision bf16 (forward passes and losses), else nothing."""
    if a.precision == "bf16":
        return torch.autocast(device_type=a.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(a):
    if a.device == "cuda":
        torch.cuda.synchronize()


def timed(a, step):
    """Seconds of each of a.steps calls step(s) after a.warmup untimed ones (s counts from 0); on
    cuda the GPU is synchronized before and after each, and the peak memory statistic is reset
    after the warm-up."""
    times = []
    for s in range(a.warmup + a.steps):
        if s == a.warmup and a.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        sync(a)
        t = time.perf_counter()
        step(s)
        sync(a)
        if s >= a.warmup:
            times.append(time.perf_counter() - t)
    return times


def time_method(a):
    """Step times of the full pretraining step of a.method (dsc_torch.Model.step, float32 master
    weights; bf16 autocast with --precision bf16), on a.device."""
    cfg = dsc_torch.Config(method=a.method, lambda_ins=1.0 if a.method == "moco-v2" else 0.5,
                           queue=a.queue, bn_groups=a.bn_groups, arch=a.arch, stem=a.stem,
                           dim=a.dim, batch=a.batch, total_steps=1000)
    dev = torch.device(a.device)
    model = dsc_torch.Model(cfg, dtype=torch.float32)  # drawn on the host: the same values on every device
    model.to_device(dev, memory_format=torch.channels_last)
    for enc in (model.online, model.key):
        enc.train()
    g = torch.Generator().manual_seed(0)
    shape = (a.batch, 3, a.size, a.size)
    xa = torch.randn(shape, generator=g).to(device=dev, memory_format=torch.channels_last)
    xb = torch.randn(shape, generator=g).to(device=dev, memory_format=torch.channels_last)
    km_init = dsc_torch.norm(torch.randn(cfg.clusters, cfg.dim, generator=g), dim=1).to(dev)
    # the shuffle-BN permutations stay on the host: the step checks them there, before any work
    perms = [torch.randperm(a.batch, generator=g) for _ in range(a.warmup + a.steps)]
    lr = dsc_torch.lr_at(cfg, 0)
    autocast = torch.bfloat16 if a.precision == "bf16" else None

    def step(s):
        model.step(xa, xb, perms[s], lr, km_init=km_init if s == 0 else None, autocast=autocast)
    return timed(a, step)


def report(a, times, method=None):
    """Prints the JSON line of `dsc bench step --json` (plus "method" for a pretraining step, and
    device, precision, gpu, peak_gpu_mb)."""
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
    cuda = a.device == "cuda"
    out["device"] = a.device
    out["precision"] = a.precision
    out["gpu"] = torch.cuda.get_device_name() if cuda else None
    out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None
    # The driver's view (total - free: allocations, the caching allocator's reserve, library
    # workspaces, the context), the same measure `dsc bench step` reports as gpu_used_mb.
    if cuda:
        free_b, total_b = torch.cuda.mem_get_info()
        out["gpu_used_mb"] = round((total_b - free_b) / 2**20, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
