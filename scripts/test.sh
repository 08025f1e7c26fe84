#!/usr/bin/env bash
# Quick start, command 2: set up the venvs (.venv and the numpy 1.26 one), lint, then run the
# whole test suite.
# Extra arguments go to pytest (e.g. -k framing, -x).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup_venv.sh"
"$root/scripts/setup_numpy126_venv.sh"  # the numpy 1.26 client's venv (test_numpy126_compat)
venv=${VENV:-$root/.venv}
cd "$root"
echo "==> ruff"
"$venv/bin/ruff" check .
echo "==> pytest"
exec "$venv/bin/python" -m pytest "$@"
