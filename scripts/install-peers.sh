#!/usr/bin/env bash
# Installs the peer runtimes tern's speed comparison measures against, besides PyTorch (which
# scripts/install-deps.sh python provides). Idempotent: apt and npm run only when something is missing.
#   - Node.js and npm from Debian's archive (skipped when `node` and `npm` are already on PATH,
#     whatever installed them), and GNU time (/usr/bin/time: scripts/bench_speed.py reads each
#     measured process's peak RSS through it);
#   - onnxruntime-node, pinned in bench/package.json, into bench/node_modules.
# npm runs with --ignore-scripts: the package's postinstall script downloads CUDA/TensorRT files
# from the network, which the CPU binding (shipped in the npm tarball itself) does not need.
# Usage: scripts/install-peers.sh      then: node bench/bench_onnxruntime.js --model models/resnet20.onnx
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="$root/bench"

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-peers.sh: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-peers.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Loads the CPU binding and prints its version; fails when it is absent or does not match the pin.
# shellcheck disable=SC2016  # the single-quoted text is JavaScript, $ included
check() {
  (cd "$bench" && node -e '
    const want = require("./package.json").dependencies["onnxruntime-node"];
    const ort = require("onnxruntime-node");
    const have = require("onnxruntime-node/package.json").version;
    if (have !== want) { console.error(`onnxruntime-node ${have} installed, ${want} pinned`); process.exit(1); }
    if (typeof ort.InferenceSession?.create !== "function") { console.error("onnxruntime-node: no InferenceSession"); process.exit(1); }
    console.log(`onnxruntime-node ${have} (CPU binding loads)`);
  ' 2>"$1")
}

err="$(mktemp)"
trap 'rm -f "$err"' EXIT
if check "$err" >/dev/null; then
  exit 0
fi
echo "install-peers.sh: installing onnxruntime-node into bench/node_modules"
(cd "$bench" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)
if ! check "$err"; then
  echo "install-peers.sh: onnxruntime-node does not load after npm install:" >&2
  cat "$err" >&2
  exit 1
fi
