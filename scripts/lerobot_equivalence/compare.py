#!/usr/bin/env python3
"""This project's side of the LeRobot equivalence check (see lerobot_side.py and run_all.sh):
the same LeRobot checkpoint folder and inputs through policy_server_ros, compared with
LeRobot's own outputs. It is ILStudio's check's command line (scripts/ilstudio_equivalence/
compare.py: inputs, keys, compare) with one difference: --steps defaults to 0, the checkpoint's
own denoising steps.

    .venv/bin/python scripts/lerobot_equivalence/compare.py inputs OUT.npz --state_dim 14 \\
        --cameras 1 --image 480x640 [--state_obj_dim 0]
    .venv/bin/python scripts/lerobot_equivalence/compare.py compare CKPT INPUTS.npz LEROBOT.npz \\
        [--seed 0] [--steps N]
    .venv/bin/python scripts/lerobot_equivalence/compare.py keys model.safetensors > listing.tsv
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ilstudio_equivalence"))

from compare import main

if __name__ == "__main__":
    sys.exit(main(default_steps=0, description=__doc__))
