#!/usr/bin/python3
"""make_pth_fixtures.py: writes the PyTorch checkpoints that tests/test_pth_read.c reads.

Usage: /usr/bin/python3 tools/reference/make_pth_fixtures.py OUT_DIR

Run by the test itself at its start (into a temporary folder): nothing is committed. Every .pth
is written by torch.save, in the zip format (PyTorch >= 1.6, the default) and/or the legacy format
(_use_new_zipfile_serialization=False); each <stem>.safetensors next to it (written with
tools/reference/safetensors_py.py) holds what the reader must return: every tensor of the state
dict, contiguous, same name, dtype and shape. BF16 has no numpy type: such tensors are stored as
their float32 values and listed, comma-separated, in the metadata entry "bf16"; the test converts
what it read and compares bit for bit.

Files:
  resnet18_zip.pth, resnet18_legacy.pth   torchvision resnet18 state_dict (seeded init, BN stats
                                          and num_batches_tracked set), expected resnet18.safetensors
  misc_zip.pth, misc_legacy.pth           an OrderedDict of odd tensors: transposed (non-contiguous),
                                          a slice with a storage offset, two views of one storage,
                                          F64/F16/BF16/I64/I32/I16/I8/U8/BOOL, 0-dim, zero-size,
                                          a Parameter, a 4-dim permuted tensor; expected misc.safetensors
  misc_archive.pth                        misc_zip.pth re-packed the way PyTorch 2.x names things:
                                          folder "archive/", a "byteorder" record ("little")
  wrap_state_dict.pth                     {"state_dict": misc, "epoch", "optimizer" (nested dicts of
                                          tensors), "args" (an argparse.Namespace), "best_acc1" (a
                                          0-dim tensor)}; expected misc
  wrap_model_legacy.pth                   {"model": misc, "meta": {...}, "optimizer"} in the legacy
                                          format (storages outside the state dict in the raw data)
  small3_zip.pth, small3_legacy.pth       three tiny tensors (for the truncation test); small3.safetensors
  compressed.pth                          misc_zip.pth re-packed with deflate (must be rejected)
"""
import argparse
import collections
import os
import sys
import zipfile

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else None
if not OUT:
    sys.exit("usage: make_pth_fixtures.py OUT_DIR")
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


def expected(sd, stem):
    """Writes <stem>.safetensors with the contiguous values of every tensor of sd."""
    tensors, bf16 = {}, []
    for name, t in sd.items():
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16:
            bf16.append(name)
            t = t.float()
        tensors[name] = t.numpy()
    safetensors_py.write(path(stem + ".safetensors"), tensors, {"bf16": ",".join(bf16)})


def save_both(obj, stem):
    torch.save(obj, path(stem + "_zip.pth"))
    torch.save(obj, path(stem + "_legacy.pth"), _use_new_zipfile_serialization=False)


def repack(src, dst, rename=None, extra=None, compression=zipfile.ZIP_STORED):
    """Copies the zip src to dst, renaming the top folder and adding records."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            name = info.filename
            if rename:
                name = rename + name[name.index("/"):]
            zout.writestr(name, zin.read(info.filename))
        for name, data in (extra or {}).items():
            zout.writestr(name, data)


torch.manual_seed(1234)

# resnet18, with non-trivial batch-norm buffers
model = torchvision.models.resnet18()
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
        m.num_batches_tracked.fill_(int(torch.randint(0, 1000, ()).item()))
sd = model.state_dict()
save_both(sd, "resnet18")
expected(sd, "resnet18")

# odd tensors
base = torch.randn(5, 7)
shared = torch.arange(24, dtype=torch.float32)
misc = collections.OrderedDict()
misc["transposed"] = base.t()
misc["slice"] = torch.randn(100)[17:40]
misc["row_slice"] = base[2:4, 1:6]
misc["shared_a"] = shared[:12].view(3, 4)
misc["shared_b"] = shared[6:].view(2, 9)
misc["permuted4d"] = torch.randn(2, 3, 4, 5).permute(0, 2, 3, 1)
misc["f64"] = torch.randn(3, 2, dtype=torch.float64)
misc["f16"] = torch.randn(4, 3).half().t()
misc["bf16"] = torch.randn(6).bfloat16()
misc["i64"] = torch.randint(-2**40, 2**40, (5,), dtype=torch.int64)
misc["i32"] = torch.randint(-2**30, 2**30, (2, 2), dtype=torch.int32)
misc["i16"] = torch.randint(-30000, 30000, (3,), dtype=torch.int16)
misc["i8"] = torch.randint(-128, 128, (4,), dtype=torch.int8)
misc["u8"] = torch.randint(0, 256, (4,), dtype=torch.uint8)
misc["bool"] = torch.rand(5) > 0.5
misc["scalar"] = torch.tensor(3.25)
misc["scalar_i64"] = torch.tensor(7, dtype=torch.int64)
misc["empty"] = torch.zeros(0, 3)
misc["empty_strided"] = torch.zeros(4, 0, 2).transpose(0, 2)
misc["param"] = torch.nn.Parameter(torch.randn(3, 3))
misc["expanded"] = torch.randn(3, 1).expand(3, 4)  # stride 0
save_both(misc, "misc")
expected(misc, "misc")
repack(path("misc_zip.pth"), path("misc_archive.pth"), rename="archive",
       extra={"archive/byteorder": "little"})
repack(path("misc_zip.pth"), path("compressed.pth"), compression=zipfile.ZIP_DEFLATED)

trained = torch.nn.Parameter(torch.randn(3, 3))
optimizer = torch.optim.SGD([trained], lr=0.1, momentum=0.9)
trained.grad = torch.ones(3, 3)
optimizer.step()  # momentum buffers: tensors nested in the optimizer state
wrapped = {"state_dict": misc, "epoch": 3, "optimizer": optimizer.state_dict(),
           "args": argparse.Namespace(lr=0.1, arch="resnet18"),
           "best_acc1": torch.tensor(76.1)}  # a tensor outside the state dict, as in PyTorch's
                                             # ImageNet example
torch.save(wrapped, path("wrap_state_dict.pth"))
torch.save({"model": misc, "meta": {"epoch": 7, "classes": ("a", "b")},
            "optimizer": optimizer.state_dict()},
           path("wrap_model_legacy.pth"), _use_new_zipfile_serialization=False)

small = collections.OrderedDict()
small["w"] = torch.arange(6, dtype=torch.float32).view(2, 3)
small["b"] = torch.tensor([1.5, -2.0])
small["n"] = torch.tensor(5, dtype=torch.int64)
save_both(small, "small3")
expected(small, "small3")
print(f"make_pth_fixtures.py: wrote {OUT}")
