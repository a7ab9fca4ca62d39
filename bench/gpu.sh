#!/usr/bin/env bash
# bench/gpu.sh: the CUDA backend on a machine with an NVIDIA GPU, in one go (issue #6):
#   1. build (skipped with DSC_PREBUILT=1: binaries built elsewhere, e.g. carried to the machine),
#   2. make test-gpu's tests (op parity, every method's step against the CPU, bf16 bounds,
#      determinism, a short GPU pretraining, GPU resume),
#   3. the densecl and dsc-pm steps of ResNet-50 at 224x224, batch 64/128/256, bf16, timed in dsc
#      (`dsc bench step`) and in PyTorch (bench/torch_step.py: channels_last, bf16 autocast, the
#      same step), then a table of img/s, the ratio, GPU memory and model FLOP utilization.
# Environment: BATCHES ("64 128 256"), TORCH_BATCHES (the PyTorch side's, default BATCHES), METHODS ("densecl dsc-pm"), WARMUP (3), STEPS (10),
# TESTS (1: run step 2), OUT_DIR (bench/out: JSON and logs), PYTHON (python3: the one with torch
# and CUDA). Measured: tests and all twelve timings took under 4 minutes on an H200.
set -u
cd "$(dirname "$0")/.."
out=${OUT_DIR:-bench/out}
mkdir -p "$out"
py=${PYTHON:-python3}
batches=${BATCHES:-"64 128 256"}
torch_batches=${TORCH_BATCHES:-$batches}
methods=${METHODS:-"densecl dsc-pm"}
warmup=${WARMUP:-3}
steps=${STEPS:-10}
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
echo "GPU: ${gpu:-none found}"
if [ "${DSC_PREBUILT:-0}" != 1 ]; then
  make -j"$(nproc)" all build/tests/gpu/test_cuda > "$out/build.log" 2>&1 || { tail -n 30 "$out/build.log"; exit 1; }
fi
rc=0
if [ "${TESTS:-1}" = 1 ]; then
  DSC_BIN=$PWD/bin/dsc scripts/run_tests.sh build/tests/gpu/test_cuda tests/gpu/test_pretrain_gpu.sh \
    > "$out/test-gpu.log" 2>&1 || rc=1
  grep -E "^(FAIL|ok|skip)|note:|  [a-z-]+ +(fp32|bf16):|passed," "$out/test-gpu.log"
fi
for m in $methods; do
  for b in $batches; do
    bin/dsc bench step method="$m" run.device=cuda run.precision=bf16 --arch resnet50 --size 224 \
      --batch "$b" --warmup "$warmup" --steps "$steps" --json > "$out/dsc-$m-$b.json" 2> "$out/dsc-$m-$b.err" ||
      { echo "dsc $m b$b failed: $(tail -c 400 "$out/dsc-$m-$b.err")"; rc=1; }
    case " $torch_batches " in *" $b "*) ;; *) continue ;; esac
    $py bench/torch_step.py --device cuda --precision bf16 --method "$m" --arch resnet50 --size 224 \
      --batch "$b" --warmup "$warmup" --steps "$steps" > "$out/torch-$m-$b.json" 2> "$out/torch-$m-$b.err" ||
      { echo "torch $m b$b failed: $(tail -c 400 "$out/torch-$m-$b.err")"; rc=1; }
  done
done
# Model FLOPs per image and step: ResNet-50 at 224x224 is 4.1 GMACs = 8.2 GFLOP forward; a step
# runs the key encoder forward (1x) and the query encoder forward and backward (3x).
$py - "$out" "$gpu" $methods -- $batches <<'PY'
import json, os, sys
out, gpu = sys.argv[1], sys.argv[2]
rest = sys.argv[3:]
methods, batches = rest[:rest.index("--")], rest[rest.index("--") + 1:]
peak = 989e12  # dense bf16 tensor-core rate of an H100/H200 SXM (datasheet)
flop_per_img = 4 * 8.2e9
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
print(f"\n{gpu}: ResNet-50 224x224, bf16, median of the timed steps")
print(f"{'method':8} {'batch':>5} {'dsc img/s':>10} {'torch img/s':>11} {'ratio':>6} {'dsc GPU MiB':>11} {'torch GPU MiB':>13} {'dsc MFU':>7}")
for m in methods:
    for b in batches:
        d, t = load(f"{out}/dsc-{m}-{b}.json"), load(f"{out}/torch-{m}-{b}.json")
        di = d["img_per_s"] if d else float("nan")
        ti = t["img_per_s"] if t else float("nan")
        dm = d.get("gpu_used_mb", float("nan")) if d else float("nan")
        tm = (t.get("gpu_used_mb") or t.get("peak_gpu_mb") or float("nan")) if t else float("nan")
        print(f"{m:8} {b:>5} {di:10.1f} {ti:11.1f} {di / ti if ti else float('nan'):6.2f} {dm:11.0f} {tm:13.0f} {100 * di * flop_per_img / peak:6.1f}%")
PY
exit $rc
