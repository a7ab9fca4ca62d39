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
# Prints the summary and exits non-zero if anything failed.
finish() {
  echo "#summary $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
