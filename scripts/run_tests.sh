#!/usr/bin/env bash
# Runs every test binary given on the command line (and every tests/*.sh script), sums
# their "#summary P passed, F failed[, S skipped]" lines and ends with "N passed, N failed"
# (and ", N skipped" when a test was skipped: tests that need a GPU on a machine without one).
# A binary that crashes or prints no summary counts as one failure. Exit status is
# non-zero if anything failed.
set -u
passed=0
failed=0
skipped=0
for t in "$@"; do
  echo "== $t"
  log=$(mktemp)
  t0=$(date +%s)
  "$t" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  echo "== $(basename "$t"): $(( $(date +%s) - t0 )) s"
  line=$(grep '^#summary ' "$log" | tail -n 1)
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "FAIL $t: exited $rc without a summary"
    failed=$((failed + 1))
    continue
  fi
  p=$(echo "$line" | awk '{print $2}')
  f=$(echo "$line" | awk '{print $4}')
  s=$(echo "$line" | awk '{print ($6 == "" ? 0 : $6)}')
  skipped=$((skipped + s))
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $t: exited $rc"
    failed=$((failed + 1))
  fi
done
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
