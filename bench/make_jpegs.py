#!/usr/bin/env python3
"""make_jpegs.py: writes a folder of synthetic JPEGs for `dsc bench data` and bench/torch_data.py.

usage: /usr/bin/python3 bench/make_jpegs.py OUT_DIR [--count 2000]

Deterministic content (image i is a function of i alone): a smooth two-colour gradient, a few
filled ellipses and rectangles, and Gaussian noise (sigma 8), saved as baseline JPEG, quality
90, 4:2:0, in 20 subfolders. Sizes are ImageNet-like: mostly 500x375, some 375x500, 500x333
and 400x400. Not part of the repository's data: pass a path outside it.
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

SIZES = [(500, 375)] * 6 + [(375, 500), (500, 333), (400, 400), (500, 375)]


def make(i):
    rng = np.random.default_rng(1000 + i)
    w, h = SIZES[i % len(SIZES)]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = (c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None])
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * w, y0 + rng.uniform(0.1, 0.6) * h
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.uniform() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    arr = np.asarray(pil).astype(np.float32) + rng.normal(0, 8, (h, w, 3)).astype(np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args()
    total = 0
    for i in range(args.count):
        sub = os.path.join(args.out, "d%02d" % (i % 20))
        os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, "img%05d.jpg" % i)
        make(i).save(path, quality=90, subsampling=2)
        total += os.path.getsize(path)
    print("%d JPEGs in %s, %.1f MB" % (args.count, args.out, total / 1e6))


if __name__ == "__main__":
    main()
