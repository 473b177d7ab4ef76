#!/usr/bin/env bash
# The main job on the bundled default: install, build (Release), quantize the bundled ResNet-20 to
# FGQ ternary weights (groups of N=4 input channels) with 8-bit activations calibrated on 512
# Fashion-MNIST training images, and report FP32 vs quantized on the 10,000 test images: top-1,
# size, multiplications eliminated, per-layer table. Extra arguments go to `tern quantize` (e.g.
# --json, --group 8, --weights int4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh runtime
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTERN_BUILD_TESTS=OFF -DTERN_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target tern_cli >/dev/null
mkdir -p build/models
exec build/release/src/tern quantize models/resnet20.onnx -o build/models/resnet20-fgq4-w2a8.tern \
  --weights ternary --method fgq --group 4 --acts 8 --data fashion-mnist --eval "$@"
