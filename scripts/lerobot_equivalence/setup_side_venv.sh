#!/usr/bin/env bash
# The side venv with LeRobot 0.4.4, OUTSIDE this repository and never used by its tests:
#
#   scripts/lerobot_equivalence/setup_side_venv.sh [/work/side/lerobot]
#
# LeRobot 0.4.4 asks for torch < 2.11 and torchvision < 0.26; this machine's notes name the
# pair torch 2.14.1 / torchvision 0.29.1 (local wheels, Python 3.11), under which LeRobot's ACT,
# Diffusion and processors run unchanged. So lerobot goes in without its dependency list, then
# the few packages its policy, processor and config modules import.
set -euo pipefail
venv=${1:-/work/side/lerobot}
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$venv/bin/pip" install -q --no-deps lerobot==0.4.4
"$venv/bin/pip" install -q "draccus==0.10.0" "diffusers<0.36" "huggingface-hub>=0.34.2,<0.36" \
  "einops<0.9" safetensors termcolor "packaging<26" "deepdiff<9" "datasets>=4,<5" jsonlines \
  "gymnasium>=1.1.1,<2" "accelerate<2" imageio pyserial av opencv-python-headless
"$venv/bin/python" -c "import lerobot.policies.factory, lerobot.policies.act.modeling_act, \
lerobot.policies.diffusion.modeling_diffusion; print('LeRobot side venv ready:', '$venv')"
