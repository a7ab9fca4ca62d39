"""make_fcn_golden.py OUT: writes the golden fixture of the FCN segmentation head of `dsc finetune seg`.

    /usr/bin/python3 tools/reference/make_fcn_golden.py tests/golden/fcn_head.safetensors

The head is METHOD.md §7's (mmsegmentation's FCNHead with num_convs=2, concat_input=False, no
auxiliary head): two 3x3 conv (padding 1, no bias) - BN - ReLU of `channels` channels, Dropout2d
(p = 0.1), a 1x1 classifier with bias; the logits are bilinearly upsampled (align_corners=False) to the
label map and the loss is cross-entropy with ignore index 255, the mean over the non-ignored pixels.
Here in 32 channels, channels 16, classes 5, on a [2,32,5,6] input and [2,19,23] labels (a non-integer
upsampling factor on both axes).

LAYOUT: every activation (input, logits, up, grad.input, eval.logits) is stored NHWC, [N,H,W,C],
because dsc is NHWC; the weights are stored in PyTorch's layout, conv weights OIHW. Everything is F32
except `labels` (U8).

Dropout is made deterministic by a stored keep mask: after the second conv-BN-ReLU the head computes
x[n,c,h,w] * mask[n,c] / (1 - 0.1) (PyTorch's Dropout2d with that mask), then conv_seg.

Computed in float64 from the stored float32 values (autograd), BN in training mode: batch statistics
over (N,H,W), biased variance to normalize, eps 1e-5; running statistics r = 0.9 r + 0.1 s with the
unbiased batch variance (PyTorch's update), starting from 0 / 1.

Stored (names of the parameters as mmsegmentation's state_dict has them):
  input                                  [2,5,6,32]  non-negative (a post-ReLU C5), NHWC
  labels                                 [2,19,23]   U8, classes 0..4 and ~15% 255 (ignored)
  mask                                   [2,16]      0/1, the Dropout2d keep mask
  decode_head.convs.0.conv.weight        [16,32,3,3] OIHW, no bias
  decode_head.convs.0.bn.weight, .bias, .running_mean, .running_var   [16] (running stats 0 / 1)
  decode_head.convs.1.conv.weight        [16,16,3,3]
  decode_head.convs.1.bn.*               [16]
  decode_head.conv_seg.weight            [5,16,1,1]
  decode_head.conv_seg.bias              [5]
  logits                                 [2,5,6,5]   NHWC [N,h,w,K], training-mode forward
  up                                     [2,19,23,5] NHWC, F.interpolate(logits, (19,23), bilinear,
                                                     align_corners=False)
  loss                                   0-dim       F.cross_entropy(up, labels, ignore_index=255)
  grad.input                             [2,5,6,32]  NHWC
  grad.<p>                               gradient of every parameter <p> (conv weights, BN weight/bias,
                                         conv_seg weight/bias), same shape as <p>
  after.decode_head.convs.{0,1}.bn.running_mean, .running_var    [16] after the training forward
  eval.logits                            [2,5,6,5]   NHWC: evaluation-mode forward of the same input
                                                     with the updated running statistics, no dropout
  f32err.<key>                           0-dim: relative L2 distance of a float32 PyTorch run from
                                         the float64 values, for every computed key (a yardstick for
                                         the C test's tolerances; all are ~1e-7..1e-6 here)

The random draw is redrawn (next seed) until every ReLU input and every BN-normalized value is more
than 1e-4 (relative to its channel's scale) from 0, so float32 code cannot flip a ReLU. The script
checks its head against nn.Conv2d/nn.BatchNorm2d/F.dropout2d, reads the file back, and runs single
threaded: two runs give identical bytes.
"""

import hashlib
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py  # noqa: E402

N, CIN, H, W = 2, 32, 5, 6
CHANNELS, CLASSES = 16, 5
LH, LW = 19, 23
DROPOUT = 0.1
EPS, MOMENTUM = 1e-5, 0.1
IGNORE = 255
IGNORE_FRACTION = 0.15
TIE_MARGIN = 1e-4
FIRST_SEED = 9  # the draw starts here and moves on while a ReLU is near a tie

CONVS = ["decode_head.convs.0", "decode_head.convs.1"]
PARAM_NAMES = []
for _c in CONVS:
    PARAM_NAMES += [_c + ".conv.weight", _c + ".bn.weight", _c + ".bn.bias"]
PARAM_NAMES += ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias"]


def draw(seed):
    """The float32 inputs, labels, mask and parameters of one draw (numpy arrays)."""
    g = torch.Generator().manual_seed(seed)
    t = {}
    t["input"] = torch.relu(torch.randn(N, CIN, H, W, generator=g))  # NCHW here, NHWC in the file
    labels = torch.randint(0, CLASSES, (N, LH, LW), generator=g)
    ignore = torch.rand(N, LH, LW, generator=g) < IGNORE_FRACTION
    t["labels"] = torch.where(ignore, torch.full_like(labels, IGNORE), labels).to(torch.uint8)
    mask = (torch.rand(N, CHANNELS, generator=g) >= DROPOUT).float()
    mask[0, 3] = 0.0  # at least one dropped channel in each image, whatever the draw
    mask[1, 11] = 0.0
    t["mask"] = mask
    cin = CIN
    for c in CONVS:
        std = (2.0 / (CHANNELS * 9)) ** 0.5  # kaiming normal, fan_out, as mmseg's ConvModule
        t[c + ".conv.weight"] = torch.randn(CHANNELS, cin, 3, 3, generator=g) * std
        t[c + ".bn.weight"] = 1.0 + 0.25 * (2 * torch.rand(CHANNELS, generator=g) - 1)
        t[c + ".bn.bias"] = 0.1 * (2 * torch.rand(CHANNELS, generator=g) - 1)
        t[c + ".bn.running_mean"] = torch.zeros(CHANNELS)
        t[c + ".bn.running_var"] = torch.ones(CHANNELS)
        cin = CHANNELS
    t["decode_head.conv_seg.weight"] = torch.randn(CLASSES, CHANNELS, 1, 1, generator=g) * 0.2
    t["decode_head.conv_seg.bias"] = 0.1 * (2 * torch.rand(CLASSES, generator=g) - 1)
    return {k: v.float().contiguous() if k != "labels" else v for k, v in t.items()}


def batch_norm_train(x, gamma, beta, rm, rv):
    """Training-mode BN written out: returns (y, normalized x, new running mean, new running var)."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(dim=(0, 2, 3))
    var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))  # biased, to normalize
    xhat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + EPS)
    y = xhat * gamma[None, :, None, None] + beta[None, :, None, None]
    new_rm = (1 - MOMENTUM) * rm + MOMENTUM * mean.detach()
    new_rv = (1 - MOMENTUM) * rv + MOMENTUM * var.detach() * m / (m - 1)  # unbiased
    return y, xhat, new_rm, new_rv


def forward(t, dtype):
    """Training-mode forward and backward in `dtype`; returns the computed tensors (NCHW, torch) and
    the smallest |ReLU input| relative to its channel's scale."""
    p = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in t.items() if k != "labels"}
    labels = torch.from_numpy(np.asarray(t["labels"]).astype(np.int64))
    x = p["input"].clone().requires_grad_(True)
    params = {k: p[k].clone().requires_grad_(True) for k in PARAM_NAMES}
    out = {}
    margin = float("inf")
    h = x
    for c in CONVS:
        h = F.conv2d(h, params[c + ".conv.weight"], padding=1)
        h, _, rm, rv = batch_norm_train(h, params[c + ".bn.weight"], params[c + ".bn.bias"],
                                        p[c + ".bn.running_mean"], p[c + ".bn.running_var"])
        scale = h.detach().abs().amax(dim=(0, 2, 3))
        margin = min(margin, float((h.detach().abs() / scale[None, :, None, None]).min()))
        h = torch.relu(h)
        out["after." + c + ".bn.running_mean"] = rm
        out["after." + c + ".bn.running_var"] = rv
    h = h * p["mask"][:, :, None, None] / (1 - DROPOUT)
    logits = F.conv2d(h, params["decode_head.conv_seg.weight"], params["decode_head.conv_seg.bias"])
    up = F.interpolate(logits, size=(LH, LW), mode="bilinear", align_corners=False)
    loss = F.cross_entropy(up, labels, ignore_index=IGNORE)
    loss.backward()
    out["logits"] = logits.detach()
    out["up"] = up.detach()
    out["loss"] = loss.detach()
    out["grad.input"] = x.grad
    for k in PARAM_NAMES:
        out["grad." + k] = params[k].grad
    # evaluation mode: the updated running statistics, no dropout
    with torch.no_grad():
        h = p["input"]
        for c in CONVS:
            h = F.conv2d(h, p[c + ".conv.weight"], padding=1)
            h = F.batch_norm(h, out["after." + c + ".bn.running_mean"], out["after." + c + ".bn.running_var"],
                             p[c + ".bn.weight"], p[c + ".bn.bias"], training=False, eps=EPS)
            h = torch.relu(h)
        out["eval.logits"] = F.conv2d(h, p["decode_head.conv_seg.weight"], p["decode_head.conv_seg.bias"])
    return out, margin


class ConvModule(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(cout, eps=EPS, momentum=MOMENTUM)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class FCNHead(torch.nn.Module):
    """The same head with torch.nn modules (mmsegmentation's module names), for the self-check."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.Sequential(ConvModule(CIN, CHANNELS), ConvModule(CHANNELS, CHANNELS))
        self.conv_seg = torch.nn.Conv2d(CHANNELS, CLASSES, 1)

    def forward(self, x, mask=None):
        h = self.convs(x)
        if mask is not None:
            h = h * mask[:, :, None, None] / (1 - DROPOUT)
        return self.conv_seg(h)


def check_with_modules(t, ref):
    """nn.Module head (float64) against the written-out forward; Dropout2d's scaling checked too."""
    model = torch.nn.Module()
    model.decode_head = FCNHead()
    model = model.double().train()
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                continue
            v.copy_(torch.from_numpy(np.asarray(t[k], dtype=np.float64)))
    names = sorted(k for k in sd if not k.endswith("num_batches_tracked"))
    expected = sorted(PARAM_NAMES + [c + ".bn." + s for c in CONVS for s in ("running_mean", "running_var")])
    assert names == expected, (names, expected)
    x = torch.from_numpy(np.asarray(t["input"], dtype=np.float64)).requires_grad_(True)
    mask = torch.from_numpy(np.asarray(t["mask"], dtype=np.float64))
    logits = model.decode_head(x, mask)
    up = F.interpolate(logits, size=(LH, LW), mode="bilinear", align_corners=False)
    loss = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)(up, torch.from_numpy(np.asarray(t["labels"]).astype(np.int64)))
    loss.backward()
    close = lambda a, b: float((a - b).norm() / b.norm()) < 1e-12  # noqa: E731
    assert close(logits.detach(), ref["logits"]) and close(loss.detach(), ref["loss"])
    assert close(x.grad, ref["grad.input"])
    params = dict(model.named_parameters())
    for k in PARAM_NAMES:
        assert close(params[k].grad, ref["grad." + k]), k
    for c in CONVS:
        bn = dict(model.named_modules())[c + ".bn"]
        assert close(bn.running_mean, ref["after." + c + ".bn.running_mean"])
        assert close(bn.running_var, ref["after." + c + ".bn.running_var"])
    model.eval()
    with torch.no_grad():
        assert close(model.decode_head(x), ref["eval.logits"])
    # PyTorch's Dropout2d is x * keep[n,c] / (1-p): the mask formula above is that module's
    torch.manual_seed(0)
    ones = torch.ones(4, 64, 1, 1, dtype=torch.float64)
    d = F.dropout2d(ones, p=DROPOUT, training=True)
    vals = set(float(v) for v in d.flatten())
    assert vals <= {0.0, 1.0 / (1 - DROPOUT)}, vals


def nhwc(a):
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_fcn_golden.py OUT.safetensors")
    out_path = sys.argv[1]
    torch.set_num_threads(1)
    seed = FIRST_SEED
    while True:
        t = draw(seed)
        ref, margin = forward(t, torch.float64)
        if margin > TIE_MARGIN:
            break
        print(f"seed {seed}: a ReLU input {margin:.2e} (relative) from 0, redrawing")
        seed += 1
    check_with_modules(t, ref)
    f32, _ = forward(t, torch.float32)
    f32err = {k: float((f32[k].double() - ref[k]).norm() / ref[k].norm()) for k in ref}

    lab = np.asarray(t["labels"])
    assert set(np.unique(lab)) == set(range(CLASSES)) | {IGNORE}, np.unique(lab)
    activations = {"input", "logits", "up", "grad.input", "eval.logits"}
    tensors = {"labels": np.ascontiguousarray(lab, dtype=np.uint8)}
    for k, v in t.items():
        if k != "labels":
            tensors[k] = nhwc(v.numpy()) if k in activations else v.numpy().astype(np.float32)
    for k, v in ref.items():
        a = v.numpy().astype(np.float32)
        tensors[k] = nhwc(a) if k in activations else a
    for k, e in f32err.items():
        tensors["f32err." + k] = np.array(e, dtype=np.float32)
    for k, v in tensors.items():
        assert v.dtype == (np.uint8 if k == "labels" else np.float32), k
    meta = {
        "head": "FCN (METHOD.md §7): 2 x (3x3 conv no bias, BN, ReLU), Dropout2d keep mask, 1x1 conv_seg with bias",
        "layout": "activations NHWC [N,H,W,C]; conv weights OIHW",
        "in_channels": str(CIN), "channels": str(CHANNELS), "num_classes": str(CLASSES),
        "batch": str(N), "height": str(H), "width": str(W),
        "label_height": str(LH), "label_width": str(LW),
        "dropout": "x * mask[n,c] / (1 - 0.1) before conv_seg",
        "bn": "training mode, batch statistics, eps 1e-5, momentum 0.1, unbiased running var",
        "upsample": "bilinear, align_corners=False",
        "loss": "cross_entropy, ignore_index 255, mean over non-ignored pixels",
        "ignore_index": str(IGNORE),
        "precision": "float64 from the stored float32 values, stored as float32",
        "seed": str(seed),
        "torch": torch.__version__,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    safetensors_py.write(out_path, tensors, meta)
    back, back_meta = safetensors_py.read(out_path)
    assert back_meta == meta and sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and back[k].tobytes() == v.tobytes(), k

    with open(out_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    kept = int(lab.size - (lab == IGNORE).sum())
    print(f"{out_path}: {os.path.getsize(out_path)} bytes, sha256 {digest}")
    print(f"seed {seed}, ReLU margin {margin:.3e}, {kept} of {lab.size} labels kept, "
          f"{int(t['mask'].sum())} of {t['mask'].numel()} channels kept, loss {float(ref['loss']):.9g}")
    print("float32 vs float64 (relative L2): " +
          ", ".join(f"{k} {e:.1e}" for k, e in sorted(f32err.items(), key=lambda kv: -kv[1])[:6]) + ", ...")


if __name__ == "__main__":
    main()
