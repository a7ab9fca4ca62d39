#!/usr/bin/python3
"""Interop check (issue #2, item 9), run by tests/cli/test_interop.sh.

  interop_check.py make-image OUT.png            a 224x224 RGB mosaic of Fashion-MNIST photos
  interop_check.py load ARCH WEIGHTS             loads dsc's weights into torchvision's ARCH
                                                 (only fc.* may be missing, nothing unexpected)
  interop_check.py check WEIGHTS IMAGE EMBED     loads dsc's weights into torchvision's resnet50
                                                 (only fc.* may be missing), runs it in eval mode
                                                 on the same preprocessed image and compares C5
                                                 and pooled features with `dsc embed`'s output.
Prints one line per check: "ok ..." or "FAIL ...", then "#summary P passed, F failed".
"""
import gzip
import json
import struct
import sys

import numpy as np
import torch
import torchvision
from PIL import Image

TOL = 1e-4  # relative L2 error, forward outputs (issue #2)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        arr = np.frombuffer(data[base + b:base + e], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def make_image(path):
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    imgs = np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(7)
    canvas = np.zeros((224, 224, 3), dtype=np.uint8)
    tints = rng.uniform(0.3, 1.0, size=(64, 3))
    k = 0
    for by in range(8):
        for bx in range(8):
            item = imgs[int(rng.integers(len(imgs)))].astype(np.float32)
            canvas[by * 28:(by + 1) * 28, bx * 28:(bx + 1) * 28] = (item[..., None] * tints[k]).astype(np.uint8)
            k += 1
    Image.fromarray(canvas).save(path)


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def check(weights_path, image_path, embed_path):
    passed = failed = 0

    def report(ok, msg):
        nonlocal passed, failed
        print(("ok " if ok else "FAIL ") + msg)
        passed, failed = passed + ok, failed + (not ok)

    sd = read_safetensors(weights_path)
    net = torchvision.models.resnet50()
    res = net.load_state_dict(sd, strict=False)
    report(sorted(res.missing_keys) == ["fc.bias", "fc.weight"] and not res.unexpected_keys,
           f"resnet50 load_state_dict: missing {res.missing_keys}, unexpected {res.unexpected_keys}")
    net.eval()
    img = Image.open(image_path).convert("RGB")
    tf = torchvision.transforms.Compose([
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    x = tf(img).unsqueeze(0)
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        c5 = net.layer4(net.layer3(net.layer2(net.layer1(h))))
        pooled = c5.mean(dim=(2, 3))
    emb = read_safetensors(embed_path)
    for name, ref in (("c5", c5), ("pool", pooled)):
        got = emb[name]
        if tuple(got.shape) != tuple(ref.shape):
            report(False, f"{name}: shape {tuple(got.shape)} vs torchvision {tuple(ref.shape)}")
            continue
        e = rel(got, ref)
        report(e <= TOL, f"{name}: relative L2 error {e:.3g} (tolerance {TOL})")
    print(f"#summary {passed} passed, {failed} failed")
    return failed == 0


if __name__ == "__main__":
    if sys.argv[1] == "make-image":
        make_image(sys.argv[2])
    elif sys.argv[1] == "load":
        net = getattr(torchvision.models, sys.argv[2])()
        res = net.load_state_dict(read_safetensors(sys.argv[3]), strict=False)
        ok = sorted(res.missing_keys) == ["fc.bias", "fc.weight"] and not res.unexpected_keys
        print(("ok " if ok else "FAIL ") + f"{sys.argv[2]} load_state_dict: missing "
              f"{res.missing_keys}, unexpected {res.unexpected_keys}")
        print(f"#summary {int(ok)} passed, {int(not ok)} failed")
        sys.exit(0 if ok else 1)
    elif sys.argv[1] == "check":
        sys.exit(0 if check(*sys.argv[2:5]) else 1)
    else:
        sys.exit("usage: interop_check.py make-image OUT | check WEIGHTS IMAGE EMBED")
