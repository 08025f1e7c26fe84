"""ReplayPolicy: answer each observation with the recorded actions from its timestep on.

For testing a robot or a simulator end to end with known motions, as ILStudio's policy/replay and
GR00T's ReplayPolicy do. A replay folder:

    replay_run/
      policy_metadata.json   {"policy_module": "policy.replay", "policy_name": "replay"}
      config.json            {"chunk_size": 20, "ctrl_space": "joint", "ctrl_type": "abs",
                              "period": 0.02, "gripper_continuous": false, "past_end": "hold"}
      actions.npz            episode_0, episode_1, ...: float arrays (T, action_dim), the actions
                             exactly as the robot receives them (not normalized)

The `replay_episode` parameter (--replay_episode) picks `episode_<n>`. The reply to an observation
with `timestep` t is actions[t : t + chunk_size]; `timestep` is required (the ROS node counts
observations from 0; socket clients send it, as ILStudio's MetaPolicy does). Steps past the end
follow `past_end`: `hold` repeats the last action (the default for absolute control), `zero`
answers zeros (the default for delta and relative control: no motion), `loop` starts again from
the first action (as ILStudio's replay cycles). ILStudio's own replay reads a training dataset and
counts calls instead of timesteps; this layout needs no dataset code and answers the same
observation the same way every time.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_server_ros.checkpoint import Checkpoint, CheckpointError
from policy_server_ros.observation import ObservationError, batch_size_of
from policy_server_ros.policies.base import ActionSpec, LoadOptions, Policy
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.policies.replay")

ACTIONS = "actions.npz"
PAST_END = ("hold", "zero", "loop")
_ABSOLUTE = ("abs", "absolute")


@dataclass(frozen=True)
class ReplayConfig:
    chunk_size: int = 1
    ctrl_space: str = "joint"
    ctrl_type: str = "abs"
    period: float | None = None
    gripper_continuous: bool = False
    past_end: str = ""  # "" = hold for absolute control, zero otherwise

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            problems.append(f"chunk_size must be a positive integer, got {self.chunk_size!r}")
        if self.period is not None and not (isinstance(self.period, (int, float))
                                            and self.period > 0):
            problems.append(f"period must be a positive number of seconds, got {self.period!r}")
        if self.past_end not in ("", *PAST_END):
            problems.append(f"past_end must be one of {PAST_END}, got {self.past_end!r}")
        if problems:
            raise ValueError("invalid replay config.json: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplayConfig:
        known = ("chunk_size", "ctrl_space", "ctrl_type", "period", "gripper_continuous",
                 "past_end")
        return cls(**{k: data[k] for k in known if k in data})

    @property
    def past_end_rule(self) -> str:
        return self.past_end or ("hold" if self.ctrl_type in _ABSOLUTE else "zero")


def read_episode(path: Path, episode: int) -> np.ndarray:
    """`episode_<episode>` of actions.npz as float32 (T, D); no pickles are ever loaded."""
    name = f"episode_{episode}"
    try:
        with np.load(path, allow_pickle=False) as data:
            names = sorted(data.files, key=lambda n: (len(n), n))
            if name not in data.files:
                raise CheckpointError(f"{path} has no {name} (replay_episode {episode}); it "
                                      f"holds: {', '.join(names) or 'nothing'}")
            actions = data[name]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"cannot read {path}: {exc} (expected an .npz of float arrays "
                              f"episode_0, episode_1, ..., written by numpy.savez)") from None
    if actions.ndim != 2 or actions.shape[0] < 1 or actions.dtype.kind not in "iuf":
        raise CheckpointError(f"{path}: {name} must be a numeric (T, action_dim) array with "
                              f"T >= 1, got {actions.dtype} {actions.shape}")
    actions = actions.astype(np.float32)
    if not np.isfinite(actions).all():
        raise CheckpointError(f"{path}: {name} contains NaN or infinite actions")
    return actions


def timesteps_of(batch: MetaObs, rows: int) -> np.ndarray:
    """MetaObs.timestep as one int64 per row: a scalar for all rows, or one value per row
    (ILStudio's MetaPolicy sends an array of shape (B, 1))."""
    raw = batch.timestep
    try:
        values = np.asarray(raw if not isinstance(raw, (list, tuple)) else
                            [np.asarray(v).reshape(-1) for v in raw]).reshape(-1)
    except ValueError:
        values = np.asarray([])
    if values.dtype.kind not in "iuf" or values.size not in (1, rows):
        raise ObservationError(f"replay needs MetaObs.timestep: one integer, or one per "
                               f"observation of the batch ({rows}); got {raw!r}")
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise ObservationError(f"MetaObs.timestep must be whole numbers, got {raw!r}")
    values = values.astype(np.int64)
    if (values < 0).any():
        raise ObservationError(f"replay needs MetaObs.timestep >= 0 (the step index from the "
                               f"start of the episode), got {raw!r}")
    return np.broadcast_to(values, (rows,))


class ReplayPolicy(Policy):
    """The recorded actions (T, D) of one episode, answered by timestep."""

    def __init__(self, actions: np.ndarray, config: ReplayConfig, episode: int = 0) -> None:
        self.actions = actions
        self.config = config
        self.episode = episode
        self.spec = ActionSpec(action_dim=actions.shape[1], chunk_size=config.chunk_size,
                               ctrl_space=config.ctrl_space, ctrl_type=config.ctrl_type,
                               gripper_continuous=bool(config.gripper_continuous))
        self.action_period = config.period
        self._offsets = np.arange(config.chunk_size)

    def forward(self, inputs: MetaObs) -> np.ndarray:
        rows = batch_size_of(inputs)
        start = timesteps_of(inputs, rows)
        index = start[:, None] + self._offsets[None, :]  # (B, chunk)
        length = self.actions.shape[0]
        rule = self.config.past_end_rule
        if rule == "loop":
            return self.actions[index % length]
        chunk = self.actions[np.minimum(index, length - 1)]
        if rule == "zero":
            chunk[index >= length] = 0.0
        return chunk


def load_checkpoint(checkpoint: Checkpoint, options: LoadOptions) -> ReplayPolicy:
    """Read config.json and the chosen episode of actions.npz."""
    config = ReplayConfig.from_dict(checkpoint.config)
    actions = read_episode(checkpoint.require(ACTIONS), options.replay_episode)
    log.info("Replaying episode %d of %s: %d actions of dimension %d, chunk %d, %s/%s, past the "
             "end: %s", options.replay_episode, checkpoint.path, actions.shape[0],
             actions.shape[1], config.chunk_size, config.ctrl_space, config.ctrl_type,
             config.past_end_rule)
    return ReplayPolicy(actions, config, options.replay_episode)
