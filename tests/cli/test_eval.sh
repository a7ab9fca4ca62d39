#!/usr/bin/env bash
# End-to-end checks of `dsc eval` (METHOD.md §7, docs/eval.md) on tiny fixture folders made
# here (16x16 scenes: a noisy background and coloured squares, 3 classes, 255 pixels):
#  - every protocol (knn, linear, seg, cluster) in one invocation on a random-init ResNet-18
#    small stem: exit 0, JSON written and parsable, every number finite and in range, per-class
#    IoU of the right length, features extracted once per split;
#  - the scenes layout (seg layout with labels/{train,val} imagefolders of hard links inside)
#    found from --data alone, the pooled features of those links taken from the seg extraction
#    and equal to a separate extraction's; a VOC-like set of non-square images resized and center-cropped, with
#    --classes 21 (absent classes are null in the JSON);
#  - a checkpoint from a 2-step `dsc pretrain` on the fixture images: provenance from its
#    metadata; the same backbone exported under torchvision's names gives the same numbers;
#  - errors: missing or invalid weights, architecture and stem mismatches, dataset layout
#    problems, class count mismatches, options out of range — non-zero exit, clear message.
set -u
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3

if ! "$dsc" eval --help > /dev/null 2>&1; then
  echo "skip: $dsc has no eval command (dsc eval --help failed)"
  echo "#summary 0 passed, 0 failed, 1 skipped"
  exit 0
fi

# Fixtures: $tmp/scn (seg layout: 12 train, 6 val JPEG scenes with palette label PNGs, and
# labels/{train,val}/<class>/ hard links to them), $tmp/cls (imagefolder splits of other
# images, 3 classes), $tmp/voc (non-square images of two sizes), $tmp/badcls
# (a val split whose class folders differ from train's).
$py - "$tmp" <<'PY'
import os, sys
import numpy as np
from PIL import Image
t = sys.argv[1]
rng = np.random.default_rng(3)
cols = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]

def scene(k, w, h):
    img = rng.normal(120, 25, (h, w, 3))
    lab = np.zeros((h, w), np.uint8)
    for c in (1 + k % 2, 1 + (k // 2) % 2):
        y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
        img[y:y + 6, x:x + 6] = cols[c] + rng.normal(0, 10, (6, 6, 3))
        lab[y:y + 6, x:x + 6] = c
    lab[0, :2] = 255
    return np.clip(img, 0, 255).astype(np.uint8), lab

def seg_set(root, sizes):
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for split, n in (("train", 12), ("val", 6)):
        ids = []
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            im, lab = scene(i + (0 if split == "train" else 100), w, h)
            idx = "%s_%03d" % (split, i)
            ids.append(idx)
            Image.fromarray(im).save(os.path.join(root, "JPEGImages", idx + ".jpg"), quality=95)
            p = Image.fromarray(lab, "P")
            p.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
            p.save(os.path.join(root, "SegmentationClass", idx + ".png"))
        with open(os.path.join(root, "ImageSets/Segmentation", split + ".txt"), "w") as f:
            f.write("\n".join(ids) + "\n")

def cls_set(root, names, n):
    for c, name in enumerate(names):
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            img = rng.normal(100, 30, (16, 16, 3))
            y, x = rng.integers(0, 8, 2)
            img[y:y + 8, x:x + 8] = cols[c % 3]
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(d, "%d.png" % i))

seg_set(os.path.join(t, "scn"), [(16, 16)])
# labels/<split>/<class>/: hard links to the scenes, class = the first square's colour (as
# `dsc data scenes --labels` links its scenes), so dsc eval takes their pooled features from
# the seg extraction of the same files.
for split in ("train", "val"):
    for idx in open(os.path.join(t, "scn/ImageSets/Segmentation", split + ".txt")).read().split():
        k = int(idx.split("_")[1]) + (0 if split == "train" else 100)
        d = os.path.join(t, "scn/labels", split, ("green", "blue")[k % 2])
        os.makedirs(d, exist_ok=True)
        os.link(os.path.join(t, "scn/JPEGImages", idx + ".jpg"), os.path.join(d, idx + ".jpg"))
cls_set(os.path.join(t, "cls/train"), ("red", "green", "blue"), 6)
cls_set(os.path.join(t, "cls/val"), ("red", "green", "blue"), 3)
seg_set(os.path.join(t, "voc"), [(24, 20), (18, 26)])
cls_set(os.path.join(t, "badcls/train"), ("red", "green", "blue"), 2)
cls_set(os.path.join(t, "badcls/val"), ("red", "green"), 2)
os.makedirs(os.path.join(t, "empty"))
open(os.path.join(t, "not_weights.safetensors"), "w").write("this is not a safetensors file\n")
PY

common="--threads 2 --knn-k 5 --linear-epochs 20 --seg-epochs 5 --quiet"
rand="--weights random --arch resnet18 --stem small --seed 1"

# check_json FILE PROTOCOLS CLASSES [WEIGHT_SOURCE [METHOD]]: the JSON parses, holds every
# protocol asked for with finite numbers in range, IoU arrays of CLASSES entries (null only
# where a class is absent), and the weights' source and method.
check_json() {
  $py - "$@" <<'PY'
import json, math, sys
path, protos, classes = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
d = json.load(open(path))
r = d["results"]
def unit(x, what):
    assert isinstance(x, float) and math.isfinite(x) and 0 <= x <= 1, (what, x)
for p in protos:
    assert p in r, "missing protocol " + p
    assert r[p]["seconds"] >= 0
for p in ("knn", "linear"):
    if p in protos: unit(r[p]["top1"], p)
for p in ("seg", "cluster"):
    if p in protos:
        unit(r[p]["miou"], p); unit(r[p]["pixel_acc"], p)
        assert len(r[p]["iou"]) == classes, (p, r[p]["iou"])
        for v in r[p]["iou"]:
            assert v is None or (0 <= v <= 1), (p, v)
        assert r[p]["valid_classes"] == sum(v is not None for v in r[p]["iou"])
assert set(r) == set(protos), sorted(r)
splits = [f["split"] for f in d["features"]]
assert len(splits) == len(set(splits)), splits  # each split extracted once
for f in d["features"]:
    assert f["images"] > 0 and f["seconds"] >= 0, f
assert d["seconds"] > 0 and d["weights"]["arch"] == "resnet18"
if len(sys.argv) > 4: assert d["weights"]["source"] == sys.argv[4], d["weights"]
if len(sys.argv) > 5: assert d["weights"]["method"] == sys.argv[5], d["weights"]
PY
}

# ---- every protocol, random initialization (the baseline row) ----
# shellcheck disable=SC2086
if "$dsc" eval all $rand --data "$tmp/scn" $common --out "$tmp/all.json" > "$tmp/all.txt" 2>&1 &&
   check_json "$tmp/all.json" knn,linear,seg,cluster 3 random random &&
   $py -c "import json,sys; f={x['split']: x for x in json.load(open(sys.argv[1]))['features']}; assert f['labels train']['shared_with']=='seg train' and f['labels val']['shared_with']=='seg val', f" "$tmp/all.json" &&
   grep -q "^knn  *top1" "$tmp/all.txt" && grep -q "^cluster  *mIoU" "$tmp/all.txt" &&
   grep -q "per-class IoU" "$tmp/all.txt"; then
  ok "eval all (random init): every protocol, table and JSON, numbers in range"
else bad "eval all (random init): $(tail -c 1500 "$tmp/all.txt")"; fi

# Separate invocations (knn alone extracts labels/ itself) give the numbers of the combined one.
# shellcheck disable=SC2086
if "$dsc" eval knn $rand --data "$tmp/scn" $common --out "$tmp/knn.json" > "$tmp/out" 2>&1 &&
   "$dsc" eval seg,cluster $rand --data "$tmp/scn" $common --out "$tmp/sc.json" >> "$tmp/out" 2>&1 &&
   $py - "$tmp" <<'PY'
import json, sys
t = sys.argv[1]
a = json.load(open(t + "/all.json"))["results"]
kj = json.load(open(t + "/knn.json"))
assert "shared_with" not in kj["features"][0], kj["features"]
k = kj["results"]
s = json.load(open(t + "/sc.json"))["results"]
assert set(k) == {"knn"} and set(s) == {"seg", "cluster"}
assert k["knn"]["top1"] == a["knn"]["top1"]
for p in ("seg", "cluster"):
    assert s[p]["miou"] == a[p]["miou"] and s[p]["iou"] == a[p]["iou"], p
PY
then ok "protocols run alone give the numbers of the combined run"
else bad "protocols alone: $(tail -c 1500 "$tmp/out")"; fi

# --train/--val instead of --data; the default --out is ./eval.json.
# shellcheck disable=SC2086
if (cd "$tmp" && "$dsc" eval linear $rand --train cls/train --val cls/val $common > out2 2>&1) &&
   check_json "$tmp/eval.json" linear 3; then ok "--train/--val, default --out ./eval.json"
else bad "--train/--val: $(tail -c 1000 "$tmp/out2")"; fi

# VOC-like: non-square images of two sizes, resized (shorter side) and center-cropped to 16,
# label maps by nearest; 21 classes of which 3 occur (the others null in the JSON).
# shellcheck disable=SC2086
if "$dsc" eval seg,cluster $rand --data "$tmp/voc" --size 16 --classes 21 $common --out "$tmp/voc.json" \
     > "$tmp/out" 2>&1 && check_json "$tmp/voc.json" seg,cluster 21 &&
   $py -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['results']['seg']['iou'][20] is None; assert d['features'][0]['size']==16" "$tmp/voc.json"; then
  ok "non-square seg images resized and cropped, --classes 21"
else bad "voc-like: $(tail -c 1500 "$tmp/out")"; fi

# ---- a checkpoint from a 2-step pretraining on the fixture images ----
if "$dsc" pretrain data.path="$tmp/scn/JPEGImages" model.arch=resnet18 model.stem=small data.size=16 \
     data.batch=4 method.bn_groups=2 method.queue=8 model.dim=16 method.clusters=3 method.prototypes=5 \
     method=dsc-km optim.steps=2 run.threads=2 data.workers=2 run.out="$tmp/run" > "$tmp/out" 2>&1 &&
   [ -f "$tmp/run/checkpoint.safetensors" ]; then ok "2-step pretraining for the checkpoint"
else bad "pretraining: $(tail -c 1500 "$tmp/out")"; fi
ck="$tmp/run/checkpoint.safetensors"
# shellcheck disable=SC2086
if "$dsc" eval all --weights "$ck" --data "$tmp/scn" $common --out "$tmp/ck.json" > "$tmp/out" 2>&1 &&
   check_json "$tmp/ck.json" knn,linear,seg,cluster 3 checkpoint dsc-km &&
   $py -c "import json,sys; m=json.load(open(sys.argv[1]))['weights']['metadata']; assert m['step']=='2', m" "$tmp/ck.json" &&
   grep -q "method dsc-km" "$tmp/out"; then
  ok "eval all on a dsc checkpoint, provenance from its metadata"
else bad "eval checkpoint: $(tail -c 1500 "$tmp/out")"; fi

# The checkpoint's backbone exported under torchvision's names (no prefix): same numbers.
if $py - "$root" "$ck" "$tmp/exported.safetensors" <<'PY'
import sys
sys.path.insert(0, sys.argv[1] + "/tools/reference")
import safetensors_py as st
t, _ = st.read(sys.argv[2])
st.write(sys.argv[3], {k[len("backbone."):]: v for k, v in t.items() if k.startswith("backbone.")})
PY
then
  # shellcheck disable=SC2086
  if "$dsc" eval knn,seg --weights "$tmp/exported.safetensors" --arch resnet18 --stem small --data "$tmp/scn" \
       $common --out "$tmp/ex.json" > "$tmp/out" 2>&1 && check_json "$tmp/ex.json" knn,seg 3 exported &&
     $py - "$tmp" <<'PY'
import json, sys
t = sys.argv[1]
a = json.load(open(t + "/ck.json"))["results"]
b = json.load(open(t + "/ex.json"))["results"]
assert a["knn"]["top1"] == b["knn"]["top1"] and a["seg"]["iou"] == b["seg"]["iou"], (a, b)
PY
  then ok "exported torchvision-named backbone gives the checkpoint's numbers"
  else bad "exported: $(tail -c 1500 "$tmp/out")"; fi
else bad "could not write the exported fixture"; fi

# ---- errors: non-zero exit and a message naming the problem ----
d="--data $tmp/scn --quiet --out $tmp/err.json"
# shellcheck disable=SC2086
{
  expect "missing weights file" 1 "$tmp/nope.safetensors" "$dsc" eval knn --weights "$tmp/nope.safetensors" $d
  expect "invalid weights file" 1 "not_weights.safetensors" "$dsc" eval knn --weights "$tmp/not_weights.safetensors" $d
  expect "no --weights" 2 "needs --weights" "$dsc" eval knn $d
  expect "random without --arch" 1 "need an architecture" "$dsc" eval knn --weights random $d
  expect "arch mismatch" 1 "holds a resnet18 backbone, not the resnet50" "$dsc" eval knn --weights "$ck" --arch resnet50 $d
  expect "stem mismatch" 1 "small stem, not the standard stem" "$dsc" eval knn --weights "$ck" --stem standard $d
  expect "--seed with a file" 2 "--seed initializes random weights" "$dsc" eval knn --weights "$ck" --seed 3 $d
  expect "unknown protocol" 2 "unknown protocol \"detect\"" "$dsc" eval knn,detect $rand $d
  expect "no protocol" 2 "which protocol" "$dsc" eval $rand $d
  expect "unknown option" 2 "unknown option --bogus" "$dsc" eval knn $rand $d --bogus 1
  expect "bad arch name" 2 "--arch=vgg16" "$dsc" eval knn --weights random --arch vgg16 $d
  expect "size out of range" 2 "--size=5" "$dsc" eval knn $rand $d --size 5
  expect "batch out of range" 2 "--batch=0" "$dsc" eval knn $rand $d --batch 0
  expect "tau out of range" 2 "--knn-tau=-1" "$dsc" eval knn $rand $d --knn-tau -1
  expect "lr out of range" 2 "--seg-lr=0" "$dsc" eval seg $rand $d --seg-lr 0
  expect "classes out of range" 2 "--classes=300" "$dsc" eval seg $rand $d --classes 300
  expect "knn-k above the train set" 1 "--knn-k=50 is more than the 12 train images" "$dsc" eval knn $rand $d --knn-k 50
  expect "seg data not in the seg layout" 1 "not in the seg layout" "$dsc" eval seg $rand --data "$tmp/empty" --quiet
  expect "knn data without splits" 1 "knn/linear need imagefolder splits" "$dsc" eval knn $rand --data "$tmp/voc" --quiet
  expect "--train without --val" 1 "--train and --val go together" "$dsc" eval knn $rand --train "$tmp/badcls/train" --quiet
  expect "class folders differ" 1 "class count mismatch" "$dsc" eval knn $rand --train "$tmp/badcls/train" --val "$tmp/badcls/val" --quiet
  expect "--classes below the labels" 1 "class count mismatch" "$dsc" eval seg $rand $d --classes 2
  expect "--classes vs class folders" 1 "class count mismatch: --classes=5" "$dsc" eval knn $rand $d --classes 5
}
[ -f "$tmp/err.json" ] && bad "an error run wrote its JSON" || ok "no JSON written by failing runs"

finish
