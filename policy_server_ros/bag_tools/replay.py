"""`policy_server_bag replay`: publish a bag's messages with their recorded relative timing.

Messages go out as the raw serialized bytes of the bag (no decode and re-encode). `--restamp`
rewrites header stamps to the replay clock (stamp - window start) / rate + replay start, in the
bytes, so a node checking staleness accepts the data and stamps stay as far apart as recorded.
Publishers are reliable and transient-local (keep last 10): they match best-effort and
reliable, volatile and latched subscribers alike. `--monitor TOPIC` subscribes to the node's
ActionChunk output and reports chunk rate and latency (arrival - header stamp).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from policy_server_ros.bag_tools.metrics import percentiles
from policy_server_ros.bag_tools.ros_io import Spinner, message_class, ros_node
from policy_server_ros.bag_tools.storage import (
    BagError,
    has_header,
    header_stamp_ns,
    open_bag,
    read_messages,
    restamp,
    select_connections,
)
from policy_server_ros.ros_conversions import stamp_ns

PUBLISHER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
SETTLE_S = 0.5
MONITOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class ReplayOptions:
    rate: float = 1.0
    topics: list[str] | None = None
    loop: bool = False
    start: float = 0.0  # s from the bag's start
    duration: float | None = None  # s of bag time
    restamp: bool = False
    delay: float = 0.0  # s to wait before the first message, after waiting for subscribers
    wait_subscribers: float = 5.0  # s at most to wait for subscribers to match (0 = don't)
    monitor: str | None = None
    progress_period: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.start < 0 or (self.duration is not None and self.duration <= 0):
            raise ValueError("start must be >= 0 and duration > 0")
        if self.delay < 0 or self.wait_subscribers < 0:
            raise ValueError("delay and wait_subscribers must be >= 0")


@dataclass
class _Monitor:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latency_ms: list[float] = field(default_factory=list)
    shape: tuple[int, int] | None = None

    def on_chunk(self, msg: Any) -> None:
        now = time.time_ns()
        with self.lock:
            self.latency_ms.append((now - stamp_ns(msg)) / 1e6)
            self.shape = (msg.num_steps, msg.action_dim)

    def snapshot(self, recent: int = 0) -> tuple[int, list[float]]:
        """Chunks received, and the latencies of the last `recent` (all when 0)."""
        with self.lock:
            return len(self.latency_ms), list(self.latency_ms[-recent:])


@dataclass
class ReplaySummary:
    published: dict[str, int]
    loops: int
    wall_s: float
    timing_error_ms: dict[str, float]
    restamped: list[str]
    chunks: int | None = None
    chunk_latency_ms: dict[str, float] | None = None

    def lines(self) -> list[str]:
        total = sum(self.published.values())
        out = [f"replayed {total} messages in {self.wall_s:.1f} s ({self.loops} pass(es)); "
               f"timing error (late by) p50 {self.timing_error_ms.get('p50', 0):.2f} ms, "
               f"p99 {self.timing_error_ms.get('p99', 0):.2f} ms, "
               f"max {self.timing_error_ms.get('max', 0):.2f} ms"]
        out += [f"  {topic}: {count}" for topic, count in sorted(self.published.items())]
        if self.restamped:
            out.append(f"  header stamps rewritten on: {', '.join(sorted(self.restamped))}")
        if self.chunks is not None:
            lat = self.chunk_latency_ms or {}
            out.append(f"  action chunks received: {self.chunks}"
                       + (f", latency p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms"
                          if lat else ""))
        return out


def replay(bag: Path, options: ReplayOptions, stop: threading.Event,
           report: Callable[[str], None] = print) -> ReplaySummary:
    """Publish the bag until it ends (or every pass ends with --loop) or `stop` is set."""
    with open_bag(bag) as reader:
        connections = select_connections(reader, options.topics)
        not_cdr = [c.topic for c in connections
                   if getattr(c.ext, "serialization_format", None) != "cdr"]
        if not_cdr:
            raise BagError(f"replay needs a ROS 2 (CDR) bag; {not_cdr} are not CDR")
        first_ns = reader.start_time + round(options.start * 1e9)
        if first_ns >= reader.end_time:
            raise BagError(f"--start {options.start} s is past the bag's end "
                           f"({(reader.end_time - reader.start_time) / 1e9:.2f} s)")
        stop_ns = reader.end_time + 1 if options.duration is None else \
            first_ns + round(options.duration * 1e9)
        classes = {}
        for conn in connections:
            try:
                classes[conn.topic] = message_class(conn.msgtype)
            except BagError as exc:
                report(f"warning: not replaying {conn.topic}: {exc}")
        connections = [c for c in connections if c.topic in classes]
        if not connections:
            raise BagError(f"none of the chosen topics of {bag} has an installed message type")
        with ros_node("policy_server_bag_replay") as (node, executor):
            publishers = {topic: node.create_publisher(cls, topic, PUBLISHER_QOS)
                          for topic, cls in classes.items()}
            stamped = {c.topic for c in connections if has_header(reader.typestore, c.msgtype)}
            monitor = _Monitor() if options.monitor else None
            if monitor is not None:
                node.create_subscription(message_class("policy_server_ros/msg/ActionChunk"),
                                         options.monitor, monitor.on_chunk, MONITOR_QOS)
            spinner = Spinner(executor)
            try:
                report(f"replaying {bag} ({len(publishers)} topics, rate {options.rate}"
                       + (", restamped" if options.restamp else "")
                       + (", looping" if options.loop else "") + ")")
                _wait_for_subscribers(publishers, options.wait_subscribers, stop, report)
                stop.wait(options.delay)
                window = (first_ns, stop_ns)
                return _play(reader, connections, publishers=publishers, stamped=stamped,
                             window=window, options=options, stop=stop, monitor=monitor,
                             report=report)
            finally:
                spinner.stop()


def _wait_for_subscribers(publishers: dict[str, Any], timeout: float, stop: threading.Event,
                          report: Callable[[str], None]) -> None:
    """Discovery takes a second or two: wait until some subscriber has matched and the counts
    have then held still for SETTLE_S (a node's subscriptions match together), at most
    `timeout` s. Messages published before a subscriber matched are lost to it."""
    if timeout <= 0:
        return
    deadline = time.monotonic() + timeout
    counts, since = None, time.monotonic()
    while not stop.is_set() and time.monotonic() < deadline:
        now_counts = {t: p.get_subscription_count() for t, p in publishers.items()}
        if now_counts != counts:
            counts, since = now_counts, time.monotonic()
        elif any(counts.values()) and time.monotonic() - since >= SETTLE_S:
            break
        time.sleep(0.05)
    listened = sorted(t for t, n in (counts or {}).items() if n)
    report(f"subscribers on {len(listened)} of {len(publishers)} topics"
           + (f": {', '.join(listened)}" if listened else " (nothing is listening yet)"))


def _play(reader: Any, connections: list, *, publishers: dict[str, Any], stamped: set[str],
          window: tuple[int, int], options: ReplayOptions, stop: threading.Event,
          monitor: _Monitor | None, report: Callable[[str], None]) -> ReplaySummary:
    first_ns, stop_ns = window
    counts = {topic: 0 for topic in publishers}
    late_ms: list[float] = []
    begin = time.perf_counter()
    next_report = begin + options.progress_period
    loops = 0
    while not stop.is_set():
        loops += 1
        wall0 = time.perf_counter()
        clock0 = time.time_ns()  # the ROS (system) clock the restamped stamps start from
        if options.restamp:
            report(f"pass {loops}: header stamps = {clock0} + (stamp - {first_ns}) / "
                   f"{options.rate:g} (ns)")
        for conn, log_ns, data in read_messages(reader, connections, first_ns, stop_ns):
            target = wall0 + (log_ns - first_ns) / 1e9 / options.rate
            wait = target - time.perf_counter()
            if wait > 0 and stop.wait(wait):
                break
            raw = data
            if options.restamp and conn.topic in stamped:
                new = clock0 + round((header_stamp_ns(data) - first_ns) / options.rate)
                raw = restamp(data, new)
            publishers[conn.topic].publish(bytes(raw))
            late_ms.append((time.perf_counter() - target) * 1e3)
            counts[conn.topic] += 1
            if time.perf_counter() >= next_report:
                next_report += options.progress_period
                report(_progress(counts, time.perf_counter() - begin, (log_ns - first_ns) / 1e9,
                                 monitor))
        if not options.loop:
            break
    summary = ReplaySummary(counts, loops, time.perf_counter() - begin, percentiles(late_ms),
                            sorted(stamped) if options.restamp else [])
    if monitor is not None:
        # Chunks of the last observations arrive after the last message: wait a little.
        stop.wait(0.5)
        chunks, latencies = monitor.snapshot()
        summary.chunks, summary.chunk_latency_ms = chunks, percentiles(latencies)
    return summary


def _progress(counts: dict[str, int], wall_s: float, bag_s: float,
              monitor: _Monitor | None) -> str:
    total = sum(counts.values())
    line = f"[{wall_s:6.1f} s] bag time {bag_s:6.2f} s, {total} messages ({total / wall_s:.0f}/s)"
    if monitor is not None:
        chunks, recent = monitor.snapshot(recent=200)
        line += f" | {chunks} action chunks"
        if recent:
            line += (f", latency p50 {np.percentile(recent, 50):.1f} ms, "
                     f"p99 {np.percentile(recent, 99):.1f} ms")
            if monitor.shape:
                line += f", {monitor.shape[0]}x{monitor.shape[1]}"
    return line
