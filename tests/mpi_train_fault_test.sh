#!/usr/bin/env bash
# A rank that dies mid-training ends the whole job within a bounded time, with a non-zero exit,
# and no output model is written. Usage: mpi_train_fault_test.sh TERN MODEL MPIEXEC [FLAGS...]
set -uo pipefail
tern="$1" model="$2" mpiexec="$3"
shift 3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
start=$(date +%s)
TERN_TEST_EXIT_RANK=1 TERN_TEST_EXIT_STEP=3 timeout 90 "$mpiexec" "$@" -np 2 \
  -x TERN_TEST_EXIT_RANK -x TERN_TEST_EXIT_STEP \
  "$tern" train "$model" -o "$dir/out.onnx" --train-images 512 --epochs 1 --batch 64 --no-test --no-progress \
  --distributed --timeout 10 >"$dir/log" 2>&1
status=$?
elapsed=$(( $(date +%s) - start ))
if [ "$status" -eq 0 ] || [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "FAIL: exit status $status after ${elapsed}s (expected a prompt non-zero exit)"; cat "$dir/log"; exit 1
fi
if [ -e "$dir/out.onnx" ]; then echo "FAIL: an output model was written"; exit 1; fi
echo "ok: a dead rank ended the job with status $status in ${elapsed}s"
