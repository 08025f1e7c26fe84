"""Policies that need no checkpoint: for smoke tests, benchmarks and first contact with a robot.

`builtin:zero` returns zero end-effector deltas (the arm holds still) at zero cost;
`builtin:echo` returns the state as absolute joint targets, plus 0.01 per step, so a client can
check that every reply answers its own request.
"""

from __future__ import annotations

import numpy as np

from policy_server_ros.observation import ObservationError, batch_size_of
from policy_server_ros.policies.base import ActionSpec, Policy
from socket_bridge.wire_types import MetaObs

DEFAULT_CHUNK = 100  # ACT's chunk for ALOHA
DEFAULT_ACTION_DIM = 14  # bimanual ALOHA: 2 x (6 joints + gripper)


class ZeroPolicy(Policy):
    """Zero end-effector deltas: a robot executing them does not move."""

    def __init__(self, action_dim: int = DEFAULT_ACTION_DIM, chunk_size: int = DEFAULT_CHUNK):
        self.spec = ActionSpec(action_dim=action_dim, chunk_size=chunk_size,
                               ctrl_space="ee", ctrl_type="delta")

    def forward(self, inputs: MetaObs) -> np.ndarray:
        return np.zeros((batch_size_of(inputs), self.spec.chunk_size, self.spec.action_dim),
                        dtype=np.float32)


class EchoPolicy(Policy):
    """actions[b, t] = state[b] + 0.01 * t, as absolute joint targets (action_dim = state_dim)."""

    STEP = 0.01

    def __init__(self, action_dim: int = DEFAULT_ACTION_DIM, chunk_size: int = DEFAULT_CHUNK):
        self.spec = ActionSpec(action_dim=action_dim, chunk_size=chunk_size,
                               ctrl_space="joint", ctrl_type="abs")
        self._ramp = (self.STEP * np.arange(chunk_size, dtype=np.float32))[None, :, None]

    def forward(self, inputs: MetaObs) -> np.ndarray:
        batch = inputs
        if batch.state is None or batch.state.shape[-1] != self.spec.action_dim:
            got = None if batch.state is None else batch.state.shape
            raise ObservationError(f"builtin:echo needs a state of dimension "
                                   f"{self.spec.action_dim}, got state shape {got}")
        return (batch.state[:, None, :].astype(np.float32) + self._ramp).astype(np.float32)


BUILTIN_POLICIES: dict[str, type[Policy]] = {"zero": ZeroPolicy, "echo": EchoPolicy}
