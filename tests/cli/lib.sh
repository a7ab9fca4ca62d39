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
# Prints the summary and exits non-zero if anything failed.
finish() {
  echo "#summary $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
