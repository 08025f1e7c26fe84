"""`policy_server_bag record`: write live topics (ActionChunk included) to a rosbag2 bag.

Topics are subscribed as they are discovered (their type comes from the graph), with raw
(serialized) callbacks written straight to the bag; log time = arrival time on the system
clock, as rosbag2 does. The subscription's QoS follows the publishers' (as rosbag2 does):
reliable when every publisher is, else best effort; transient local when every publisher is,
so a latched instruction published before recording started is still captured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from policy_server_ros.bag_tools.ros_io import message_class, ros_node
from policy_server_ros.bag_tools.storage import BagError, ensure_type, new_writer, typestore

log = logging.getLogger("policy_server_ros.bag.record")
DISCOVERY_PERIOD_S = 0.5


@dataclass
class RecordSummary:
    path: Path
    counts: dict[str, int]
    never_seen: list[str]
    wall_s: float

    def lines(self) -> list[str]:
        total = sum(self.counts.values())
        out = [f"recorded {total} messages in {self.wall_s:.1f} s to {self.path}"]
        out += [f"  {topic}: {count}" for topic, count in sorted(self.counts.items())]
        if self.never_seen:
            out.append(f"  never published (not in the bag): {', '.join(self.never_seen)}")
        return out


def _qos_for(infos: list[Any]) -> QoSProfile:
    reliable = bool(infos) and all(
        i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = bool(infos) and all(
        i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=100,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def record(out: Path, topics: list[str], stop: threading.Event, *, storage: str = "mcap",
           duration: float | None = None, progress_period: float = 2.0,
           report: Callable[[str], None] = print) -> RecordSummary:
    """Record `topics` into a new bag at `out` until `stop` is set or `duration` s pass."""
    if not topics:
        raise BagError("name at least one topic to record")
    store = typestore()
    writer = new_writer(Path(out), storage)
    counts: dict[str, int] = {}
    pending = list(dict.fromkeys(topics))
    unrecordable: set[str] = set()
    begin = time.monotonic()
    try:
        with ros_node("policy_server_bag_record") as (node, executor):
            def subscribe(topic: str, msgtype: str) -> None:
                if not ensure_type(store, msgtype):
                    report(f"warning: no message definition found for {msgtype}; not recording "
                           f"{topic} (install the package that defines it)")
                    unrecordable.add(topic)
                    return
                connection = writer.add_connection(topic, msgtype, typestore=store)
                counts[topic] = 0

                def write(data: bytes) -> None:  # executor thread = this thread: no lock
                    writer.write(connection, time.time_ns(), data)
                    counts[topic] += 1

                node.create_subscription(message_class(msgtype), topic, write,
                                         _qos_for(node.get_publishers_info_by_topic(topic)),
                                         raw=True)
                report(f"recording {topic} ({msgtype})")

            next_discovery = next_report = time.monotonic()
            while not stop.is_set():
                now = time.monotonic()
                if duration is not None and now - begin >= duration:
                    break
                if pending and now >= next_discovery:
                    next_discovery = now + DISCOVERY_PERIOD_S
                    graph = dict(node.get_topic_names_and_types())
                    for topic in [t for t in pending if t in graph]:
                        pending.remove(topic)
                        types = graph[topic]
                        if len(types) > 1:
                            report(f"warning: {topic} has several types {types}; using "
                                   f"{types[0]}")
                        subscribe(topic, types[0])
                if now >= next_report:
                    next_report = now + progress_period
                    report(f"[{now - begin:6.1f} s] " + ", ".join(
                        f"{t}: {n}" for t, n in counts.items())
                        + (f" | waiting for {', '.join(pending)}" if pending else ""))
                executor.spin_once(timeout_sec=0.05)
    finally:
        writer.close()
    return RecordSummary(Path(out), counts, sorted([*pending, *unrecordable]),
                         time.monotonic() - begin)
