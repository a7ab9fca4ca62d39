#!/usr/bin/env bash
# End-to-end checks of `dsc pretrain run.device=cuda` (issue #6), run by `make test-gpu`:
#  - one whole fp32 GPU step of every method against the float64 PyTorch reference (step dumps
#    checked by tools/reference/check_step.py, as tests/cli/test_pretrain.sh does for the CPU);
#  - a short pretraining on Fashion-MNIST (ResNet-18 small stem, 32x32, batch 64, bf16 by default
#    on the GPU) whose loss falls: the mean of the last 10 logged losses is below the first 10's;
#  - the resolved configuration says run.precision = bf16;
#  - exact resume on the GPU: 12 steps straight equal its step-6 checkpoint resumed to 12 (fp32,
#    bitwise: the GPU path is deterministic);
#  - a checkpoint written on the GPU continues on the CPU (same tensors, same format);
#  - FCN fine-tuning (`dsc finetune seg --device cuda`, issue #9) on tiny scenes: its first step's
#    loss equals the CPU's (fp32, 1e-4 relative: same initialization, batch and dropout masks), its
#    checkpoint continues on the CPU, and its evaluation writes eval.json.
# Without a usable GPU every check is reported as skipped. Data: $DSC_GPU_DATA or Debian's
# dataset-fashion-mnist folder.
set -u
. "$(dirname "$0")/../cli/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)
data=${DSC_GPU_DATA:-/usr/share/datasets/fashion-mnist}
skipped=0
probe=$("$dsc" bench step method=densecl run.device=cuda --arch resnet18 --stem small --size 32 \
        --batch 8 --warmup 0 --steps 1 method.queue=64 method.bn_groups=2 2>&1)
if [ $? -ne 0 ]; then
  # Only a missing GPU or a build without CUDA is a skip; any other failure is a failure.
  if echo "$probe" | grep -qE "no usable CUDA device|no CUDA device|built without the CUDA backend"; then
    echo "skip: every GPU pretraining check ($(echo "$probe" | tail -n 1))"
    echo "#summary 0 passed, 0 failed, 14 skipped"
    exit 0
  fi
  bad "the GPU step runs at all: $(echo "$probe" | tail -c 800)"
  finish
fi

# ---- one whole GPU step (fp32) of every method against the float64 PyTorch reference ----
# The same check as tests/cli/test_pretrain.sh makes of the CPU (tools/reference/check_step.py).
py=${PYTHON:-python3}
tiny="data.path=$data data.format=idx model.arch=resnet18 model.stem=small data.size=16 data.batch=4
      method.bn_groups=2 method.queue=8 model.dim=16 method.clusters=3 method.prototypes=5
      run.device=cuda run.precision=fp32 run.log_every=1"
# shellcheck disable=SC2086
steps_match_reference "GPU " $tiny

common="data.path=$data data.format=idx model.arch=resnet18 model.stem=small data.size=32
        data.batch=64 method.bn_groups=4 method.queue=256 run.device=cuda run.log_every=1"
"$dsc" pretrain method=dsc-km $common optim.steps=60 run.out="$tmp/run" > "$tmp/log" 2>&1
rc=$?
if [ $rc -eq 0 ] && /usr/bin/env python3 - "$tmp/run/metrics.jsonl" <<'PY'
import json, sys
L = [json.loads(l)["loss"] for l in open(sys.argv[1])]
# Steps 10-19 (the queue of 256 keys is full of real keys from step 4 on) against the last 10.
first, last = sum(L[10:20]) / 10, sum(L[-10:]) / 10
print(f"  loss: steps 10-19 {first:.4f}, last 10 steps {last:.4f} ({len(L)} steps)")
sys.exit(0 if last < first else 1)
PY
then ok "a short GPU pretraining (dsc-km, bf16) lowers the loss"
else bad "a short GPU pretraining lowers the loss (exit $rc: $(tail -c 600 "$tmp/log"))"; fi

if grep -q "^precision *= *bf16" "$tmp/run/config.ini"; then ok "run.precision auto is bf16 on cuda"
else bad "run.precision auto is bf16 on cuda ($(grep precision "$tmp/run/config.ini"))"; fi

fp32="$common run.precision=fp32 method=densecl run.ckpt_every=6 optim.steps=12"
"$dsc" pretrain $fp32 run.out="$tmp/straight" > "$tmp/log1" 2>&1
mkdir -p "$tmp/resumed"
cp "$tmp/straight/checkpoint-00000006.safetensors" "$tmp/resumed/checkpoint.safetensors"
"$dsc" pretrain --config "$tmp/straight/config.ini" --resume run.out="$tmp/resumed" > "$tmp/log3" 2>&1
if /usr/bin/python3 "$root/tools/reference/compare_checkpoints.py" "$tmp/straight/checkpoint.safetensors" \
     "$tmp/resumed/checkpoint.safetensors" > "$tmp/cmp" 2>&1 ||
   python3 "$root/tools/reference/compare_checkpoints.py" "$tmp/straight/checkpoint.safetensors" \
     "$tmp/resumed/checkpoint.safetensors" > "$tmp/cmp" 2>&1; then
  ok "GPU resume is bitwise exact (12 straight == 6 + resume)"
else bad "GPU resume is bitwise exact: $(tail -c 800 "$tmp/cmp") $(tail -c 300 "$tmp/log3")"; fi

"$dsc" pretrain --config "$tmp/straight/config.ini" --resume run.out="$tmp/resumed" run.device=cpu \
  optim.steps=14 > "$tmp/log4" 2>&1
if [ $? -eq 0 ]; then ok "a GPU checkpoint continues on the CPU"
else bad "a GPU checkpoint continues on the CPU: $(tail -c 600 "$tmp/log4")"; fi

# ---- FCN fine-tuning on the GPU ----
"$dsc" data scenes --out "$tmp/scenes" --train 16 --val 4 --size 32 > /dev/null 2>&1
ft="seg --data $tmp/scenes --weights random --arch resnet18 --stem small --batch 4 --iters 3 --crop 32
    --scale 32x32 --channels 32 --eval-every 0 --log-every 1 --quiet"
# shellcheck disable=SC2086
"$dsc" finetune $ft --out "$tmp/ft_gpu" --device cuda --precision fp32 > "$tmp/ftg" 2>&1
rc_gpu=$?
# shellcheck disable=SC2086
"$dsc" finetune $ft --out "$tmp/ft_cpu" --device cpu > "$tmp/ftc" 2>&1
if [ $rc_gpu -eq 0 ] && [ -f "$tmp/ft_gpu/eval.json" ]; then ok "dsc finetune seg runs on the GPU and evaluates"
else bad "dsc finetune seg runs on the GPU: $(tail -c 600 "$tmp/ftg")"; fi
if /usr/bin/env python3 - "$tmp/ft_gpu/metrics.jsonl" "$tmp/ft_cpu/metrics.jsonl" <<'PY'
import json, sys
g, c = ([json.loads(l) for l in open(p) if '"loss"' in l] for p in sys.argv[1:3])
print(f"  first fine-tuning step loss: GPU {g[0]['loss']:.7f}, CPU {c[0]['loss']:.7f}")
sys.exit(0 if abs(g[0]["loss"] - c[0]["loss"]) <= 1e-4 * abs(c[0]["loss"]) else 1)
PY
then ok "the first fine-tuning step's loss on the GPU equals the CPU's"
else bad "the first fine-tuning step's loss on the GPU equals the CPU's"; fi
# shellcheck disable=SC2086
"$dsc" finetune $ft --iters 5 --out "$tmp/ft_gpu" --resume --device cpu > "$tmp/ftr" 2>&1
if [ $? -eq 0 ]; then ok "a GPU fine-tuning checkpoint continues on the CPU"
else bad "a GPU fine-tuning checkpoint continues on the CPU: $(tail -c 600 "$tmp/ftr")"; fi
finish
