#!/usr/bin/env bash
# The original guide's launcher: start_policy_server.py with --model_path as an alias of
# --model_name_or_path. Works from any directory. Uses the project's .venv when it exists,
# else python3 from PATH (e.g. a sourced ROS 2 install); set PYTHON to choose another.
#
#   scripts/start_policy_server.sh --model_path ckpt/act_run --port 5000 --chunk_size 50
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model_path) [ $# -ge 2 ] || { echo "error: --model_path needs a value" >&2; exit 2; }
                  args+=(--model_name_or_path "$2"); shift 2 ;;
    --model_path=*) args+=("--model_name_or_path=${1#--model_path=}"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
exec "$PYTHON" "$root/start_policy_server.py" "${args[@]}"
