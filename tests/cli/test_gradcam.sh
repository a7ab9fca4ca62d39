#!/usr/bin/env bash
# End-to-end checks of `dsc viz gradcam` (docs/viz.md, "Grad-CAM") and `dsc eval --save-probe`
# (docs/eval.md): two tiny checkpoints (resnet18, small stem, one `dsc selfcheck` step each with
# different seeds) side by side on 32 px images, the grid size as documented (decoded with
# /usr/bin/python3 + PIL), the image column holding the input, identical bytes for identical inputs,
# a pixel-target column recomputed in numpy/PyTorch from `dsc embed`'s C5 (cam, bilinear upsampling,
# jet, blend), the probe target with a probe saved by `dsc eval linear --save-probe` on a tiny
# imagefolder (whose raw-space logits on `dsc embed`'s pooled features reproduce the eval's val top-1,
# which two mislabelled-looking val images keep below 1),
# and clear errors for bad options.
set -u
. "$(dirname "$0")/lib.sh"
py=/usr/bin/python3
root=$(cd "$(dirname "$0")/../.." && pwd)

# images: 32x32 PNGs, a coloured square on a plain background; an imagefolder with 2 classes
$py - "$tmp" <<'PY'
import os, sys
from PIL import Image
t = sys.argv[1]
def scene(path, i, cls):
    bg = (40 + 25 * i, 90 + 10 * cls, 140) if cls == 0 else (150, 60 + 15 * i, 40 + 30 * cls)
    img = Image.new("RGB", (32, 32), bg)
    x, y = 3 + (5 * i) % 14, 4 + (3 * i) % 12
    for yy in range(y, y + 12):
        for xx in range(x, x + 12):
            img.putpixel((xx, yy), (230, 40, 40) if cls == 0 else (30, 60, 230))
    img.save(path)
os.makedirs(os.path.join(t, "img"))
for i in range(3):
    scene(os.path.join(t, "img", "im%d.png" % i), i, i % 2)
for split, n in [("train", 8), ("val", 4)]:
    for cls, name in enumerate(["circle", "square"]):
        d = os.path.join(t, "cls", split, name)
        os.makedirs(d)
        for i in range(n):
            # two val "square" images look like circles, so the val top-1 is not trivially 1
            style = 0 if split == "val" and cls == 1 and i < 2 else cls
            scene(os.path.join(d, "%s_%d.png" % (split, i)), i + 3 * cls, style)
PY

for s in 0 1; do
  if ! "$dsc" selfcheck --arch resnet18 --stem small --size 32 --batch 2 --steps 1 --seed $s --threads 2 \
       --save "$tmp/ck$s.safetensors" > "$tmp/out" 2>&1; then
    bad "selfcheck checkpoint $s: $(tail -c 600 "$tmp/out")"
  fi
done

# size_is NAME FILE W H: FILE is a PNG of W x H pixels
size_is() {
  local got
  got=$($py -c 'import sys; from PIL import Image; im = Image.open(sys.argv[1]); print("%dx%d %s" % (im.size[0], im.size[1], im.mode))' "$2" 2>&1)
  if [ "$got" = "$3x$4 RGB" ]; then ok "$1"; else bad "$1 (got $got, want $3x$4 RGB)"; fi
}

# pixel target (the default, the centre): tiles of 128 px (cell 128 / 32 = 4x), columns image + 2
# checkpoints: width 4 + 3 * 132 = 400, height 28 + 3 * 132 = 424
ck="$tmp/ck0.safetensors,$tmp/ck1.safetensors"
expect gradcam_pixel 0 "3 image(s) x 2 weights at 32x32" "$dsc" viz gradcam --weights "$ck" --names "MoCo-v2,DenseCL" \
  --input "$tmp/img" --out "$tmp/g.png" --threads 2
size_is gradcam_pixel_size "$tmp/g.png" 400 424
expect gradcam_repeated_weights 0 "2 image(s) x 2 weights" "$dsc" viz gradcam --weights "$tmp/ck0.safetensors" \
  --weights "$tmp/ck1.safetensors" --input "$tmp/img" --max-images 2 --pixel 5,30 --out "$tmp/g2.png" --threads 2
size_is gradcam_repeated_size "$tmp/g2.png" 400 292
expect gradcam_one_image 0 "1 image(s) x 1 weights" "$dsc" viz gradcam --weights "$tmp/ck0.safetensors" \
  --input "$tmp/img/im1.png" --pixel 20,9 --cell 64 --out "$tmp/g3.png" --threads 2
size_is gradcam_one_image_size "$tmp/g3.png" 140 96
"$dsc" viz gradcam --weights "$ck" --names "MoCo-v2,DenseCL" --input "$tmp/img" --out "$tmp/gb.png" --threads 2 > /dev/null 2>&1
if cmp -s "$tmp/g.png" "$tmp/gb.png"; then ok gradcam_deterministic; else bad gradcam_deterministic; fi

# The image column is the input magnified 4x (outside the cross); a Grad-CAM column is the cam of
# dsc embed's C5 recomputed here (PyTorch autograd for alpha, F.interpolate, matplotlib's jet
# anchors, (image + jet + 1) // 2), compared away from the cross: at most 2 levels apart (float
# rounding can move the cam across a jet step), and the two checkpoints' columns differ.
"$dsc" embed --weights "$tmp/ck1.safetensors" --input "$tmp/img/im1.png" --layer c5 --size 32 --resize 32 \
  --threads 2 --out "$tmp/e.safetensors" > /dev/null 2>&1
check=$($py - "$tmp" <<'PY'
import sys, json, struct
import numpy as np, torch, torch.nn.functional as F
from PIL import Image
t = sys.argv[1]
blob = open(t + "/e.safetensors", "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
hdr = json.loads(blob[8:8 + n])
info = hdr["c5"]
a, b = info["data_offsets"]
c5 = np.frombuffer(blob[8 + n + a:8 + n + b], dtype=np.float32).reshape(info["shape"])[0]  # C, h5, w5
C, h5, w5 = c5.shape
A = torch.from_numpy(c5.reshape(C, -1).T.astype(np.float64)).requires_grad_(True)
p0 = (16 * h5 // 32) * w5 + 16 * w5 // 32
nrm = A.norm(dim=1).clamp_min(1e-12)
y = ((A @ A[p0]) / (nrm * nrm[p0])).mean()
(g,) = torch.autograd.grad(y, A)
cam = torch.relu(A.detach() @ g.mean(0))
cam = cam / cam.max()
up = F.interpolate(cam.reshape(1, 1, h5, w5), size=(32, 32), mode="bilinear", align_corners=False)[0, 0].numpy()
jet = {"r": [(0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)],
       "g": [(0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)],
       "b": [(0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)]}
def col(v):
    return [int(np.floor(255 * np.interp(v, [p[0] for p in jet[k]], [p[1] for p in jet[k]]) + 0.5)) for k in "rgb"]
img = np.asarray(Image.open(t + "/img/im1.png").convert("RGB")).astype(int)
g = np.asarray(Image.open(t + "/g.png").convert("RGB")).astype(int)
worst, image_bad = 0, 0
for yy in range(32):
    for xx in range(32):
        if abs(xx - 16) <= 2 or abs(yy - 16) <= 2:
            continue  # the cross (arms of 6 tile pixels = 1.5 image pixels, 3 px wide)
        Y, X = 28 + 132 + 4 * yy + 1, 4 + 4 * xx + 1  # row 1 (im1), inside the 4x4 block
        image_bad += int(any(g[Y, X] != img[yy, xx]))
        want = [(int(img[yy, xx, k]) + j + 1) // 2 for k, j in enumerate(col(float(up[yy, xx])))]
        worst = max(worst, max(abs(int(g[Y, 4 + 2 * 132 + 4 * xx + 1, k]) - want[k]) for k in range(3)))
cols_differ = int((g[28:, 136:264] != g[28:, 268:396]).any())
print(image_bad, worst, cols_differ)
PY
)
set -- $check
if [ "${1:-x}" = 0 ]; then ok gradcam_image_column; else bad "gradcam_image_column ($check)"; fi
if [ -n "${2:-}" ] && [ "$2" -le 2 ]; then ok "gradcam_column_matches_pytorch (max difference $2 levels)"
else bad "gradcam_column_matches_pytorch ($check)"; fi
if [ "${3:-x}" = 1 ]; then ok gradcam_checkpoints_differ; else bad "gradcam_checkpoints_differ ($check)"; fi

# probe target: dsc eval linear --save-probe on the imagefolder, then gradcam by class name and index
if "$dsc" eval linear --weights "$tmp/ck0.safetensors" --data "$tmp/cls" --threads 2 --linear-epochs 20 --quiet \
     --out "$tmp/ev.json" --save-probe "$tmp/probe.safetensors" > "$tmp/out" 2>&1 && [ -f "$tmp/probe.safetensors" ]
then ok eval_save_probe; else bad "eval_save_probe: $(tail -c 800 "$tmp/out")"; fi
expect probe_info 0 'class_names' "$dsc" info "$tmp/probe.safetensors"
# the saved probe on dsc embed's pooled features (same 32 px images, used as they are) gives the
# eval's val top-1
"$dsc" embed --weights "$tmp/ck0.safetensors" --input "$tmp/cls/val/circle" --layer pool --size 32 --resize 32 \
  --threads 2 --out "$tmp/pv0.safetensors" > /dev/null 2>&1
"$dsc" embed --weights "$tmp/ck0.safetensors" --input "$tmp/cls/val/square" --layer pool --size 32 --resize 32 \
  --threads 2 --out "$tmp/pv1.safetensors" > /dev/null 2>&1
check=$($py - "$tmp" <<'PY'
import sys, json, struct
import numpy as np
t = sys.argv[1]
def read(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    hdr = json.loads(blob[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(blob[8 + n + a:8 + n + b], dtype=np.float32).reshape(v["shape"])
    return out, hdr.get("__metadata__", {})
probe, meta = read(t + "/probe.safetensors")
W, b = probe["weight"].astype(np.float64), probe["bias"].astype(np.float64)
correct = total = 0
for cls in (0, 1):
    x = read(t + "/pv%d.safetensors" % cls)[0]["pool"].astype(np.float64)
    pred = (x @ W.T + b).argmax(1)
    correct += int((pred == cls).sum())
    total += len(pred)
ev = json.load(open(t + "/ev.json"))["results"]["linear"]["top1"]
names = json.loads(meta["class_names"])
print("%d/%d %s %s %s" % (correct, total, repr(correct / total == ev), ",".join(names), W.shape[1]))
PY
)
case "$check" in
  *" True circle,square 512") ok "saved probe reproduces the eval's val top-1 ($check)" ;;
  *) bad "saved probe vs eval: $check" ;;
esac
expect gradcam_probe_name 0 "2 image(s) x 2 weights" "$dsc" viz gradcam --weights "$ck" --input "$tmp/img" --max-images 2 \
  --target probe --probe "$tmp/probe.safetensors" --class square --out "$tmp/p.png" --threads 2
size_is gradcam_probe_size "$tmp/p.png" 400 292
expect gradcam_probe_index 0 "1 image(s) x 1 weights" "$dsc" viz gradcam --weights "$tmp/ck0.safetensors" --input "$tmp/img" \
  --max-images 1 --target probe --probe "$tmp/probe.safetensors" --class 0 --out "$tmp/p1.png" --threads 2
expect gradcam_probe_per_weights 0 "1 image(s) x 2 weights" "$dsc" viz gradcam --weights "$ck" --input "$tmp/img" \
  --max-images 1 --target probe --probe "$tmp/probe.safetensors,$tmp/probe.safetensors" --class circle --out "$tmp/p2.png" --threads 2

# errors
g="$dsc viz gradcam --threads 2 --input $tmp/img"
expect err_class_range 1 "--class 2: not a class of the probe (2 classes: index 0..1 or one of circle, square)" \
  $g --weights "$tmp/ck0.safetensors" --target probe --probe "$tmp/probe.safetensors" --class 2 --out "$tmp/x.png"
expect err_class_name 1 "--class dog" \
  $g --weights "$tmp/ck0.safetensors" --target probe --probe "$tmp/probe.safetensors" --class dog --out "$tmp/x.png"
$py - "$tmp" "$root" <<'PY'
import sys, os
sys.path.insert(0, os.path.join(sys.argv[2], "tools/reference"))
import numpy as np, safetensors_py
safetensors_py.write(sys.argv[1] + "/probe64.safetensors", {"weight": np.zeros((2, 64), np.float32),
                     "bias": np.zeros(2, np.float32)}, {"class_names": "a,b"})
PY
expect err_probe_channels 1 "has C = 64 input channels, but --weights $tmp/ck0.safetensors (resnet18) has 512 C5 channels" \
  $g --weights "$tmp/ck0.safetensors" --target probe --probe "$tmp/probe64.safetensors" --class a --out "$tmp/x.png"
expect err_probe_missing 1 "--probe $tmp/none.safetensors" \
  $g --weights "$tmp/ck0.safetensors" --target probe --probe "$tmp/none.safetensors" --class a --out "$tmp/x.png"
expect err_probe_not_probe 1 "not a linear probe" \
  $g --weights "$tmp/ck0.safetensors" --target probe --probe "$tmp/ck0.safetensors" --class 0 --out "$tmp/x.png"
expect err_pixel_outside 1 "--pixel 32,3 is outside the 32x32 input image" \
  $g --weights "$tmp/ck0.safetensors" --pixel 32,3 --out "$tmp/x.png"
expect err_pixel_negative 1 "--pixel -1,3 is outside" $g --weights "$tmp/ck0.safetensors" --pixel -1,3 --out "$tmp/x.png"
expect err_pixel_syntax 2 "--pixel=3: expected X,Y" $g --weights "$tmp/ck0.safetensors" --pixel 3 --out "$tmp/x.png"
expect err_target 2 "--target must be pixel or probe" $g --weights "$tmp/ck0.safetensors" --target logits --out "$tmp/x.png"
expect err_probe_no_file 2 "--target probe needs --probe FILE" $g --weights "$tmp/ck0.safetensors" --target probe --class 0 --out "$tmp/x.png"
expect err_probe_no_class 2 "--target probe needs --class" \
  $g --weights "$tmp/ck0.safetensors" --target probe --probe "$tmp/probe.safetensors" --out "$tmp/x.png"
expect err_pixel_with_probe 2 "--pixel applies to --target pixel only" \
  $g --weights "$tmp/ck0.safetensors" --target probe --probe "$tmp/probe.safetensors" --class 0 --pixel 1,1 --out "$tmp/x.png"
expect err_probe_count 2 "one per weights file" \
  $g --weights "$ck" --target probe --probe "$tmp/probe.safetensors,$tmp/probe.safetensors,$tmp/probe.safetensors" --class 0 --out "$tmp/x.png"
expect err_names_count 2 "--names gives 1 name(s) for 2 weights file(s)" $g --weights "$ck" --names A --out "$tmp/x.png"
expect err_weights_missing 1 "--weights $tmp/none.safetensors" $g --weights "$tmp/none.safetensors" --out "$tmp/x.png"
expect err_no_weights 2 "gradcam needs --weights" $g --out "$tmp/x.png"
expect err_no_out 2 "gradcam needs --out" $g --weights "$tmp/ck0.safetensors"
expect err_input_missing 1 "--input $tmp/nowhere: no such file or directory" \
  "$dsc" viz gradcam --weights "$tmp/ck0.safetensors" --input "$tmp/nowhere" --out "$tmp/x.png"
expect err_input_empty 1 "no .jpg, .jpeg or .png files" \
  "$dsc" viz gradcam --weights "$tmp/ck0.safetensors" --input "$tmp/cls" --out "$tmp/x.png"
if [ ! -e "$tmp/x.png" ]; then ok gradcam_error_writes_nothing; else bad gradcam_error_writes_nothing; fi
expect eval_save_probe_needs_linear 2 "--save-probe $tmp/s.safetensors saves the linear probe" \
  "$dsc" eval knn --weights "$tmp/ck0.safetensors" --data "$tmp/cls" --save-probe "$tmp/s.safetensors"
expect gradcam_help 0 "usage: dsc viz gradcam" "$dsc" viz gradcam --help
expect viz_help_lists_gradcam 0 "gradcam" "$dsc" viz --help
finish
