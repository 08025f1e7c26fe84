"""The node's chunk scheduler for socket clients: one call per control step, the command for now.

    with PolicyClient("localhost", 5000) as client:
        controller = ScheduledPolicyClient(client, SchedulerConfig(mode="ensemble"))
        for t in range(steps):
            action = controller.step(observation(t))  # (A,) float64, or None

When a new chunk is due (ensemble: every step; chunk and aggregate: when the share of the newest
chunk still ahead falls to refill_threshold, as LeRobot's chunk_size_threshold), the step's
observation is sent:

- inline (default): step() waits for the reply, then answers. Time is counted in control steps
  (step k is at k * period_s), as in a simulator where a request takes no simulated time, unless
  `clock` (nanoseconds) is given, in which case the steps the request took are skipped (latency
  compensation).
- background=True: a worker thread sends it and step() answers at once from the plan it has;
  the chunk joins the plan when it arrives, stamped with the step's time, so the steps the
  request took are skipped. Time is `clock` (default time.monotonic_ns). One request at a time;
  in ensemble mode a newer observation replaces one still waiting to be sent.

The wire is unchanged: these are ordinary requests. No ROS here.
"""

from __future__ import annotations

import threading
import time
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
    """A PolicyClient plus a ChunkScheduler: step(obs) gives this control step's command."""

    def __init__(self, client: PolicyClient, config: SchedulerConfig, *,
                 refill_threshold: float = 0.5, background: bool = False,
                 clock: Callable[[], int] | None = None) -> None:
        if not 0.0 <= refill_threshold <= 1.0:
            raise ValueError(f"refill_threshold must be in [0, 1], got {refill_threshold}")
        self.client = client
        self.scheduler = ChunkScheduler(config)
        self.refill_threshold = refill_threshold
        self.background = background
        self._clock = clock or (time.monotonic_ns if background else None)
        self.steps = 0
        self.queries = 0  # requests sent
        self.empty_replies = 0  # the server's [] (its inference failed): the plan holds
        self._lock = threading.Lock()  # the scheduler: step() and the worker's replies
        self._wake = threading.Condition(self._lock)
        self._waiting: tuple[MetaObs, int] | None = None  # (observation, its time)
        self._epoch = 0  # reset() counts up; a reply from before a reset is dropped
        self._busy = False  # a request is on its way
        self._error: BaseException | None = None
        self._closed = False
        self._worker: threading.Thread | None = None
        if background:
            self._worker = threading.Thread(target=self._work, name="scheduled-client",
                                            daemon=True)
            self._worker.start()

    def _now(self) -> int:
        return self._clock() if self._clock is not None \
            else self.steps * self.scheduler.period_ns

    def _due(self, now_ns: int) -> bool:
        if self.scheduler.config.mode == "ensemble":
            return True
        return not self._busy and \
            self.scheduler.remaining_fraction(now_ns) <= self.refill_threshold

    def step(self, obs: MetaObs) -> np.ndarray | None:
        """The command for this control step (`obs` is its observation, sent only when a new
        chunk is due); None when there is none (no chunk yet, or the hold ran out). In
        background mode, a request that failed raises here."""
        now = self._now()
        with self._lock:
            if self._error is not None:
                raise RuntimeError(f"scheduled client: a request failed: {self._error}") \
                    from self._error
            due = self._due(now)
            if due and self.background:
                self._waiting = (obs, now)
                self._wake.notify()
        if due and not self.background:
            self._request(obs, now, self._epoch)
            now = self._now()
        with self._lock:
            command = self.scheduler.step(now)
        self.steps += 1
        return None if command is None else command.action

    def _request(self, obs: MetaObs, stamp_ns: int, epoch: int) -> None:
        self.queries += 1
        reply = self.client.send_meta_obs(obs)
        with self._lock:
            if epoch != self._epoch:
                return  # asked before a reset: another episode's chunk
            if reply:
                self.scheduler.add_chunk(reply_actions(reply), stamp_ns, self._now())
            else:
                self.empty_replies += 1

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._waiting is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                (obs, stamp), self._waiting = self._waiting, None
                self._busy, epoch = True, self._epoch
            try:
                self._request(obs, stamp, epoch)
            except Exception as exc:  # raised to the control loop on its next step
                with self._lock:
                    self._error = exc
                return
            finally:
                with self._lock:
                    self._busy = False

    def reset(self) -> None:
        """Between episodes: forget the plan and any waiting observation; the next step is
        step 0 and asks for a chunk. A reply still on its way is dropped."""
        with self._lock:
            self.scheduler.reset()
            self._waiting = None
            self._epoch += 1
        self.steps = 0

    def close(self) -> None:
        """Stop the background worker (the PolicyClient stays open: its owner closes it)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._worker is not None:
            self._worker.join(timeout=self.client.connect_timeout + self.client.read_timeout)

    def __enter__(self) -> ScheduledPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
