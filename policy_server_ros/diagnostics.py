"""The node's /diagnostics: counters the pipeline keeps, and the status built from them once a
second, with one throttled warning per condition (all inputs named at once)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from policy_server_ros.observation_assembler import ObservationAssembler


class Stats:
    """Rolling numbers for /diagnostics; written from several threads under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency_ms: deque[float] = deque(maxlen=200)  # observation stamp -> published
        self.model_ms: deque[float] = deque(maxlen=200)  # preprocess + forward + postprocess
        self.published = 0
        self.dropped = 0
        self.non_finite = 0
        self.failures = 0
        self.trajectories_refused = 0
        self.trajectories_past = 0  # published with an end already past

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {"chunks published": self.published,
                    "observations dropped (inference busy)": self.dropped,
                    "non-finite chunks not published": self.non_finite,
                    "inference failures": self.failures,
                    "trajectories refused (not joint/abs)": self.trajectories_refused,
                    "trajectories ending in the past": self.trajectories_past}


class InputRates:
    """Messages per second per input, between two ticks."""

    def __init__(self) -> None:
        self._received: dict[str, int] = {}
        self._last_tick = time.monotonic()

    def tick(self, assembler: ObservationAssembler) -> dict[str, float]:
        now = time.monotonic()
        elapsed, self._last_tick = max(now - self._last_tick, 1e-3), now
        rates = {}
        for name, state in assembler.inputs.items():
            rates[name] = (state.received - self._received.get(name, 0)) / elapsed
            self._received[name] = state.received
        return rates


@dataclass
class InputWarnings:
    """One line per condition, all inputs named at once; each is logged from a call site of
    its own, because rclpy throttles per call site."""

    missing: str | None = None
    stale: str | None = None


def inference_status(*, node_name: str, now_ns: int, assembler: ObservationAssembler,
                     stats: Stats, rates: Mapping[str, float], extra: Mapping[str, int],
                     topics: Mapping[str, str], max_age_s: float
                     ) -> tuple[DiagnosticStatus, InputWarnings]:
    """The status, and the warnings to log."""
    problems, warnings = [], InputWarnings()
    missing = assembler.missing()
    if missing:
        warnings.missing = ("waiting for " + ", ".join(f"{n} on {topics.get(n, n)}"
                                                       for n in missing)
                            + ": no message yet; not running inference")
        problems += [f"no {name}" for name in missing]
    stale = assembler.stale_inputs(now_ns)
    if stale:
        warnings.stale = (", ".join(f"{n} on {topics.get(n, n)} is {age:.2f} s old"
                                    for n, age in stale)
                          + f" (max_observation_age {max_age_s} s); not running inference")
        problems += [f"{name} stale" for name, _ in stale]
    with stats.lock:
        latency, model = list(stats.latency_ms), list(stats.model_ms)
    values = []
    for label, series in (("latency stamp->publish", latency), ("model time", model)):
        if series:
            values += [KeyValue(key=f"{label} p{q} ms", value=f"{np.percentile(series, q):.1f}")
                       for q in (50, 99)]
    values += [KeyValue(key=k, value=str(v)) for k, v in {**stats.counters(), **extra}.items()]
    values.append(KeyValue(key="stale observations skipped", value=str(assembler.stale_skipped)))
    for name, state in assembler.inputs.items():
        values.append(KeyValue(key=f"{name} rate Hz", value=f"{rates.get(name, 0.0):.1f}"))
        values.append(KeyValue(key=f"{name} received", value=str(state.received)))
        if state.last_arrival_ns is not None:
            values.append(KeyValue(key=f"{name} age s",
                                   value=f"{(now_ns - state.last_arrival_ns) / 1e9:.2f}"))
    status = DiagnosticStatus(level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
                              name="policy_server: inference",
                              message="; ".join(problems) or "ok", hardware_id=node_name,
                              values=values)
    return status, warnings
