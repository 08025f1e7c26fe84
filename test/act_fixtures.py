"""Small ACT checkpoints for tests: the real structure at toy size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.base import MetaObs
from policy_server_ros.example_checkpoint import small_config, write_example_checkpoint

IMAGE_HW = (64, 80)


def small_checkpoint(folder: Path, cameras: int = 1, seed: int = 0) -> Path:
    return write_example_checkpoint(folder, small_config(cameras), seed)


def observation(cameras: int = 1, seed: int = 0, batch: int | None = None) -> MetaObs:
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    return MetaObs(state=rng.normal(size=(*lead, 14)),
                   image=rng.integers(0, 256, size=(*lead, cameras, 3, *IMAGE_HW),
                                      dtype=np.uint8))
