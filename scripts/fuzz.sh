#!/usr/bin/env bash
# Fuzzes tern's input parsers (libFuzzer, ASan + UBSan, clang) for SECONDS in all (default 60, split
# evenly among the targets), each over a copy of its seed corpus fuzz/corpus/<kind>/ and of its past
# crash inputs fuzz/regressions/<kind>/:
#   fuzz_tern_loader      .tern files (kind tern_loader)     fuzz_npy       .npy arrays (npy)
#   fuzz_onnx_import      ONNX bytes (onnx)                  fuzz_idx       IDX files, gzip or plain (idx)
#   fuzz_onnx_structured  ONNX, edited as a ModelProto (onnx) fuzz_cli_args  command lines (cli_args)
# Prints each target's executions and coverage (libFuzzer's final cov:/ft:). On a crash, hang, OOM
# or leak the input is copied to fuzz/regressions/<kind>/ (tests/test_fuzz_regressions.cpp runs
# every file there through the target's entry) and the script exits non-zero after the other targets.
# Reproduce a crash with build/fuzz/fuzz/fuzz_<target> CRASH; minimize a .tern one with
# fuzz/minimize.py build/fuzz/fuzz/fuzz_tern_loader CRASH fuzz/regressions/tern_loader/NAME.tern (the
# structure-aware counterpart of -minimize_crash=1, which checksummed files rarely survive), the
# others with -minimize_crash=1 -runs=10000.
# Usage: scripts/fuzz.sh [SECONDS [TARGET...]]    e.g. scripts/fuzz.sh 120 onnx_structured npy
#        (TERN_FUZZ_BUILD: build folder, default build/fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
build="${TERN_FUZZ_BUILD:-build/fuzz}"
all_targets=(tern_loader onnx_import onnx_structured npy idx cli_args)
targets=("${@:-${all_targets[@]}}")

kind_of() { case "$1" in onnx_import | onnx_structured) echo onnx ;; *) echo "$1" ;; esac; }
dict_of() {
  case "$1" in
    tern_loader) echo fuzz/tern.dict ;;
    onnx_import | onnx_structured) echo fuzz/onnx.dict ;;
    npy) echo fuzz/npy.dict ;;
    cli_args) echo fuzz/cli.dict ;;
  esac
}
# Largest input: a few times the largest seed (the mutators' edits may grow them).
max_len_of() {
  case "$1" in
    tern_loader) echo 131072 ;;  # seeds under 10 KB
    onnx_import | onnx_structured) echo 65536 ;;  # seeds under 4 KB
    npy | idx) echo 16384 ;;
    cli_args) echo 4096 ;;
  esac
}

for t in "${targets[@]}"; do
  case " ${all_targets[*]} " in *" $t "*) ;; *) echo "fuzz.sh: unknown target '$t' (${all_targets[*]})" >&2; exit 2 ;; esac
done
per_target=$((seconds / ${#targets[@]}))
[ "$per_target" -ge 1 ] || per_target=1

scripts/install-deps.sh fuzz
# The library carries the fuzzer's coverage instrumentation and both sanitizers; only the fuzz
# targets link libFuzzer itself (fuzz/CMakeLists.txt).
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link -g -O1"
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DTERN_BUILD_TESTS=OFF -DTERN_TORCH=OFF \
      -DTERN_BUILD_BENCHMARKS=OFF -DTERN_BUILD_FUZZERS=ON -DCMAKE_CXX_FLAGS="$flags" >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}"
bin="$(cd "$build" && pwd)/fuzz"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
shopt -s nullglob
failed=()
summary=()
echo "fuzz.sh: ${#targets[@]} target(s), ${per_target}s each"
for t in "${targets[@]}"; do
  kind="$(kind_of "$t")"
  dir="$work/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp fuzz/corpus/"$kind"/* "$dir/corpus/"  # the run adds inputs to its copy, never to the committed corpus
  # Past crash inputs too: the fuzzer runs every one under ASan/UBSan first, then mutates them.
  if [ -d "fuzz/regressions/$kind" ]; then find "fuzz/regressions/$kind" -maxdepth 1 -type f -exec cp {} "$dir/corpus/" \; ; fi
  dict="$(dict_of "$t")"
  status=0
  ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=0:detect_leaks=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    "$bin/fuzz_$t" -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len_of "$t")" \
                   ${dict:+-dict="$dict"} -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
                   "$dir/corpus" >"$dir/log" 2>&1 || status=$?
  # The last status line (DONE, or the last before a crash): "#N DONE cov: C ft: F corp: ..."
  last="$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1 || true)"
  execs="$(grep -m1 -oE '^stat::number_of_executed_units: [0-9]+' "$dir/log" | grep -oE '[0-9]+$' || true)"
  [ -n "$execs" ] || execs="$(echo "$last" | grep -oE '^#[0-9]+' | tr -d '#' || true)"
  cov="$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || true)"
  ft="$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || true)"
  line="$(printf '%-22s %10s execs  cov %6s  ft %6s' "fuzz_$t" "${execs:-?}" "${cov:-?}" "${ft:-?}")"
  found=("$dir"/artifacts/{crash,leak,oom,timeout}-*)  # not slow-unit-*: slow is not wrong
  if [ "$status" -ne 0 ] || [ ${#found[@]} -gt 0 ]; then
    tail -n 60 "$dir/log" >&2
    mkdir -p "fuzz/regressions/$kind"
    saved=()
    for f in "${found[@]}"; do
      known=""
      for r in fuzz/regressions/"$kind"/*; do cmp -s "$f" "$r" && known="$r"; done
      if [ -n "$known" ]; then saved+=("(already $known)"); continue; fi  # a past crash input, still failing
      cp "$f" "fuzz/regressions/$kind/"
      saved+=("fuzz/regressions/$kind/$(basename "$f")")
    done
    what="$(grep -m1 -E '^(SUMMARY: |==[0-9]+== ?ERROR: libFuzzer)' "$dir/log" || true)"
    echo "fuzz.sh: fuzz_$t failed (${what:-exit status $status}); input: ${saved[*]:-none saved}" >&2
    line="$line  FAILED"
    failed+=("fuzz_$t")
  fi
  echo "$line"
  summary+=("$line")
done

echo "fuzz.sh: summary (${per_target}s a target)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no crash"
