"""make_dilated_golden.py OUT: writes the golden fixture of the dilated ResNet-50 (output stride 8).

    /usr/bin/python3 tools/reference/make_dilated_golden.py tests/golden/resnet50_d8.safetensors

The network is torchvision's resnet50(replace_stride_with_dilation=[False, True, True]): layer3 and
layer4 keep stride 1, layer3's blocks use dilation 1, 2, 2, ... and layer4's 2, 4, 4 (first block of a
dilated layer at half the dilation: mmsegmentation's FCN-R50-D8 backbone with contract_dilation=True),
standard stem, fc removed. The C side is dsc_resnet_config {50, 0} + dsc_resnet_config_dilated8.

Parameters and the input are not stored: both sides generate them with golden_init.py (the C side:
tests/golden_init.h). Everything is computed in float64 from the generated float32 values, BN in
training mode (batch statistics, momentum 0.1, eps 1e-5). The loss is dense, as a segmentation head's
is: loss = sum(C5 * c5.target) / N, c5.target generated as golden_uniform("c5.target", C5's shape,
0, 1) (NCHW), so dLoss/dC5 = c5.target / N.

Stored (kept small: C5 alone is 2x2048x8x8):
  input                      [2,3,64,64] F32 (the generated input, so the C test checks its generator)
  shape.c2 .. shape.c5       I64 [4] NCHW shapes of the outputs of layer1..layer4
  c2 .. c5                   as @sample (F32, the flattened NCHW tensor at floor(k*numel/4096),
                             k = 0..4095) + @norm (F64, full L2 norm)
  loss                       F64 0-dim
  grad.<name>                gradients of the parameters in GRAD_NAMES (@sample/@norm above 4096
                             elements, whole F32 tensors otherwise)
  after1.<name>              BN running statistics after the step, for the BNs in STAT_NAMES (F32)
  eval.c5                    C5 of an evaluation-mode forward (BN with the generated running
                             statistics), @sample + @norm: well conditioned (float32 PyTorch within
                             1e-6 of float64), unlike the training-mode gradients, which float32
                             PyTorch itself gets only within ~1e-2 (README.md, "f32err")
  f32err.<key>               F64 0-dim: relative L2 distance of a float32 PyTorch run from float64
                             for each compared key (the C test's yardstick, as in make_golden.py)
The script checks itself (generator values, read-back) and runs single-threaded so that two runs
give identical bytes.
"""

import hashlib
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_init  # noqa: E402
import safetensors_py  # noqa: E402

SAMPLE_COUNT = golden_init.SAMPLE_COUNT  # large tensors are stored as @sample + @norm
BATCH, HEIGHT, WIDTH = 2, 64, 64

# Gradients compared: the stem, a plain and a dilated block of layer3, every dilation of layer4
# (2 in block 0, 4 in blocks 1-2), the stride-1 downsample convs, and BN parameters at the end.
GRAD_NAMES = [
    "conv1.weight",
    "layer2.0.conv2.weight",
    "layer3.0.conv2.weight",
    "layer3.0.downsample.0.weight",
    "layer3.1.conv2.weight",
    "layer4.0.conv2.weight",
    "layer4.0.downsample.0.weight",
    "layer4.1.conv2.weight",
    "layer4.2.conv2.weight",
    "layer4.2.bn2.weight",
    "layer4.2.bn3.weight",
    "layer4.2.bn3.bias",
]
STAT_NAMES = ["layer3.5.bn2", "layer4.0.bn2", "layer4.2.bn2"]


def build_model(dtype):
    model = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    del model.fc
    del model.avgpool
    golden_init.fill_golden(model)
    return model.to(dtype).train()


def check_architecture(model):
    """The dilations and strides are the ones the C side builds (fails loudly if torchvision differs)."""
    want = {"layer3.0.conv2": (1, 1), "layer3.1.conv2": (1, 2), "layer3.5.conv2": (1, 2),
            "layer4.0.conv2": (1, 2), "layer4.1.conv2": (1, 4), "layer4.2.conv2": (1, 4),
            "layer2.0.conv2": (2, 1), "layer3.0.downsample.0": (1, 1), "layer4.0.downsample.0": (1, 1)}
    mods = dict(model.named_modules())
    for name, (stride, dil) in want.items():
        m = mods[name]
        pad = dil if m.kernel_size[0] == 3 else 0
        if m.stride != (stride, stride) or m.dilation != (dil, dil) or m.padding != (pad, pad):
            raise AssertionError(f"{name}: stride {m.stride} dilation {m.dilation} padding {m.padding}")


def run(dtype):
    model = build_model(dtype)
    x = torch.from_numpy(golden_init.golden_tensor("input", (BATCH, 3, HEIGHT, WIDTH))).to(dtype)
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    cs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        h = layer(h)
        cs.append(h)
    target = torch.from_numpy(golden_init.golden_uniform("c5.target", cs[3].shape, 0.0, 1.0)).to(dtype)
    loss = (cs[3] * target).sum() / BATCH
    loss.backward()
    params = dict(model.named_parameters())
    sd = model.state_dict()
    return {
        "input": x,
        "c": [c.detach().clone() for c in cs],
        "loss": loss.detach().clone(),
        "grad": {n: params[n].grad.detach().clone() for n in GRAD_NAMES},
        "after1": {f"{b}.{s}": sd[f"{b}.{s}"].clone() for b in STAT_NAMES
                   for s in ("running_mean", "running_var")},
        "model": model,
    }


def run_eval(dtype):
    model = build_model(dtype).eval()
    x = torch.from_numpy(golden_init.golden_tensor("input", (BATCH, 3, HEIGHT, WIDTH))).to(dtype)
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            h = layer(h)
    return h


def rel_l2(a, b):
    a = a.detach().to(torch.float64).reshape(-1)
    b = b.detach().to(torch.float64).reshape(-1)
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def fixture_tensors(r64, r32):
    out = {"input": r64["input"].numpy().astype(np.float32)}
    e64, e32 = run_eval(torch.float64), run_eval(torch.float32)
    golden_init.put_sampled(out, "eval.c5", e64)
    out["f32err.eval.c5"] = np.array(rel_l2(e32, e64), dtype=np.float64)
    out["loss"] = np.array(r64["loss"].item(), dtype=np.float64)
    out["f32err.loss"] = np.array(rel_l2(r32["loss"], r64["loss"]), dtype=np.float64)
    for i, key in enumerate(("c2", "c3", "c4", "c5")):
        out["shape." + key] = np.array(r64["c"][i].shape, dtype=np.int64)
        golden_init.put_sampled(out, key, r64["c"][i])
        out["f32err." + key] = np.array(rel_l2(r32["c"][i], r64["c"][i]), dtype=np.float64)
    for n in GRAD_NAMES:
        golden_init.put_sampled(out, "grad." + n, r64["grad"][n])
        out["f32err.grad." + n] = np.array(rel_l2(r32["grad"][n], r64["grad"][n]), dtype=np.float64)
    for n, t in r64["after1"].items():
        out["after1." + n] = t.numpy().astype(np.float32)
        out["f32err.after1." + n] = np.array(rel_l2(r32["after1"][n], t), dtype=np.float64)
    return out


def metadata():
    return {
        "arch": "resnet50, torchvision replace_stride_with_dilation=[False, True, True] "
                "(strides 1,2,1,1; dilations 1,1,2,4 with the first block of layer3/4 at 1/2)",
        "stem": "standard (7x7/2 conv, 3x3/2 max-pool)",
        "batch": str(BATCH), "height": str(HEIGHT), "width": str(WIDTH),
        "generator": "golden_init.py (tests/golden_init.h); c5.target = golden_uniform('c5.target', "
                     "C5 NCHW shape, 0, 1)",
        "loss": "sum(c5 * c5.target) / N",
        "bn": "training mode, batch statistics, momentum 0.1, eps 1e-5, unbiased running_var",
        "precision": "computed in float64, stored as F32 (F64 for @norm, loss, f32err; I64 shapes)",
        "sample_rule": "name@sample[k] = flat[floor(k*numel/4096)], k=0..4095, for numel > 4096; "
                       "name@norm = full L2 norm (F64)",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def self_check_generator(model):
    sd = model.state_dict()
    for name in ("conv1.weight", "layer4.1.conv2.weight", "layer3.5.bn2.running_var"):
        t = sd[name].reshape(-1)
        center, half = golden_init.golden_range(name, sd[name].shape)
        for i in (0, 1, t.numel() // 2, t.numel() - 1):
            want = golden_init.golden_value_scalar(name, i, center, half)
            if float(t[i]) != want:
                raise AssertionError(f"generator self-check: {name}[{i}] = {float(t[i])!r} != {want!r}")


def main(argv):
    if len(argv) != 2:
        print("usage: make_dilated_golden.py OUT.safetensors", file=sys.stderr)
        return 2
    path = argv[1]
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    check_architecture(build_model(torch.float64))
    self_check_generator(build_model(torch.float32))
    r64 = run(torch.float64)
    r32 = run(torch.float32)
    tensors = fixture_tensors(r64, r32)
    meta = metadata()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    size = safetensors_py.write(path, tensors, meta)
    back, back_meta = safetensors_py.read(path)
    if back_meta != meta or sorted(back) != sorted(tensors) or any(
            back[k].tobytes() != v.tobytes() for k, v in tensors.items()):
        raise AssertionError(f"{path}: differs after reading back")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    shapes = ", ".join(f"{k} {list(tensors['shape.' + k])}" for k in ("c2", "c3", "c4", "c5"))
    print(f"{path}: {len(tensors)} tensors, {size / 1e3:.1f} kB, loss {r64['loss'].item():.6f}, "
          f"sha256 {digest[:16]}")
    print(f"  {shapes}")
    errs = {k[len('f32err.'):]: float(v) for k, v in tensors.items() if k.startswith("f32err.")}
    worst = max(errs, key=errs.get)
    print(f"  float32 vs float64 (relative L2): c5 {errs['c5']:.2e}, eval.c5 {errs['eval.c5']:.2e}, "
          f"loss {errs['loss']:.2e}, "
          f"max {errs[worst]:.2e} ({worst})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
