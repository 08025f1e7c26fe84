"""`policy_server_bag eval`: open-loop evaluation of a policy on a bag, without middleware.

The bag's messages go, in log-time order, through the node's own input table (inputs.py), the
same converters (ros_conversions.py) and the same ObservationAssembler; each observation it
emits runs through the inference engine; each predicted chunk is scored against the actions
the robot commanded afterwards (metrics.py). Unlike the live node, nothing is dropped for
being slow: every observation is evaluated (or every `stride`-th).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from policy_server_ros.bag_tools import metrics
from policy_server_ros.bag_tools.storage import (
    BagError,
    has_header,
    open_bag,
    read_messages,
)
from policy_server_ros.engine import InferenceEngine
from policy_server_ros.inputs import InputTopic, assembler_config, input_topics, resolve_topic
from policy_server_ros.observation_assembler import AssemblyError, ObservationAssembler
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.ros_conversions import (
    ConversionError,
    JointOrder,
    pose_to_vector,
    stamp_ns,
)

log = logging.getLogger("policy_server_ros.bag.eval")

# Commanded-action message types and how each becomes a vector (action_joint_names reorders
# named joints; otherwise the message's own order).
COMMAND_TYPES = ("sensor_msgs/msg/JointState", "trajectory_msgs/msg/JointTrajectory",
                 "std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray",
                 "geometry_msgs/msg/PoseStamped")


@dataclass
class Evaluation:
    """Everything eval found: the JSON report, and the arrays the plots draw."""

    report: dict[str, Any]
    chunk_stamps_ns: np.ndarray  # (K,)
    predicted: np.ndarray  # (K, H, D)
    command_stamps_ns: np.ndarray  # (N,)
    commands: np.ndarray  # (N, D)
    errors: np.ndarray  # (K, H, D)
    valid: np.ndarray  # (K, H)
    dim_names: list[str] = field(default_factory=list)


class _CommandReader:
    def __init__(self, msgtype: str, joint_names: Sequence[str]) -> None:
        if msgtype not in COMMAND_TYPES:
            raise BagError(f"action topic type {msgtype} is not supported; use one of "
                           f"{', '.join(COMMAND_TYPES)}")
        self.msgtype = msgtype
        self.order = JointOrder(joint_names)
        self.names: list[str] = list(joint_names)  # labels of the dimensions, when known

    def vector(self, msg: Any) -> np.ndarray:
        if self.msgtype == "sensor_msgs/msg/JointState":
            self.names = self.names or list(msg.name)
            return self.order.positions(msg)
        if self.msgtype == "trajectory_msgs/msg/JointTrajectory":
            if not msg.points:
                raise ConversionError("trajectory has no points")
            self.names = self.names or list(msg.joint_names)
            return self.order.positions(_Named(msg.joint_names, msg.points[0].positions))
        if self.msgtype == "geometry_msgs/msg/PoseStamped":
            return pose_to_vector(msg)
        return np.asarray(msg.data, dtype=np.float32)


@dataclass
class _Named:  # a JointTrajectory point, shaped like a JointState for JointOrder
    name: list[str]
    position: Any


def evaluate(bag: Path, params: Mapping[str, Any], *, action_topic: str,
             horizons: Sequence[str] = ("1", "10", "full"), stride: int = 1,
             max_observations: int = 0, match_tolerance: float | None = None,
             progress: bool = True) -> Evaluation:
    """Run the policy named by `params` on every stride-th observation of `bag` and score it.
    `match_tolerance` (s) defaults to half the action period. Relative topic names resolve as
    for the node in the root namespace (`joint_states` is the bag's `/joint_states`)."""
    if stride < 1:
        raise ValueError("stride must be >= 1")
    config = assembler_config(params)
    # The bag holds absolute names, as a recorder in the root namespace writes them.
    specs = [replace(s, topic=resolve_topic(s.topic)) for s in input_topics(params)]
    action_topic = resolve_topic(action_topic)
    period_ns = round(params["action_period"] * 1e9)
    tolerance_ns = round((match_tolerance if match_tolerance is not None
                          else params["action_period"] / 2) * 1e9)
    with open_bag(bag) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        missing = [s for s in specs if s.topic not in by_topic]
        required = config.required_names() + (["language"] if "language" in config.required
                                               else [])
        absent = [s.topic for s in missing if s.name in required]
        if absent:
            raise BagError(f"bag {bag} lacks required input topics {absent}; it has: "
                           f"{', '.join(sorted(by_topic))} (set the node's topic parameters "
                           f"with -p, or --params-file)")
        for spec in missing:
            log.warning("optional input %s (%s) is not in the bag", spec.name, spec.topic)
        if action_topic not in by_topic:
            raise BagError(f"action topic {action_topic} is not in bag {bag}; it has: "
                           f"{', '.join(sorted(by_topic))}")
        for spec in specs:
            if spec.topic in by_topic and by_topic[spec.topic].msgtype != spec.msg_type:
                raise BagError(f"{spec.topic} holds {by_topic[spec.topic].msgtype}, but the "
                               f"node reads it as {spec.msg_type}")
        commands_conn = by_topic[action_topic]
        command_reader = _CommandReader(commands_conn.msgtype, params["action_joint_names"])
        command_stamped = has_header(reader.typestore, commands_conn.msgtype)
        inputs = {s.topic: s for s in specs if s.topic in by_topic}
        connections = [by_topic[t] for t in {*inputs, action_topic}]

        policy = load_policy(params["model_name_or_path"], LoadOptions(
            device=params["device"], dataset_id=params["dataset_id"], min_std=params["min_std"],
            precision=params["precision"], compile=params["compile"]))
        engine = InferenceEngine(policy, chunk_size=params["chunk_size"],
                                 max_batch=params["max_batch"], warmup=False)
        try:
            walk = _Walk(reader, inputs, assembler=ObservationAssembler(config), engine=engine,
                         stride=stride, max_observations=max_observations,
                         inference_rate=params["inference_rate"])
            total = sum(c.msgcount for c in connections)
            bar = tqdm(total=total, unit="msg", desc="eval", disable=not progress,
                       dynamic_ncols=True)
            with bar:
                for conn, log_ns, raw in read_messages(reader, connections):
                    bar.update(1)
                    if conn.topic == action_topic:
                        msg = reader.deserialize(raw, conn.msgtype)
                        try:
                            walk.add_command(stamp_ns(msg) if command_stamped else log_ns,
                                             command_reader.vector(msg))
                        except ConversionError as exc:
                            walk.skip(conn.topic, exc)
                    if conn.topic in inputs:
                        walk.add_input(inputs[conn.topic], conn.msgtype, raw, log_ns)
                        bar.set_postfix(observations=walk.observations, refresh=False)
                    if walk.done:
                        break
            walk.finish()
        finally:
            engine.close()
        spec = policy.spec
        dim_names = command_reader.names if len(command_reader.names) == spec.action_dim \
            else [f"a{j}" for j in range(spec.action_dim)]
        return _score(walk, bag=bag, params=params, action_topic=action_topic,
                      horizons=horizons, period_ns=period_ns, tolerance_ns=tolerance_ns,
                      chunk_size=engine.chunk_size, action_dim=spec.action_dim,
                      ctrl=(spec.ctrl_space, spec.ctrl_type), dim_names=dim_names)


class _Walk:
    """The bag walk's state: assembly, in-flight inference, and what came back."""

    def __init__(self, reader: Any, inputs: Mapping[str, InputTopic], *,
                 assembler: ObservationAssembler, engine: InferenceEngine, stride: int,
                 max_observations: int, inference_rate: float) -> None:
        self.reader, self.inputs, self.assembler, self.engine = reader, inputs, assembler, engine
        self.stride, self.max_observations = stride, max_observations
        self.tick_ns = round(1e9 / inference_rate) if inference_rate > 0 else 0
        self.next_tick_ns: int | None = None
        self.triggers = set(assembler.config.required_names())
        self.observations = 0
        self.evaluated = 0
        self.failures: list[str] = []
        self.skipped: dict[str, int] = {}
        self.assembly_errors = 0
        self.in_flight: deque[tuple[int, Future]] = deque()
        self.stamps: list[int] = []
        self.chunks: list[np.ndarray] = []
        self.model_ms: list[float] = []
        self.command_stamps: list[int] = []
        self.commands: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        return bool(self.max_observations) and self.evaluated >= self.max_observations

    def skip(self, topic: str, exc: Exception) -> None:
        if topic not in self.skipped:
            log.warning("%s: skipping message: %s", topic, exc)
        self.skipped[topic] = self.skipped.get(topic, 0) + 1

    def add_command(self, stamp_ns: int, vector: np.ndarray) -> None:
        self.command_stamps.append(stamp_ns)
        self.commands.append(vector)

    def add_input(self, spec: InputTopic, msgtype: str, raw: bytes, log_ns: int) -> None:
        self._run_ticks(log_ns)
        msg = self.reader.deserialize(raw, msgtype)
        try:
            value = spec.convert(msg)
        except ConversionError as exc:
            self.skip(spec.topic, exc)
            return
        # As in the node: the header stamp, and the arrival (log) time as "now".
        self.assembler.add(spec.name, stamp_ns(msg) if spec.stamped else log_ns, value, log_ns)
        if not self.tick_ns and spec.name in self.triggers:
            self._assemble(log_ns)

    def _run_ticks(self, log_ns: int) -> None:
        """inference_rate > 0: assemble at fixed bag times, as the node's timer does."""
        if not self.tick_ns:
            return
        if self.next_tick_ns is None:
            self.next_tick_ns = log_ns + self.tick_ns
        while self.next_tick_ns <= log_ns:
            self._assemble(self.next_tick_ns)
            self.next_tick_ns += self.tick_ns

    def _assemble(self, now_ns: int) -> None:
        try:
            assembled = self.assembler.assemble(now_ns)
        except AssemblyError as exc:
            self.assembly_errors += 1
            log.warning("skipping observation: %s", exc)
            return
        if assembled is None or self.done:
            return
        self.observations += 1
        if (self.observations - 1) % self.stride:
            return
        self.evaluated += 1
        # Keep a few batches queued (the engine stacks them) without holding the whole bag,
        # and never more than the engine's queue takes (a large max_batch would overflow it).
        while len(self.in_flight) >= min(2 * self.engine.max_batch, self.engine.max_queue):
            self._collect()
        self.in_flight.append((assembled.stamp_ns, self.engine.submit(assembled.obs)))

    def _collect(self) -> None:
        stamp, future = self.in_flight.popleft()
        try:
            output = future.result()
        except Exception as exc:
            if not self.failures:
                log.error("inference failed on the observation stamped %d: %s", stamp, exc)
            self.failures.append(str(exc))
            return
        self.stamps.append(stamp)
        self.chunks.append(output.actions[0])
        t = output.timings_ms
        self.model_ms.append(t.get("preprocess", 0) + t.get("forward", 0)
                             + t.get("postprocess", 0))

    def finish(self) -> None:
        while self.in_flight:
            self._collect()


def _score(walk: _Walk, *, bag: Path, params: Mapping[str, Any], action_topic: str,
           horizons: Sequence[str], period_ns: int, tolerance_ns: int, chunk_size: int,
           action_dim: int, ctrl: tuple[str, str], dim_names: list[str]) -> Evaluation:
    if not walk.chunks:
        raise BagError(f"no observation of bag {bag} could be evaluated: {walk.observations} "
                       f"assembled, {len(walk.failures)} inference failures"
                       + (f" (first: {walk.failures[0]})" if walk.failures else "")
                       + "; check the topic parameters and the policy's inputs")
    if not walk.commands:
        raise BagError(f"no usable commanded action on {action_topic}")
    dims = {v.shape for v in walk.commands}
    if len(dims) > 1 or dims.pop() != (action_dim,):
        raise BagError(f"the policy predicts {action_dim}-D actions but {action_topic} carries "
                       f"{sorted({v.shape[0] for v in walk.commands})}-D commands; set "
                       f"action_joint_names to pick and order the joints")
    stamps = np.asarray(walk.stamps, np.int64)
    predicted = np.stack(walk.chunks).astype(np.float32)
    command_stamps = np.asarray(walk.command_stamps, np.int64)
    commands = np.stack(walk.commands).astype(np.float32)
    errors, valid = metrics.chunk_errors(predicted, stamps, commands, command_stamps,
                                         period_ns=period_ns, tolerance_ns=tolerance_ns)
    steps = metrics.resolve_horizons(horizons, chunk_size)
    report = {
        "bag": str(bag),
        "model_name_or_path": params["model_name_or_path"],
        "action_topic": action_topic,
        "inputs": {s.name: s.topic for s in walk.inputs.values()},
        "ctrl_space": ctrl[0], "ctrl_type": ctrl[1],
        "chunk_size": chunk_size, "action_dim": action_dim, "dim_names": dim_names,
        "action_period_s": period_ns / 1e9, "match_tolerance_s": tolerance_ns / 1e9,
        "observations_assembled": walk.observations,
        "observations_evaluated": len(walk.chunks),
        "inference_failures": len(walk.failures),
        "stale_observations_skipped": walk.assembler.stale_skipped,
        "assembly_errors": walk.assembly_errors,
        "messages_skipped": walk.skipped,
        "commands": len(walk.commands),
        "model_ms": metrics.percentiles(walk.model_ms),
        "horizons": metrics.horizon_metrics(errors, valid, steps),
        "per_step_mae": [None if np.isnan(v) else float(v)
                         for v in metrics.per_step_mae(errors, valid)],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return Evaluation(report, stamps, predicted, command_stamps, commands, errors, valid,
                      dim_names)
