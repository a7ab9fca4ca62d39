"""check_export.py: reads what `dsc export` wrote with the readers other frameworks use
(torch.load, torchvision's load_state_dict, pickle as detectron2 loads it) and compares every
tensor, bitwise, with the source. Also writes PyTorch files for dsc to import. Used by
tests/cli/test_export.sh; prints "ok ..." lines, exits non-zero on the first mismatch.

usage:
  check_export.py tv EXPORT.safetensors SOURCE.safetensors PREFIX
      the torchvision export holds exactly SOURCE's tensors under PREFIX (names without it,
      num_batches_tracked included) and loads into torchvision's ResNet (strict=False: only
      fc.* missing), provenance metadata present
  check_export.py pth EXPORT.pth TV_EXPORT.safetensors
      torch.load(weights_only=True) and torch.load give {"state_dict", "meta"} with exactly the
      torchvision export's tensors (dtype, shape, values) and its metadata; loads into torchvision
  check_export.py d2 EXPORT.pkl TV_EXPORT.safetensors [NAMES.txt]
      pickle.load(encoding="latin1") as detectron2 does: {"model", "__author__",
      "matching_heuristics": True}; the arrays are the torchvision export's under the names of
      MoCo's convert-pretrain-to-detectron2 rules; with NAMES.txt, the names are exactly those
  check_export.py same A B
      A and B (safetensors or .pth) hold the same tensors, bitwise (metadata ignored)
  check_export.py torchsave OUT.pth REF.safetensors ARCH WRAP FORMAT
      a torchvision ARCH (resnet18/34/50) with random weights and non-trivial BN statistics,
      saved by torch.save as the bare state dict (WRAP none) or under "state_dict", "model" or
      "module." keys (WRAP state_dict|model|module), in the zip or legacy FORMAT; REF holds the
      same tensors but fc.* (the backbone) for comparison
  check_export.py under FILE PREFIX REF
      every tensor of REF but num_batches_tracked equals FILE's PREFIX + name, bitwise (what
      dsc loaded, e.g. the backbone.* of a step dump taken before the first step)
  check_export.py misfit OUT.pth
      a resnet18 state dict with conv1.weight mis-shaped, layer4.1.bn2.bias missing and an
      extra tensor layer5.0.conv1.weight
"""
import os
import pickle
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as st  # noqa: E402


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def read_any(path):
    """name -> torch tensor, from a safetensors file or a torch.save file."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        obj = torch.load(path, map_location="cpu")
        if isinstance(obj, dict) and "state_dict" in obj:
            obj = obj["state_dict"]
        return {k: v for k, v in obj.items() if torch.is_tensor(v)}, {}
    tensors, meta = st.read(path)
    # np.array copies into C order and keeps 0-dim arrays 0-dim (ascontiguousarray would not)
    return {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, meta or {}


def same_tensor(a, b):
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and torch.equal(a, b)


def torchvision_model(arch, stem):
    m = getattr(torchvision.models, arch)()
    if stem == "small":  # METHOD.md section 1: 3x3/1 conv1, no max-pool
        m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = torch.nn.Identity()
    return m


def loads_into_torchvision(sd, arch, stem, what):
    m = torchvision_model(arch, stem)
    res = m.load_state_dict(sd, strict=False)
    missing = sorted(res.missing_keys)
    if missing != ["fc.bias", "fc.weight"] or res.unexpected_keys:
        fail("%s: torchvision %s load: missing %s, unexpected %s" % (what, arch, missing, res.unexpected_keys))
    for k, v in m.state_dict().items():
        if k in sd and not torch.equal(v, sd[k].to(v.dtype)):
            fail("%s: %s differs after load_state_dict" % (what, k))
    print("ok %s loads into torchvision.models.%s (%s stem): only fc.* missing" % (what, arch, stem))


def cmd_tv(export, source, prefix):
    exp, meta = read_any(export)
    src, src_meta = read_any(source)
    want = {k[len(prefix):]: v for k, v in src.items() if k.startswith(prefix) and not k[len(prefix):].startswith("fc.")}
    if prefix == "backbone.":  # a dsc checkpoint: only the online backbone
        want = {k: v for k, v in want.items()}
    if sorted(exp) != sorted(want):
        fail("torchvision export names differ: extra %s, missing %s" % (sorted(set(exp) - set(want))[:5], sorted(set(want) - set(exp))[:5]))
    for k in exp:
        if not same_tensor(exp[k], want[k]):
            fail("torchvision export: %s differs from the source's %s%s" % (k, prefix, k))
    print("ok torchvision export: %d tensors equal to the source's %s* bitwise" % (len(exp), prefix))
    for key in ("dsc_version", "arch", "stem", "encoder", "source"):
        if key not in meta:
            fail("torchvision export: no %s in the metadata %s" % (key, meta))
    if "method.name" in src_meta:
        for key, skey in (("method", "method.name"), ("epochs", "epoch"), ("dataset", "data.path"), ("step", "step")):
            if meta.get(key) != src_meta[skey]:
                fail("provenance %s = %r, checkpoint's %s = %r" % (key, meta.get(key), skey, src_meta[skey]))
        print("ok provenance: method %s, epochs %s, dataset %s, %s" % (meta["method"], meta["epochs"], meta["dataset"], meta["dsc_version"]))
    loads_into_torchvision(exp, meta["arch"], meta["stem"], "torchvision export")


def cmd_pth(export, tv):
    ref, ref_meta = read_any(tv)
    for weights_only in (True, False):
        obj = torch.load(export, map_location="cpu", weights_only=weights_only)
        what = "torch.load(weights_only=%s)" % weights_only
        if not isinstance(obj, dict) or sorted(obj) != ["meta", "state_dict"]:
            fail("%s: top level is %r, not {state_dict, meta}" % (what, type(obj) if not isinstance(obj, dict) else sorted(obj)))
        sd = obj["state_dict"]
        if list(sd) != list(ref):
            # same names; order as in the torchvision export
            if sorted(sd) != sorted(ref):
                fail("%s: names differ from the torchvision export" % what)
        for k, v in sd.items():
            if not same_tensor(v, ref[k]):
                fail("%s: %s differs (%s %s vs %s %s)" % (what, k, v.dtype, tuple(v.shape), ref[k].dtype, tuple(ref[k].shape)))
            if not v.is_contiguous():
                fail("%s: %s is not contiguous" % (what, k))
        if obj["meta"] != ref_meta:
            fail("%s: meta %r differs from the torchvision export's %r" % (what, obj["meta"], ref_meta))
        print("ok %s: state_dict of %d tensors equal to the torchvision export, meta equal" % (what, len(sd)))
    loads_into_torchvision(sd, ref_meta["arch"], ref_meta["stem"], ".pth export")
    import zipfile
    with zipfile.ZipFile(export) as z:
        infos = z.infolist()
        top = infos[0].filename.split("/")[0]
        if infos[0].filename != top + "/data.pkl":
            fail(".pth: first record %s, torch.save writes data.pkl first" % infos[0].filename)
        for i in infos:
            if i.compress_type != zipfile.ZIP_STORED:
                fail(".pth: %s is compressed" % i.filename)
        print("ok .pth zip: %d stored records under %s/" % (len(infos), top))


def d2_name(k):
    """MoCo's / DenseCL's convert-pretrain-to-detectron2.py renaming."""
    if "layer" not in k:
        k = "stem." + k
    for t in [1, 2, 3, 4]:
        k = k.replace("layer{}".format(t), "res{}".format(t + 1))
    for t in [1, 2, 3]:
        k = k.replace("bn{}".format(t), "conv{}.norm".format(t))
    k = k.replace("downsample.0", "shortcut")
    k = k.replace("downsample.1", "shortcut.norm")
    return k


def cmd_d2(export, tv, names_file=None):
    ref, ref_meta = read_any(tv)
    with open(export, "rb") as f:
        obj = pickle.load(f, encoding="latin1")
    if not isinstance(obj, dict) or obj.get("matching_heuristics") is not True or "__author__" not in obj:
        fail("detectron2 .pkl: top level %r lacks __author__ / matching_heuristics=True" % (sorted(obj) if isinstance(obj, dict) else type(obj)))
    model = obj["model"]
    want = {d2_name(k): v for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    if sorted(model) != sorted(want):
        fail("detectron2 names differ: extra %s, missing %s" % (sorted(set(model) - set(want))[:5], sorted(set(want) - set(model))[:5]))
    for k, v in model.items():
        if not isinstance(v, np.ndarray):
            fail("detectron2 .pkl: %s is a %s, not a numpy array" % (k, type(v)))
        w = want[k].numpy()
        if v.dtype != w.dtype or v.shape != w.shape or not np.array_equal(v, w) or not v.flags["C_CONTIGUOUS"]:
            fail("detectron2 .pkl: %s differs" % k)
    print("ok detectron2 .pkl: %d numpy arrays equal to the torchvision export under MoCo's renaming (author %s)" % (len(model), obj["__author__"]))
    if names_file:
        with open(names_file) as f:
            fixture = [line.strip() for line in f if line.strip()]
        if sorted(model) != sorted(fixture):
            fail("detectron2 names != fixture: extra %s, missing %s" % (sorted(set(model) - set(fixture))[:5], sorted(set(fixture) - set(model))[:5]))
        print("ok detectron2 names are exactly detectron2's ResNet-50 backbone names (%d, %s)" % (len(fixture), os.path.basename(names_file)))


def cmd_same(a, b):
    ta, _ = read_any(a)
    tb, _ = read_any(b)
    if sorted(ta) != sorted(tb):
        fail("%s and %s hold different names: %s" % (a, b, sorted(set(ta) ^ set(tb))[:6]))
    for k in ta:
        if not same_tensor(ta[k], tb[k]):
            fail("%s differs between %s and %s" % (k, a, b))
    print("ok %d tensors equal bitwise" % len(ta))


def cmd_under(path, prefix, ref):
    t, _ = read_any(path)
    r, _ = read_any(ref)
    n = 0
    for k, v in r.items():
        if k.endswith("num_batches_tracked"):
            continue
        if prefix + k not in t or not same_tensor(t[prefix + k], v):
            fail("%s%s in %s is not %s's %s" % (prefix, k, path, ref, k))
        n += 1
    print("ok %d tensors of %s found under %s in %s, bitwise" % (n, os.path.basename(ref), prefix or "no prefix", os.path.basename(path)))


def trained_like(arch, seed):
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.3, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(7)
    return m.state_dict()


def cmd_torchsave(out, ref, arch, wrap, fmt):
    sd = trained_like(arch, 1)
    # the reference is the backbone dsc reads: everything but the classifier
    st.write(ref, {k: v.numpy() for k, v in sd.items() if not k.startswith("fc.")})
    if wrap == "none":
        obj = sd
    elif wrap == "module":
        obj = {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3, "optimizer": {"lr": 0.1}}
    else:
        obj = {wrap: sd, "epoch": 3, "arch": arch}
    torch.save(obj, out, _use_new_zipfile_serialization=(fmt == "zip"))
    print("ok torch.save of a %s state dict (%s, %s format) -> %s" % (arch, wrap, fmt, out))


def cmd_misfit(out):
    sd = trained_like("resnet18", 2)
    sd["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    del sd["layer4.1.bn2.bias"]
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(sd, out)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"tv": cmd_tv, "pth": cmd_pth, "d2": cmd_d2, "same": cmd_same, "torchsave": cmd_torchsave,
     "misfit": cmd_misfit, "under": cmd_under}[cmd](*args)
