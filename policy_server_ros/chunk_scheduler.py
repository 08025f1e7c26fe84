"""One command per control step from the action chunks the policy produces. No ROS here: the node
calls it from its command timer, socket clients from their control loop (scheduled_client).

A chunk is (T, A) actions for the observation stamped `stamp_ns`; its step i is meant for time
stamp + i * period (latency compensation: the steps inference took are skipped), or, with
latency compensation off, for received + i * period. `step(now)` gives the command for `now`:

- chunk: the newest chunk's action for `now` (a newer observation's chunk replaces the plan).
- ensemble: ACT's temporal ensembling: every chunk that has an action for `now` takes part, the
  oldest first, with weights exp(-k * i) (i = 0 for the oldest, so older predictions weigh
  more, as ACT's imitate_episodes.py and LeRobot's ACTTemporalEnsembler do), normalized.
- aggregate: when a chunk arrives, the steps it shares with the current plan become
  fn(old, new) (AGGREGATE_FUNCTIONS, LeRobot's async-inference names); the rest come from the
  new chunk.

When no chunk has an action for `now` the last command is held (repeated for absolute actions;
zeros for deltas, which means "do not move") for up to `hold_s`, then there is no command
(None). Safety clamps apply to every command: a largest change per step (absolute actions) or
largest delta (delta actions), then lower/upper bounds on the values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

MODES = ("chunk", "ensemble", "aggregate")

# fn(old, new) for the steps two chunks share; as LeRobot's async inference names them.
AGGREGATE_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "weighted_average": lambda old, new: 0.3 * old + 0.7 * new,
    "latest_only": lambda old, new: new,
    "average": lambda old, new: 0.5 * old + 0.5 * new,
    "conservative": lambda old, new: 0.7 * old + 0.3 * new,
}


def _limits(values: Sequence[float] | np.ndarray | None, what: str) -> np.ndarray | None:
    if values is None or len(values) == 0:
        return None
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{what} has NaN entries: {list(array)}")
    return array


@dataclass(frozen=True)
class SchedulerConfig:
    """How chunks become commands. Limits are per action dimension, or one value for all."""

    mode: str = "chunk"
    period_s: float = 0.02
    ensemble_coeff: float = 0.01  # ACT's k
    aggregate_fn: str = "weighted_average"
    latency_compensation: bool = True
    hold_s: float = 0.0
    delta: bool = False  # the actions are deltas: hold sends zeros, max_step bounds |delta|
    lower: Sequence[float] | None = None
    upper: Sequence[float] | None = None
    max_step: Sequence[float] | None = None
    lower_array: np.ndarray | None = field(init=False, repr=False, compare=False)
    upper_array: np.ndarray | None = field(init=False, repr=False, compare=False)
    max_step_array: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {list(MODES)}")
        if self.aggregate_fn not in AGGREGATE_FUNCTIONS:
            raise ValueError(f"aggregate_fn {self.aggregate_fn!r} is not one of "
                             f"{list(AGGREGATE_FUNCTIONS)}")
        if not self.period_s > 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s}")
        if not self.ensemble_coeff >= 0:
            raise ValueError(f"ensemble_coeff must be >= 0, got {self.ensemble_coeff}")
        if not self.hold_s >= 0:
            raise ValueError(f"hold_s must be >= 0, got {self.hold_s}")
        lower, upper = _limits(self.lower, "lower"), _limits(self.upper, "upper")
        max_step = _limits(self.max_step, "max_step")
        if max_step is not None and (max_step < 0).any():
            raise ValueError(f"max_step must be >= 0, got {list(max_step)}")
        if lower is not None and upper is not None and lower.shape == upper.shape \
                and (lower > upper).any():
            raise ValueError(f"lower {list(lower)} is above upper {list(upper)}")
        object.__setattr__(self, "lower_array", lower)
        object.__setattr__(self, "upper_array", upper)
        object.__setattr__(self, "max_step_array", max_step)

    def check_dim(self, action_dim: int, names: Mapping[str, str] | None = None) -> None:
        """ValueError unless every limit has one value or `action_dim` values; `names` says
        what the caller calls the limits (e.g. their parameter names)."""
        names = names or {}
        for field_name, array in (("lower", self.lower_array), ("upper", self.upper_array),
                                  ("max_step", self.max_step_array)):
            name = names.get(field_name, field_name)
            if array is not None and array.size not in (1, action_dim):
                raise ValueError(f"{name} has {array.size} values; give 1 or one per action "
                                 f"dimension ({action_dim})")


@dataclass
class SchedulerCounts:
    """What the scheduler did, for diagnostics."""

    chunks: int = 0  # accepted
    chunks_refused: int = 0  # older than the plan's newest chunk (chunk, aggregate modes)
    commands: int = 0  # from a chunk
    held: int = 0  # holds after the chunks ran out
    idle: int = 0  # steps without a command
    clamped: int = 0  # commands changed by a clamp


@dataclass(frozen=True)
class Command:
    """The command for control time `stamp_ns`; held: no chunk had an action for it."""

    action: np.ndarray  # (A,) float64
    stamp_ns: int
    held: bool = False
    clamped: bool = False


class ChunkScheduler:
    """Chunks in (add_chunk), one command per control step out (step). Not thread-safe: the
    caller serializes calls."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.period_ns = max(1, round(config.period_s * 1e9))
        self._hold_ns = round(config.hold_s * 1e9)
        self.counts = SchedulerCounts()
        self.reset()

    def reset(self) -> None:
        """Forget every chunk and the last command (e.g. between episodes); counts stay."""
        self._chunks: list[tuple[int, np.ndarray]] = []  # (start_ns, (T, A)), oldest first
        self._last: np.ndarray | None = None
        self._last_chunk_ns: int | None = None  # when a chunk last gave the command
        self._newest_start: int | None = None  # of the newest chunk taken, even once used up

    def _index(self, start_ns: int, t_ns: int) -> int:
        """The step of a chunk starting at `start_ns` nearest to time `t_ns`."""
        return (t_ns - start_ns + self.period_ns // 2) // self.period_ns

    def add_chunk(self, actions: np.ndarray, stamp_ns: int, received_ns: int | None = None
                  ) -> bool:
        """Take the (T, A) chunk for the observation stamped `stamp_ns` that arrived at
        `received_ns`; False when it is refused (older than the plan's newest chunk)."""
        actions = np.array(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] < 1:
            raise ValueError(f"a chunk must be (steps, action_dim), got shape {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("a chunk with non-finite actions")
        if self._chunks and self._chunks[-1][1].shape[1] != actions.shape[1]:
            raise ValueError(f"a chunk of {actions.shape[1]}-D actions after "
                             f"{self._chunks[-1][1].shape[1]}-D ones; reset first")
        use_received = not self.config.latency_compensation and received_ns is not None
        start = received_ns if use_received else stamp_ns
        mode = self.config.mode
        if mode == "ensemble":
            self._chunks.append((start, actions))
            self._chunks.sort(key=lambda chunk: chunk[0])  # stable: arrival order on ties
        else:
            if self._newest_start is not None and start < self._newest_start:
                self.counts.chunks_refused += 1
                return False
            if mode == "aggregate" and self._chunks:
                old_start, old = self._chunks[-1]
                fn = AGGREGATE_FUNCTIONS[self.config.aggregate_fn]
                for j in range(actions.shape[0]):
                    i = self._index(old_start, start + j * self.period_ns)
                    if 0 <= i < old.shape[0]:
                        actions[j] = fn(old[i], actions[j])
            self._chunks = [(start, actions)]
        self._newest_start = start if self._newest_start is None \
            else max(start, self._newest_start)
        self.counts.chunks += 1
        return True

    def covers(self, now_ns: int) -> bool:
        """Whether some chunk has an action for `now_ns` (else step() holds or gives None)."""
        return any(0 <= self._index(start, now_ns) < actions.shape[0]
                   for start, actions in self._chunks)

    def step(self, now_ns: int) -> Command | None:
        """The command for control time `now_ns`, or None (no chunk yet, or the hold ran
        out)."""
        covering, kept = [], []
        for start, actions in self._chunks:
            i = self._index(start, now_ns)
            if i < actions.shape[0]:
                kept.append((start, actions))  # may still cover later steps
                if i >= 0:
                    covering.append(actions[i])
        self._chunks = kept
        held = not covering
        if covering and self.config.mode == "ensemble":
            rows = np.stack(covering)
            weights = np.exp(-self.config.ensemble_coeff * np.arange(len(rows)))
            action = (weights / weights.sum()) @ rows
        elif covering:
            action = covering[-1].copy()
        elif self._last is not None and self._last_chunk_ns is not None \
                and now_ns - self._last_chunk_ns <= self._hold_ns:
            action = np.zeros_like(self._last) if self.config.delta else self._last.copy()
        else:
            self.counts.idle += 1
            return None
        if not held:
            self._last_chunk_ns = now_ns
        action, clamped = self._clamp(action)
        self._last = action
        if held:
            self.counts.held += 1
        else:
            self.counts.commands += 1
        self.counts.clamped += clamped
        return Command(action=action, stamp_ns=now_ns, held=held, clamped=clamped)

    def _clamp(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        c = self.config
        out = action
        if c.max_step_array is not None:
            if c.delta:
                out = np.clip(out, -c.max_step_array, c.max_step_array)
            elif self._last is not None:
                out = self._last + np.clip(out - self._last, -c.max_step_array,
                                           c.max_step_array)
        if c.lower_array is not None or c.upper_array is not None:
            out = np.clip(out, -np.inf if c.lower_array is None else c.lower_array,
                          np.inf if c.upper_array is None else c.upper_array)
        return out, not np.array_equal(out, action)
