#!/usr/bin/python3
"""make_seg_ops_golden.py: writes tests/golden/seg_ops.safetensors, the fixture of
tests/test_seg_ops.c (the segmentation-head ops of src/backend/backend.h: resize_bilinear_forward
and _backward, channel_scale, softmax_ce; METHOD.md §7's FCN fine-tuning head).

Usage: /usr/bin/python3 tools/reference/make_seg_ops_golden.py [OUT]
       (default tests/golden/seg_ops.safetensors)

Never needed to build or test: the output is committed. Inputs are drawn from a seeded
torch.Generator, rounded once to float32 and stored as F32; expected values are computed by
PyTorch in float64 from those float32 values and stored as F32 (labels as U8, sizes as I32):

  resize.<case>.x    (N,H,W,C)   input, stored NHWC (the C layout; PyTorch ran on its NCHW permute)
  resize.<case>.y    (N,OH,OW,C) F.interpolate(x, (OH,OW), mode='bilinear', align_corners=False), NHWC
  resize.<case>.dy   (N,OH,OW,C) a random output gradient, NHWC
  resize.<case>.dx   (N,H,W,C)   its autograd gradient wrt x (the adjoint), NHWC
    cases: up (5x6 -> 19x23), down (17x13 -> 6x5), same (7x9 -> 7x9), one (1x1 -> 4x3),
           odd (7x7 -> 8x8), mixed (9x4 -> 5x11: down rows, up columns)
  ce.<case>.logits   (P,K)       logits, one row per pixel
  ce.<case>.labels   (P) U8      labels in [0, K) or 255 (ignored)
  ce.<case>.loss_sum ()          F.cross_entropy(reduction='sum', ignore_index=255)
  ce.<case>.grad     (P,K)       gradient of F.cross_entropy(reduction='mean', ignore_index=255)
                                 wrt the logits (0 rows where ignored; all 0 when every label is)
    cases: basic (37 x 5, some 255), large (20 x 7, logits ~80 +- 10), allignored (9 x 4),
           wide (300 x 21)
  dropout.x (N,HW,C), dropout.scale (N,C) = keep / (1 - p) with p = 0.3, dropout.y = x * scale
                                 broadcast over HW (Dropout2d's forward with a given mask)

The float32 rounding of the results is the only error of this fixture (float64 arithmetic).
"""
import hashlib
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402


def f32(x):
    return x.detach().float().contiguous().numpy()


def rnd(g, *shape, scale=1.0, shift=0.0):
    """float32-representable values, returned in float64."""
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).float().double()


def resize_case(g, out, name, n, c, h, w, oh, ow):
    x = rnd(g, n, c, h, w).requires_grad_(True)  # NCHW for PyTorch
    y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    dy = rnd(g, n, c, oh, ow)
    (y * dy).sum().backward()
    nhwc = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731
    out[f"resize.{name}.x"] = f32(nhwc(x))
    out[f"resize.{name}.y"] = f32(nhwc(y))
    out[f"resize.{name}.dy"] = f32(nhwc(dy))
    out[f"resize.{name}.dx"] = f32(nhwc(x.grad))


def ce_case(g, out, name, pixels, classes, shift=0.0, scale=1.0, ignore_frac=0.2, all_ignored=False):
    logits = rnd(g, pixels, classes, scale=scale, shift=shift)
    labels = torch.randint(0, classes, (pixels,), generator=g)
    drop = torch.rand(pixels, generator=g, dtype=torch.float64) < ignore_frac
    labels[drop] = 255
    if all_ignored:
        labels[:] = 255
    loss_sum = F.cross_entropy(logits, labels, reduction="sum", ignore_index=255)
    lr = logits.clone().requires_grad_(True)
    mean = F.cross_entropy(lr, labels, reduction="mean", ignore_index=255)
    mean.backward()
    grad = lr.grad
    if all_ignored:
        assert float(loss_sum) == 0.0 and bool((grad == 0).all()), "all-ignored case must give 0"
    out[f"ce.{name}.logits"] = f32(logits)
    out[f"ce.{name}.labels"] = labels.to(torch.uint8).numpy()
    out[f"ce.{name}.loss_sum"] = f32(loss_sum)
    out[f"ce.{name}.grad"] = f32(grad)
    print(f"ce.{name}: {pixels} x {classes}, {int((labels != 255).sum())} labelled, "
          f"loss_sum {float(loss_sum):.6g}")


def dropout_case(g, out, n, hw, c, p):
    x = rnd(g, n, hw, c)
    keep = (torch.rand(n, c, generator=g, dtype=torch.float64) >= p).double()
    scale = torch.tensor(keep.numpy() / (1.0 - p), dtype=torch.float32).double()  # float32 scale
    y = x * scale[:, None, :]
    out["dropout.x"] = f32(x)
    out["dropout.scale"] = f32(scale)
    out["dropout.y"] = f32(y)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/seg_ops.safetensors"
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(20261126)
    out = {}
    resize_case(g, out, "up", 2, 3, 5, 6, 19, 23)
    resize_case(g, out, "down", 2, 4, 17, 13, 6, 5)
    resize_case(g, out, "same", 1, 5, 7, 9, 7, 9)
    resize_case(g, out, "one", 2, 3, 1, 1, 4, 3)
    resize_case(g, out, "odd", 1, 2, 7, 7, 8, 8)
    resize_case(g, out, "mixed", 1, 3, 9, 4, 5, 11)
    ce_case(g, out, "basic", 37, 5)
    ce_case(g, out, "large", 20, 7, shift=80.0, scale=10.0)
    ce_case(g, out, "allignored", 9, 4, all_ignored=True)
    ce_case(g, out, "wide", 300, 21, ignore_frac=0.1)
    dropout_case(g, out, 3, 10, 6, 0.3)
    size = safetensors_py.write(path, out)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"{path}: {size} bytes, sha256 {digest[:16]}")


if __name__ == "__main__":
    main()
