#!/usr/bin/env bash
# Installs everything, builds the library, CLI, tests and benchmarks (Release), and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh all
cmake -S . -B build/all -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/all -j"$(nproc)"
cd build/all
ctest --output-on-failure -j"$(nproc)" --timeout 900
