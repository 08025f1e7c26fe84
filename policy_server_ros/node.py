"""The `policy_server` ROS 2 node: sensor topics in, action chunks out, the socket bridge inside.

    policy_server --ros-args --params-file config/server.yaml -p device:=cuda:0
    python -m policy_server_ros --ros-args -p camera_topics:="[/cam_high/image_raw]"

Subscriptions convert messages (ros_conversions) into the observation assembler; a complete,
fresh observation goes to the inference engine, never run on an executor thread; the result is
handed back to the executor (ros_handoff), which publishes it. While inference is busy only the
newest observation waits, older ones are dropped and counted. The socket bridge shares the
engine; bridge_supervisor restarts it off the executor if it dies.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image, JointState, PointCloud2
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from policy_server_ros.action_messages import action_chunk, joint_trajectory
from policy_server_ros.bridge_supervisor import BridgeSupervisor
from policy_server_ros.checkpoint import EXAMPLE_CHECKPOINT, CheckpointError, resolve_model
from policy_server_ros.engine import EngineBusy, EngineClosed, InferenceEngine
from policy_server_ros.inputs import InputTopic, assembler_config, input_topics
from policy_server_ros.msg import ActionChunk
from policy_server_ros.node_parameters import NODE_PARAMETERS, ParamSpec
from policy_server_ros.normalization import NormalizationError
from policy_server_ros.observation_assembler import (
    Assembled,
    AssemblerConfig,
    AssemblyError,
    ObservationAssembler,
)
from policy_server_ros.policies import LoadOptions, PolicyLoadError, load_policy
from policy_server_ros.policies.base import ActionSpec, PolicyOutput
from policy_server_ros.ros_conversions import ConversionError, stamp_ns
from policy_server_ros.ros_handoff import ExecutorHandoff
from policy_server_ros.ros_logging import forward_to_ros, stop_forwarding
from socket_bridge import auth
from socket_bridge.server import PolicySocketServer, ServerConfig

log = logging.getLogger("policy_server_ros.node")

WARN_PERIOD_S = 5.0  # throttle for repeated warnings about the same input
MAX_BRIDGE_RESTARTS = 3  # then the node exits non-zero: something is wrong with the host

_QOS = {
    "sensor_data": qos_profile_sensor_data,
    "reliable": QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                           reliability=ReliabilityPolicy.RELIABLE),
    "latched": QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL),
}


# The message classes of the input types inputs.input_topics() names.
_MSG_TYPES: dict[str, type] = {
    "sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
    "sensor_msgs/msg/JointState": JointState, "geometry_msgs/msg/PoseStamped": PoseStamped,
    "sensor_msgs/msg/PointCloud2": PointCloud2, "std_msgs/msg/String": String,
}


class StartupError(RuntimeError):
    """The node cannot start with these parameters; the message says what to change."""


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    extra = f" (one of: {', '.join(spec.choices)})" if spec.choices else ""
    descriptor = ParameterDescriptor(description=spec.description + extra, read_only=True)
    if spec.kind is int and spec.min is not None:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.min),
                                                 to_value=int(spec.max), step=0)]
    elif spec.kind is float and spec.min is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=spec.min,
                                                              to_value=spec.max, step=0.0)]
    return descriptor


class _Stats:
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


class PolicyServerNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("policy_server", **node_kwargs)
        # The engine's, the bridge's and the loaders' Python logging: to /rosout as well.
        self._log_handler = forward_to_ros(self.get_logger(), self.context)
        self.params = self._declare_parameters()
        p = self.params
        self.assembler = ObservationAssembler(self._assembler_config())
        self.stats = _Stats()
        self._lock = threading.Lock()
        self._in_flight = False
        self._pending: Assembled | None = None
        self._received_at_last_tick: dict[str, int] = {}
        self.exit_code = 0
        self._last_tick = time.monotonic()
        self._results = ExecutorHandoff(self, self._on_result)

        self.engine = self._start_engine()
        spec = self.engine.policy.spec
        joint_names = p["action_joint_names"]
        cameras = self.engine.policy.camera_names
        if joint_names and len(joint_names) != spec.action_dim:
            self.engine.close()
            raise StartupError(f"action_joint_names has {len(joint_names)} names but the policy "
                               f"produces {spec.action_dim}-D actions")
        if joint_names and not _absolute_joint_targets(spec):
            self.engine.close()
            raise StartupError(f"action_joint_names is set, which publishes a JointTrajectory of "
                               f"absolute joint positions, but the policy's actions are "
                               f"{spec.ctrl_space}/{spec.ctrl_type}; leave action_joint_names "
                               f"empty (ActionChunk carries the convention) or serve a "
                               f"joint/abs policy")
        if cameras is not None and len(cameras) != len(p["camera_topics"]):
            self.engine.close()
            raise StartupError(f"camera_topics has {len(p['camera_topics'])} topics but the "
                               f"policy was trained with {len(cameras)} camera(s) "
                               f"{list(cameras)}; list one topic per camera, in that order")

        self.topics: dict[str, str] = {}
        self._subscribe_inputs()
        self.chunk_pub = self.create_publisher(ActionChunk, p["action_topic"], 10)
        self.trajectory_pub = self.create_publisher(JointTrajectory, p["trajectory_topic"], 10) \
            if joint_names else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        if p["inference_rate"] > 0:
            self.create_timer(1.0 / p["inference_rate"], self._try_infer)

        bridge: PolicySocketServer | None = None
        if p["socket_bridge_enabled"]:
            try:
                bridge = self._start_bridge()
            except (OSError, ValueError) as exc:
                self.engine.close()
                raise StartupError(f"socket bridge: {exc}") from exc
        self.bridge_supervisor = BridgeSupervisor(bridge, self._start_bridge,
                                                  self._bridge_gave_up, MAX_BRIDGE_RESTARTS)
        self.get_logger().info(
            f"policy_server ready: {p['model_name_or_path']} -> {p['action_topic']} "
            f"({self.engine.chunk_size} x {spec.action_dim}, {spec.ctrl_space}/{spec.ctrl_type})"
            f"; inputs: {', '.join(f'{k}={v}' for k, v in self.topics.items())}; socket bridge "
            + (f"on {bridge.address[0]}:{bridge.address[1]}" if bridge else "off"))

    # --- set-up -------------------------------------------------------------------------------

    def _start_bridge(self, port: int | None = None) -> PolicySocketServer:
        p = self.params
        bridge = PolicySocketServer(self.engine, ServerConfig(
            host=p["socket_host"], port=p["socket_port"] if port is None else port,
            max_connections=p["socket_max_connections"],
            inference_timeout=p["socket_inference_timeout"],
            auth_token=auth.load_token(p["socket_auth_token_file"])))
        bridge.start()
        return bridge

    def _bridge_gave_up(self) -> None:
        self.exit_code = 1
        self.context.try_shutdown()

    def _declare_parameters(self) -> dict[str, Any]:
        values = {}
        for spec in NODE_PARAMETERS:
            default = Parameter.Type.STRING_ARRAY if spec.is_list and not spec.default else \
                spec.default
            value = self.declare_parameter(spec.name, default, _descriptor(spec)).value
            if spec.is_list:
                value = list(value or [])
            if spec.choices and value not in spec.choices:
                raise StartupError(f"parameter {spec.name}={value!r} is not one of "
                                   f"{list(spec.choices)}")
            values[spec.name] = value
        return values

    def _assembler_config(self) -> AssemblerConfig:
        try:
            return assembler_config(self.params)
        except ValueError as exc:
            raise StartupError(f"inputs: {exc}") from exc

    def _start_engine(self) -> InferenceEngine:
        p = self.params
        model = p["model_name_or_path"]
        if model == str(EXAMPLE_CHECKPOINT):
            model = resolve_model(model)  # ./ckpt/... if present, else the cached example
            self.get_logger().warning(f"Serving the example checkpoint {model}: its weights are "
                                      f"untrained; its actions are not meant for a real robot.")
        options = LoadOptions(device=p["device"], dataset_id=p["dataset_id"],
                              min_std=p["min_std"], precision=p["precision"],
                              compile=p["compile"],
                              seed=None if p["seed"] < 0 else p["seed"],
                              num_inference_steps=p["num_inference_steps"],
                              use_ema=p["use_ema"], replay_episode=p["replay_episode"])
        policy = load_policy(model, options)
        engine = InferenceEngine(policy, chunk_size=p["chunk_size"], max_batch=p["max_batch"])
        engine.wait_ready()
        return engine

    def _subscribe_inputs(self) -> None:
        for spec in input_topics(self.params):
            self.topics[spec.name] = spec.topic
            self._subscribe(spec, _QOS[self.params[spec.qos]])

    def _subscribe(self, spec: InputTopic, qos: QoSProfile) -> None:
        name, topic, convert = spec.name, spec.topic, spec.convert
        trigger = self.params["inference_rate"] <= 0 and name in \
            self.assembler.config.required_names()

        def callback(msg: Any) -> None:
            try:
                value = convert(msg)
            except ConversionError as exc:
                self.get_logger().warning(f"{topic}: skipping message: {exc}",
                                          throttle_duration_sec=WARN_PERIOD_S)
                return
            now = self._now_ns()
            self.assembler.add(name, stamp_ns(msg) if spec.stamped else now, value, now)
            if trigger:
                self._try_infer()

        self.create_subscription(_MSG_TYPES[spec.msg_type], topic, callback, qos)

    # --- inference ----------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _try_infer(self) -> None:
        try:
            assembled = self.assembler.assemble(self._now_ns())
        except AssemblyError as exc:
            self.get_logger().warning(f"skipping observation: {exc}",
                                      throttle_duration_sec=WARN_PERIOD_S)
            return
        if assembled is not None:
            self._dispatch(assembled)

    def _dispatch(self, assembled: Assembled) -> None:
        """Run now if the engine is free; else keep only the newest waiting observation."""
        with self._lock:
            if self._in_flight:
                if self._pending is not None:
                    with self.stats.lock:
                        self.stats.dropped += 1
                self._pending = assembled
                return
            self._in_flight = True
        self._submit(assembled)

    def _submit(self, assembled: Assembled) -> None:
        try:
            future = self.engine.submit(assembled.obs)
        except (EngineBusy, EngineClosed) as exc:
            self.get_logger().warning(f"observation not run: {exc}",
                                      throttle_duration_sec=WARN_PERIOD_S)
            self._next()
            return
        future.add_done_callback(self._results.callback(assembled))

    def _on_result(self, assembled: Assembled, future: Future) -> None:
        """On the executor (handed over by ExecutorHandoff): publish, then run what waits."""
        try:
            output = future.result()
            if not self.context.ok():
                return  # shutting down (Ctrl+C during inference): nowhere to publish
            self._publish(assembled, output)
        except Exception as exc:
            with self.stats.lock:
                self.stats.failures += 1
            self.get_logger().error(f"inference failed: {exc}",
                                    throttle_duration_sec=WARN_PERIOD_S)
        finally:
            self._next()

    def _next(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            self._in_flight = pending is not None
        if pending is not None:
            self._submit(pending)

    def _publish(self, assembled: Assembled, output: PolicyOutput) -> None:
        p = self.params
        actions = output.actions[0]
        timings = output.timings_ms
        with self.stats.lock:
            self.stats.model_ms.append(timings.get("preprocess", 0) + timings.get("forward", 0)
                                       + timings.get("postprocess", 0))
        if not np.isfinite(actions).all():
            with self.stats.lock:
                self.stats.non_finite += 1
            self.get_logger().error("policy produced non-finite actions; not published",
                                    throttle_duration_sec=WARN_PERIOD_S)
            return
        self.chunk_pub.publish(action_chunk(
            actions, output.spec, assembled.stamp_ns, frame_id=p["frame_id"],
            period_s=p["action_period"], dim_names=p["action_joint_names"]))
        if self.trajectory_pub is not None and not _absolute_joint_targets(output.spec):
            with self.stats.lock:
                self.stats.trajectories_refused += 1
            self.get_logger().error(
                f"a chunk of {output.spec.ctrl_space}/{output.spec.ctrl_type} actions is not a "
                f"joint trajectory; not published on {p['trajectory_topic']}",
                throttle_duration_sec=WARN_PERIOD_S)
        elif self.trajectory_pub is not None:
            self.trajectory_pub.publish(joint_trajectory(
                actions, p["action_joint_names"], assembled.stamp_ns, frame_id=p["frame_id"],
                period_s=p["action_period"]))
        with self.stats.lock:
            self.stats.published += 1
            self.stats.latency_ms.append((self._now_ns() - assembled.stamp_ns) / 1e6)

    # --- diagnostics --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        self.bridge_supervisor.check()
        now_ns = self._now_ns()
        now = time.monotonic()
        elapsed = max(now - self._last_tick, 1e-3)
        self._last_tick = now
        level, problems = DiagnosticStatus.OK, []
        # One line per condition (rclpy throttles per call site): all inputs named at once.
        missing = self.assembler.missing()
        if missing:
            self.get_logger().warning(
                "waiting for " + ", ".join(f"{n} on {self.topics.get(n, n)}" for n in missing)
                + ": no message yet; not running inference", throttle_duration_sec=WARN_PERIOD_S)
            problems += [f"no {name}" for name in missing]
        stale = self.assembler.stale_inputs(now_ns)
        if stale:
            self.get_logger().warning(
                ", ".join(f"{n} on {self.topics[n]} is {age:.2f} s old" for n, age in stale)
                + f" (max_observation_age {self.params['max_observation_age']} s); not running "
                  f"inference", throttle_duration_sec=WARN_PERIOD_S)
            problems += [f"{name} stale" for name, _ in stale]
        if problems:
            level = DiagnosticStatus.WARN
        values = []
        with self.stats.lock:
            latency, model = list(self.stats.latency_ms), list(self.stats.model_ms)
            counters = {"chunks published": self.stats.published,
                        "observations dropped (inference busy)": self.stats.dropped,
                        "non-finite chunks not published": self.stats.non_finite,
                        "inference failures": self.stats.failures,
                        "trajectories refused (not joint/abs)": self.stats.trajectories_refused,
                        "socket bridge clients": self.bridge_supervisor.client_count,
                        "socket bridge restarts": self.bridge_supervisor.restarts}
        for label, series in (("latency stamp->publish", latency), ("model time", model)):
            if series:
                values += [KeyValue(key=f"{label} p{q} ms", value=f"{np.percentile(series, q):.1f}")
                           for q in (50, 99)]
        values += [KeyValue(key=k, value=str(v)) for k, v in counters.items()]
        values.append(KeyValue(key="stale observations skipped",
                               value=str(self.assembler.stale_skipped)))
        for name, state in self.assembler.inputs.items():
            before = self._received_at_last_tick.get(name, 0)
            self._received_at_last_tick[name] = state.received
            values.append(KeyValue(key=f"{name} rate Hz",
                                   value=f"{(state.received - before) / elapsed:.1f}"))
            values.append(KeyValue(key=f"{name} received", value=str(state.received)))
            if state.last_arrival_ns is not None:
                values.append(KeyValue(key=f"{name} age s",
                                       value=f"{(now_ns - state.last_arrival_ns) / 1e9:.2f}"))
        status = DiagnosticStatus(level=level, name="policy_server: inference",
                                  message="; ".join(problems) or "ok", hardware_id=self.get_name(),
                                  values=values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def close(self) -> None:
        """Stop the bridge, drain the engine, stop forwarding Python logging."""
        self.bridge_supervisor.stop()
        self.engine.close()
        stop_forwarding(self._log_handler)


def _absolute_joint_targets(spec: ActionSpec) -> bool:
    """Only absolute joint positions may go out as a JointTrajectory."""
    return spec.ctrl_space == "joint" and spec.ctrl_type == "abs"


def main(args: Sequence[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = PolicyServerNode()
    except (StartupError, PolicyLoadError, CheckpointError, NormalizationError, ValueError,
            FileNotFoundError) as exc:
        rclpy.logging.get_logger("policy_server").error(str(exc))
        rclpy.try_shutdown()
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl+C while the model loads
        rclpy.logging.get_logger("policy_server").info("interrupted while starting; exiting")
        rclpy.try_shutdown()
        return 0
    # One executor thread is enough: callbacks only convert and hand over (inference runs on the
    # engine's thread, the socket bridge on its own), and rclpy's MultiThreadedExecutor spends a
    # core polling futures at 90 messages/s (measured: 97% CPU and most frames dropped).
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Through Python logging, which falls back to stderr once the ROS context is gone.
        log.info("shutting down: socket bridge, engine, node")
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return node.exit_code


if __name__ == "__main__":
    sys.exit(main())
