#!/usr/bin/env bash
# Faults end a job, quickly and with a clear message:
#   --timeout: rank 1 never joins the exchange; rank 0 must report "no answer from the other ranks"
#              after its 2 s timeout and abort the job (non-zero exit status).
#   --die:     rank 1 exits without MPI_Finalize; mpirun must end the job (non-zero) well before
#              rank 0's own 30 s timeout.
# Each run is capped at 60 s by timeout(1), so a hang fails the test instead of stalling CI.
# Usage: mpi_timeout_test.sh MPI_EXCHANGE_TEST MPIEXEC [MPIEXEC_FLAGS...]
set -u
exe=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

check_case() {  # name, bound in seconds, required text (or ""), then the mpirun command
  local name=$1 bound=$2 text=$3
  shift 3
  local start rc elapsed_ms failed=""
  start=$(date +%s%N)
  timeout -k 5 60 "$@" -np 2 "$exe" "--$name" >"$log" 2>&1
  rc=$?
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    failed="exit status $rc (expected non-zero, before the 60 s cap)"
  elif [ "$elapsed_ms" -gt $((bound * 1000)) ]; then
    failed="took ${elapsed_ms} ms, more than $bound s"
  elif [ -n "$text" ] && ! grep -qF "$text" "$log"; then
    failed="the output lacks '$text'"
  fi
  if [ -n "$failed" ]; then
    echo "FAIL --$name: $failed"
    sed 's/^/  | /' "$log"
    status=1
  else
    echo "ok --$name: exit status $rc after ${elapsed_ms} ms"
  fi
}

check_case timeout 20 \
  "tern: rank 0 of 2: no answer from the other ranks for 2 s during all-reduce (a rank died or hung)" "$@"
check_case die 25 "" "$@"
exit $status
