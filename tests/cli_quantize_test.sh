#!/usr/bin/env bash
# 'tern quantize' on good and bad options: every bad option exits non-zero with one "tern: " line on
# stderr and leaves no output file; a good run's file evaluates and inspects, and a truncated copy of
# it is a clean error. Usage: cli_quantize_test.sh TERN_BINARY MODEL.onnx
set -u
tern=$1
model=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# check_stderr CMD_TEXT [NEEDLE]: exactly one line, starting with "tern: ", no crash, containing NEEDLE.
check_stderr() {
  local what=$1 needle=${2:-}
  local lines
  lines=$(wc -l <"$work/err")
  if [ "$lines" -ne 1 ]; then fail "'$what' printed $lines stderr lines: $(cat "$work/err")"; return 1; fi
  if [ "$(head -c 6 "$work/err")" != "tern: " ]; then
    fail "'$what' stderr does not start with 'tern: ': $(cat "$work/err")"
    return 1
  fi
  if [ -n "$needle" ] && ! grep -qF -- "$needle" "$work/err"; then
    fail "'$what' stderr lacks '$needle': $(cat "$work/err")"
    return 1
  fi
  if grep -qiE 'terminate|abort|segmentation|core dumped|internal error' "$work/err"; then fail "'$what' crashed: $(cat "$work/err")"; return 1; fi
  return 0
}

# bad_quantize NEEDLE OUT -- extra options...: quantize MODEL to OUT with the options; it must fail
# with exit 1 or 2, one "tern: " line naming NEEDLE, and no OUT (nor a temporary beside it).
bad_quantize() {
  local needle=$1 out=$2
  shift 3
  rm -f "$out"
  "$tern" quantize "$@" -o "$out" >"$work/out" 2>"$work/err"
  local rc=$?
  local what="tern quantize $* -o $out"
  if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then fail "'$what' exited $rc, want 1 or 2 ($(cat "$work/err"))"; fi
  check_stderr "$what" "$needle"
  if [ -e "$out" ]; then fail "'$what' left an output file"; fi
  if compgen -G "$out.*" >/dev/null || compgen -G "$(dirname "$out")/.$(basename "$out")*" >/dev/null; then
    fail "'$what' left a temporary file: $(ls "$out".* "$(dirname "$out")"/.* 2>/dev/null)"
  fi
}

out=$work/out.tern
head -c 1000 "$model" >"$work/truncated.onnx"
echo '{"layers": [{"name": "nope", "weights": "int8"}]}' >"$work/nope.json"
echo '{"layers": [' >"$work/broken.json"

bad_quantize "--group" "$out" -- "$model" --group 0
bad_quantize "--group" "$out" -- "$model" --group -4
bad_quantize "--group" "$out" -- "$model" --group four
bad_quantize "--group tensor" "$out" -- "$model" --group tensor
bad_quantize "--group tensor" "$out" -- "$model" --weights ternary --group tensor
bad_quantize "--acts" "$out" -- "$model" --acts 1
bad_quantize "--acts" "$out" -- "$model" --acts 3
bad_quantize "--weights" "$out" -- "$model" --weights int9
bad_quantize "--weights" "$out" -- "$model" --weights int1
bad_quantize "--method" "$out" -- "$model" --method foo
bad_quantize "--method" "$out" -- "$model" --weights int8 --method fgq
bad_quantize "cluster" "$out" -- "$model" --method cluster --group channel
bad_quantize "nope" "$out" -- "$model" --data-free dynamic --config "$work/nope.json"
bad_quantize "broken.json" "$out" -- "$model" --data-free dynamic --config "$work/broken.json"
bad_quantize "/no/such/config.json" "$out" -- "$model" --data-free dynamic --config /no/such/config.json
bad_quantize "--percentile" "$out" -- "$model" --percentile 0
bad_quantize "--percentile" "$out" -- "$model" --percentile 101
bad_quantize "--percentile" "$out" -- "$model" --percentile nan
bad_quantize "--percentile" "$out" -- "$model" --calibration mse --percentile 99
bad_quantize "--percentile" "$out" -- "$model" --calibration auto --percentile 99
bad_quantize "--act-codes" "$out" -- "$model" --act-codes maybe
bad_quantize "--attention" "$out" -- "$model" --attention int4
bad_quantize "--attention int8 needs quantized activations" "$out" -- "$model" --acts float --attention int8
bad_quantize "--token-scales needs quantized activations" "$out" -- "$model" --acts float --token-scales
bad_quantize "--calib-images" "$out" -- "$model" --calib-images 0
bad_quantize "--calib-images" "$out" -- "$model" --calib-images -5
bad_quantize "--calibration" "$out" -- "$model" --calibration foo
bad_quantize "--data-free" "$out" -- "$model" --data-free foo
bad_quantize "--calibration" "$out" -- "$model" --data-free dynamic --calibration mse
bad_quantize "--act-scale" "$out" -- "$model" --act-scale log
bad_quantize "--batch" "$out" -- "$model" --batch 0
bad_quantize "--frobnicate" "$out" -- "$model" --frobnicate
bad_quantize "/no/such/model.onnx" "$out" -- /no/such/model.onnx --data-free dynamic --weights int8
bad_quantize "truncated.onnx" "$out" -- "$work/truncated.onnx" --data-free dynamic --weights int8
bad_quantize "/no/such/data" "$out" -- "$model" --data /no/such/data
# Residual edges: bad budgets and options, budgets that cannot be met.
bad_quantize "--residual" "$out" -- "$model" --residual bogus
bad_quantize "--residual" "$out" -- "$model" --residual size:-1
bad_quantize "--residual" "$out" -- "$model" --residual edges:1.5
bad_quantize "--residual" "$out" -- "$model" --residual drop:200
bad_quantize "below the plain quantized model" "$out" -- "$model" --data-free dynamic --residual size:1000
bad_quantize "held-out images: give --data" "$out" -- "$model" --data-free dynamic --residual drop:1
bad_quantize "--max-drop" "$out" -- "$model" --max-drop 1 --residual all
bad_quantize "--max-drop" "$out" -- "$model" --max-drop -1
bad_quantize "--bias-correction measures means on calibration images" "$out" -- "$model" --data-free dynamic --bias-correction
bad_quantize "--drop-images goes with --max-drop" "$out" -- "$model" --drop-images 100
bad_quantize "--drop-images" "$out" -- "$model" --max-drop 1 --drop-images 5
bad_quantize "--drop-data goes with --max-drop" "$out" -- "$model" --drop-data fashion-mnist
bad_quantize "--drop-labels goes with an .npy --drop-data" "$out" -- "$model" --max-drop 1 --drop-labels y.npy
bad_quantize "must not be the calibration data" "$out" -- "$model" --max-drop 1 --drop-data fashion-mnist
bad_quantize "/nonexistent/val.npy" "$out" -- "$model" --max-drop 1 --drop-data /nonexistent/val.npy
bad_quantize "--residual-ranking" "$out" -- "$model" --residual all --residual-ranking best
bad_quantize "--fallback" "$out" -- "$model" --residual all --fallback int4
bad_quantize "--residual-max-terms" "$out" -- "$model" --residual all --residual-max-terms 0
bad_quantize "--fallback goes with --residual" "$out" -- "$model" --fallback none
bad_quantize "--residual-terms" "$out" -- "$model" --residual all --residual-terms 2
bad_quantize "ternary layers" "$out" -- "$model" --data-free dynamic --weights int4 --residual all
# An output directory that does not exist: fails when writing, and leaves nothing.
bad_quantize "/nonexistent/dir/x.tern" /nonexistent/dir/x.tern -- "$model" --data-free dynamic --weights int8
# No -o at all.
"$tern" quantize "$model" --data-free dynamic >"$work/out" 2>"$work/err"
rc=$?
[ "$rc" -eq 2 ] || fail "quantize without -o exited $rc, want 2"
check_stderr "quantize without -o" "-o"
# None of the options tern quantize takes requires a power of two (--act-scale pow2 chooses
# power-of-two scales itself), so there is no non-power-of-two case to test.

# A good, quick run: data-free dynamic activations and int8 weights need no calibration.
good=$work/good.tern
if ! "$tern" quantize "$model" -o "$good" --data-free dynamic --weights int8 >"$work/out" 2>"$work/err"; then
  fail "a valid quantize failed: $(cat "$work/err")"
fi
[ -s "$good" ] || fail "a valid quantize wrote no file"
ls "$work" | grep -vqE '^(good\.tern|out|err|truncated\.onnx|nope\.json|broken\.json)$' && fail "stray files: $(ls "$work")"

if [ -s "$good" ]; then
  if "$tern" eval "$good" --data fashion-mnist --limit 200 --json >"$work/eval.json" 2>"$work/err"; then
    python3 - "$work/eval.json" "$(stat -c %s "$good")" <<'PY' || fail "eval --json output of the quantized model"
import json, sys
j = json.load(open(sys.argv[1]))
missing = [k for k in ("size_bytes", "mults_eliminated", "layers", "top1") if k not in j]
if missing:
    sys.exit("missing keys %s" % missing)
if not (isinstance(j["mults_eliminated"], (int, float)) and 0 <= j["mults_eliminated"] <= 1):
    sys.exit("mults_eliminated %r not in [0, 1]" % j["mults_eliminated"])
if not isinstance(j["layers"], list) or not j["layers"]:
    sys.exit("layers is not a non-empty array")
if not (isinstance(j["size_bytes"], int) and j["size_bytes"] > 0):
    sys.exit("size_bytes %r" % j["size_bytes"])
if not (0 <= j["top1"] <= 100):
    sys.exit("top1 %r" % j["top1"])
if j["top1"] < 50:
    sys.exit("int8 top1 %r is implausibly low for resnet20 on fashion-mnist" % j["top1"])
PY
  else
    fail "eval of the quantized model failed: $(cat "$work/err")"
  fi
  "$tern" inspect "$good" >"$work/inspect.txt" 2>"$work/err" || fail "inspect of the quantized model failed: $(cat "$work/err")"
  [ -s "$work/inspect.txt" ] || fail "inspect printed nothing"

  head -c 5000 "$good" >"$work/cut.tern"
  "$tern" eval "$work/cut.tern" --data fashion-mnist --limit 10 >"$work/out" 2>"$work/err"
  rc=$?
  [ "$rc" -eq 1 ] || fail "eval of a truncated quantized model exited $rc, want 1"
  check_stderr "eval cut.tern" "cut.tern"
  "$tern" inspect "$work/cut.tern" >"$work/out" 2>"$work/err"
  rc=$?
  [ "$rc" -eq 1 ] || fail "inspect of a truncated quantized model exited $rc, want 1"
  check_stderr "inspect cut.tern" "cut.tern"
fi

# --level: outside the stored range, not a number, or on a model without levels.
bad_level() {
  local needle=$1
  shift
  "$tern" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ] || fail "'tern $*' exited $rc, want 1 or 2"
  check_stderr "tern $*" "$needle"
}
if [ -s "$good" ]; then
  bad_level "outside the stored levels 0..0" eval "$good" --data fashion-mnist --limit 10 --level 1
  bad_level "--level" inspect "$good" --level -1
  bad_level "--level" bench "$good" --level two
  bad_level "no residual levels" eval "$model" --data fashion-mnist --limit 10 --level 0
fi

# compare: the quantized model against its source, per output and per layer; run --engine integer.
if [ -s "$good" ]; then
  if "$tern" compare "$model" "$good" --data fashion-mnist --limit 100 --layer-images 16 --json >"$work/cmp.json" 2>"$work/err"; then
    python3 - "$work/cmp.json" <<'PY' || fail "compare --json output"
import json, sys
j = json.load(open(sys.argv[1]))
o = j["outputs"][0]
assert j["images"] == 100, j["images"]
assert 15 < o["sqnr_db"] < 80 and 0.9 < o["cosine"] <= 1, o
assert o["top1_agreement"] >= 90 and abs(o["top1"] - o["ref_top1"]) < 5, o
assert len(j["layers"]) >= 3, j["layers"]
alone = [l["alone_sqnr_db"] for l in j["layers"]]
assert alone == sorted(alone), "layers are not ranked worst first: %r" % alone
PY
  else
    fail "compare failed: $(cat "$work/err")"
  fi
  "$tern" compare "$model" --data fashion-mnist >"$work/out" 2>"$work/err"
  [ $? -eq 2 ] || fail "compare with one model did not exit 2"
  check_stderr "compare with one model" "REFERENCE and MODEL"
  "$tern" compare "$good" "$model" --data fashion-mnist >"$work/out" 2>"$work/err"
  [ $? -eq 1 ] || fail "compare with a quantized reference did not exit 1"
  check_stderr "compare with a quantized reference" "must be a float model"
  python3 "$(dirname "$0")/write_npy.py" "$work/x1.npy" '<f4' 3,1,28,28
  "$tern" run "$good" --engine integer --input "$work/x1.npy" --output "$work/y1.npy" 2>"$work/err" || fail "run --engine integer failed: $(cat "$work/err")"
  "$tern" run "$good" --input "$work/x1.npy" --output "$work/y2.npy" 2>"$work/err" || fail "run (simulated) failed: $(cat "$work/err")"
  # --verbose: the mode, each layer's kernel, and the fused program's steps in order.
  "$tern" eval "$good" --data fashion-mnist --limit 4 --engine integer --verbose >"$work/out" 2>"$work/err" ||
    fail "eval --verbose failed: $(cat "$work/err")"
  grep -q "^integer engine: fused integer program" "$work/err" || fail "eval --verbose: no mode line: $(head -3 "$work/err")"
  grep -qE "^program: [0-9]+ steps" "$work/err" || fail "eval --verbose: no step list"
  grep -qE "^  [^ ].*: (ternary|int8|int4).*avx|^  [^ ].*: (ternary|int8|int4).*scalar" "$work/err" || fail "eval --verbose: no integer layer step"
  python3 - "$work/y1.npy" "$work/y2.npy" <<'PY' || fail "run --engine integer differs from the simulation"
import struct, sys
def floats(p):
    b = open(p, "rb").read()
    n = struct.unpack("<H", b[8:10])[0]
    body = b[10 + n:]
    return struct.unpack("<%df" % (len(body) // 4), body)
a, b = floats(sys.argv[1]), floats(sys.argv[2])
assert len(a) == len(b) == 30, (len(a), len(b))
assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3 * max(1.0, max(abs(x) for x in b)), "differ"
PY
fi

# A folder of PNG images (class sub-folders) evaluates; its images alone calibrate.
python3 - "$work/pngs" <<'PY'
import os, struct, sys, zlib
def png(path, w, h, pixels):
    raw = b"".join(b"\0" + bytes(pixels[y * w:(y + 1) * w]) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    open(path, "wb").write(data + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for label in ("0_tshirt", "1_trouser"):
    os.makedirs(os.path.join(sys.argv[1], label))
    for i in range(3):
        png(os.path.join(sys.argv[1], label, "%d.png" % i), 28, 28, [(x * 9 + i * 7) % 256 for x in range(28 * 28)])
PY
"$tern" eval "$model" --data "$work/pngs" --json >"$work/folder.json" 2>"$work/err" || fail "eval --data FOLDER failed: $(cat "$work/err")"
grep -q '"images":6' "$work/folder.json" || fail "eval --data FOLDER did not score 6 images: $(cat "$work/folder.json")"
"$tern" quantize "$model" -o "$work/folder.tern" --data "$work/pngs/0_tshirt" --weights int8 >"$work/out" 2>"$work/err" ||
  fail "quantize calibrated on an unlabelled folder failed: $(cat "$work/err")"
grep -q "input range" "$work/out" || fail "quantize did not report the input range it proved"
"$tern" eval "$model" --data "$work/pngs" --resize 30x30 >"$work/out" 2>"$work/err"
[ $? -eq 1 ] || fail "eval with images that do not fit the model did not exit 1"
check_stderr "eval --resize 30x30" "give --resize, --crop or --pad"

# A residual model, data-free (weights ranking): levels evaluate, inspect and bench.
levels=$work/levels.tern
if "$tern" quantize "$model" -o "$levels" --data-free dynamic --residual edges:3 --fallback none >"$work/out" 2>"$work/err"; then
  "$tern" eval "$levels" --data fashion-mnist --limit 100 --level all --json >"$work/levels.json" 2>"$work/err" ||
    fail "eval --level all failed: $(cat "$work/err")"
  python3 - "$work/levels.json" <<'PY' || fail "eval --level all output"
import json, sys
j = json.load(open(sys.argv[1]))
levels = j["levels"]
if [l["level"] for l in levels] != [0, 1, 2, 3]:
    sys.exit("levels %r" % [l["level"] for l in levels])
sizes = [l["size_bytes"] for l in levels]
if sizes != sorted(sizes) or len(set(sizes)) != 4:
    sys.exit("sizes do not grow with the level: %r" % sizes)
PY
  "$tern" inspect "$levels" --level 2 >"$work/inspect.txt" 2>"$work/err" || fail "inspect --level 2 failed: $(cat "$work/err")"
  grep -q "level 2 of 3" "$work/inspect.txt" || fail "inspect --level 2 does not say 'level 2 of 3'"
  grep -q "replaced by int8 weights" "$work/inspect.txt" && fail "inspect of a --fallback none model reports int8 fallbacks"
  "$tern" bench "$levels" --level 0 --seconds 0.01 >"$work/out" 2>"$work/err" || fail "bench --level 0 failed: $(cat "$work/err")"
  # The cost of a level switch (integer engine): 10 or more timed switches, fields present.
  "$tern" bench "$levels" --engine integer --switch-levels --seconds 0.01 --json >"$work/switch.json" 2>"$work/err" ||
    fail "bench --switch-levels failed: $(cat "$work/err")"
  python3 - "$work/switch.json" <<'PY' || fail "bench --switch-levels output"
import json, sys
s = json.load(open(sys.argv[1]))["level_switch"]
assert s["levels"] == [0, 3] and s["switches"] >= 10, s
assert s["set_level_us"] >= 0 and all(v > 0 for v in s["first_run_ms"] + s["steady_run_ms"]), s
PY
  expect_usage() { "$tern" "$@" >"$work/out" 2>"$work/err"; [ $? -eq 2 ] && [ "$(wc -l <"$work/err")" -eq 1 ]; }
  expect_usage bench "$levels" --switch-levels --seconds 0.01 || fail "bench --switch-levels on the simulated engine is not a usage error: $(cat "$work/err")"
  bad_level "outside the stored levels 0..3" run "$levels" --level 4 --input "$work/none.npy" --output "$work/y.npy"
  [ -e "$work/y.npy" ] && fail "run with a bad level left an output"
else
  fail "a residual quantize failed: $(cat "$work/err")"
fi

# --max-drop: upgrades chosen on held-out training images, the drop estimated on others, reported
# and stored; --eval puts the test drop next to it.
maxdrop=$work/maxdrop.tern
if "$tern" quantize "$model" -o "$maxdrop" --max-drop 0.5 --drop-images 400 --calib-images 128 --sensitivity-images 64 \
    --eval >"$work/out" 2>"$work/err"; then
  grep -q "max-drop    target 0.5 pp: estimated drop" "$work/out" || fail "quantize --max-drop does not report its estimate: $(cat "$work/out")"
  grep -q "on 200 held-out images" "$work/out" || fail "quantize --max-drop did not hold out 200 + 200 images: $(cat "$work/out")"
  grep -qE "^max-drop     estimated -?[0-9.]+ \+- [0-9.]+ pp, measured -?[0-9.]+ pp" "$work/out" || fail "--eval does not put the estimate next to the test drop"
  "$tern" inspect "$maxdrop" --json >"$work/md.json" 2>"$work/err" || fail "inspect of a --max-drop model failed: $(cat "$work/err")"
  python3 - "$work/md.json" <<'PY' || fail "the --max-drop model's provenance"
import json, sys
j = json.load(open(sys.argv[1]))
d = j["quantization"]["provenance"]["residual"]["drop"]
assert d["target_pp"] == 0.5 and d["estimating_images"] == 200 and d["choosing_images"] == 200, d
assert d["choosing_drop_pp"] <= 0.5, d
assert d["met"] == (d["estimated_drop_pp"] <= 0.5), d
q = j["quantization"]
fallbacks = sum(1 for l in q["provenance"]["residual"]["layers"] if l["fallback"])
assert q["int8_fallbacks"] == fallbacks, (q["int8_fallbacks"], fallbacks)
PY
else
  fail "quantize --max-drop failed: $(cat "$work/err")"
fi

# --drop-data: the held-out images come from a validation set of their own (here 60 blank images,
# labelled 3, then unlabelled), all of them when --drop-images is larger; calibration keeps --data.
python3 "$(dirname "$0")/write_npy.py" "$work/val.npy" '<f4' 60,1,28,28
python3 "$(dirname "$0")/write_npy.py" "$work/val_y.npy" '<i8' 60 $(printf '3 %.0s' $(seq 60))
for labels in labelled unlabelled; do
  extra=(); [ "$labels" = labelled ] && extra=(--drop-labels "$work/val_y.npy")
  if "$tern" quantize "$model" -o "$maxdrop" --max-drop 1 --drop-data "$work/val.npy" "${extra[@]}" --calib-images 64 \
      --sensitivity-images 32 >"$work/out" 2>"$work/err"; then
    "$tern" inspect "$maxdrop" --json >"$work/md.json" 2>"$work/err" || fail "inspect of a --drop-data model failed: $(cat "$work/err")"
    python3 - "$work/md.json" "$labels" <<'PY' || fail "--drop-data $labels: the held-out images are not the validation set's"
import json, sys
d = json.load(open(sys.argv[1]))["quantization"]["provenance"]["residual"]["drop"]
assert d["estimating_images"] == 30 and d["choosing_images"] == 30, d
if sys.argv[2] == "labelled":
    # 30 identical blank images labelled 3: FP32 gets all or none of them right.
    assert d["measured_on"] == "labelled held-out images" and d["reference_top1"] in (0.0, 100.0), d
else:
    assert d["measured_on"] == "agreement with FP32 top-1", d
PY
  else
    fail "quantize --max-drop --drop-data ($labels) failed: $(cat "$work/err")"
  fi
done

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "all quantize CLI checks passed"
