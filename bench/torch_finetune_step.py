#!/usr/bin/python3
"""The fine-tuning step of `dsc finetune seg` (`dsc bench finetune`), timed in PyTorch.

The comparison with dsc (bench/finetune_vs_torch.sh runs both):

    /usr/bin/python3 bench/torch_finetune_step.py --arch resnet50 --size 128 --batch 2 --threads 2

The model dsc trains, in plain torch (mmsegmentation is not needed): torchvision
resnet50(replace_stride_with_dilation=[False, True, True]) without avgpool and fc (mmsegmentation's
FCN-R50-D8 backbone with the standard stem, output stride 8), then the FCN head of METHOD.md §7
(two 3x3 conv-BN-ReLU of --channels 256 channels, Dropout2d(0.1), a 1x1 classifier with bias to
--classes 21; no concat_input, no auxiliary head), the logits bilinearly upsampled
(align_corners=False) to the crop, CrossEntropyLoss(ignore_index=255), backward,
SGD(lr 0.01, momentum 0.9, weight_decay 5e-4 on every parameter, no Nesterov). channels_last,
every BN in training mode. Synthetic batch: --batch standard-normal (= normalized) images of
--size x --size, labels uniform in [0, classes) with ~10% 255.

--arch resnet18 has BasicBlocks, which torchvision cannot dilate: it runs with --dilate 0, the
plain resnet18 at output stride 32 (512 channels into the head); --dilate 0 also gives the plain
resnet50 (stride 32). --dilate defaults to 1 for resnet50 and 0 for resnet18.

Prints one JSON line as bench/torch_step.py does: what ("finetune_step"), impl ("pytorch"),
threads, batch, size, img_per_s, step_s (median of --steps after --warmup untimed steps),
min_step_s, peak_rss_mb (this process's peak RSS: run it in its own process), plus arch, dilate,
output_stride, classes, channels, device, torch (version), gpu and peak_gpu_mb (null on cpu).
--device cuda puts model, batch and SGD state on the GPU, cudnn.benchmark on (autotuned in the
warm-up), torch.cuda.synchronize() around each timed step; TF32 defaults kept.
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

IGNORE = 255


class ConvModule(torch.nn.Sequential):
    """3x3 conv (no bias) - BN - ReLU, mmsegmentation's ConvModule names (conv, bn)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(cout)
        self.activate = torch.nn.ReLU(inplace=True)


class FCNHead(torch.nn.Module):
    """METHOD.md §7's head: two conv-BN-ReLU, Dropout2d(0.1), 1x1 conv_seg with bias."""

    def __init__(self, cin, channels, classes):
        super().__init__()
        self.convs = torch.nn.Sequential(ConvModule(cin, channels), ConvModule(channels, channels))
        self.dropout = torch.nn.Dropout2d(0.1)
        self.conv_seg = torch.nn.Conv2d(channels, classes, 1)

    def forward(self, x):
        return self.conv_seg(self.dropout(self.convs(x)))


class Segmentor(torch.nn.Module):
    def __init__(self, arch, dilate, channels, classes):
        super().__init__()
        dil = [False, True, True] if dilate else None
        net = getattr(torchvision.models, arch)(weights=None, replace_stride_with_dilation=dil)
        self.backbone = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                            net.layer1, net.layer2, net.layer3, net.layer4)
        cin = net.fc.in_features  # 2048 (resnet50) or 512 (resnet18)
        self.decode_head = FCNHead(cin, channels, classes)

    def forward(self, x):
        logits = self.decode_head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=("resnet18", "resnet50"), default="resnet50")
    p.add_argument("--dilate", type=int, choices=(0, 1), default=None,
                   help="1: output stride 8 (resnet50 only; default 1 for resnet50, 0 for resnet18)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="square crop side")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a = p.parse_args()
    if a.dilate is None:
        a.dilate = 1 if a.arch == "resnet50" else 0
    if a.dilate and a.arch == "resnet18":
        p.error("--arch resnet18 --dilate 1: torchvision's BasicBlock cannot dilate; use --dilate 0 "
                "(output stride 32)")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch.cuda.is_available() is False")
    if a.batch < 1 or a.size < 32 or a.steps < 1 or a.warmup < 0 or a.classes < 2:
        p.error("need --batch >= 1, --size >= 32, --steps >= 1, --warmup >= 0, --classes >= 2")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True

    model = Segmentor(a.arch, a.dilate, a.channels, a.classes)
    model = model.to(device=dev, memory_format=torch.channels_last).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=g)
    x = x.to(device=dev, memory_format=torch.channels_last)
    labels = torch.randint(0, a.classes, (a.batch, a.size, a.size), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.1] = IGNORE
    labels = labels.to(dev)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=False)

    def sync():
        if a.device == "cuda":
            torch.cuda.synchronize()

    times = []
    for s in range(a.warmup + a.steps):
        if s == a.warmup and a.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        sync()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = criterion(model(x), labels)
        loss.backward()
        opt.step()
        sync()
        if s >= a.warmup:
            times.append(time.perf_counter() - t)
    if not torch.isfinite(loss):
        raise SystemExit(f"torch_finetune_step.py: loss {float(loss)} is not finite")

    median = statistics.median(times)
    cuda = a.device == "cuda"
    out = {
        "what": "finetune_step", "impl": "pytorch", "threads": a.threads, "batch": a.batch,
        "size": a.size, "img_per_s": round(a.batch / median, 3), "step_s": round(median, 5),
        "min_step_s": round(min(times), 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "arch": a.arch, "dilate": a.dilate, "output_stride": 8 if a.dilate else 32,
        "classes": a.classes, "channels": a.channels, "device": a.device, "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
