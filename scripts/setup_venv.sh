#!/usr/bin/env bash
# Create (or bring up to date) the project's venv: pinned dependencies, then this package built
# with CMake (messages included). Safe to run repeatedly: it only reinstalls what changed.
#
#   scripts/setup_venv.sh            # uses ./.venv and python3
#   VENV=/path PYTHON=python3.12 scripts/setup_venv.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: $python is missing or older than Python 3.10; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
for tool in cmake gcc g++; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install cmake g++)" >&2; exit 1; }
done

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating venv $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# Dependencies: reinstall only when the pins change.
deps_stamp="$venv/.deps.sha256"
deps_hash=$(cat "$root"/requirements/*.txt "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$deps_stamp" 2>/dev/null)" != "$deps_hash" ]; then
  echo "==> installing pinned dependencies"
  "${pip[@]}" install -q -c "$root/requirements/constraints.txt" \
    -r "$root/requirements/build.txt" -r "$root/requirements/test.txt" \
    -r "$root/requirements/sim.txt"
  echo "$deps_hash" > "$deps_stamp"
  rm -f "$venv/.package.sha256"
fi

# The package: rebuild when any source it installs changes (the CMake build dir is reused).
pkg_stamp="$venv/.package.sha256"
pkg_hash=$(cd "$root" && find CMakeLists.txt package.xml pyproject.toml msg config \
    policy_server_ros benchmark socket_bridge -type f -not -path '*/__pycache__/*' \
    -not -name '*.pyc' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$pkg_stamp" 2>/dev/null)" != "$pkg_hash" ]; then
  echo "==> building and installing policy_server_ros (messages + Python package)"
  "${pip[@]}" install -q --no-build-isolation -c "$root/requirements/constraints.txt" "$root"
  echo "$pkg_hash" > "$pkg_stamp"
fi
echo "==> venv ready: $venv"
