#!/usr/bin/env bash
# The main job on the bundled default: install, build (Release) and evaluate the bundled ResNet-20
# on Fashion-MNIST's 10,000 test images. Extra arguments go to `tern eval` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh runtime
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTERN_BUILD_TESTS=OFF -DTERN_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target tern_cli >/dev/null
exec build/release/src/tern eval models/resnet20.onnx --data fashion-mnist "$@"
