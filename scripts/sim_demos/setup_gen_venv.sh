#!/usr/bin/env bash
# The side venv that generates the scripted demonstrations (generate_demos.py): MuJoCo 2.3.7 and
# dm_control 1.0.14 with numpy < 2, whose mocap weld tracks the scripted grippers (MuJoCo 3.x's
# does not), and gym-aloha for the scene assets and tasks. Nothing of it enters the project venv.
#
#   scripts/sim_demos/setup_gen_venv.sh [VENV]     # default /tmp/policy_server_ros_gen_venv
set -euo pipefail
venv=${1:-/tmp/policy_server_ros_gen_venv}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# gym-aloha without its dependencies: its own pins want MuJoCo 3.x.
"$venv/bin/pip" install -q "mujoco==2.3.7" "dm_control==1.0.14" "numpy<2" "gymnasium==1.4.0"
"$venv/bin/pip" install -q --no-deps "gym-aloha==0.1.5"
echo "==> generation venv ready: $venv"
