#!/usr/bin/env bash
# End-to-end checks of `dsc pretrain` (spec/INTERFACES.md, METHOD.md) on a tiny model
# (ResNet-18 small stem, 16x16 images, batch 4, 2 BN groups, queue 8, D 16):
#  - one whole step of every method against an independent float64 PyTorch implementation of
#    METHOD.md: the step dump (at step 2, so the momentum encoder, SGD buffers, queues and
#    k-means centroids are no longer at their initial values) checked by
#    tools/reference/check_step.py (every gradient, parameters after the step, momentum encoder,
#    queues and pointer, centroids, BN running statistics, losses, discrete choices);
#  - exact resume: N steps straight equal N steps killed with SIGKILL part-way and resumed
#    (bitwise, fixed thread count), and the metrics of the two runs agree;
#  - a dataset holding a corrupt image trains to the end and reports it;
#  - the guards: configuration combinations refused before training, a queue longer than the
#    dataset warned about, a non-finite loss stopping the run without touching the checkpoint;
#  - the run folder: config.ini (read back with --config), metrics.jsonl, checkpoint names.
set -u
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3

# wait_for FILE PID: until FILE exists or process PID has ended (at most 300 s).
wait_for() {
  for _ in $(seq 1 30000); do
    [ -f "$1" ] && return
    kill -0 "$2" 2>/dev/null || return
    sleep 0.01
  done
}

# Fixture images: 13 PNGs of 20x20 with varied patterns, and a folder that adds a corrupt one.
$py - "$tmp" <<'PY'
import os, sys
import numpy as np
from PIL import Image
t = sys.argv[1]
for d in ("imgs", "with_bad"):
    os.makedirs(os.path.join(t, d))
rng = np.random.default_rng(5)
for i in range(13):
    yy, xx = np.mgrid[0:20, 0:20]
    base = (np.sin(xx * (0.2 + 0.05 * i)) * 80 + np.cos(yy * 0.3) * 60 + 120)[..., None]
    px = np.clip(base + rng.normal(0, 20, (20, 20, 3)) + [i * 9, 40, 200 - i * 9], 0, 255)
    im = Image.fromarray(px.astype(np.uint8))
    im.save(os.path.join(t, "imgs", "im%02d.png" % i))
    im.save(os.path.join(t, "with_bad", "im%02d.png" % i))
open(os.path.join(t, "with_bad", "broken.png"), "wb").write(b"\x89PNG\r\n\x1a\n this is not a png")
PY

tiny="data.path=$tmp/imgs model.arch=resnet18 model.stem=small data.size=16 data.batch=4
      method.bn_groups=2 method.queue=8 model.dim=16 method.clusters=3 method.prototypes=5
      run.threads=2 data.workers=2 run.log_every=1"

# ---- one whole step of every method against PyTorch ----
# shellcheck disable=SC2086
steps_match_reference "" $tiny

# ---- exact resume after SIGKILL ----
steps=12
common="$tiny method=dsc-km optim.steps=$steps run.ckpt_every=1 method.momentum=0.99"
# shellcheck disable=SC2086
"$dsc" pretrain $common run.out="$tmp/straight" > "$tmp/straight.log" 2>&1 || bad "straight run failed: $(tail -c 400 "$tmp/straight.log")"
# shellcheck disable=SC2086
"$dsc" pretrain $common run.out="$tmp/killed" > "$tmp/killed.log" 2>&1 &
pid=$!
wait_for "$tmp/killed/checkpoint-00000004.safetensors" $pid
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
if [ -f "$tmp/killed/checkpoint-$(printf %08d $steps).safetensors" ]; then
  echo "note: the run finished before SIGKILL reached it; the resume below starts from its end"
fi
# shellcheck disable=SC2086
if "$dsc" pretrain $common run.out="$tmp/killed" --resume > "$tmp/resume.log" 2>&1; then
  if $py "$root/tools/reference/compare_checkpoints.py" "$tmp/straight/checkpoint.safetensors" \
       "$tmp/killed/checkpoint.safetensors" --meta step epoch lr_step > "$tmp/cmp" 2>&1; then
    ok "resume after SIGKILL is bitwise identical to the straight run ($(grep -o 'resuming.*' "$tmp/resume.log" | head -n 1))"
  else
    bad "resume differs: $(head -n 8 "$tmp/cmp")"
  fi
  if $py - "$tmp/straight/metrics.jsonl" "$tmp/killed/metrics.jsonl" $steps <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
keys = ("step", "epoch", "lr", "loss", "loss_ins", "loss_pix", "loss_sem")
assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b], "metrics differ"
assert [r["step"] for r in a] == list(range(int(sys.argv[3]))), [r["step"] for r in a]
PY
  then ok "metrics.jsonl of the resumed run equals the straight run's, one line per step"
  else bad "metrics.jsonl differ after resume"; fi
else
  bad "resume failed: $(tail -c 600 "$tmp/resume.log")"
fi
# SIGINT: the step in flight finishes, a checkpoint is written, exit status 130; resuming from
# it also ends bitwise where the straight run ended.
# shellcheck disable=SC2086
"$dsc" pretrain $common run.out="$tmp/sigint" > "$tmp/sigint.log" 2>&1 &
pid=$!
wait_for "$tmp/sigint/checkpoint-00000002.safetensors" $pid
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
# shellcheck disable=SC2086
if { [ $rc -eq 130 ] && grep -q "interrupted: saved" "$tmp/sigint.log" || [ $rc -eq 0 ]; } &&
   "$dsc" pretrain $common run.out="$tmp/sigint" --resume > "$tmp/sigint2.log" 2>&1 &&
   $py "$root/tools/reference/compare_checkpoints.py" "$tmp/straight/checkpoint.safetensors" \
     "$tmp/sigint/checkpoint.safetensors" > "$tmp/cmp2" 2>&1; then
  ok "SIGINT saves a checkpoint and exits 130; its resume ends identical (exit $rc)"
else
  bad "SIGINT (exit $rc): $(tail -c 300 "$tmp/sigint.log") $(tail -c 300 "$tmp/sigint2.log") $(head -n 5 "$tmp/cmp2")"
fi
expect "a finished run resumed has nothing to do" 0 "nothing to do" \
  "$dsc" pretrain $common run.out="$tmp/straight" --resume

# ---- a corrupt image ----
# shellcheck disable=SC2086
expect "a dataset with a corrupt image trains to the end and reports it" 0 "broken.png" \
  "$dsc" pretrain $tiny data.path="$tmp/with_bad" method=densecl optim.steps=4 run.out="$tmp/bad_run"
expect "data.strict=1 makes the corrupt image an error" 1 "broken.png" \
  "$dsc" pretrain $tiny data.path="$tmp/with_bad" method=densecl optim.steps=4 run.out="$tmp/strict_run" data.strict=1

# ---- the run folder ----
d="$tmp/straight"
if [ -f "$d/config.ini" ] && [ "$(wc -l < "$d/metrics.jsonl")" -eq $steps ] &&
   [ -f "$d/checkpoint-00000001.safetensors" ] && [ -f "$d/checkpoint.safetensors" ]; then
  ok "run folder holds config.ini, metrics.jsonl (one line per step) and checkpoints"
else bad "run folder incomplete: $(ls "$d")"; fi
"$dsc" info "$d/checkpoint.safetensors" > "$tmp/info" 2>&1
missing=""
for name in backbone.conv1.weight backbone.layer4.1.bn2.running_var backbone.bn1.num_batches_tracked \
    neck.mlp.0.weight neck.mlp2.2.bias momentum.backbone.conv1.weight momentum.neck.mlp2.0.weight \
    queue.global queue.dense queue.ptr km.centroids optim.momentum.backbone.conv1.weight \
    optim.momentum.neck.mlp.2.bias "method.name = dsc-km" "step = $steps" "total_steps = $steps" \
    "data.images = 13" "world_size = 1" "lr_step = " "rng = philox4x32-10"; do
  grep -qF -- "$name" "$tmp/info" || missing="$missing $name"
done
if [ -z "$missing" ]; then ok "checkpoint holds METHOD.md §8's names and metadata"
else bad "checkpoint lacks:$missing"; fi
expect "config.ini reads back with --config" 0 "done: 2 steps in" \
  "$dsc" pretrain --config "$d/config.ini" optim.steps=2 run.out="$tmp/from_ini" run.ckpt_every=0

# ---- guards ----
expect "queue not a multiple of the batch is refused" 2 "method.queue" \
  "$dsc" pretrain $tiny method.queue=6 run.out="$tmp/g1"
expect "batch not divisible by the BN groups is refused" 2 "method.bn_groups" \
  "$dsc" pretrain $tiny data.batch=6 method.queue=12 method.bn_groups=4 run.out="$tmp/g2"
expect "more clusters than pixels in a batch is refused" 1 "method.clusters=100" \
  "$dsc" pretrain $tiny method=dsc-km method.clusters=100 run.out="$tmp/g3"
expect "k_nei not below the pixels of C5 is refused" 1 "method.k_nei=4" \
  "$dsc" pretrain $tiny method=dsc-nei method.k_nei=4 run.out="$tmp/g4"
expect "a BN group of one value per channel is refused" 1 "BN group" \
  "$dsc" pretrain $tiny data.size=8 method.bn_groups=4 run.out="$tmp/g5"
expect "a queue longer than the dataset is warned about" 0 "stale" \
  "$dsc" pretrain $tiny method.queue=16 optim.steps=1 run.out="$tmp/g6"
expect "an unknown key is named" 2 "method.tau_foo" \
  "$dsc" pretrain $tiny method.tau_foo=1 run.out="$tmp/g7"
expect "a bad value is named" 2 "optim.lr" \
  "$dsc" pretrain $tiny optim.lr=fast run.out="$tmp/g8"
expect "an unknown argument is named" 2 "--frobnicate" \
  "$dsc" pretrain $tiny --frobnicate run.out="$tmp/g9"
expect "a missing data.path is explained" 1 "data.path" \
  "$dsc" pretrain model.arch=resnet18 run.out="$tmp/g10"
expect "an existing checkpoint is never overwritten without --resume" 1 "--resume" \
  "$dsc" pretrain $tiny run.out="$tmp/straight"
expect "--resume without a checkpoint is an error" 1 "nothing to resume" \
  "$dsc" pretrain $tiny run.out="$tmp/g11" --resume
expect "a batch larger than the dataset is an error" 1 "data.batch=16" \
  "$dsc" pretrain $tiny data.batch=16 method.queue=16 run.out="$tmp/g12"
expect "a dump with bf16 is refused" 2 "bf16" \
  "$dsc" pretrain $tiny run.precision=bf16 run.dump_step="$tmp/g13d" run.out="$tmp/g13"
expect "--help lists the configuration keys" 0 "method.freeze_prototypes_steps" "$dsc" pretrain --help
# A rate so large that the parameters overflow: the run stops naming the step, and the
# checkpoint it leaves is the last good one (every value finite).
rm -rf "$tmp/nan"
expect "a non-finite loss or parameter stops the run" 1 "not finite" \
  "$dsc" pretrain $tiny method=densecl optim.lr=1e38 optim.steps=6 run.ckpt_every=1 run.out="$tmp/nan"
if [ ! -f "$tmp/nan/checkpoint.safetensors" ] || $py - "$tmp/nan/checkpoint.safetensors" "$root" <<'PY'
import sys
import numpy as np
sys.path.insert(0, sys.argv[2] + "/tools/reference")
import safetensors_py
t, _ = safetensors_py.read(sys.argv[1])
bad = [k for k, v in t.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
sys.exit(1 if bad else 0)
PY
then ok "the checkpoint left by a diverged run is finite"
else bad "a diverged run left a non-finite checkpoint"; fi

finish
