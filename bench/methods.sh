#!/usr/bin/env bash
# bench/methods.sh: the pretraining step of every method, dsc against PyTorch (bench/torch_step.py),
# on the two configurations of the pretraining issue: ResNet-50 224x224 batch 8 and ResNet-18 small
# stem 64x64 batch 64 (queue 65536, D 128, 8 BN groups; METHOD.md defaults otherwise). For each
# configuration and method the two implementations run back to back in their own processes, so the
# ratio compares runs made under the same machine load. Prints one JSON line per measurement and a
# table (img/s, ratio, peak RSS, step time relative to densecl) at the end.
#
#   bench/methods.sh [THREADS] [WARMUP] [STEPS] [CONFIGS]     (defaults 2 1 3 "r50 r18")
#
# Run on an otherwise idle machine (docs/performance.md). Needs bin/dsc (make) and python3-torch.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
threads=${1:-2}
warmup=${2:-1}
steps=${3:-3}
configs=${4:-"r50 r18"}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
methods="moco-v2 densecl dsc-nei dsc-tri dsc-ce dsc-km dsc-pm"
for c in $configs; do
  case $c in
    r50) arch="--arch resnet50 --stem standard --size 224 --batch 8" ;;
    r18) arch="--arch resnet18 --stem small --size 64 --batch 64" ;;
    *) echo "unknown configuration $c (r50, r18)" >&2; exit 2 ;;
  esac
  for m in $methods; do
    # shellcheck disable=SC2086
    OMP_WAIT_POLICY=passive "$root/bin/dsc" bench step method=$m $arch --threads "$threads" \
      --warmup "$warmup" --steps "$steps" --json | sed "s/^{/{\"config\": \"$c\", /" | tee -a "$out"
    # shellcheck disable=SC2086
    /usr/bin/python3 "$root/bench/torch_step.py" --method $m $arch --threads "$threads" \
      --warmup "$warmup" --steps "$steps" | sed "s/^{/{\"config\": \"$c\", /" | tee -a "$out"
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {(r["config"], r["method"], "dsc" if r["impl"] == "dsc" else "torch"): r for r in rows}
print()
print("| config | method | dsc img/s | PyTorch img/s | ratio | dsc step / densecl step | dsc MiB | PyTorch MiB |")
print("|---|---|---|---|---|---|---|---|")
for (c, m, impl), r in by.items():
    if impl != "dsc":
        continue
    t = by.get((c, m, "torch"))
    base = by.get((c, "densecl", "dsc"))
    rel = r["step_s"] / base["step_s"] if base else float("nan")
    ti = t["img_per_s"] if t else float("nan")
    tm = t["peak_rss_mb"] if t else float("nan")
    print(f"| {c} | {m} | {r['img_per_s']:.2f} | {ti:.2f} | {r['img_per_s'] / ti:.2f} | {rel:.2f} | "
          f"{r['peak_rss_mb']:.0f} | {tm:.0f} |")
PY
