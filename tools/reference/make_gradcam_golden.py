"""make_gradcam_golden.py OUT.safetensors: the Grad-CAM fixture of `dsc viz gradcam` (tests/test_gradcam.c).

    /usr/bin/python3 tools/reference/make_gradcam_golden.py tests/golden/gradcam.safetensors

The network is the golden resnet18 with the small stem (conv1 3x3 stride 1, no max-pool) of make_golden.py,
every parameter and BN buffer from golden_init.py (so nothing of it is stored; tests/golden_init.h
regenerates it), in EVALUATION mode (BN with the generated running statistics, eps 1e-5). The input is one
non-square image [1, 3, 24, 40] (H = 24, W = 40, so C5 is 3 x 5 and a transposed x/y shows), drawn with
golden_uniform("gradcam.input", shape, 0, 1). C5 = layer4's output, computed in float64 from the float32
parameters and input, then rounded to float32 ("c5"): every Grad-CAM below starts from that float32 C5,
converted to float64, exactly as the C side does (so the C side can match it to double rounding).

Definitions (docs/viz.md, "Grad-CAM"); A = C5 of the image as [P, C], P = h5 * w5 positions (row-major):
  probe   y = weight[K] . mean_p A_p + bias[K]; weight [3, 512] = golden_uniform("gradcam.probe.weight",
          (3, 512), 0, 1/sqrt(512)), bias [3] = golden_uniform("gradcam.probe.bias", (3,), 0, 0.1), K = 0.
  pixel   p0 = the C5 cell of input pixel (x, y) = (floor(x * w5 / W), floor(y * h5 / H)), here
          (29, 10) -> cell (3, 1); y = (1/P) sum_p cos(A_p, A_p0), cos(u, v) = u.v / (max(|u|, 1e-12)
          max(|v|, 1e-12)); the gradient flows through A_p and A_p0.
  cam     alpha_c = (1/P) sum_p dy/dA_pc (torch.autograd.grad of y with respect to A);
          cam_p = ReLU(sum_c alpha_c A_pc); cam /= max(cam) (all zero when the max is 0);
          cam_up = F.interpolate(cam[None, None], (H, W), mode="bilinear", align_corners=False).
Stored (F32 unless noted): input [1,3,24,40] NCHW; c5 [1,512,3,5] NCHW (float32-rounded float64 result);
f32err.c5 (F64: relative L2 distance of a float32 PyTorch forward from the float64 one); probe.weight,
probe.bias, probe.class (I64), pixel (I64 [x, y]), cell (I64 [x, y]); for T in {probe, pixel}:
T.score (F64), T.alpha [512] (F64), T.cam [3,5] (F64, normalized, before upsampling),
T.cam_up [24,40] (F64, upsampled). Runs single-threaded; two runs give identical bytes.
"""

import hashlib
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_init  # noqa: E402
import safetensors_py  # noqa: E402

HEIGHT, WIDTH = 24, 40
PIXEL = (29, 10)  # (x, y) in the input image
PROBE_CLASS = 0
EPS = 1e-12


def build_model(dtype):
    """torchvision resnet18 with the small stem, every tensor from golden_init, eval mode."""
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    del model.fc
    del model.avgpool
    golden_init.fill_golden(model)
    return model.to(dtype).eval()


def c5_of(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def probe_score(a, weight, bias, k):
    """a [P, C] float64 -> y (0-dim)."""
    return weight[k] @ a.mean(dim=0) + bias[k]


def pixel_score(a, p0):
    norms = a.norm(dim=1).clamp_min(EPS)
    cos = (a @ a[p0]) / (norms * norms[p0])
    return cos.mean()


def gradcam(a, y_fn, h5, w5):
    """alpha, cam [h5, w5], cam_up [H, W], y — all float64."""
    a = a.detach().clone().requires_grad_(True)
    y = y_fn(a)
    (g,) = torch.autograd.grad(y, a)
    alpha = g.mean(dim=0)
    cam = torch.relu(a.detach() @ alpha)
    m = cam.max()
    cam = cam / m if m > 0 else torch.zeros_like(cam)
    cam = cam.reshape(h5, w5)
    up = F.interpolate(cam[None, None], size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)[0, 0]
    return y.detach(), alpha, cam, up


def main(argv):
    if len(argv) != 2:
        print("usage: make_gradcam_golden.py OUT.safetensors", file=sys.stderr)
        return 2
    path = argv[1]
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x32 = golden_init.golden_uniform("gradcam.input", (1, 3, HEIGHT, WIDTH), 0.0, 1.0)
    weight = golden_init.golden_uniform("gradcam.probe.weight", (3, 512), 0.0, 1.0 / np.sqrt(512.0))
    bias = golden_init.golden_uniform("gradcam.probe.bias", (3,), 0.0, 0.1)
    with torch.no_grad():
        c5_64 = c5_of(build_model(torch.float64), torch.from_numpy(x32).to(torch.float64))
        c5_32 = c5_of(build_model(torch.float32), torch.from_numpy(x32))
    f32err = (torch.linalg.vector_norm(c5_32.double() - c5_64) / torch.linalg.vector_norm(c5_64)).item()
    c5 = c5_64.numpy().astype(np.float32)  # [1, C, h5, w5]
    _, c, h5, w5 = c5.shape
    a = torch.from_numpy(c5[0].reshape(c, h5 * w5).T.copy()).to(torch.float64)  # [P, C]
    cell = (PIXEL[0] * w5 // WIDTH, PIXEL[1] * h5 // HEIGHT)
    p0 = cell[1] * w5 + cell[0]
    w64, b64 = torch.from_numpy(weight).double(), torch.from_numpy(bias).double()
    out = {
        "input": x32, "c5": c5, "f32err.c5": np.array(f32err, dtype=np.float64),
        "probe.weight": weight, "probe.bias": bias, "probe.class": np.array(PROBE_CLASS, dtype=np.int64),
        "pixel": np.array(PIXEL, dtype=np.int64), "cell": np.array(cell, dtype=np.int64),
    }
    targets = {"probe": lambda t: probe_score(t, w64, b64, PROBE_CLASS), "pixel": lambda t: pixel_score(t, p0)}
    for name, fn in targets.items():
        y, alpha, cam, up = gradcam(a, fn, h5, w5)
        out[name + ".score"] = np.array(y.item(), dtype=np.float64)
        out[name + ".alpha"] = alpha.numpy().astype(np.float64)
        out[name + ".cam"] = cam.numpy().astype(np.float64)
        out[name + ".cam_up"] = up.numpy().astype(np.float64)
        zeros = int((cam == 0).sum())
        print(f"  {name}: y = {y.item():.6f}, cam zeros {zeros}/{h5 * w5}, |alpha| = {alpha.norm().item():.3e}")
    meta = {
        "arch": "resnet18, small stem (conv1 3x3/1, no max-pool), evaluation mode (BN running statistics)",
        "generator": "golden_init.py (tests/golden_init.h); input = golden_uniform('gradcam.input', [1,3,24,40], "
                     "0, 1); probe.weight = golden_uniform('gradcam.probe.weight', [3,512], 0, 1/sqrt(512)); "
                     "probe.bias = golden_uniform('gradcam.probe.bias', [3], 0, 0.1)",
        "definition": "docs/viz.md, Grad-CAM; make_gradcam_golden.py's docstring",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    size = safetensors_py.write(path, out, meta)
    back, back_meta = safetensors_py.read(path)
    if back_meta != meta or sorted(back) != sorted(out) or any(back[k].tobytes() != v.tobytes() for k, v in out.items()):
        raise AssertionError(f"{path}: differs after reading back")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"{path}: {len(out)} tensors, {size / 1e3:.1f} kB, C5 {list(c5.shape)}, cell {cell}, "
          f"float32 C5 rel. L2 from float64 {f32err:.2e}, sha256 {digest[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
