#!/usr/bin/env bash
# Quick start, command 1: set up the venv, then serve the default policy on port 5000.
# Extra arguments go to start_policy_server.py (e.g. --port 6000, -m builtin:zero).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup_venv.sh"
exec "${VENV:-$root/.venv}/bin/python" "$root/start_policy_server.py" "$@"
