#!/usr/bin/env bash
# Quick start, command 2: set up the venvs (.venv, the numpy 1.26 one, .venv-colcon), lint, build
# and test with colcon against the wheels (a small part of the suite), then run the
# whole test suite.
# Extra arguments go to pytest (e.g. -k framing, -x).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup_venv.sh"
"$root/scripts/setup_numpy126_venv.sh"  # the numpy 1.26 client's venv (test_numpy126_compat)
"$root/scripts/setup_sim_system.sh"  # EGL for the simulator's headless rendering (test_sim)
venv=${VENV:-$root/.venv}
cd "$root"
echo "==> ruff"
"$venv/bin/ruff" check .
echo "==> colcon build and test against the wheels (scripts/check_colcon.sh)"
mkdir -p "$root/build"
"$root/scripts/check_colcon.sh" > "$root/build/check_colcon.log" 2>&1 \
  || { tail -40 "$root/build/check_colcon.log"; exit 1; }
echo "==> pytest"
exec "$venv/bin/python" -m pytest "$@"
