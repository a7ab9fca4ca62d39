#!/usr/bin/python3
"""Checks dsc's exports against PyTorch / numpy (issue #7), run by tests/test_export_formats.c.

  check_export_formats.py pth FILE EXPECTED.safetensors
      FILE is a dsc .pth: the zip records are archive/data.pkl, archive/byteorder ("little"),
      archive/data/0..N-1, archive/version ("3\\n"), all STORED with data at multiples of 64
      bytes; the pickle is protocol 2 and names only globals torch's weights_only unpickler
      allows; torch.load(weights_only=True) and torch.load both give
      {"state_dict": OrderedDict, "meta": dict} with every tensor of EXPECTED (same order,
      name, dtype, shape, contiguous, bitwise equal bytes) and its metadata.
  check_export_formats.py d2 FILE EXPECTED.safetensors AUTHOR
      FILE is a dsc detectron2 .pkl: pickle protocol 4 naming only numpy's reconstruction
      globals; pickle.load(f, encoding="latin1") gives {"model", "__author__",
      "matching_heuristics", "dsc"} (in that order) with every tensor of EXPECTED as a
      C-contiguous little-endian numpy array (same order, name, dtype, shape, bytes),
      __author__ == AUTHOR, matching_heuristics True and the metadata under "dsc".
  check_export_formats.py names OUT.tsv
      Writes "KEY<TAB>DETECTRON2_NAME" for every key of torchvision's resnet18 and resnet50
      state dicts, the name computed as MoCo's / DenseCL's convert-pretrain-to-detectron2.py
      compute it, or "KEY<TAB>!" for keys detectron2 has no counterpart for (fc.*,
      num_batches_tracked).

Prints one indented line per check, "  ok ..." or "  FAIL ...", then "  checks: P passed, F
failed" (indented and without "#summary", so that the calling test's own lines and summary are
the only ones scripts/run_tests.sh sees); exits non-zero if any check failed. EXPECTED is read bitwise (BF16 compared through torch, which numpy
lacks), without safetensors_py.decode, whose dtype table has no BF16.
"""
import collections
import json
import pickle
import pickletools
import struct
import sys
import zipfile

import numpy as np
import torch

import safetensors_py

TORCH_DTYPES = {
    "F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
PTH_GLOBALS = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2"} | {
    f"torch {c}Storage" for c in
    ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")}
D2_GLOBALS = {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
ALIGN = 64

results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("  ok " if cond else "  FAIL ") + name + ("" if cond else f": {detail}"))
    return bool(cond)


def read_expected(path):
    """[(name, dtype, shape, raw bytes)] in data order, and the metadata dict."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    tensors = []
    for name, info in entries:
        b, e = info["data_offsets"]
        tensors.append((name, info["dtype"], tuple(info["shape"]), blob[base + b:base + e]))
    return tensors, meta


def globals_in(pkl):
    """The 'module name' strings of every GLOBAL opcode (protocol 2 streams)."""
    return {arg for op, arg, _ in pickletools.genops(pkl) if op.name == "GLOBAL"}


class RecordingUnpickler(pickle.Unpickler):
    """pickle.Unpickler that notes every global it resolves (GLOBAL and STACK_GLOBAL)."""

    def __init__(self, f, **kw):
        super().__init__(f, **kw)
        self.globals = set()

    def find_class(self, module, name):
        self.globals.add(f"{module} {name}")
        return super().find_class(module, name)


def torch_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def check_pth(path, expected):
    tensors, meta = read_expected(expected)
    z = zipfile.ZipFile(path)
    want = (["archive/data.pkl", "archive/byteorder"] +
            [f"archive/data/{i}" for i in range(len(tensors))] + ["archive/version"])
    check("pth records", z.namelist() == want, f"{z.namelist()} != {want}")
    with open(path, "rb") as f:
        raw = f.read()
    for info in z.infolist():
        check(f"pth {info.filename} stored", info.compress_type == zipfile.ZIP_STORED,
              f"method {info.compress_type}")
        h = info.header_offset
        name_len, extra_len = struct.unpack("<HH", raw[h + 26:h + 30])
        start = h + 30 + name_len + extra_len
        check(f"pth {info.filename} aligned", start % ALIGN == 0, f"data at {start}")
    check("pth byteorder", z.read("archive/byteorder") == b"little", z.read("archive/byteorder"))
    check("pth version", z.read("archive/version") == b"3\n", z.read("archive/version"))
    pkl = z.read("archive/data.pkl")
    check("pth pickle protocol 2", pkl[:2] == b"\x80\x02", pkl[:2])
    g = globals_in(pkl)
    check("pth globals allowed", g <= PTH_GLOBALS, sorted(g - PTH_GLOBALS))
    for mode in ("weights_only", "full"):
        obj = torch.load(path, weights_only=(mode == "weights_only"))
        if not check(f"pth {mode} top level", isinstance(obj, dict) and
                     list(obj) == ["state_dict", "meta"], type(obj)):
            continue
        sd = obj["state_dict"]
        check(f"pth {mode} OrderedDict", isinstance(sd, collections.OrderedDict), type(sd))
        check(f"pth {mode} names", list(sd) == [t[0] for t in tensors],
              f"{list(sd)[:8]} ...")
        for name, dtype, shape, data in tensors:
            t = sd.get(name)
            ok = (isinstance(t, torch.Tensor) and t.dtype == TORCH_DTYPES[dtype] and
                  tuple(t.shape) == shape and t.is_contiguous() and
                  t.storage_offset() == 0 and not t.requires_grad and torch_bytes(t) == data)
            check(f"pth {mode} tensor {name}", ok,
                  "missing" if t is None else f"{t.dtype} {tuple(t.shape)} vs {dtype} {shape}")
        check(f"pth {mode} meta", obj["meta"] == meta, f"{obj['meta']} != {meta}")


def check_d2(path, expected, author):
    tensors, meta = read_expected(expected)
    with open(path, "rb") as f:
        pkl = f.read()
    check("d2 pickle protocol 4", pkl[:2] == b"\x80\x04", pkl[:2])
    with open(path, "rb") as f:
        unpickler = RecordingUnpickler(f, encoding="latin1")
        obj = unpickler.load()
    g = unpickler.globals
    check("d2 globals", g <= D2_GLOBALS, sorted(g - D2_GLOBALS))
    with open(path, "rb") as f:
        plain = pickle.load(f, encoding="latin1")
    check("d2 pickle.load", list(plain) == list(obj), list(plain))
    if not check("d2 top level", isinstance(obj, dict) and
                 list(obj) == ["model", "__author__", "matching_heuristics", "dsc"], obj.keys()):
        return
    model = obj["model"]
    check("d2 names", list(model) == [t[0] for t in tensors], f"{list(model)[:8]} ...")
    for name, dtype, shape, data in tensors:
        a = model.get(name)
        want = safetensors_py.DTYPES[dtype]
        ok = (isinstance(a, np.ndarray) and a.dtype == want and a.dtype.str == want.str and
              a.shape == shape and a.flags["C_CONTIGUOUS"] and a.tobytes() == data)
        got = f"{a.dtype.str} {a.shape}" if isinstance(a, np.ndarray) else repr(type(a))
        check(f"d2 array {name}", ok, f"{got} vs {want.str} {shape}")
    check("d2 author", obj["__author__"] == author, repr(obj["__author__"]))
    check("d2 matching_heuristics", obj["matching_heuristics"] is True,
          repr(obj["matching_heuristics"]))
    check("d2 meta", obj["dsc"] == meta, f"{obj['dsc']} != {meta}")


def moco_name(k):
    """convert-pretrain-to-detectron2.py's renaming (MoCo v1/v2, DenseCL)."""
    if "layer" not in k:
        k = "stem." + k
    for t in [1, 2, 3, 4]:
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    k = k.replace("downsample.0", "shortcut")
    k = k.replace("downsample.1", "shortcut.norm")
    return k


def write_names(out):
    import torchvision
    lines = []
    for arch in ("resnet18", "resnet50"):
        for k in getattr(torchvision.models, arch)().state_dict():
            bad = k.startswith("fc.") or k.endswith("num_batches_tracked")
            lines.append(f"{k}\t{'!' if bad else moco_name(k)}")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    check(f"names {len(lines)} keys written", len(lines) > 300, len(lines))


def main(argv):
    if len(argv) >= 4 and argv[1] == "pth":
        check_pth(argv[2], argv[3])
    elif len(argv) >= 5 and argv[1] == "d2":
        check_d2(argv[2], argv[3], argv[4])
    elif len(argv) >= 3 and argv[1] == "names":
        write_names(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    failed = results.count(False)
    print(f"  checks: {len(results) - failed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
