#!/usr/bin/env python3
"""torch_data.py: times torchvision + PIL doing dsc's two-view augmentation (METHOD.md §6).

usage: /usr/bin/python3 bench/torch_data.py --path DIR [--workers 1,2] [--batch 64] [--size 224]
                                            [--warmup 2] [--batches 30] [--json]

The same work as `dsc bench data`: every JPEG/PNG under DIR (sorted), PIL decode + convert("RGB"),
then twice per image Compose([RandomResizedCrop(size, scale=(0.2, 1)), RandomApply([ColorJitter(
0.4, 0.4, 0.4, 0.1)], p=0.8), RandomGrayscale(0.2), RandomApply([blur], p=0.5),
RandomHorizontalFlip(), ToTensor(), Normalize(ImageNet)]) on PIL images, batched by a
DataLoader with W worker processes (shuffle, drop_last). Reports two-view batches/s, images/s
and images/s per worker. The blur is METHOD.md §6's: sigma ~ U(0.1, 2), torchvision's
F.gaussian_blur with kernel 2*ceil(3 sigma) + 1 (a float conv2d on a tensor, the slowest step
in torchvision 0.14); --pil-blur swaps in MoCo v2's PIL ImageFilter.GaussianBlur(radius=sigma),
the approximation most PyTorch pretraining code uses.
"""
import argparse
import json
import math
import os
import random
import time

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter


class PilBlur:
    """MoCo v2's GaussianBlur: PIL's box-approximated Gaussian with radius = sigma."""

    def __init__(self, sigma):
        self.sigma = sigma

    def __call__(self, img):
        s = random.uniform(self.sigma[0], self.sigma[1])
        return img.filter(ImageFilter.GaussianBlur(radius=s))


class SpecBlur:
    """METHOD.md §6: torchvision's Gaussian blur, kernel 2 ceil(3 sigma) + 1."""

    def __init__(self, sigma):
        self.sigma = sigma

    def __call__(self, img):
        s = random.uniform(self.sigma[0], self.sigma[1])
        return F.gaussian_blur(img, 2 * math.ceil(3 * s) + 1, s)


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, root, size, pil_blur=False):
        exts = (".jpg", ".jpeg", ".png")
        self.files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root, followlinks=False)
                            for f in fs if f.lower().endswith(exts))
        self.t = T.Compose([
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([PilBlur((0.1, 2.0)) if pil_blur else SpecBlur((0.1, 2.0))], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.t(img), self.t(img)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pil-blur", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = TwoViews(args.path, args.size, args.pil_blur)
    for w in [int(x) for x in args.workers.split(",")]:
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True,
                                             num_workers=w, persistent_workers=True, prefetch_factor=2)
        done, t0, it = 0, None, iter(loader)
        while done < args.warmup + args.batches:
            try:
                next(it)
            except StopIteration:
                it = iter(loader)
                continue
            done += 1
            if done == args.warmup:
                t0 = time.perf_counter()
        dt = time.perf_counter() - t0
        bps = args.batches / dt
        ips = bps * args.batch
        what = "data two-view %dx%d b%d%s" % (args.size, args.size, args.batch, " pil-blur" if args.pil_blur else "")
        if args.json:
            print(json.dumps({"what": what, "impl": "torchvision", "threads": w, "batches_per_s": round(bps, 4),
                              "img_per_s": round(ips, 2), "img_per_s_per_core": round(ips / w, 2),
                              "images": len(ds)}))
        else:
            print("%-32s %2d workers %8.3f batches/s %8.1f img/s %8.1f img/s/core (%d batches)"
                  % (what, w, bps, ips, ips / w, args.batches))
        del it, loader


if __name__ == "__main__":
    main()
