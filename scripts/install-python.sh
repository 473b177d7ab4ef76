#!/usr/bin/env bash
# Puts the Python package built in BUILD/python (cmake -DTERN_PYTHON=ON) on the path of Debian's
# /usr/bin/python3: a tern.pth file in its site-packages directory naming that folder, so
# `/usr/bin/python3 -c "import tern"` works from anywhere. Idempotent.
# Usage: scripts/install-python.sh [BUILD]   (default: build/all)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "$root" && cd "${1:-build/all}" && pwd)"
[ -f "$build/python/tern/__init__.py" ] || { echo "install-python.sh: $build/python/tern is not built (configure with -DTERN_PYTHON=ON)" >&2; exit 1; }
site="$(/usr/bin/python3 -c 'import site; print(site.getsitepackages()[0])')"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then  # not fatal: the package works with PYTHONPATH too
    echo "install-python.sh: note: no root or sudo to write $site/tern.pth; use PYTHONPATH=$build/python" >&2
    exit 0
  fi
  sudo=sudo
fi
if [ "$(cat "$site/tern.pth" 2>/dev/null)" != "$build/python" ]; then
  $sudo mkdir -p "$site"
  echo "$build/python" | $sudo tee "$site/tern.pth" >/dev/null
fi
/usr/bin/python3 -c "import tern" || { echo "install-python.sh: import tern fails with $site/tern.pth -> $build/python" >&2; exit 1; }
