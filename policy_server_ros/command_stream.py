"""The node's command stream (execution_mode != none): chunks from inference go into a
ChunkScheduler, a control loop on the node's clock takes one command out per control period and
publishes it as command_type on command_topic. The node decides when to run inference with
wants_chunk(); /diagnostics gets the stream's rate, timing, clamps, holds and gaps.

On the node's clock means sim time under use_sim_time: a simulator publishing /clock drives the
commands, and every time here (chunk stamps, control ticks, intervals) is on that clock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from policy_server_ros.action_messages import COMMAND_TYPES, command_message
from policy_server_ros.chunk_scheduler import ChunkScheduler, scheduler_config
from policy_server_ros.policies.base import ActionSpec

# Reliable, so a controller's default (reliable) subscription matches; only the newest matters.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE)
GAP_FACTOR = 1.5  # an interval longer than this many control periods is a gap
INTERVALS_KEPT = 2000  # for the interval percentiles (40 s at 50 Hz)


def control_period_s(params: Mapping[str, Any]) -> float:
    """1 / control_rate, or action_period when control_rate is 0."""
    rate = params["control_rate"]
    return 1.0 / rate if rate > 0 else params["action_period"]


class CommandTiming:
    """When commands went out, on the node's clock: rate, interval percentiles and gaps."""

    def __init__(self, period_ns: int) -> None:
        self.period_ns = period_ns
        self.intervals_ns: deque[int] = deque(maxlen=INTERVALS_KEPT)
        self.last_ns: int | None = None
        self.published = 0
        self.gaps = 0
        self.gap_ns = 0  # time without a command beyond one period, summed over the gaps
        self._report_ns: int | None = None
        self._report_count = 0

    def record(self, now_ns: int) -> None:
        if self.last_ns is not None:
            interval = now_ns - self.last_ns
            self.intervals_ns.append(interval)
            if interval > GAP_FACTOR * self.period_ns:
                self.gaps += 1
                self.gap_ns += interval - self.period_ns
        self.last_ns = now_ns
        self.published += 1

    def report(self, now_ns: int) -> dict[str, Any]:
        """The figures for /diagnostics; the rate is over the time since the last report."""
        rate = 0.0
        if self._report_ns is not None and now_ns > self._report_ns:
            rate = (self.published - self._report_count) * 1e9 / (now_ns - self._report_ns)
        self._report_ns, self._report_count = now_ns, self.published
        intervals = np.fromiter(self.intervals_ns, np.int64, len(self.intervals_ns)) / 1e6
        p50, p99 = np.percentile(intervals, [50, 99]) if intervals.size else (np.nan, np.nan)
        return {"command rate Hz": f"{rate:.1f}",
                "command interval p50 ms": f"{p50:.2f}",
                "command interval p99 ms": f"{p99:.2f}",
                "command gaps (> 1.5 periods)": self.gaps,
                "time without commands s": f"{self.gap_ns / 1e9:.3f}"}


class CommandStream:
    """Scheduler, publisher and control loop of the commands. Raises ValueError (one line) when the
    parameters do not fit the policy's actions."""

    def __init__(self, node: Node, params: Mapping[str, Any], spec: ActionSpec) -> None:
        mode, command_type = params["execution_mode"], params["command_type"]
        names = params["action_joint_names"]
        if command_type != "float64_array" and not (
                names and spec.ctrl_space == "joint" and spec.ctrl_type == "abs"):
            raise ValueError(
                f"command_type {command_type} sends absolute joint positions by name: it needs "
                f"action_joint_names and a joint/abs policy (this one: {spec.ctrl_space}/"
                f"{spec.ctrl_type}, action_joint_names {list(names)}); use command_type "
                f"float64_array otherwise")
        config = scheduler_config(params, spec.ctrl_type)
        config.check_dim(spec.action_dim)
        self.node, self.params, self.spec = node, params, spec
        self.scheduler = ChunkScheduler(config)
        self.refill_threshold = params["refill_threshold"]
        self.period_s = control_period_s(params)
        self.timing = CommandTiming(round(self.period_s * 1e9))
        self.chunks_not_commanded = 0
        # Chunks arrive from inference results, steps from the timer: one lock for both.
        self._lock = threading.Lock()
        self._wake = threading.Condition()  # the control loop waits on it
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.publisher = node.create_publisher(COMMAND_TYPES[command_type],
                                               params["command_topic"], COMMAND_QOS)
        self._mode = mode

    @property
    def infers_on_every_observation(self) -> bool:
        """ensemble needs a chunk per observation; chunk and aggregate refill (wants_chunk)."""
        return self._mode == "ensemble"

    def start(self) -> None:
        """Start the control loop: a thread of its own, so commands do not queue behind the
        executor's image callbacks, timed on the node's clock."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="command-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the control loop (it finishes the command it is publishing)."""
        if self._thread is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(5)
        self._thread = None

    def _run(self) -> None:
        """One tick per control period on the node's clock. It waits on a condition that a
        clock-jump callback notifies, so under use_sim_time every /clock message wakes it (and
        a paused simulation pauses the commands); on the system clock the wait times out at the
        next tick. A tick that comes late is not made up for: the next one keeps the period."""
        clock = self.node.get_clock()
        period = round(self.period_s * 1e9)

        def on_jump(_jump: object) -> None:
            with self._wake:
                self._wake.notify()

        threshold = JumpThreshold(min_forward=Duration(nanoseconds=1),
                                  min_backward=Duration(nanoseconds=-1), on_clock_change=True)
        with clock.create_jump_callback(threshold, post_callback=on_jump):
            next_ns = clock.now().nanoseconds + period
            while True:
                with self._wake:
                    while not self._stopping:
                        now = clock.now().nanoseconds
                        if now >= next_ns or next_ns - now > 2 * period:  # due, or time reset
                            break
                        # Sim time: woken by /clock (the timeout only re-checks _stopping).
                        self._wake.wait(0.1 if clock.ros_time_is_active
                                        else (next_ns - now) / 1e9)
                    if self._stopping:
                        return
                try:
                    self._tick(now)
                except Exception as exc:  # shutting down underneath us, or a bug: say so
                    if not self.node.context.ok():
                        return
                    self.node.get_logger().error(f"command stream: {exc}",
                                                 throttle_duration_sec=5.0)
                next_ns += period
                if next_ns <= now or next_ns - now > 2 * period:
                    next_ns = now + period

    def wants_chunk(self, now_ns: int) -> bool:
        """Whether a new chunk is due: always in ensemble mode, else when the share of the
        newest chunk still ahead is at most refill_threshold."""
        if self.infers_on_every_observation:
            return True
        with self._lock:
            return self.scheduler.remaining_fraction(now_ns) <= self.refill_threshold

    def add_chunk(self, actions: np.ndarray, spec: ActionSpec, observation_ns: int,
                  now_ns: int) -> bool:
        """Schedule a published chunk; False (counted) when its convention or size is not the
        one the stream was set up for."""
        if (spec.ctrl_space, spec.ctrl_type, spec.action_dim) != \
                (self.spec.ctrl_space, self.spec.ctrl_type, self.spec.action_dim):
            self.chunks_not_commanded += 1
            return False
        with self._lock:
            return self.scheduler.add_chunk(actions, observation_ns, now_ns)

    def reset(self) -> None:
        with self._lock:
            self.scheduler.reset()

    def _tick(self, now: int) -> None:
        with self._lock:
            command = self.scheduler.step(now)
        if command is None:
            return
        p = self.params
        self.publisher.publish(command_message(
            p["command_type"], command.action, p["action_joint_names"], command.stamp_ns,
            frame_id=p["frame_id"], period_s=self.period_s))
        with self._lock:
            self.timing.record(now)

    def diagnostics(self, now_ns: int) -> dict[str, Any]:
        with self._lock:
            c = self.scheduler.counts
            counts = {"commands published": c.commands + c.held, "commands held": c.held,
                      "control steps without a command": c.idle,
                      "commands clamped": c.clamped,
                      "chunks refused by the scheduler (older observation)": c.chunks_refused,
                      "chunks not commanded (convention changed)": self.chunks_not_commanded,
                      **self.timing.report(now_ns)}
        return counts

    def destroy(self) -> None:
        self.node.destroy_publisher(self.publisher)
