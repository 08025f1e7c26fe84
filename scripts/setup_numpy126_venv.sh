#!/usr/bin/env bash
# Create (once) the test suite's second venv: numpy 1.26.0 and nothing else, in which
# test/test_numpy126_compat.py runs a client the way ILStudio's (numpy 1.26-pinned) clients are.
# scripts/test.sh runs this after scripts/setup_venv.sh; scripts/run.sh does not need it. The
# test itself never installs anything: without this venv it fails and names this script.
# Safe to run repeatedly: a stamp records what was installed, so a rerun does nothing.
#
#   scripts/setup_numpy126_venv.sh                                # ./.venv-numpy126 from python3
#   NUMPY126_VENV=/path PYTHON=python3.12 scripts/setup_numpy126_venv.sh
#   (the test reads NUMPY126_VENV too)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
side=${NUMPY126_VENV:-$root/.venv-numpy126}
python=${PYTHON:-python3}
# 1.26.0 itself: it lacks the numpy._core alias that 1.26.4 added, so it is the hardest case.
spec=numpy==1.26.0
stamp="$side/.numpy126.stamp"

if [ -x "$side/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$spec" ]; then
  echo "==> numpy 1.26 venv ready: $side"
  exit 0
fi
# numpy 1.26.0 has wheels for CPython 3.9-3.12 only; elsewhere pip would try a long source build.
if ! "$python" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null
then
  echo "error: $spec needs Python 3.9-3.12; $python is missing or another version" \
    "(set PYTHON=python3.11)" >&2
  exit 1
fi
echo "==> creating $side ($spec, for test/test_numpy126_compat.py)"
"$python" -m venv --clear "$side"
"$side/bin/python" -m pip install -q --disable-pip-version-check --only-binary=numpy "$spec"
echo "$spec" > "$stamp"
echo "==> numpy 1.26 venv ready: $side"
