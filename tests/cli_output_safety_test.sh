#!/usr/bin/env bash
# Output files: tern never writes through a symlink at its temporary path, never overwrites its own
# input (same path spelled differently, a hard link, a symlink), writes to devices without
# replacing them (/dev/null works; /dev/full is "no space", exit 1), refuses a FIFO without
# hanging, leaves an unrelated OUT.tmp alone, and leaves an existing OUT byte-identical when the
# run fails. Usage: cli_output_safety_test.sh TERN_BINARY MODEL.onnx
#
# The /dev checks run, as root, inside a private mount namespace where /dev is a tmpfs and
# /dev/null, /dev/full are bind mounts of the real devices: a tern that renames a file over them
# then fails (EBUSY) instead of replacing the machine's /dev/null. Without unshare they are skipped
# as root; as another user the permissions on /dev protect it.
set -u
if [ "${1:-}" = "--dev-checks" ]; then dev_mode=1; shift; else dev_mode=0; fi
tern=$(realpath "$1")
model=$(realpath "$2")
work=${3:-$(mktemp -d)}
[ "$dev_mode" = 1 ] || trap 'rm -rf "$work"' EXIT
checks=0
failures=0
quick=(--data-free dynamic --weights int8)

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
check() { checks=$((checks + 1)); }

# run_tern ARGS...: runs tern with a 60 s bound; sets rc, leaves stdout/stderr in $work/out, $work/err.
run_tern() {
  timeout -k 5 60 "$tern" "$@" >"$work/out" 2>"$work/err"
  rc=$?
}

# refused WHAT: the last run failed with exit 1 or 2 and one "tern: " line (not a hang, not a crash).
refused() {
  check
  local what=$1 lines
  lines=$(wc -l <"$work/err")
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then fail "$what: hung (killed by timeout)"; return 1; fi
  if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then fail "$what: exit $rc, want 1 or 2 ($(head -c 300 "$work/err"))"; return 1; fi
  if [ "$lines" -ne 1 ] || [ "$(head -c 6 "$work/err")" != "tern: " ]; then
    fail "$what: want one 'tern: ' line on stderr, got: $(head -c 300 "$work/err")"
    return 1
  fi
  if grep -qiE 'internal error|std::|terminate|segmentation|core dumped' "$work/err"; then fail "$what: crashed: $(cat "$work/err")"; return 1; fi
  return 0
}

succeeded() {
  check
  if [ "$rc" -ne 0 ]; then fail "$1: exit $rc ($(head -c 300 "$work/err"))"; return 1; fi
  return 0
}

# same FILE COPY WHAT: FILE is byte-identical to COPY.
same() {
  check
  cmp -s "$1" "$2" || fail "$3: $1 changed"
}

python3 "$(dirname "$0")/write_npy.py" "$work/x.npy" '<f4' 2,1,28,28

# ---- /dev/null and /dev/full (run inside the sandbox when root)
dev_checks() {
  run_tern quantize "$model" -o /dev/null "${quick[@]}"
  succeeded "quantize -o /dev/null"
  check; [ -c /dev/null ] || fail "quantize -o /dev/null: /dev/null is no longer a character device"
  run_tern run "$model" --input "$work/x.npy" --output /dev/null
  succeeded "run --output /dev/null"
  check; [ -c /dev/null ] || fail "run --output /dev/null: /dev/null is no longer a character device"
  for cmd in quantize run; do
    if [ "$cmd" = quantize ]; then run_tern quantize "$model" -o /dev/full "${quick[@]}"
    else run_tern run "$model" --input "$work/x.npy" --output /dev/full; fi
    if refused "$cmd to /dev/full"; then
      check; [ "$rc" -eq 1 ] || fail "$cmd to /dev/full: exit $rc, want 1"
      check; grep -q "/dev/full" "$work/err" || fail "$cmd to /dev/full: stderr does not name /dev/full: $(cat "$work/err")"
      check; grep -qi "space" "$work/err" || fail "$cmd to /dev/full: stderr does not say no space: $(cat "$work/err")"
    fi
    check; [ -c /dev/full ] || fail "$cmd to /dev/full: /dev/full is no longer a character device"
  done
}

if [ "$dev_mode" = 1 ]; then
  # Inside the namespace: a tmpfs /dev holding bind mounts of the real devices.
  keep=$work/realdev
  mkdir -p "$keep"
  for d in null full zero random urandom; do : >"$keep/$d"; mount --bind "/dev/$d" "$keep/$d"; done
  mount -t tmpfs tern-test-dev /dev
  for d in null full zero random urandom; do : >"/dev/$d"; mount --bind "$keep/$d" "/dev/$d"; done
  mkdir -p /dev/shm
  ln -s /proc/self/fd /dev/fd
  for i in 0 1 2; do ln -s "/proc/self/fd/$i" "/dev/$(echo stdin stdout stderr | cut -d' ' -f$((i + 1)))"; done
  dev_checks
  echo "DEV $checks $failures"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  if unshare -m --propagation private true 2>/dev/null; then
    dev_out=$(unshare -m --propagation private bash "$0" --dev-checks "$tern" "$model" "$work")
    echo "$dev_out" | grep -v '^DEV '
    dev_line=$(echo "$dev_out" | grep '^DEV ' || echo "DEV 0 1")
    set -- $dev_line
    checks=$((checks + $2))
    failures=$((failures + $3))
    [ "$2" -gt 0 ] || fail "the /dev checks did not run"
  else
    echo "SKIP: /dev/null and /dev/full checks (root without unshare: they could replace the real devices)"
  fi
else
  dev_checks
fi

# ---- a symlink at the temporary path is not written through
echo precious >"$work/victim"
cp "$work/victim" "$work/victim.orig"
ln -s "$work/victim" "$work/out.tern.tmp"
run_tern quantize "$model" -o "$work/out.tern" "${quick[@]}"
same "$work/victim" "$work/victim.orig" "quantize with a symlink at OUT.tmp"
check; [ -L "$work/out.tern.tmp" ] || fail "quantize with a symlink at OUT.tmp: the symlink was replaced or removed"
if [ "$rc" -eq 0 ]; then
  check; [ -f "$work/out.tern" ] && [ ! -L "$work/out.tern" ] || fail "quantize with a symlink at OUT.tmp: OUT is not a regular file"
else
  refused "quantize with a symlink at OUT.tmp"
fi
rm -f "$work/out.tern" "$work/out.tern.tmp"

ln -s "$work/victim" "$work/y.npy.tmp"
run_tern run "$model" --input "$work/x.npy" --output "$work/y.npy"
same "$work/victim" "$work/victim.orig" "run with a symlink at OUT.tmp"
check; [ -L "$work/y.npy.tmp" ] || fail "run with a symlink at OUT.tmp: the symlink was replaced or removed"
[ "$rc" -eq 0 ] || refused "run with a symlink at OUT.tmp"
rm -f "$work/y.npy" "$work/y.npy.tmp"

# ---- the output is the input (each check in a fresh directory: x.onnx, a hard link and a symlink to it)
fresh() {
  cd "$work" || exit 1
  rm -rf "$work/in"
  mkdir -p "$work/in/sub"
  cp "$model" "$work/in/x.onnx"
  cp "$work/x.npy" "$work/in/x.npy"
  ln "$work/in/x.onnx" "$work/in/hard.onnx"
  ln -s x.onnx "$work/in/soft.onnx"
  cd "$work/in" || exit 1
}
# refused_intact WHAT ARGS...: tern ARGS is refused and leaves x.onnx and x.npy as they were.
refused_intact() {
  local what=$1
  shift
  fresh
  run_tern "$@"
  refused "$what"
  same x.onnx "$model" "$what"
  same x.npy "$work/x.npy" "$what"
}
refused_intact "quantize x.onnx -o x.onnx" quantize x.onnx -o x.onnx "${quick[@]}"
refused_intact "quantize ./x.onnx -o \$PWD/x.onnx" quantize ./x.onnx -o "$work/in/x.onnx" "${quick[@]}"
refused_intact "quantize x.onnx -o sub/../x.onnx" quantize x.onnx -o sub/../x.onnx "${quick[@]}"
refused_intact "quantize x.onnx -o HARDLINK" quantize x.onnx -o hard.onnx "${quick[@]}"
check; [ "$(stat -c %i x.onnx)" = "$(stat -c %i hard.onnx)" ] || fail "quantize x.onnx -o HARDLINK: the hard link was replaced"
refused_intact "quantize x.onnx -o SYMLINK" quantize x.onnx -o soft.onnx "${quick[@]}"
check; [ -L soft.onnx ] || fail "quantize x.onnx -o SYMLINK: the symlink was replaced"
refused_intact "quantize SYMLINK -o x.onnx" quantize soft.onnx -o x.onnx "${quick[@]}"
refused_intact "run --input x.npy --output x.npy" run x.onnx --input x.npy --output x.npy
refused_intact "run --input x.npy --output \$PWD/./x.npy" run x.onnx --input x.npy --output "$work/in/./x.npy"
refused_intact "run MODEL --output MODEL" run x.onnx --input x.npy --output x.onnx
refused_intact "run MODEL --output HARDLINK-TO-MODEL" run x.onnx --input x.npy --output hard.onnx
cd "$work" || exit 1

# ---- a FIFO as the output: refused, not hanging, still a FIFO
mkfifo "$work/fifo.tern" "$work/fifo.npy"
run_tern quantize "$model" -o "$work/fifo.tern" "${quick[@]}"
refused "quantize -o FIFO"
check; [ -p "$work/fifo.tern" ] || fail "quantize -o FIFO: the FIFO was replaced"
run_tern run "$model" --input "$work/x.npy" --output "$work/fifo.npy"
refused "run --output FIFO"
check; [ -p "$work/fifo.npy" ] || fail "run --output FIFO: the FIFO was replaced"

# ---- an output in a folder that does not exist: refused before any work, naming the folder
run_tern quantize "$model" -o "$work/no/such/dir/out.tern" "${quick[@]}"
refused "quantize -o MISSING-FOLDER/out.tern" && { check; grep -q "folder $work/no/such/dir does not exist" "$work/err" ||
  fail "quantize -o MISSING-FOLDER/out.tern: the error does not name the missing folder: $(cat "$work/err")"; }
run_tern run "$model" --input "$work/x.npy" --output "$work/no/such/y.npy"
refused "run --output MISSING-FOLDER/y.npy"

# ---- an existing file named OUT.tmp is left untouched
echo "not tern's" >"$work/keep.tern.tmp"
cp "$work/keep.tern.tmp" "$work/keep.orig"
run_tern quantize "$model" -o "$work/keep.tern" "${quick[@]}"
succeeded "quantize with an existing OUT.tmp"
same "$work/keep.tern.tmp" "$work/keep.orig" "quantize with an existing OUT.tmp"
run_tern inspect "$work/keep.tern"
succeeded "inspect of what quantize wrote beside an existing OUT.tmp"

# ---- a failing run leaves an existing OUT byte-identical (and no temporary beside it)
head -c 2000 "$model" >"$work/truncated.onnx"
echo "previous output" >"$work/old.tern"
cp "$work/old.tern" "$work/old.orig"
run_tern quantize "$work/truncated.onnx" -o "$work/old.tern" "${quick[@]}"
refused "quantize of a bad model over an existing OUT"
same "$work/old.tern" "$work/old.orig" "quantize of a bad model over an existing OUT"
run_tern quantize "$model" -o "$work/old.tern" --data /no/such/data
refused "quantize with missing data over an existing OUT"
same "$work/old.tern" "$work/old.orig" "quantize with missing data over an existing OUT"
printf '\x93NUMPY\x01\x00' >"$work/bad.npy"
cp "$work/old.tern" "$work/old.npy"
run_tern run "$model" --input "$work/bad.npy" --output "$work/old.npy"
refused "run with a bad input over an existing OUT"
same "$work/old.npy" "$work/old.orig" "run with a bad input over an existing OUT"
check
leftovers=$(ls -a "$work" | grep -E '^\.?(old|keep)\.(tern|npy)\..' | grep -vx 'keep.tern.tmp')
[ -z "$leftovers" ] || fail "temporary files left behind: $leftovers"

echo "$checks checks, $failures failures"
if [ "$failures" -ne 0 ]; then exit 1; fi
echo "all output safety checks passed"
