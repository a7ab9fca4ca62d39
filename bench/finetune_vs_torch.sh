#!/usr/bin/env bash
# bench/finetune_vs_torch.sh: the fine-tuning step of `dsc finetune seg` (FCN-R50-D8 with METHOD.md
# §7's head), dsc (`dsc bench finetune`) against PyTorch (bench/torch_finetune_step.py, the same
# model, loss and SGD). The two run alternately, REPS times each, every run in its own process (so
# that peak RSS is its own and both see the same machine load); prints each JSON line, then a table of
# the medians over the repetitions and the ratio dsc / PyTorch of img/s.
#
#   ARCH=resnet50 BATCH=2 SIZE=128 THREADS=2 STEPS=5 WARMUP=2 REPS=3 bench/finetune_vs_torch.sh
#
# Those are the defaults; DSC_BIN picks the binary (default bin/dsc, built by make). Run on an
# otherwise idle machine (docs/performance.md). Needs python3-torch (Debian's /usr/bin/python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ARCH=${ARCH:-resnet50}
BATCH=${BATCH:-2}
SIZE=${SIZE:-128}
THREADS=${THREADS:-2}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
REPS=${REPS:-3}
dsc=${DSC_BIN:-$root/bin/dsc}
if [ ! -x "$dsc" ]; then
  echo "finetune_vs_torch.sh: $dsc not found or not executable (run make, or set DSC_BIN)" >&2
  exit 2
fi
# `dsc bench finetune` is recent: a binary without it prints the usage of the other benchmarks only
if ! "$dsc" bench finetune --help 2>&1 | grep -q finetune; then
  echo "finetune_vs_torch.sh: $dsc has no 'bench finetune' (rebuild with make)" >&2
  exit 2
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
opts="--arch $ARCH --batch $BATCH --size $SIZE --threads $THREADS --steps $STEPS --warmup $WARMUP"
for r in $(seq 1 "$REPS"); do
  echo "# repetition $r of $REPS" >&2
  # shellcheck disable=SC2086
  OMP_WAIT_POLICY=passive "$dsc" bench finetune $opts --json | grep '^{' | tee -a "$out"
  # shellcheck disable=SC2086
  /usr/bin/python3 "$root/bench/torch_finetune_step.py" $opts | tee -a "$out"
done
/usr/bin/python3 - "$out" "$ARCH $SIZE x $SIZE, batch $BATCH, $THREADS threads, $REPS reps" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {"dsc": [r for r in rows if r["impl"] == "dsc"], "pytorch": [r for r in rows if r["impl"] == "pytorch"]}
for impl, rs in by.items():
    if not rs:
        sys.exit(f"finetune_vs_torch.sh: no JSON line with impl={impl!r}")
def med(impl, key):
    return statistics.median(r[key] for r in by[impl])
print()
print(f"fine-tuning step, {sys.argv[2]} (medians over the repetitions)")
print("| impl | img/s | step s | min step s | peak RSS MiB |")
print("|---|---|---|---|---|")
for impl in ("dsc", "pytorch"):
    print(f"| {impl} | {med(impl, 'img_per_s'):.3f} | {med(impl, 'step_s'):.4f} | "
          f"{med(impl, 'min_step_s'):.4f} | {med(impl, 'peak_rss_mb'):.0f} |")
print(f"| ratio dsc / pytorch (img/s) | {med('dsc', 'img_per_s') / med('pytorch', 'img_per_s'):.2f} | | | |")
PY
