#!/usr/bin/env python3
"""This project's side of the LeRobot equivalence check (see lerobot_side.py and run_all.sh):
the same LeRobot checkpoint folder and inputs through policy_server_ros, compared with
LeRobot's own outputs. Inputs, listings and the comparison are ILStudio's check's
(scripts/ilstudio_equivalence/compare.py); only the options differ.

    .venv/bin/python scripts/lerobot_equivalence/compare.py inputs OUT.npz --state_dim 14 \
        --cameras 1 --image 480x640 [--state_obj_dim 0]
    .venv/bin/python scripts/lerobot_equivalence/compare.py compare CKPT INPUTS.npz LEROBOT.npz \
        [--seed 0] [--steps N]
    .venv/bin/python scripts/lerobot_equivalence/compare.py keys model.safetensors > listing.tsv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ilstudio_equivalence"))

from compare import _hw, compare, make_inputs, tensor_listing

from policy_server_ros.policies import LoadOptions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("out", type=Path)
    p.add_argument("--state_dim", type=int, required=True)
    p.add_argument("--cameras", type=int, default=0)
    p.add_argument("--image", type=_hw, default=(64, 64))
    p.add_argument("--state_obj_dim", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("keys")
    p.add_argument("weights", type=Path)
    p = sub.add_parser("compare")
    p.add_argument("ckpt", type=Path)
    p.add_argument("inputs", type=Path)
    p.add_argument("original", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="0: config.json's")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if args.command == "keys":
        print("\n".join(tensor_listing(args.weights)))
        return 0
    if args.command == "inputs":
        make_inputs(args.out, args.state_dim, args.cameras, args.image, args.seed,
                    state_obj_dim=args.state_obj_dim)
        return 0
    options = LoadOptions(device="cpu", seed=args.seed, num_inference_steps=args.steps)
    return compare(args.ckpt, args.inputs, args.original, options, args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
