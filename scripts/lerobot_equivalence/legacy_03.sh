#!/usr/bin/env bash
# LeRobot <= 0.3 checkpoints: LeRobot 0.3.3 writes one (statistics inside model.safetensors);
# this server refuses it, naming the conversion; LeRobot 0.4.4's migration script converts it;
# this server serves the converted folder, compared with LeRobot 0.3.3's own select_action on the
# original folder. Uses the side venv of setup_side_venv.sh with lerobot 0.3.3's wheel unpacked
# in front of its lerobot 0.4.4 (same torch; LeRobot 0.3.3 pins torch < 2.8).
#
#   scripts/lerobot_equivalence/legacy_03.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
side=${SIDE_PYTHON:-/work/side/lerobot/bin/python}
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
"$(dirname "$side")/pip" download -q --no-deps lerobot==0.3.3 -d "$w/wheel"
python3 -m zipfile -e "$w"/wheel/lerobot-0.3.3-*.whl "$w/lerobot03"
old=(env PYTHONPATH="$w/lerobot03" "$side" "$here/lerobot03_side.py")
"${old[@]}" write "$w/act03"
echo "LeRobot 0.3.3 wrote: $(ls "$w/act03" | tr '\n' ' ')"
.venv/bin/python - "$w/act03" <<'PY'
import sys
from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.policies import LoadOptions, load_policy
try:
    load_policy(sys.argv[1], LoadOptions(device="cpu"))
    sys.exit("served a LeRobot 0.3 checkpoint without conversion")
except CheckpointError as exc:
    print(f"refused: {exc}")
PY
# The script writes <folder>_migrated, then fails to reach the hub for its model card; the
# converted files are complete by then.
"$side" -m lerobot.processor.migrate_policy_normalization --pretrained-path "$w/act03" \
  >"$w/migrate.log" 2>&1 || true
ls "$w/act03_migrated/policy_preprocessor.json" >/dev/null
.venv/bin/python "$here/compare.py" inputs "$w/in.npz" --state_dim 6 --cameras 1 --image 48x64
"${old[@]}" infer "$w/act03" "$w/in.npz" "$w/out03.npz"
echo -n "[lerobot_0.3.3_act_converted] "
.venv/bin/python "$here/compare.py" compare "$w/act03_migrated" "$w/in.npz" "$w/out03.npz"
