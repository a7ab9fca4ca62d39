#!/usr/bin/python3
"""make_augment_fixtures.py: writes tests/golden/augment/, the fixtures of tests/test_augment.c.

Usage: /usr/bin/python3 tools/reference/make_augment_fixtures.py [OUT_DIR]   (default tests/golden/augment)

Never needed to build or test: the outputs are committed. The reference is torchvision 0.14's tensor
transforms (Debian's python3-torchvision) on float32 images, with the parameters of each view fixed by
hand instead of drawn:
  crop + resize   F.resized_crop(x, top, left, h, w, [S, S], BILINEAR, antialias=True) on the uint8
                  image as float (0..255), then / 255 (ToTensor / convert_image_dtype's scaling)
  colour          T.ColorJitter with get_params patched to return the case's order and factors
                  (None for an identity factor, as torchvision does for a zero setting)
  grayscale       T.Grayscale(num_output_channels=3)
  blur            T.GaussianBlur(kernel_size=2*ceil(3*sigma)+1, sigma=(sigma, sigma))
  flip            F.hflip
  normalize       T.Normalize(ImageNet mean, std)
  label map       F.interpolate(mode="nearest") of the cropped label map, then hflip

Files:
  src_64x48.rgb   the 64x48 RGB8 input, row-major interleaved (synthetic: gradients, disks, grey
                  patches, seeded noise)
  label_64x48.u8  a 64x48 label map (one byte per pixel, values 0..20 and 255)
  cases.txt       one case a line: name top left h w jitter o0 o1 o2 o3 brightness contrast
                  saturation hue gray blur sigma flip (floats printed to round-trip as float32)
  <name>.f32      the S x S x 3 normalized output of the case, HWC float32 little-endian
  <name>.lbl      the S x S label map of the case (uint8)
S = 32.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as TF
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

W, H, S = 64, 48, 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def make_image():
    rng = np.random.default_rng(20261126)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 255 * xx / (W - 1)
    g = 255 * yy / (H - 1)
    b = 128 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    img = np.stack([r, g, b], axis=-1)
    # saturated disks, a grey patch (r == g == b exercises the hue code's equal-channel path)
    for cx, cy, rad, col in [(16, 12, 9, (250, 10, 20)), (44, 30, 11, (20, 240, 60)),
                             (30, 38, 6, (30, 40, 250))]:
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= rad * rad
        img[m] = col
    img[2:14, 48:62] = 128
    img[30:44, 2:10] = np.array([200, 200, 200])
    img = img + rng.normal(0, 12, img.shape)
    img[2:14, 48:62] = img[2:14, 48:62, :1]  # keep the patch grey after the noise
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_label():
    yy, xx = np.mgrid[0:H, 0:W]
    lab = ((xx // 7) + 3 * (yy // 5)) % 21
    lab[(xx - 40) ** 2 + (yy - 20) ** 2 < 64] = 255
    return lab.astype(np.uint8)


def f32(v):
    return float(np.float32(v))


ID = dict(jitter=0, order=(0, 1, 2, 3), b=1.0, c=1.0, s=1.0, h=0.0, gray=0, blur=0, sigma=0.0, flip=0)
CROP = (5, 7, 30, 41)  # top, left, h, w: a downscale in both directions


def case(name, crop=CROP, **kw):
    c = dict(ID)
    c.update(kw)
    c["name"] = name
    c["crop"] = crop
    for k in ("b", "c", "s", "h", "sigma"):
        c[k] = f32(c[k])
    return c


JIT = dict(b=1.25, c=0.7, s=1.3, h=-0.07)
CASES = [
    case("crop_full", crop=(0, 0, H, W)),
    case("crop_region"),
    case("crop_up", crop=(10, 20, 12, 9)),             # upscale
    case("crop_mixed", crop=(0, 3, 45, 20)),            # downscale rows, upscale columns
    case("crop_flip", flip=1),
    case("bright_up", jitter=1, b=1.3),
    case("bright_down", jitter=1, b=0.62),
    case("contrast_up", jitter=1, c=1.35),
    case("contrast_down", jitter=1, c=0.6),
    case("saturation_up", jitter=1, s=1.4),
    case("saturation_down", jitter=1, s=0.61),
    case("hue_pos", jitter=1, h=0.08),
    case("hue_neg", jitter=1, h=-0.1),
    case("hue_big", jitter=1, h=0.45),
    case("hue_grey", crop=(1, 46, 14, 18), jitter=1, h=0.2),  # mostly the grey patch (r == g == b)
    case("jitter_0123", jitter=1, order=(0, 1, 2, 3), **JIT),
    case("jitter_3210", jitter=1, order=(3, 2, 1, 0), **JIT),
    case("jitter_2031", jitter=1, order=(2, 0, 3, 1), **JIT),
    case("jitter_1302", jitter=1, order=(1, 3, 0, 2), **JIT),
    case("gray", gray=1),
    case("blur_small", blur=1, sigma=0.1),
    case("blur_mid", blur=1, sigma=0.9),
    case("blur_big", blur=1, sigma=2.0),
    case("chain", crop=(3, 11, 40, 33), jitter=1, order=(2, 3, 0, 1), b=0.8, c=1.2, s=0.7, h=0.05,
         gray=1, blur=1, sigma=1.3, flip=1),
    case("chain_nogray", crop=(10, 2, 36, 50), jitter=1, order=(3, 1, 2, 0), b=1.1, c=0.75, s=1.35,
         h=-0.03, blur=1, sigma=0.6, flip=1),
]


def patched_jitter(c):
    jit = T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    vals = (None if c["b"] == 1.0 else c["b"], None if c["c"] == 1.0 else c["c"],
            None if c["s"] == 1.0 else c["s"], None if c["h"] == 0.0 else c["h"])
    order = torch.tensor(c["order"])
    jit.get_params = lambda *args: (order,) + vals
    return jit


def reference(img, lab, c):
    top, left, h, w = c["crop"]
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    x = F.resized_crop(x, top, left, h, w, [S, S], InterpolationMode.BILINEAR, antialias=True)
    x = x / 255.0
    if c["jitter"]:
        x = patched_jitter(c)(x)
    if c["gray"]:
        x = T.Grayscale(num_output_channels=3)(x)
    if c["blur"]:
        sigma = c["sigma"]
        k = 2 * math.ceil(3 * sigma) + 1
        x = T.GaussianBlur(kernel_size=k, sigma=(sigma, sigma))(x)
    if c["flip"]:
        x = F.hflip(x)
    x = T.Normalize(MEAN, STD)(x)
    out = x.permute(1, 2, 0).contiguous().numpy().astype("<f4")

    lt = torch.from_numpy(lab[top:top + h, left:left + w].astype(np.float32))[None, None]
    lt = TF.interpolate(lt, size=(S, S), mode="nearest")[0, 0]
    if c["flip"]:
        lt = F.hflip(lt)
    return out, lt.numpy().astype(np.uint8)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/augment"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    img, lab = make_image(), make_label()
    img.tofile(os.path.join(out_dir, "src_64x48.rgb"))
    lab.tofile(os.path.join(out_dir, "label_64x48.u8"))
    lines = []
    for c in CASES:
        out, lo = reference(img, lab, c)
        assert out.shape == (S, S, 3) and np.isfinite(out).all()
        out.tofile(os.path.join(out_dir, c["name"] + ".f32"))
        lo.tofile(os.path.join(out_dir, c["name"] + ".lbl"))
        top, left, h, w = c["crop"]
        fl = " ".join(repr(np.float32(c[k]).item()) for k in ("b", "c", "s", "h"))
        lines.append(f"{c['name']} {top} {left} {h} {w} {c['jitter']} "
                     f"{' '.join(str(o) for o in c['order'])} {fl} {c['gray']} {c['blur']} "
                     f"{np.float32(c['sigma']).item()!r} {c['flip']}")
    with open(os.path.join(out_dir, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(CASES)} cases to {out_dir}")


if __name__ == "__main__":
    main()
