"""Observation assembly: time-synchronized, never stale. No ROS here: the node feeds it converted
messages with their header stamps, and the rosbag evaluator feeds it the same from a bag.

Inputs are named `camera/<i>`, `depth/<i>`, `joints`, `ee`, `object`, `pointcloud` (timed: kept
in short buffers) and `language` (latched: the latest string holds until replaced). A complete set
is one message from each required timed input whose stamps lie within `slop` of each other.

What makes a new observation: every set is built around one message of the pivot, the
slowest required input (longest median interval between its stamps; cameras first on a tie,
so jitter between equal rates does not flip it), matched with the nearest message of each
other required input. Each required message is in at most one observation (the rule of ROS
message_filters' ApproximateTime), so the pivot sets the rate.

A set is decided only once every other required input has a message stamped at or after the
pivot's: until then a nearer message may still be on its way, and which one arrives first
across topics (executor order, transport) must not change the observation. The newest decided
complete set wins (older unused ones are skipped). Given messages in stamp order per input,
the observations are the same whatever the order across inputs: a pivot message is decided by
the first message of another input at or after it, before any later one can be. The wait costs
nothing when the other inputs arrive no later than the pivot's message; otherwise it is at most
one interval of the input waited for.

A set older than `max_age` never runs; it is used up all the same and counted once in
`stale_skipped`, so that count is the number of observations staleness cost, however often
`assemble()` is called. Optional inputs join a set when a message within `slop` of it exists
(the same message may join several sets); they never decide which set is new or wait.

Every input that feeds `state` must be required (AssemblerConfig refuses a configuration where
one is not), so an observation always has its full `state`; it is never silently None.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from socket_bridge.wire_types import MetaObs

STATE_PARTS = ("joints", "ee", "object")
TIMED_KINDS = ("cameras", "depth", "joints", "ee", "object", "pointcloud")
INPUT_KINDS = (*TIMED_KINDS, "language")
# How much slower (median interval) an input must be to take the pivot from an earlier one.
PIVOT_MARGIN = 1.2


class AssemblyError(ValueError):
    """The synchronized messages do not fit together (e.g. cameras of different sizes)."""


@dataclass(frozen=True)
class AssemblerConfig:
    """What makes an observation.

    cameras / depths: how many of each (model order); required: kinds that must be present
    (from INPUT_KINDS); state_parts: what `state` concatenates, in order (from STATE_PARTS),
    each of which must also be in `required` (ValueError otherwise: an observation without it
    would have no state); slop_s: largest stamp spread within a set; max_age_s: oldest a set
    may be when it is used.
    """

    cameras: int = 1
    depths: int = 0
    has_joints: bool = True
    has_ee: bool = False
    has_object: bool = False  # the manipulated object's pose (MetaObs.state_obj)
    has_pointcloud: bool = False
    has_language: bool = False
    required: tuple[str, ...] = ("cameras", "joints")
    state_parts: tuple[str, ...] = ("joints",)
    slop_s: float = 0.05
    max_age_s: float = 0.5
    buffer: int = 30

    def __post_init__(self) -> None:
        present = {"cameras": self.cameras > 0, "depth": self.depths > 0,
                   "joints": self.has_joints, "ee": self.has_ee, "object": self.has_object,
                   "pointcloud": self.has_pointcloud, "language": self.has_language}
        unknown = [k for k in self.required if k not in INPUT_KINDS]
        if unknown:
            raise ValueError(f"required inputs {unknown} are not among {list(INPUT_KINDS)}")
        absent = [k for k in self.required if not present[k]]
        if absent:
            raise ValueError(f"required inputs {absent} have no topic configured")
        bad = [p for p in self.state_parts if p not in STATE_PARTS]
        if bad:
            raise ValueError(f"state inputs {bad} are not among {list(STATE_PARTS)}")
        missing = [p for p in self.state_parts if not present[p]]
        if missing:
            raise ValueError(f"state inputs {missing} have no topic configured")
        if self.slop_s < 0 or self.max_age_s <= 0:
            raise ValueError("sync slop must be >= 0 and maximum observation age > 0")
        timed_required = [k for k in self.required if k != "language"]
        if not timed_required:
            raise ValueError("at least one timed input (cameras, depth, joints, ee, object, "
                             "pointcloud) must be required, or nothing would ever trigger an "
                             "observation")
        optional = [p for p in self.state_parts if p not in self.required]
        if optional:
            raise ValueError(f"state inputs {optional} are not in required_inputs: an "
                             f"observation without them would have no state; add them to "
                             f"required_inputs")

    def input_names(self) -> list[str]:
        names = [f"camera/{i}" for i in range(self.cameras)]
        names += [f"depth/{i}" for i in range(self.depths)]
        names += [n for n, on in (("joints", self.has_joints), ("ee", self.has_ee),
                                  ("object", self.has_object),
                                  ("pointcloud", self.has_pointcloud),
                                  ("language", self.has_language)) if on]
        return names

    def required_names(self) -> list[str]:
        """Required timed inputs, by name (language is checked separately)."""
        return [n for n in self.input_names() if _kind(n) in self.required and n != "language"]


def _kind(name: str) -> str:
    return {"camera": "cameras", "depth": "depth"}.get(name.split("/", maxsplit=1)[0], name)


@dataclass
class Assembled:
    """One observation: the MetaObs, its stamp (the newest required message in the set) and
    the stamps of all the messages it was built from."""

    obs: MetaObs
    stamp_ns: int
    input_stamps_ns: dict[str, int] = field(default_factory=dict)


@dataclass
class InputState:
    buffer: deque = field(default_factory=deque)
    received: int = 0
    last_arrival_ns: int | None = None


class ObservationAssembler:
    """Buffers converted messages and turns them into observations (see the module docstring
    for the rules). Not thread-safe: the node calls it from its single executor thread."""

    def __init__(self, config: AssemblerConfig) -> None:
        self.config = config
        self.inputs = {name: InputState(deque(maxlen=config.buffer))
                       for name in config.input_names()}
        self.language: str | None = None
        self.timestep = 0
        # The config is frozen: work out once what assemble() needs on every message.
        self._required = config.required_names()
        self._optional = [n for n in config.input_names()
                          if n not in self._required and n != "language"]
        # Per required input, its stamp in the last set emitted or found stale: a new set needs
        # a newer message from each of them. Optional inputs are never used up.
        self._used_ns = dict.fromkeys(self._required, -1)
        self.stale_skipped = 0  # observations not run because they were stale, each once

    def add(self, name: str, stamp_ns: int, value: Any, arrival_ns: int | None = None) -> None:
        """Record a converted message. `language` values are strings and are latched."""
        state = self.inputs[name]
        state.received += 1
        state.last_arrival_ns = arrival_ns if arrival_ns is not None else stamp_ns
        if name == "language":
            self.language = str(value)
            return
        buffer = state.buffer
        if buffer and stamp_ns < buffer[-1][0]:  # out of order: keep the buffer sorted
            items = sorted([*buffer, (stamp_ns, value)], key=lambda item: item[0])
            buffer.clear()
            buffer.extend(items[-buffer.maxlen:])
        else:
            buffer.append((stamp_ns, value))

    def missing(self) -> list[str]:
        """Required inputs that have never delivered a message."""
        names = self._required
        if "language" in self.config.required and self.language is None:
            names = [*names, "language"]
        return [n for n in names if n == "language" or not self.inputs[n].buffer]

    def assemble(self, now_ns: int, build: bool = True) -> Assembled | None:
        """The newest decided complete set of required messages no earlier set used, as an
        observation; None if there is none, or if it is older than max_age (then it counts
        once in `stale_skipped`). build=False uses the set up and counts it in `timestep`
        without building the observation (the node's chunk/aggregate modes between refills:
        the timestep stays the control step) and returns None.

        Raises AssemblyError when the newest set's messages cannot be combined (the set is
        used up, so the next call moves on)."""
        if self.missing():
            return None
        chosen = self._newest_set()
        if chosen is None:
            return None
        required = {name: chosen[name][0] for name in self._required}
        # Used up whether it runs or not: a stale set must not be found (and counted) again
        # on the next call, and a set that fails to build must not block the ones after it.
        self._used_ns.update(required)
        if now_ns - min(required.values()) > self.config.max_age_s * 1e9:
            self.stale_skipped += 1
            return None
        if not build:
            self.timestep += 1
            return None
        obs = self._build(chosen)
        self.timestep += 1
        stamps = {name: stamp for name, (stamp, _) in chosen.items()}
        return Assembled(obs, max(required.values()), stamps)

    def stale_inputs(self, now_ns: int) -> list[tuple[str, float]]:
        """Required inputs whose newest message is older than max_age: (name, age in s)."""
        limit = self.config.max_age_s
        out = []
        for name in self._required:
            buffer = self.inputs[name].buffer
            if buffer:
                age = (now_ns - buffer[-1][0]) / 1e9
                if age > limit:
                    out.append((name, age))
        return out

    def _newest_set(self) -> dict[str, tuple[int, Any]] | None:
        inputs, used = self.inputs, self._used_ns
        slop = int(self.config.slop_s * 1e9)
        pivot = self._pivot()
        others = [name for name in self._required if name != pivot]
        for stamp, value in reversed(inputs[pivot].buffer):
            if stamp <= used[pivot]:
                return None  # this and older ones were used, or lost to a newer set
            if any(inputs[name].buffer[-1][0] < stamp for name in others):
                continue  # undecided: a nearer message may still arrive; an older one may not
            chosen = {pivot: (stamp, value)}
            for name in others:
                match = _nearest(inputs[name].buffer, stamp, after=used[name])
                if match is None or abs(match[0] - stamp) > slop:
                    break
                chosen[name] = match
            else:
                for name in self._optional:
                    match = _nearest(inputs[name].buffer, stamp)
                    if match is not None and abs(match[0] - stamp) <= slop:
                        chosen[name] = match
                return chosen
        return None

    def _pivot(self) -> str:
        """The required input with the longest median interval between stamps (fewer than two
        messages: not known yet, counted as slowest). An earlier input keeps the role unless a
        later one is clearly slower (PIVOT_MARGIN), so equal rates with jitter do not flip it."""
        pivot, longest = "", -1.0
        for name in self._required:
            buffer = self.inputs[name].buffer
            period = float(np.median(np.diff(np.fromiter(
                (s for s, _ in buffer), np.int64, len(buffer))))) if len(buffer) > 1 else np.inf
            if period > longest * PIVOT_MARGIN:
                pivot, longest = name, period
        return pivot

    def _build(self, chosen: dict[str, tuple[int, Any]]) -> MetaObs:
        cfg = self.config
        values = {name: value for name, (_, value) in chosen.items()}
        image = _stack([values.get(f"camera/{i}") for i in range(cfg.cameras)], "camera")
        depth = _stack([values.get(f"depth/{i}") for i in range(cfg.depths)], "depth")
        joints, ee = values.get("joints"), values.get("ee")
        # Every state part is required (AssemblerConfig), so each is in the set.
        state = np.concatenate([values[p] for p in cfg.state_parts]).astype(np.float32) \
            if cfg.state_parts else None
        return MetaObs(state=state, state_joint=joints, state_ee=ee,
                       state_obj=values.get("object"), image=image, depth=depth,
                       pc=values.get("pointcloud"), raw_lang=self.language or "",
                       timestep=self.timestep)


def _nearest(buffer: Sequence[tuple[int, Any]], stamp: int,
             after: int | None = None) -> tuple[int, Any] | None:
    """The message of a stamp-sorted buffer nearest `stamp` (the older one on a tie), among
    those stamped after `after`; None if there is none. Walks back from the newest and stops
    as soon as messages get further away, so a match near the newest costs a step or two."""
    best = None
    for item in reversed(buffer):
        if after is not None and item[0] <= after:
            break
        if best is not None and abs(item[0] - stamp) > abs(best[0] - stamp):
            break
        best = item
    return best


def _stack(arrays: Sequence[np.ndarray | None], what: str) -> np.ndarray | None:
    present = [a for a in arrays if a is not None]
    if not present or len(present) < len(arrays):
        return None  # an optional kind that is not complete in this set
    shapes = {a.shape for a in present}
    if len(shapes) > 1:
        raise AssemblyError(f"{what} images have different sizes {sorted(shapes)}; all cameras "
                            f"of a model must deliver the same size")
    return np.stack(present)
