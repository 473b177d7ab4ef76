#!/usr/bin/env bash
# Fuzzes the .tern loaders (fuzz/fuzz_tern_loader.cpp: libFuzzer, ASan + UBSan, clang) for SECONDS
# (default 60) over a copy of the seed corpus fuzz/corpus/ and of the past crash inputs in
# fuzz/regressions/. On a crash, hang, OOM or leak the input is copied to fuzz/regressions/
# (tests/test_fuzz_regressions.cpp loads every file there) and the script exits non-zero. Reproduce a crash with build/fuzz/fuzz/fuzz_tern_loader CRASH; minimize it
# with fuzz/minimize.py build/fuzz/fuzz/fuzz_tern_loader CRASH fuzz/regressions/NAME.tern (the
# structure-aware counterpart of -minimize_crash=1, which checksummed files rarely survive).
# Usage: scripts/fuzz.sh [SECONDS]     (TERN_FUZZ_BUILD: build folder, default build/fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build="${TERN_FUZZ_BUILD:-build/fuzz}"
max_len=131072  # the seeds are under 10 KB; the mutator's edits may grow them

scripts/install-deps.sh fuzz
# The library carries the fuzzer's coverage instrumentation and both sanitizers; only the fuzz
# target links libFuzzer itself (fuzz/CMakeLists.txt).
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link -g -O1"
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DTERN_BUILD_TESTS=OFF -DTERN_TORCH=OFF \
      -DTERN_BUILD_BENCHMARKS=OFF -DTERN_BUILD_FUZZERS=ON -DCMAKE_CXX_FLAGS="$flags" >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_tern_loader
fuzzer="$(cd "$build" && pwd)/fuzz/fuzz_tern_loader"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/artifacts"
cp fuzz/corpus/* "$work/corpus/"  # the run adds inputs to its copy, never to the committed corpus
# Past crash inputs too: the fuzzer runs every one under ASan/UBSan first, then mutates them.
if [ -d fuzz/regressions ]; then find fuzz/regressions -maxdepth 1 -type f -exec cp {} "$work/corpus/" \; ; fi

echo "fuzz.sh: fuzzing the .tern loaders for ${seconds}s"
status=0
ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=0:detect_leaks=1}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
  "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
            -dict=fuzz/tern.dict -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
            "$work/corpus" >"$work/log" 2>&1 || status=$?
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/log" || true

shopt -s nullglob
found=("$work"/artifacts/{crash,leak,oom,timeout}-*)  # not slow-unit-*: slow is not wrong
if [ "$status" -eq 0 ] && [ ${#found[@]} -eq 0 ]; then
  echo "fuzz.sh: no crash in ${seconds}s"
  exit 0
fi
tail -n 60 "$work/log" >&2
mkdir -p fuzz/regressions
saved=()
for f in "${found[@]}"; do
  cp "$f" fuzz/regressions/
  saved+=("fuzz/regressions/$(basename "$f")")
done
what="$(grep -m1 -E '^(SUMMARY: |==[0-9]+== ?ERROR: libFuzzer)' "$work/log" || true)"
echo "fuzz.sh: the .tern loader failed on a fuzzed input (${what:-exit status $status}); saved: ${saved[*]:-nothing}" >&2
exit 1
