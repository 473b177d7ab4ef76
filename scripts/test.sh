#!/usr/bin/env bash
# Installs everything (ONNX Runtime from npm included), builds the library, CLI, tests and benchmarks (Release), runs the tests,
# then fuzzes tern's input parsers (.tern, ONNX, .npy, IDX, command line) for TERN_FUZZ_SECONDS in all
# (default 180: 30 s for each of the six targets; 0 skips it; see scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh all
scripts/install-peers.sh  # ONNX Runtime: the exported models' test runs them
cmake -S . -B build/all -DCMAKE_BUILD_TYPE=Release -DTERN_TORCH=ON -DTERN_MPI=ON -DTERN_PYTHON=ON >/dev/null
cmake --build build/all -j"$(nproc)"
scripts/install-python.sh build/all  # `import tern` for /usr/bin/python3
(cd build/all && ctest --output-on-failure -j"$(nproc)" --timeout 900)
fuzz_seconds="${TERN_FUZZ_SECONDS:-180}"
if [ "$fuzz_seconds" -gt 0 ]; then
  scripts/fuzz.sh "$fuzz_seconds"
fi
