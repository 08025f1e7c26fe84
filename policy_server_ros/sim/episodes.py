"""What defines an episode of the transfer-cube task, shared by the simulator, the demonstration
generator and the evaluation: the cube's start pose from a seed, the joint names, the timing.

numpy only: the demonstration generator imports this module in a side venv (MuJoCo 2.3.7,
numpy < 2) that has neither rclpy nor torch.
"""

from __future__ import annotations

import numpy as np

# ALOHA's 14 joints in the order of the task's qpos and action (gym_aloha.constants.JOINTS);
# grippers are normalized positions, 0 = closed, 1 = open.
JOINT_NAMES: tuple[str, ...] = tuple(
    f"{side}_arm_{joint}" for side in ("left", "right")
    for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
                  "gripper"))
CONTROL_PERIOD = 0.02  # s: the task's control step (50 Hz), gym_aloha.constants.DT
EPISODE_STEPS = 400  # the scripted demonstration's length (ACT's sim_transfer_cube_scripted)
MAX_REWARD = 4  # TransferCubeTask: the cube held by the left gripper, off the table
CUBE_POSE_DIM = 7  # x, y, z, qw, qx, qy, qz (MuJoCo's free-joint order)


def cube_start_pose(seed: int) -> np.ndarray:
    """The cube's start pose for `seed`: x in [0, 0.2], y in [0.4, 0.6], z = 0.05, upright, drawn
    as gym_aloha.utils.sample_box_pose draws it."""
    rng = np.random.RandomState(seed)
    low = np.array([0.0, 0.4, 0.05])
    high = np.array([0.2, 0.6, 0.05])
    return np.concatenate([rng.uniform(low, high), [1.0, 0.0, 0.0, 0.0]])


def parse_seeds(text: str) -> list[int]:
    """'0-19' -> 0..19, '3,5,7' -> [3, 5, 7], combinations ('0-4,10') too."""
    seeds: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if sep else [int(part)]
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: use e.g. 0-19 or 3,5,7") from None
    if not seeds:
        raise ValueError(f"bad seed list {text!r}: no seeds")
    return seeds
