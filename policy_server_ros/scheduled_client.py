"""The node's chunk scheduler for socket clients: one call per control step.

    with PolicyClient("localhost", 5000) as client:
        controller = ScheduledPolicyClient(client, SchedulerConfig(mode="ensemble"), query_every=1)
        for t in range(steps):
            action = controller.step(observation(t))  # (A,) float64, or None

By default time is counted in control steps (step k is at k * period_s), as in a simulator where
a request takes no simulated time; pass `clock` (nanoseconds, e.g. time.monotonic_ns) for a
real robot, where the steps a request took are skipped (latency compensation). No ROS here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from policy_server_ros.chunk_scheduler import ChunkScheduler, SchedulerConfig
from socket_bridge.client import PolicyClient
from socket_bridge.wire_types import MetaObs

__all__ = ["ScheduledPolicyClient", "reply_actions"]


def reply_actions(reply: list[Any]) -> np.ndarray:
    """A reply (one MetaAction per step, or the batched form: per step an object array of
    dicts) as (steps, action_dim) float64, of batch item 0."""
    rows = []
    for entry in reply:
        item = entry[0] if isinstance(entry, np.ndarray) and entry.dtype == object else entry
        action = item["action"] if isinstance(item, dict) else item.action
        rows.append(np.asarray(action, dtype=np.float64).reshape(-1))
    return np.stack(rows)


class ScheduledPolicyClient:
    """A PolicyClient plus a ChunkScheduler. query_every: ask for a new chunk every that many
    steps; 0 = only when no chunk has an action for the current step."""

    def __init__(self, client: PolicyClient, config: SchedulerConfig, *, query_every: int = 0,
                 clock: Callable[[], int] | None = None) -> None:
        if query_every < 0:
            raise ValueError(f"query_every must be >= 0, got {query_every}")
        self.client = client
        self.scheduler = ChunkScheduler(config)
        self.query_every = query_every
        self._clock = clock
        self.steps = 0
        self.queries = 0
        self._last_query: int | None = None

    def _now(self) -> int:
        if self._clock is not None:
            return self._clock()
        return self.steps * self.scheduler.period_ns

    def _due(self, now_ns: int) -> bool:
        if self._last_query is None:
            return True
        if self.query_every > 0:
            return self.steps - self._last_query >= self.query_every
        return not self.scheduler.covers(now_ns)

    def step(self, obs: MetaObs) -> np.ndarray | None:
        """The action for this control step (`obs` is its observation, sent only when a new
        chunk is due); None when there is none (server answered [] and the hold ran out)."""
        now = self._now()
        if self._due(now):
            self._last_query = self.steps
            self.queries += 1
            reply = self.client.send_meta_obs(obs)
            if reply:  # [] is the server's inference failure: keep the plan, hold
                self.scheduler.add_chunk(reply_actions(reply), stamp_ns=now,
                                         received_ns=self._now())
            now = self._now()
        command = self.scheduler.step(now)
        self.steps += 1
        return None if command is None else command.action

    def reset(self) -> None:
        """Between episodes: forget the plan; the next step is step 0 and queries."""
        self.scheduler.reset()
        self.steps = 0
        self._last_query = None
