# lib.sh: shared set-up of the end-to-end shell tests (sourced, not run): the dsc binary, a
# temporary folder removed on exit, ok/bad counters and the closing "#summary" line that
# scripts/run_tests.sh reads.
dsc=${DSC_BIN:-bin/dsc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ok() { echo "ok $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
# expect NAME RC NEEDLE CMD...: CMD exits with RC and its output (stdout + stderr) contains NEEDLE.
expect() {
  local name=$1 want=$2 needle=$3
  shift 3
  "$@" > "$tmp/out" 2>&1
  local rc=$?
  if [ $rc -eq "$want" ] && grep -qF -- "$needle" "$tmp/out"; then ok "$name"
  else bad "$name (exit $rc, want $want, output: $(tail -c 800 "$tmp/out"))"; fi
}
# steps_match_reference PREFIX WORDS...: one whole step of every method against the independent
# float64 PyTorch implementation of METHOD.md: a 6-step run of `dsc pretrain WORDS` dumps step 2 (so
# the momentum encoder, SGD buffers, queues and centroids are past their initial values) and
# tools/reference/check_step.py checks the dump; one ok/bad line per method, named PREFIX + "step of M".
# Needs $py (a python3 with torch) and $root (the repository). $launch (e.g. "mpirun -np 2"), when
# set, starts each run: several processes dump the global batch (rank 0 writes it).
steps_match_reference() {
  local prefix=$1 m extra
  shift
  for m in moco-v2 densecl dsc-nei dsc-tri dsc-ce dsc-km dsc-pm; do
    extra=""
    [ $m = dsc-pm ] && extra="method.freeze_prototypes_steps=1"
    [ $m = dsc-ce ] && extra="method.freeze_prototypes_steps=3"
    rm -rf "$tmp/srun" "$tmp/dump"
    # shellcheck disable=SC2086
    # shellcheck disable=SC2086
    if ${launch:-} "$dsc" pretrain "$@" method=$m optim.steps=6 optim.warmup_steps=1 method.momentum=0.9 \
        run.out="$tmp/srun" run.dump_step="$tmp/dump" run.dump_at=2 $extra > "$tmp/out" 2>&1 &&
       $py "$root/tools/reference/check_step.py" "$tmp/dump/step.safetensors" --quiet > "$tmp/check" 2>&1; then
      ok "${prefix}step of $m matches the PyTorch reference ($(tail -n 1 "$tmp/check")$(grep -o 'ReLU sign search.*' "$tmp/check" | sed 's/^/; /'))"
    else
      bad "${prefix}step of $m: $(tail -c 600 "$tmp/out") $(grep -v ' ok$' "$tmp/check" 2>/dev/null | tail -n 12)"
    fi
    rm -rf "$tmp/srun" "$tmp/dump"
  done
}

# Prints the summary and exits non-zero if anything failed.
finish() {
  echo "#summary $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
