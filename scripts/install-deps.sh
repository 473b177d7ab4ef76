#!/usr/bin/env bash
# Installs what tern needs from Debian's archive. Idempotent and fast: apt runs only when a
# package is missing. Usage: scripts/install-deps.sh [runtime|all|fuzz|python]   (default: all)
#   runtime: build the library and CLI, run the bundled model on Fashion-MNIST
#   all:     also the test suite (GoogleTest, ONNX node tests), benchmarks (Google Benchmark, oneDNN)
#            and fine-tuning (libtorch: 'tern finetune' and its tests)
#   fuzz:    the runtime set plus clang and its sanitizer/libFuzzer runtimes (scripts/fuzz.sh)
#   python:  Debian's PyTorch and ONNX for /usr/bin/python3 (training the bundled models, the
#            PyTorch side of scripts/bench_speed.py)
set -euo pipefail

runtime=(build-essential cmake pkg-config libonnx-dev libprotobuf-dev protobuf-compiler zlib1g-dev
         libjpeg62-turbo-dev libpng-dev nlohmann-json3-dev libssl-dev dataset-fashion-mnist)
extra=(libgtest-dev libgmock-dev libbenchmark-dev libdnnl-dev ocl-icd-opencl-dev libonnx-testdata python3 libtorch-dev
       libopenmpi-dev openmpi-bin python3-numpy pybind11-dev python3-dev python3-pytest)
# libopenmpi-dev, openmpi-bin: the MPI communicator of data-parallel training and its mpirun tests.
# python3-numpy: scripts/check_export.py (the exported models' test) reads and writes arrays.
# pybind11-dev, python3-dev, python3-pytest: the Python package (python/) and its tests.
# ocl-icd-opencl-dev: Debian's oneDNN CMake config requires OpenCL, without declaring it.
fuzz=(clang libclang-rt-dev)
# libclang-rt-dev: libFuzzer and the ASan/UBSan runtimes (only a Recommends of clang).

case "${1:-all}" in
  runtime) wanted=("${runtime[@]}") ;;
  all) wanted=("${runtime[@]}" "${extra[@]}") ;;
  fuzz) wanted=("${runtime[@]}" "${fuzz[@]}") ;;
  python) wanted=(python3-torch python3-torchvision python3-onnx python3-numpy python3-matplotlib) ;;
  *) echo "install-deps.sh: unknown set '$1' (expected runtime, all, fuzz or python)" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps.sh: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
