#!/usr/bin/env bash
# Runs every test binary given on the command line (and every tests/*.sh script), sums
# their "#summary P passed, F failed" lines and ends with "N passed, N failed".
# A binary that crashes or prints no summary counts as one failure. Exit status is
# non-zero if anything failed.
set -u
passed=0
failed=0
for t in "$@"; do
  echo "== $t"
  log=$(mktemp)
  "$t" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  line=$(grep '^#summary ' "$log" | tail -n 1)
  rm -f "$log"
  if [ -z "$line" ]; then
    echo "FAIL $t: exited $rc without a summary"
    failed=$((failed + 1))
    continue
  fi
  p=$(echo "$line" | awk '{print $2}')
  f=$(echo "$line" | awk '{print $4}')
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $t: exited $rc"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
