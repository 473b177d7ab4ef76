#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer (gcc, -O1): builds into
# build/asan (library, CLI, every test; libtorch and MPI included) and runs ctest there. Any
# sanitizer report fails the test that triggered it. Leaks inside third-party libraries (OpenMPI,
# libtorch's static registries) are suppressed by tests/sanitizer/lsan.supp; tern's own are not.
# Usage: scripts/sanitize.sh [CTEST ARGS...]     e.g. scripts/sanitize.sh -R Hostile
# Takes about 40 minutes on 2 cores (build ~25, tests ~15). Not run by CI: run it once per issue.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/install-deps.sh all
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DTERN_TORCH=ON -DTERN_MPI=ON -DTERN_BUILD_BENCHMARKS=OFF \
      -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build/asan -j"$(nproc)"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$root/tests/sanitizer/lsan.supp:print_suppressions=0"
# OpenMPI's shared-memory transport trips ASan's checks on its own mappings; TCP is exercised instead.
export OMPI_MCA_btl="self,tcp"
cd build/asan
status=0
ctest --output-on-failure -j"$(nproc)" --timeout 3600 -E '^mpi_' "$@" | tee ctest-output.txt || status=$?
# The mpirun tests: OpenMPI's ranks keep allocations from plugins they unload (LeakSanitizer sees
# "unknown module" frames no suppression can name), so leak checking is off in them; ASan's memory
# errors and UBSan stay on.
ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" \
  ctest --output-on-failure -j"$(nproc)" --timeout 3600 -R '^mpi_' "$@" | tee -a ctest-output.txt || status=$?
# What scripts/reliability_report.sh quotes: when, at which commit, and ctest's closing lines.
{
  echo "scripts/sanitize.sh $* at commit $(git -C "$root" rev-parse --short HEAD) on $(date -u '+%Y-%m-%d %H:%M UTC')"
  grep -E 'tests passed|tests failed|^\s+[0-9]+ - ' ctest-output.txt
} >ctest-summary.txt
exit $status
