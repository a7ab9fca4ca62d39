#!/usr/bin/env bash
# End-to-end checks of `dsc finetune seg` (docs/finetune.md, METHOD.md §7) on tiny fixtures: a
# `dsc data scenes` dataset (32x32, 11 classes named in classes.txt) and a Cityscapes-layout folder
# made here; a ResNet-18 small stem, crop 32, head width 16, batch 4, 2 threads:
#  - the run folder of a random-init run: checkpoint names (backbone.*, decode_head.*,
#    optim.momentum.*) and metadata, metrics.jsonl (one line per logged step, evaluation lines),
#    options.json, eval.json (mIoU, pixel accuracy, IoU under classes.txt's names), the table;
#  - exact resume: 6 steps straight equal 3 steps (--stop-at 3) then --resume, bitwise (same
#    thread count), with the same eval.json and losses;
#  - SIGINT: the step in flight finishes, a checkpoint is written, exit 130, --resume finishes;
#  - --weights from a `dsc export` of a tiny pretraining run loads (the backbone's parameters are
#    the file's after a step at a negligible learning rate); another depth is refused;
#  - a Cityscapes-layout folder is detected by --format auto (19 classes, label ids -> train ids);
#  - `dsc export` of a fine-tuning checkpoint gives its backbone.*; `dsc bench finetune --json`;
#  - errors: missing or bad options and files give a message naming them and exit 1 or 2.
set -u
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3

if ! "$dsc" finetune seg --help > /dev/null 2>&1; then
  echo "skip: $dsc has no finetune command (dsc finetune seg --help failed)"
  echo "#summary 0 passed, 0 failed, 1 skipped"
  exit 0
fi

# wait_line FILE PID: until FILE has a line or process PID has ended (at most 300 s).
wait_line() {
  for _ in $(seq 1 30000); do
    [ -s "$1" ] && return
    kill -0 "$2" 2>/dev/null || return
    sleep 0.01
  done
}
# meta CKPT KEY: the value of metadata KEY as `dsc info` lists it ("KEY = VALUE").
meta() { "$dsc" info "$1" 2>/dev/null | sed -n "s/^ *$2 = //p" | head -n 1; }

"$dsc" data scenes --out "$tmp/scn" --train 24 --val 6 --size 32 --threads 2 > "$tmp/out" 2>&1 ||
  bad "dsc data scenes: $(tail -c 800 "$tmp/out")"
tiny="--data $tmp/scn --arch resnet18 --stem small --crop 32 --scale 32x32 --channels 16 --batch 4
      --threads 2 --max-val 4 --classes 11"

# ---- the run folder ----
# shellcheck disable=SC2086
"$dsc" finetune seg $tiny --weights random --iters 6 --eval-every 3 --log-every 2 --out "$tmp/a" \
  > "$tmp/a.out" 2> "$tmp/a.err"
rc=$?
d="$tmp/a"
if [ $rc -eq 0 ] && [ -f "$d/checkpoint.safetensors" ] && [ -f "$d/metrics.jsonl" ] && [ -f "$d/options.json" ] &&
   [ -f "$d/eval.json" ]; then
  ok "a random-init run writes checkpoint.safetensors, metrics.jsonl, options.json, eval.json"
else bad "run folder (exit $rc): $(ls "$d" 2>&1) $(tail -c 800 "$tmp/a.err")"; fi
"$dsc" info "$d/checkpoint.safetensors" > "$tmp/info" 2>&1
missing=""
for name in backbone.conv1.weight backbone.layer4.1.bn2.running_var backbone.bn1.num_batches_tracked \
    decode_head.convs.0.conv.weight decode_head.convs.1.bn.running_mean decode_head.conv_seg.weight \
    decode_head.conv_seg.bias optim.momentum.backbone.conv1.weight optim.momentum.decode_head.conv_seg.weight \
    "kind = finetune-seg" "step = 6" "total_steps = 6" "finetune.classes = 11" "finetune.arch = resnet18"; do
  grep -qF -- "$name" "$tmp/info" || missing="$missing $name"
done
if [ -z "$missing" ]; then ok "checkpoint holds backbone.*, decode_head.*, optim.momentum.* and the options"
else bad "checkpoint lacks:$missing"; fi
# Logged steps: the first, every 2nd (1, 3, 5); evaluations after steps 3 and 6 (0-based 2, 5).
if $py - "$d" "$tmp/scn/classes.txt" <<'PY'
import json, math, sys
d, names = sys.argv[1], [l.rstrip("\n") for l in open(sys.argv[2])]
lines = [json.loads(l) for l in open(d + "/metrics.jsonl")]
train = [r for r in lines if not r.get("eval")]
evals = [r for r in lines if r.get("eval")]
assert [r["step"] for r in train] == [0, 1, 3, 5], [r["step"] for r in train]
assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in train), train
assert [r["step"] for r in evals] == [2, 5], evals
e = json.load(open(d + "/eval.json"))
assert e["step"] == 6 and e["classes"] == 11 and e["split"] == "val" and e["mode"] == "whole", e
assert 0 <= e["miou"] <= 1 and 0 <= e["pixel_acc"] <= 1, e
assert list(e["iou"]) == names, (list(e["iou"]), names)
valid = [v for v in e["iou"].values() if v is not None]
assert len(valid) == e["valid_classes"] and abs(sum(valid) / len(valid) - e["miou"]) < 1e-9, e
assert abs(evals[-1]["miou"] - e["miou"]) < 1e-8, (evals, e)
o = json.load(open(d + "/options.json"))
assert o["classes"] == "11" and o["iters"] == "6" and o["format"] == "seg" and o["train-split"] == "train", o
assert o["lr"] == "0.0025" and o["dilated"] == "0", o  # 0.01 x 4 / 16; resnet18 is not dilated
PY
then ok "metrics.jsonl (logged steps and eval lines), eval.json (classes.txt names, nanmean) and options.json"
else bad "metrics / eval.json / options.json: see above"; fi
if grep -q "^step 6: mIoU" "$tmp/a.out" && grep -q "^  ankle boot " "$tmp/a.out" && grep -q "^  background " "$tmp/a.out"
then ok "the per-class table is printed with the class names"
else bad "per-class table: $(head -c 600 "$tmp/a.out")"; fi
# shellcheck disable=SC2086
expect "--classes auto reads DIR/classes.txt (11 scene classes)" 0 "11 classes" \
  "$dsc" finetune seg ${tiny% --classes 11} --weights random --iters 1 --val-split none --out "$tmp/auto_classes"
expect "a finished run resumed has nothing to train" 0 "nothing to train" \
  "$dsc" finetune seg --resume --out "$tmp/a" --threads 2 --quiet

# ---- exact resume: --stop-at 3, then --resume, equals 6 steps straight ----
# shellcheck disable=SC2086
"$dsc" finetune seg $tiny --weights random --iters 6 --eval-every 3 --log-every 2 --out "$tmp/b" --stop-at 3 \
  > "$tmp/b.out" 2> "$tmp/b.err"
rc=$?
if [ $rc -eq 0 ] && grep -q "stopped at step 3" "$tmp/b.err" && [ "$(meta "$tmp/b/checkpoint.safetensors" step)" = 3 ]
then ok "--stop-at 3 stops with a checkpoint at step 3"
else bad "--stop-at (exit $rc): $(tail -c 600 "$tmp/b.err")"; fi
if "$dsc" finetune seg --resume --out "$tmp/b" --threads 2 > "$tmp/b2.out" 2> "$tmp/b2.err" &&
   grep -q "resuming .* at step 3 of 6" "$tmp/b2.err"; then
  if cmp -s "$tmp/a/checkpoint.safetensors" "$tmp/b/checkpoint.safetensors"; then
    ok "3 steps + --resume give a checkpoint bitwise equal to 6 steps straight"
  else bad "the resumed checkpoint differs from the straight run's"; fi
  if cmp -s "$tmp/a/eval.json" "$tmp/b/eval.json" &&
     $py - "$tmp/a/metrics.jsonl" "$tmp/b/metrics.jsonl" <<'PY'
import json, sys
keys = ("step", "epoch", "lr", "loss", "labeled", "eval", "miou", "pixel_acc")
a, b = ([[r.get(k) for k in keys] for r in map(json.loads, open(p))] for p in sys.argv[1:3])
assert a == b, (a, b)
PY
  then ok "the resumed run's eval.json and metrics.jsonl equal the straight run's"
  else bad "eval.json or metrics differ after resume: $(diff "$tmp/a/eval.json" "$tmp/b/eval.json" | head -n 6)"; fi
else bad "resume: $(tail -c 600 "$tmp/b2.err")"; fi

# ---- SIGINT ----
# shellcheck disable=SC2086
"$dsc" finetune seg $tiny --weights random --iters 16 --eval-every 0 --log-every 1 --out "$tmp/int" \
  > "$tmp/int.out" 2> "$tmp/int.err" &
pid=$!
wait_line "$tmp/int/metrics.jsonl" $pid
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
step=$(meta "$tmp/int/checkpoint.safetensors" step)
if [ $rc -eq 130 ] && grep -q "interrupted: saved" "$tmp/int.err" && [ -n "$step" ] && [ "$step" -lt 16 ]; then
  ok "SIGINT: exit 130 with a checkpoint at step $step"
elif [ $rc -eq 0 ] && [ "$step" = 16 ]; then
  ok "SIGINT: note: the run finished (exit 0) before the signal reached it"
else bad "SIGINT (exit $rc, step '$step'): $(tail -c 600 "$tmp/int.err")"; fi
if "$dsc" finetune seg --resume --out "$tmp/int" --threads 2 --quiet > "$tmp/int2.out" 2>&1 &&
   [ "$(meta "$tmp/int/checkpoint.safetensors" step)" = 16 ] && grep -q '"step": 16' "$tmp/int/eval.json" &&
   [ "$(grep -vc '"eval"' "$tmp/int/metrics.jsonl")" -eq 16 ]; then
  ok "--resume after SIGINT finishes the run (16 steps, one metrics line each, eval.json)"
else bad "resume after SIGINT: $(tail -c 600 "$tmp/int2.out")"; fi

# ---- weights from a dsc export of a tiny pretraining run ----
if "$dsc" pretrain data.path="$tmp/scn/JPEGImages" model.arch=resnet18 model.stem=small data.size=16 \
     data.batch=4 method.bn_groups=2 method.queue=8 model.dim=16 method.clusters=3 method=dsc-km \
     optim.steps=1 run.threads=2 data.workers=2 run.out="$tmp/pre" > "$tmp/out" 2>&1 &&
   "$dsc" export --ckpt "$tmp/pre/checkpoint.safetensors" --format torchvision --out "$tmp/pre.safetensors" \
     > "$tmp/out" 2>&1; then
  # A step at lr 1e-30 leaves every parameter as loaded (the BN running statistics move).
  # shellcheck disable=SC2086
  if "$dsc" finetune seg $tiny --weights "$tmp/pre.safetensors" --arch auto --stem auto --iters 1 --lr 1e-30 \
       --min-lr 0 --val-split none --out "$tmp/w" > "$tmp/out" 2>&1 &&
     $py - "$tmp/pre.safetensors" "$tmp/w/checkpoint.safetensors" "$root" <<'PY'
import sys
import numpy as np
sys.path.insert(0, sys.argv[3] + "/tools/reference")
import safetensors_py
src, _ = safetensors_py.read(sys.argv[1])
ft, _ = safetensors_py.read(sys.argv[2])
params = [k for k in src if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
assert len(params) > 40, len(params)
for k in params:
    assert np.array_equal(src[k], ft["backbone." + k]), k
PY
  then ok "--weights loads a dsc export (arch and stem detected, every backbone parameter equal)"
  else bad "--weights from an export: $(tail -c 800 "$tmp/out")"; fi
  # shellcheck disable=SC2086
  expect "a backbone of another depth is refused naming both" 1 "holds a resnet18 with the small stem; the model is a resnet34" \
    "$dsc" finetune seg $tiny --weights "$tmp/pre.safetensors" --arch resnet34 --iters 1 --out "$tmp/w34"
  # shellcheck disable=SC2086
  expect "a dsc pretraining checkpoint loads as --weights" 0 "done: 1 steps" \
    "$dsc" finetune seg $tiny --weights "$tmp/pre/checkpoint.safetensors" --iters 1 --val-split none --out "$tmp/w2"
else bad "tiny pretraining / export: $(tail -c 800 "$tmp/out")"; fi

# ---- dsc export of a fine-tuning checkpoint: its backbone ----
expect "dsc export takes a fine-tuning checkpoint's backbone" 0 "resnet18, small stem" \
  "$dsc" export --ckpt "$tmp/a/checkpoint.safetensors" --format torchvision --out "$tmp/ft_bb.safetensors"
if $py -c "import torch, torchvision" 2>/dev/null; then
  if $py "$root/tools/reference/check_export.py" tv "$tmp/ft_bb.safetensors" "$tmp/a/checkpoint.safetensors" \
       backbone. > "$tmp/chk" 2>&1; then
    ok "the export equals the fine-tuned backbone.* and loads into torchvision: $(tr '\n' ';' < "$tmp/chk")"
  else bad "export of the fine-tuned backbone: $(tail -c 800 "$tmp/chk")"; fi
else
  echo "note: no torch/torchvision in $py: the export's contents were not compared"
fi

# ---- a Cityscapes-layout folder ----
if $py -c "import numpy, PIL" 2>/dev/null; then
  $py - "$tmp/cs" <<'PY'
import os, sys
import numpy as np
from PIL import Image
t = sys.argv[1]
rng = np.random.default_rng(7)
ids = [7, 8, 11, 21, 23, 24, 26]  # label ids of road, sidewalk, building, vegetation, sky, person, car
for split, n in (("train", 4), ("val", 2)):
    os.makedirs(f"{t}/leftImg8bit/{split}/city", exist_ok=True)
    os.makedirs(f"{t}/gtFine/{split}/city", exist_ok=True)
    for i in range(n):
        lab = np.full((32, 64), 7, np.uint8)
        img = rng.normal(100, 20, (32, 64, 3))
        for _ in range(3):
            c = ids[rng.integers(1, len(ids))]
            y, x = rng.integers(0, 20), rng.integers(0, 50)
            lab[y:y + 12, x:x + 14] = c
            img[y:y + 12, x:x + 14] = [c * 9 % 255, c * 37 % 255, c * 71 % 255]
        lab[0, :] = 0  # "unlabeled": ignored
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(f"{t}/leftImg8bit/{split}/city/c{i}_leftImg8bit.png")
        Image.fromarray(lab).save(f"{t}/gtFine/{split}/city/c{i}_gtFine_labelIds.png")
PY
  if "$dsc" finetune seg --data "$tmp/cs" --weights random --arch resnet18 --stem small --crop 32 --scale 64x32 \
       --channels 16 --batch 2 --threads 2 --iters 1 --out "$tmp/csr" > "$tmp/cs.out" 2>&1 &&
     grep -q "19 classes" "$tmp/cs.out" && grep -q '"format": "cityscapes"' "$tmp/csr/options.json" &&
     $py - "$tmp/csr/eval.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
assert e["classes"] == 19 and list(e["iou"])[:2] == ["road", "sidewalk"] and list(e["iou"])[-1] == "bicycle", e
assert e["iou"]["road"] is not None and e["iou"]["wall"] is None, e  # road labelled, wall never
PY
  then ok "--format auto detects the Cityscapes layout: 19 classes, label ids mapped to train ids"
  else bad "Cityscapes layout: $(tail -c 800 "$tmp/cs.out")"; fi
else
  echo "note: no numpy/PIL in $py: the Cityscapes-layout case is skipped"
fi

# ---- dsc bench finetune ----
"$dsc" bench finetune --arch resnet18 --stem small --size 32 --batch 2 --steps 1 --warmup 0 --threads 2 --json \
  > "$tmp/bench" 2> "$tmp/bench.err"
rc=$?
if [ $rc -eq 0 ] && [ "$(wc -l < "$tmp/bench")" -eq 1 ] && $py - "$tmp/bench" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read())
assert r["impl"] == "dsc" and r["img_per_s"] > 0, r
PY
then ok "dsc bench finetune --json prints one line: $(cat "$tmp/bench")"
else bad "bench finetune (exit $rc): $(cat "$tmp/bench") $(tail -c 400 "$tmp/bench.err")"; fi

# ---- errors ----
expect "missing --data" 2 "needs --data" "$dsc" finetune seg --weights random --out "$tmp/e1"
expect "missing --weights" 2 "needs --weights" "$dsc" finetune seg --data "$tmp/scn" --out "$tmp/e2"
# shellcheck disable=SC2086
expect "a non-existent weights file is named" 1 "$tmp/nothing.safetensors" \
  "$dsc" finetune seg $tiny --weights "$tmp/nothing.safetensors" --out "$tmp/e3"
# shellcheck disable=SC2086
expect "--format bogus" 2 "bogus" "$dsc" finetune seg $tiny --weights random --format bogus --out "$tmp/e4"
# shellcheck disable=SC2086
expect "--dilated 1 with resnet18" 2 "--dilated=1 needs bottleneck blocks" \
  "$dsc" finetune seg $tiny --weights random --dilated 1 --out "$tmp/e5"
# shellcheck disable=SC2086
expect "--classes 300" 2 "--classes=300" "$dsc" finetune seg $tiny --weights random --classes 300 --out "$tmp/e6"
# shellcheck disable=SC2086
expect "a batch larger than the dataset" 1 "--batch=64 is larger than the 24 images" \
  "$dsc" finetune seg $tiny --weights random --batch 64 --out "$tmp/e7"
# shellcheck disable=SC2086
expect "--crop 3" 2 "--crop=3" "$dsc" finetune seg $tiny --weights random --crop 3 --out "$tmp/e8"
# shellcheck disable=SC2086
expect "--ratio 2,1" 2 "--ratio=2,1" "$dsc" finetune seg $tiny --weights random --ratio 2,1 --out "$tmp/e9"
# shellcheck disable=SC2086
expect "--eval-mode bogus" 2 "--eval-mode=bogus" \
  "$dsc" finetune seg $tiny --weights random --eval-mode bogus --out "$tmp/e10"
# shellcheck disable=SC2086
expect "--stop-at -1" 2 "--stop-at=-1" "$dsc" finetune seg $tiny --weights random --stop-at -1 --out "$tmp/e11"
# shellcheck disable=SC2086
expect "an --out holding a checkpoint is never overwritten without --resume" 2 "already holds a checkpoint" \
  "$dsc" finetune seg $tiny --weights random --out "$tmp/a"
# shellcheck disable=SC2086
expect "--resume with nothing there" 2 "nothing to resume" \
  "$dsc" finetune seg $tiny --weights random --resume --out "$tmp/e12"
# shellcheck disable=SC2086
expect "labels >= --classes are an error naming the label" 1 "but --classes=5" \
  "$dsc" finetune seg $tiny --weights random --classes 5 --iters 1 --out "$tmp/e13"
if grep -qE "scn/JPEGImages/train_[0-9]+\.png: label ([5-9]|10) \(in the augmented crop" "$tmp/out"; then
  ok "the label error names the image and the label"
else bad "the label error names no image: $(tail -c 400 "$tmp/out")"; fi
# shellcheck disable=SC2086
expect "an unknown task" 2 "unknown task det" "$dsc" finetune det $tiny --weights random
expect "--help lists --stop-at" 0 "--stop-at" "$dsc" finetune seg --help

finish
