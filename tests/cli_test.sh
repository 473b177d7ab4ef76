#!/usr/bin/env bash
# Command-line behaviour on good and bad input: one clear line on stderr, a non-zero exit, and no
# partial output file. Usage: cli_test.sh TERN_BINARY MODEL.onnx
set -u
tern=$1
model=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error EXIT_CODE NEEDLE -- command...: exits with EXIT_CODE, prints one stderr line containing NEEDLE.
expect_error() {
  local want=$1 needle=$2
  shift 3
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$work/err")
  if [ "$rc" -ne "$want" ]; then fail "'$*' exited $rc, want $want ($(cat "$work/err"))"; return; fi
  if [ "$lines" -ne 1 ]; then fail "'$*' printed $lines stderr lines: $(cat "$work/err")"; return; fi
  if ! grep -qF -- "$needle" "$work/err"; then fail "'$*' stderr lacks '$needle': $(cat "$work/err")"; return; fi
  if grep -qiE 'terminate|abort|segmentation|core dumped' "$work/err"; then fail "'$*' crashed"; fi
}

head -c 2000 "$model" >"$work/truncated.onnx"
echo "not a model" >"$work/text.onnx"
: >"$work/empty.onnx"

expect_error 1 "/no/such/model.onnx" -- "$tern" inspect /no/such/model.onnx
expect_error 1 "text.onnx" -- "$tern" inspect "$work/text.onnx"
expect_error 1 "empty.onnx" -- "$tern" eval "$work/empty.onnx" --data fashion-mnist
expect_error 1 "truncated.onnx" -- "$tern" eval "$work/truncated.onnx" --data fashion-mnist --limit 10
expect_error 2 "--frobnicate" -- "$tern" eval "$model" --data fashion-mnist --frobnicate
expect_error 2 "--limit" -- "$tern" eval "$model" --data fashion-mnist --limit -3
expect_error 2 "--batch" -- "$tern" eval "$model" --data fashion-mnist --batch lots
expect_error 2 "unknown command" -- "$tern" quantise "$model"
expect_error 2 "--data" -- "$tern" eval "$model"
expect_error 1 "/no/such/dir" -- "$tern" eval "$model" --data /no/such/dir
expect_error 2 "--labels" -- "$tern" eval "$model" --data "$work/x.npy"

# Data whose shape does not fit the model, through eval and run.
printf '\x93NUMPY\x01\x00' >"$work/bad.npy"
expect_error 1 "bad.npy" -- "$tern" run "$model" --input "$work/bad.npy" --output "$work/y.npy"
[ -e "$work/y.npy" ] && fail "run left an output file after a bad input"

"$tern" run "$model" --input /dev/null --output "$work/y.npy" >/dev/null 2>&1 && fail "run accepted /dev/null"
[ -e "$work/y.npy" ] && fail "run left an output file after a bad input"

# A good run: write a [2,1,28,28] float32 .npy by hand (header + zeros).
here=$(dirname "$0")
npy() { python3 "$here/write_npy.py" "$@"; }
npy "$work/x.npy" '<f4' 2,1,28,28
npy "$work/wrong.npy" '<f4' 2,3,32,32
npy "$work/labels.npy" '<i8' 2 3 4
npy "$work/labels3.npy" '<i8' 3 3 4 5
"$tern" run "$model" --input "$work/x.npy" --output "$work/y.npy" || fail "run on a good input failed"
[ -s "$work/y.npy" ] || fail "run wrote no output"
expect_error 1 "wrong.npy" -- "$tern" run "$model" --input "$work/wrong.npy" --output "$work/z.npy"
[ -e "$work/z.npy" ] && fail "run left an output file after a shape mismatch"
expect_error 1 "wrong.npy" -- "$tern" eval "$model" --data "$work/wrong.npy" --labels "$work/labels.npy"
expect_error 1 "labels3.npy" -- "$tern" eval "$model" --data "$work/x.npy" --labels "$work/labels3.npy"

# JSON output parses and carries the documented keys.
"$tern" eval "$model" --data "$work/x.npy" --labels "$work/labels.npy" --json >"$work/eval.json" || fail "eval --json failed"
python3 -c "
import json, sys
j = json.load(open('$work/eval.json'))
missing = [k for k in ('top1', 'top5', 'images', 'images_per_s') if k not in j]
sys.exit('missing keys %s' % missing if missing else 0)
" || fail "eval --json output"
"$tern" inspect "$model" --json | python3 -c "import json,sys; j=json.load(sys.stdin); assert j['macs'] > 0 and j['layers']" \
  || fail "inspect --json output"

# tern finetune (when built with libtorch): options are checked before any work, and a bad
# checkpoint stops the run before anything is written.
if "$tern" --help | grep -q "^  finetune"; then
  expect_error 2 "--epochs" -- "$tern" finetune "$model" -o "$work/ft.tern" --epochs 0
  expect_error 2 "--schedule" -- "$tern" finetune "$model" -o "$work/ft.tern" --schedule linear
  expect_error 2 "--acts" -- "$tern" finetune "$model" -o "$work/ft.tern" --acts 3
  expect_error 2 "float32" -- "$tern" finetune "$model" -o "$work/ft.tern" --weights float32
  expect_error 2 "-o" -- "$tern" finetune "$model"
  expect_error 1 "text.onnx" -- "$tern" finetune "$work/text.onnx" -o "$work/ft.tern"
  echo "not a checkpoint" >"$work/bad.ckpt"
  expect_error 1 "bad.ckpt" -- "$tern" finetune "$model" -o "$work/ft.tern" --train-images 512 --resume "$work/bad.ckpt" --no-progress
  [ -e "$work/ft.tern" ] || [ -e "$work/ft.onnx" ] && fail "finetune left an output file behind after an error"
fi

# tern train / accum: bad numeric formats and options are one-line errors naming them; nothing written.
if "$tern" --help | grep -q "^  train"; then
  expect_error 2 "fixed:20.13" -- "$tern" train "$model" -o "$work/tr.onnx" --numeric fixed:20.13
  expect_error 2 "FL must be >= 0" -- "$tern" train "$model" -o "$work/tr.onnx" --numeric fixed:4.-2
  expect_error 2 "--numeric" -- "$tern" train "$model" -o "$work/tr.onnx" --numeric int8
  expect_error 2 "--gradient-numeric applies" -- "$tern" train "$model" -o "$work/tr.onnx" --gradient-numeric fixed:1.15
  expect_error 2 "--gradient-numeric" -- "$tern" train "$model" -o "$work/tr.onnx" --numeric fixed:4.12 --gradient-numeric fixed:1
  expect_error 2 "--rounding" -- "$tern" train "$model" -o "$work/tr.onnx" --rounding nearest
  expect_error 2 "--rounding" -- "$tern" train "$model" -o "$work/tr.onnx" --numeric fixed:4.12 --rounding up
  expect_error 2 "--accumulate" -- "$tern" train "$model" -o "$work/tr.onnx" --accumulate 40
  expect_error 2 "--distributed" -- "$tern" train "$model" -o "$work/tr.onnx" --compress adacomp
  expect_error 2 "--init" -- "$tern" train "$model" -o "$work/tr.onnx" --init zeros
  expect_error 2 "overwrite" -- "$tern" train "$model" -o "$model"
  expect_error 1 "bad.ckpt" -- "$tern" train "$model" -o "$work/tr.onnx" --train-images 256 --no-test --resume "$work/bad.ckpt" --no-progress
  [ -e "$work/tr.onnx" ] && fail "train left an output file behind after an error"
fi
# tern export: ONNX that tern reads back; bad input is a one-line error and writes nothing.
"$tern" export "$model" -o "$work/exp.onnx" >/dev/null || fail "export of an FP32 model failed"
"$tern" inspect "$work/exp.onnx" >/dev/null || fail "the exported model does not import"
expect_error 2 "-o OUT.onnx" -- "$tern" export "$model"
expect_error 1 "text.onnx" -- "$tern" export "$work/text.onnx" -o "$work/bad.onnx"
[ -e "$work/bad.onnx" ] && fail "export left an output file behind after an error"
expect_error 1 "same file" -- "$tern" export "$model" -o "$model"
expect_error 2 "--level" -- "$tern" export "$model" -o "$work/bad.onnx" --level x
expect_error 2 "--m" -- "$tern" accum --n 100 --m 60
expect_error 2 "--estimate" -- "$tern" accum --n 100 --estimate exact
expect_error 2 "--trials" -- "$tern" accum --n 100 --trials 64
expect_error 1 "text.onnx" -- "$tern" accum "$work/text.onnx"

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "all CLI checks passed"
