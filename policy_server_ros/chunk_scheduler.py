"""One command per control step from the action chunks a policy produces. No ROS here: the node
calls it from its command timer (command_stream), socket clients from their control loop
(socket_bridge.scheduled_client).

A chunk is (T, A) actions computed from the observation stamped t_obs; step i is the target for
t_obs + i * period. Asked for the command at time t, the scheduler uses step
i = round((t - t_obs) / period) of a chunk (the nearest step, so a control tick that fires a
little early still gets its own step). That is the latency compensation: a chunk that arrives
at t_arr starts at the step for t_arr, and the steps that elapsed during inference are skipped,
never played late. (latency_compensation=False counts steps from t_arr instead.)

Modes:

- chunk: the newest chunk, step by step (a newer observation's chunk replaces the plan; one
  from an older observation that arrives late is refused).
- ensemble: ACT's temporal ensembling over every chunk that has a step for t. With the n
  chunks that do, ordered by observation stamp, oldest first (j = 0 the oldest),

      command(t) = sum_j w_j * a_j(t) / sum_j w_j,   w_j = exp(-ensemble_decay * j)

  so the oldest prediction gets exp(0) and weighs most. That is the order of ACT's own
  imitate_episodes.py (`exp_weights = np.exp(-k * np.arange(n))` over all_time_actions[:, t],
  rows in query order) and of LeRobot's ACTTemporalEnsembler ("w_0 is the oldest action");
  ensemble_decay = 0.01 is both's k. ILStudio has no such ensembling (its TemporalAggManager
  blends only the newest two chunks, which is what `aggregate` does).
- aggregate: LeRobot's async-inference merge. When a chunk arrives, each of its steps whose
  time the current plan also covers becomes fn(old, new), with fn from AGGREGATE_FUNCTIONS
  (LeRobot's weighted_average, latest_only, average, conservative are weighted, latest,
  average, conservative here); its other steps are taken as they are, and the plan becomes
  the merged chunk.

ensemble and aggregate average targets from different observations, which is only meaningful
for absolute targets: a `delta` or `relative` chunk is defined against the state at its own
observation, so those play in chunk mode only (SchedulerConfig refuses the rest).

When no chunk has a step for t, the last command is held (repeated; for delta actions zeros,
which means "do not move") for at most hold_timeout seconds after the last covered step; then
there is no command (None), counted. Never extrapolated, never repeated forever. Safety on every
command: the change from the previous command is limited to max_command_step (for delta actions,
the delta itself), then the values are clamped to [command_min, command_max]; clamped commands
are counted.

The per-command path is vectorized: the live chunks are held in one (N, T, A) array and every
step is a few numpy operations, whatever N, T and A; arrays are rebuilt only when a chunk arrives
or runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

MODES = ("chunk", "ensemble", "aggregate")
CTRL_TYPES_FOR_ANY_MODE = ("abs",)

# fn(old, new) for the steps a new chunk shares with the plan (LeRobot's async-inference
# AGGREGATE_FUNCTIONS; its names in brackets). Adding one is one entry here.
AGGREGATE_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "latest": lambda old, new: new,  # latest_only
    "average": lambda old, new: 0.5 * old + 0.5 * new,  # average
    "weighted": lambda old, new: 0.3 * old + 0.7 * new,  # weighted_average
    "conservative": lambda old, new: 0.7 * old + 0.3 * new,  # conservative
}


def _limits(values: Sequence[float] | np.ndarray | None, what: str) -> np.ndarray | None:
    if values is None or len(values) == 0:
        return None
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{what} has NaN entries: {array.tolist()}")
    return array


@dataclass(frozen=True)
class SchedulerConfig:
    """How chunks become commands. The limits are per action dimension, or one value for all.
    Field names are the node's parameter names (mode is execution_mode)."""

    mode: str = "chunk"
    period_s: float = 0.02  # between a chunk's steps (the node's action_period)
    ensemble_decay: float = 0.01  # ACT's k
    aggregate_fn: str = "weighted"
    latency_compensation: bool = True
    hold_timeout: float = 0.0  # s
    ctrl_type: str = "abs"  # the chunks' convention: abs, delta or relative
    command_min: Sequence[float] | None = None
    command_max: Sequence[float] | None = None
    max_command_step: Sequence[float] | None = None
    min_array: np.ndarray | None = field(init=False, repr=False, compare=False)
    max_array: np.ndarray | None = field(init=False, repr=False, compare=False)
    step_array: np.ndarray | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"execution_mode {self.mode!r} is not one of {list(MODES)}")
        if self.aggregate_fn not in AGGREGATE_FUNCTIONS:
            raise ValueError(f"aggregate_fn {self.aggregate_fn!r} is not one of "
                             f"{list(AGGREGATE_FUNCTIONS)}")
        if self.mode != "chunk" and self.ctrl_type not in CTRL_TYPES_FOR_ANY_MODE:
            raise ValueError(
                f"execution_mode {self.mode} averages targets from different observations, "
                f"which is defined for absolute (abs) actions only; these are "
                f"{self.ctrl_type} actions, each chunk relative to its own observation's "
                f"state: use execution_mode chunk")
        if not self.period_s > 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s}")
        if not self.ensemble_decay >= 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {self.ensemble_decay}")
        if not self.hold_timeout >= 0:
            raise ValueError(f"hold_timeout must be >= 0, got {self.hold_timeout}")
        low = _limits(self.command_min, "command_min")
        high = _limits(self.command_max, "command_max")
        step = _limits(self.max_command_step, "max_command_step")
        if step is not None and (step < 0).any():
            raise ValueError(f"max_command_step must be >= 0, got {step.tolist()}")
        if low is not None and high is not None and (low.size == high.size or 1 in
                                                     (low.size, high.size)) \
                and (low > high).any():
            raise ValueError(f"command_min {low.tolist()} is above command_max {high.tolist()}")
        object.__setattr__(self, "min_array", low)
        object.__setattr__(self, "max_array", high)
        object.__setattr__(self, "step_array", step)

    def check_dim(self, action_dim: int) -> None:
        """ValueError unless every limit has one value or `action_dim` values."""
        for name, array in (("command_min", self.min_array), ("command_max", self.max_array),
                            ("max_command_step", self.step_array)):
            if array is not None and array.size not in (1, action_dim):
                raise ValueError(f"{name} has {array.size} values; give 1 or one per action "
                                 f"dimension ({action_dim})")


@dataclass
class SchedulerCounts:
    """What the scheduler did, for diagnostics."""

    chunks: int = 0  # accepted
    chunks_refused: int = 0  # older than the plan's newest chunk (chunk, aggregate modes)
    commands: int = 0  # from a chunk
    held: int = 0  # the last command repeated after the chunks ran out
    idle: int = 0  # steps without a command (no chunk yet, or the hold ran out)
    clamped: int = 0  # commands changed by a limit


@dataclass(frozen=True)
class Command:
    """The command for control time `stamp_ns`; held: no chunk had a step for it."""

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
        self._hold_ns = round(config.hold_timeout * 1e9)
        self._decay = config.ensemble_decay
        self._merge = AGGREGATE_FUNCTIONS[config.aggregate_fn]
        self.counts = SchedulerCounts()
        self.reset()

    def reset(self) -> None:
        """Forget every chunk and the last command (e.g. between episodes); counts stay."""
        # The live chunks, sorted by start (ties: arrival order), zero-padded to the longest.
        self._starts = np.zeros(0, np.int64)
        self._lengths = np.zeros(0, np.int64)
        self._chunks = np.zeros((0, 0, 0))
        self._last: np.ndarray | None = None
        self._last_covered_ns: int | None = None  # the last time a chunk gave the command
        self._newest_start: int | None = None  # of the newest chunk taken, even once used up

    # --- chunks in ----------------------------------------------------------------------------

    def add_chunk(self, actions: np.ndarray, stamp_ns: int, received_ns: int | None = None
                  ) -> bool:
        """Take the (T, A) chunk computed from the observation stamped `stamp_ns`, which
        arrived at `received_ns`. False when it is refused (chunk and aggregate modes: from an
        observation older than the plan's newest)."""
        actions = np.array(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] < 1:
            raise ValueError(f"a chunk must be (steps, action_dim), got shape {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("a chunk with non-finite actions")
        if self._chunks.shape[2] and self._chunks.shape[2] != actions.shape[1]:
            raise ValueError(f"a chunk of {actions.shape[1]}-D actions after "
                             f"{self._chunks.shape[2]}-D ones; reset first")
        use_received = not self.config.latency_compensation and received_ns is not None
        start = int(received_ns if use_received else stamp_ns)
        if self.config.mode == "ensemble":
            at = int(np.searchsorted(self._starts, start, "right"))
        else:
            if self._newest_start is not None and start < self._newest_start:
                self.counts.chunks_refused += 1
                return False
            if self.config.mode == "aggregate" and len(self._starts):
                actions = self._aggregate(actions, start)
            self._keep(np.zeros(len(self._starts), bool))  # the new chunk is the whole plan
            at = 0
        steps = max(actions.shape[0], self._chunks.shape[1])
        padded = np.zeros((steps, actions.shape[1]))
        padded[:len(actions)] = actions
        if steps > self._chunks.shape[1]:  # a longer chunk than those held: pad them
            self._chunks = np.pad(self._chunks, ((0, 0), (0, steps - self._chunks.shape[1]),
                                                 (0, 0)))
        self._starts = np.insert(self._starts, at, start)
        self._lengths = np.insert(self._lengths, at, len(actions))
        self._chunks = np.insert(self._chunks.reshape(-1, steps, actions.shape[1]), at,
                                 padded, axis=0)
        self._newest_start = start if self._newest_start is None \
            else max(start, self._newest_start)
        self.counts.chunks += 1
        return True

    def _aggregate(self, new: np.ndarray, start: int) -> np.ndarray:
        """`new` with the steps the current plan also covers merged by aggregate_fn."""
        old_start, old_length = int(self._starts[-1]), int(self._lengths[-1])
        old_index = self._step_index(old_start, start + np.arange(len(new)) * self.period_ns)
        shared = (old_index >= 0) & (old_index < old_length)
        merged = new.copy()
        merged[shared] = self._merge(self._chunks[-1, old_index[shared]], new[shared])
        return merged

    def _keep(self, keep: np.ndarray) -> None:
        self._starts, self._lengths = self._starts[keep], self._lengths[keep]
        self._chunks = self._chunks[keep]

    # --- commands out -------------------------------------------------------------------------

    def _step_index(self, start_ns: np.ndarray | int, t_ns: np.ndarray | int) -> np.ndarray:
        """The step of a chunk starting at `start_ns` nearest to time `t_ns` (vectorized)."""
        return (np.asarray(t_ns) - start_ns + self.period_ns // 2) // self.period_ns

    def remaining_fraction(self, now_ns: int) -> float:
        """The share of the newest chunk's steps still ahead of `now_ns` (0 without one): the
        node and the socket helper ask for a new chunk when it falls to refill_threshold."""
        if not len(self._starts):
            return 0.0
        steps = int(self._lengths[-1])
        index = int(self._step_index(int(self._starts[-1]), now_ns))
        return min(1.0, max(0, steps - max(index, 0)) / steps)

    def step(self, now_ns: int) -> Command | None:
        """The command for control time `now_ns`, or None (no chunk yet, or the hold ran
        out)."""
        index = self._step_index(self._starts, now_ns)
        live = index < self._lengths
        if not live.all():  # chunks whose last step is past: dropped (once per chunk)
            self._keep(live)
            index = index[live]
        covering = np.flatnonzero(index >= 0)
        held = covering.size == 0
        if not held:
            rows = self._chunks[covering, index[covering]]
            if self.config.mode == "ensemble" and len(rows) > 1:
                weights = np.exp(-self._decay * np.arange(len(rows)))
                action = (weights / weights.sum()) @ rows
            else:
                action = rows[-1].copy()
            self._last_covered_ns = now_ns
        elif self._last is not None and now_ns - self._last_covered_ns <= self._hold_ns:
            action = np.zeros_like(self._last) if self.config.ctrl_type == "delta" \
                else self._last.copy()
        else:
            self.counts.idle += 1
            return None
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
        if c.step_array is not None:
            if c.ctrl_type == "delta":
                out = np.clip(out, -c.step_array, c.step_array)
            elif self._last is not None:
                out = self._last + np.clip(out - self._last, -c.step_array, c.step_array)
        if c.min_array is not None or c.max_array is not None:
            out = np.clip(out, -np.inf if c.min_array is None else c.min_array,
                          np.inf if c.max_array is None else c.max_array)
        return out, not np.array_equal(out, action)


def scheduler_config(params: Mapping[str, object], ctrl_type: str) -> SchedulerConfig:
    """The SchedulerConfig the node's parameters describe."""
    return SchedulerConfig(
        mode=str(params["execution_mode"]), period_s=float(params["action_period"]),
        ensemble_decay=float(params["ensemble_decay"]),
        aggregate_fn=str(params["aggregate_fn"]),
        latency_compensation=bool(params["latency_compensation"]),
        hold_timeout=float(params["hold_timeout"]), ctrl_type=ctrl_type,
        command_min=[float(v) for v in params["command_min"]],
        command_max=[float(v) for v in params["command_max"]],
        max_command_step=[float(v) for v in params["max_command_step"]])
