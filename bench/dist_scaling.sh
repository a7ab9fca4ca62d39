#!/usr/bin/env bash
# dist_scaling.sh: the throughput of `dsc pretrain` in 1 process with T threads against W
# processes (mpirun) with T/W threads each, on the same cores and the same global batch; prints a
# table for docs/performance.md (issue #8). Both runs compute the same steps (tests/cli/
# test_distributed.sh checks that), so the ratio is the cost or gain of the communication and of
# the smaller per-process batch.
#   bench/dist_scaling.sh [W] [T] [key=value ...]   (defaults: 2 processes, 2 threads)
set -eu
W=${1:-2}; T=${2:-2}; shift 2 2>/dev/null || shift $#
dsc=${DSC_BIN:-bin/dsc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMP_WAIT_POLICY=passive
"$dsc" data scenes --out "$tmp/scn" --train 256 --val 2 --size 64 > /dev/null
args="data.path=$tmp/scn/JPEGImages model.arch=resnet18 data.size=64 data.batch=32 method=densecl
  method.queue=4096 optim.steps=12 optim.warmup_steps=1 run.log_every=1 $*"
rate() { # mean img/s of the logged steps after the first two (warm-up)
  python3 -c "import json,sys; r=[json.loads(l)['img_per_s'] for l in open(sys.argv[1])][2:]; print('%.1f' % (sum(r)/len(r)))" "$1/metrics.jsonl"
}
# shellcheck disable=SC2086
"$dsc" pretrain $args method.bn_groups=$W run.threads=$T data.workers=$T run.out="$tmp/one" > /dev/null 2>&1
# shellcheck disable=SC2086
mpirun -np "$W" --bind-to none "$dsc" pretrain $args run.threads=$((T / W)) data.workers=$((T / W)) \
  run.out="$tmp/many" > /dev/null 2>&1
one=$(rate "$tmp/one"); many=$(rate "$tmp/many")
echo "| configuration | img/s |"
echo "|---|---|"
echo "| 1 process, $T threads, $W BN groups | $one |"
echo "| $W processes x $((T / W)) thread(s) (mpirun) | $many |"
echo "| ratio | $(python3 -c "print('%.2f' % ($many / $one))") |"
