"""Example replay folders: smooth, distinct joint trajectories for ALOHA's 14 joints.

Episode n moves every joint along a sine of its own phase around ALOHA's mean pose (see
example_checkpoint.aloha_stats), 400 steps at 50 Hz (`small`: 40 steps), chunk 20 (`small`: 5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from policy_server_ros.policies.replay.policy import ACTIONS

DIM = 14
PERIOD = 0.02


def example_episode(episode: int, steps: int) -> np.ndarray:
    from policy_server_ros.example_checkpoint import aloha_stats  # noqa: PLC0415

    stats = aloha_stats(DIM)["action"]
    mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    t = np.arange(steps)[:, None] * PERIOD
    phase = np.arange(DIM)[None, :] * 0.4 + episode
    return (mean + std * np.sin(2 * np.pi * 0.5 * t + phase)).astype(np.float32)


def write_example(out: str | Path, *, small: bool = False, episodes: int = 2,
                  **_unused: Any) -> Path:
    """Write the replay folder `out` (created if needed) and return it."""
    from policy_server_ros.checkpoint import CONFIG, METADATA  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = 40 if small else 400
    np.savez(out / ACTIONS, **{f"episode_{n}": example_episode(n, steps)
                               for n in range(episodes)})
    (out / CONFIG).write_text(json.dumps({
        "chunk_size": 5 if small else 20, "ctrl_space": "joint", "ctrl_type": "abs",
        "period": PERIOD, "gripper_continuous": False, "past_end": "hold"}, indent=2))
    (out / METADATA).write_text(json.dumps({"policy_module": "policy.replay",
                                            "policy_name": "replay"}, indent=2))
    return out
