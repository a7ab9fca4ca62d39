#!/usr/bin/env bash
# The communicator under a real launcher (issue #8): two processes started by OpenMPI's mpirun
# run tests/test_dist.c's multi-rank checks (`test_dist --mpi-check`: all-reduce, all-gather,
# broadcast, large and chunked buffers, a deliberate timeout), whose "ok"/"FAIL" lines are
# passed on; then a kill test: while both ranks all-reduce in a loop (`--mpi-wait`), rank 1 is
# killed with SIGKILL and mpirun must end the job by itself with a non-zero status.
# The test binary is $DSC_BUILD/tests/test_dist (DSC_BUILD: the build folder; by default the
# folder above $DSC_BIN's bin/ when it holds tests/test_dist, as in `make asan`, else build/).
# OpenMPI's own allocations show up as leaks under AddressSanitizer, so the mpirun runs set
# ASAN_OPTIONS=detect_leaks=0 (errors are still reported).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tests/cli/lib.sh"

if [ -n "${DSC_BUILD:-}" ]; then
  build=$DSC_BUILD
  case $build in /*) ;; *) build="$root/$build" ;; esac
elif [ -x "$(dirname "$(dirname "$dsc")")/tests/test_dist" ]; then
  build=$(dirname "$(dirname "$dsc")")
else
  build="$root/build"
fi
bin="$build/tests/test_dist"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
launch=(mpirun --allow-run-as-root --oversubscribe -np 2)

if ! command -v mpirun > /dev/null 2>&1; then
  bad "mpirun not found: multi-process training needs OpenMPI (scripts/deps.sh installs it)"
  finish
fi
if [ ! -x "$bin" ]; then
  bad "no test binary at $bin (make builds it; DSC_BUILD names another build folder)"
  finish
fi

# ---- the multi-rank checks ----
"${launch[@]}" "$bin" --mpi-check > "$tmp/check" 2>&1
rc=$?
if grep -q '^skip mpi checks' "$tmp/check"; then
  # A build without MPI (make MPI=0): nothing to launch.
  grep -m 1 '^skip' "$tmp/check"
  echo "#summary $passed passed, $failed failed, 2 skipped"
  exit 0
fi
while IFS= read -r line; do
  case $line in
    "ok "*) ok "${line#ok }" ;;
    "FAIL "*) bad "${line#FAIL }" ;;
  esac
done < "$tmp/check"
summary=$(grep '^#summary ' "$tmp/check" | tail -n 1)
if [ $rc -eq 0 ] && [ -n "$summary" ] && [ "$(echo "$summary" | awk '{print $4}')" = 0 ]; then
  ok "mpirun -np 2 test_dist --mpi-check exited 0 ($summary)"
else
  bad "mpirun -np 2 test_dist --mpi-check: exit $rc, output: $(grep -v '^ok ' "$tmp/check" | tail -c 2000)"
fi

# ---- a rank killed mid-job ends the job ----
# The bounds below (60 s to see rank 1's pid, 120 s for mpirun to exit) only detect a hang;
# they are not performance limits: the job normally ends within a second of the kill.
"${launch[@]}" "$bin" --mpi-wait > "$tmp/wait" 2>&1 &
mpirun_pid=$!
pid=""
for _ in $(seq 600); do
  pid=$(awk '/^PID [0-9]+$/ {print $2; exit}' "$tmp/wait")
  [ -n "$pid" ] && break
  kill -0 $mpirun_pid 2> /dev/null || break
  sleep 0.1
done
if [ -z "$pid" ]; then
  kill $mpirun_pid 2> /dev/null
  wait $mpirun_pid 2> /dev/null
  bad "mpirun test_dist --mpi-wait: rank 1 never printed its pid: $(tail -c 1000 "$tmp/wait")"
  finish
fi
kill -9 "$pid"
for _ in $(seq 1200); do
  kill -0 $mpirun_pid 2> /dev/null || break
  sleep 0.1
done
if kill -0 $mpirun_pid 2> /dev/null; then
  kill $mpirun_pid 2> /dev/null
  wait $mpirun_pid 2> /dev/null
  bad "mpirun still running 120 s after rank 1 (pid $pid) was killed: the job hangs"
else
  wait $mpirun_pid
  rc=$?
  if [ $rc -ne 0 ]; then
    ok "rank 1 killed with SIGKILL: mpirun ended the job by itself (exit $rc)"
  else
    bad "rank 1 killed with SIGKILL but mpirun exited 0: $(tail -c 1000 "$tmp/wait")"
  fi
fi
finish
