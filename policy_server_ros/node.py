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

import copy
import gc
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image, JointState, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from policy_server_ros.action_messages import (
    action_chunk,
    joint_trajectory,
    overdue_s,
    trajectory_stamp_ns,
)
from policy_server_ros.bridge_supervisor import BridgeSupervisor
from policy_server_ros.checkpoint import EXAMPLE_CHECKPOINT, CheckpointError, resolve_model
from policy_server_ros.command_stream import CommandStream
from policy_server_ros.diagnostics import InputRates, Stats, inference_status
from policy_server_ros.engine import BackendUnavailable, EngineBusy, EngineClosed
from policy_server_ros.engine_backends import Engine, RayOptions, make_engine
from policy_server_ros.inputs import (
    InputTopic,
    ParameterError,
    assembler_config,
    input_topics,
    state_size,
)
from policy_server_ros.model_info import model_info
from policy_server_ros.msg import ActionChunk
from policy_server_ros.normalization import NormalizationError
from policy_server_ros.observation_assembler import (
    Assembled,
    AssemblyError,
    ObservationAssembler,
)
from policy_server_ros.policies import LoadOptions, PolicyLoadError
from policy_server_ros.policies.base import ActionSpec, PolicyOutput
from policy_server_ros.ros_conversions import ConversionError, stamp_ns
from policy_server_ros.ros_handoff import ExecutorHandoff
from policy_server_ros.ros_logging import forward_to_ros, stop_forwarding
from policy_server_ros.ros_parameters import declare_parameters, read_parameters
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


# Lets a params file set qos_overrides./<topic>.subscription.{reliability,depth,...} per input
# topic (the ROS 2 convention), on top of the per-kind QoS parameters.
_QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()

# The message classes of the input types inputs.input_topics() names.
_MSG_TYPES: dict[str, type] = {
    "sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
    "sensor_msgs/msg/JointState": JointState, "geometry_msgs/msg/PoseStamped": PoseStamped,
    "sensor_msgs/msg/PointCloud2": PointCloud2, "std_msgs/msg/String": String,
}


class StartupError(RuntimeError):
    """The node cannot start with these parameters; the message says what to change."""


class PolicyServerWork(Node):
    """What the node does, in lifecycle steps: configure (check the parameters, load and warm up
    the model, create publishers and services), activate (subscriptions, timers, the socket
    bridge), deactivate (stop those; the model stays), cleanup (free the model). PolicyServerNode
    runs configure and activate when it is built; lifecycle_node.ManagedPolicyServerNode runs
    them on lifecycle transitions. One code path for both."""

    def _init_work(self, *, read_only: bool = True) -> None:
        declare_parameters(self, read_only)
        self.params: dict[str, Any] = {}
        # The engine's, the bridge's and the loaders' Python logging: to /rosout as well.
        self._log_handler = forward_to_ros(self.get_logger(), self.context)
        self.stats = Stats()
        self._rates = InputRates()
        self._lock = threading.Lock()
        self._in_flight = False
        self._pending: Assembled | None = None
        self.exit_code = 0
        self._results = ExecutorHandoff(self, self._on_result)
        self.engine: Engine | None = None
        self.assembler: ObservationAssembler | None = None
        self.topics: dict[str, str] = {}
        self.chunk_pub: Publisher | None = None
        self.trajectory_pub: Publisher | None = None
        self.diagnostics_pub: Publisher | None = None
        self.commands: CommandStream | None = None  # execution_mode != none
        self._server_services: list[Service] = []
        self._active_handles: list[Subscription | Timer] = []
        self.active = False
        self.bridge_supervisor = BridgeSupervisor(None, self._start_bridge,
                                                  self._bridge_gave_up, MAX_BRIDGE_RESTARTS)

    # --- lifecycle steps ----------------------------------------------------------------------

    def configure_work(self) -> None:
        """Check the parameters, load and warm up the model, create the publishers and
        services. StartupError (one line) otherwise, with nothing left held."""
        try:
            self.params = read_parameters(self)
        except ParameterError as exc:
            raise StartupError(str(exc)) from None
        p = self.params
        try:
            assembler = ObservationAssembler(assembler_config(p))
        except ValueError as exc:
            raise StartupError(f"inputs: {exc}") from exc
        engine = self._start_engine()
        try:
            self._check_fits(engine.policy.spec, engine.policy.camera_names,
                             engine.policy.state_feature)
            self.commands = None if p["execution_mode"] == "none" \
                else CommandStream(self, p, engine.policy.spec)
        except ValueError as exc:  # the command stream's parameters do not fit the policy
            engine.close()
            raise StartupError(str(exc)) from exc
        except BaseException:  # StartupError, or Ctrl+C / shutdown while creating publishers
            engine.close()
            raise
        self.engine, self.assembler = engine, assembler
        self.topics = {spec.name: self.resolve_topic_name(spec.topic)
                       for spec in input_topics(p)}
        self.chunk_pub = self.create_publisher(ActionChunk, p["action_topic"], 10)
        self.trajectory_pub = self.create_publisher(JointTrajectory, p["trajectory_topic"], 10) \
            if p["action_joint_names"] else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._server_services = [self.create_service(Trigger, "~/reset", self._on_reset),
                          self.create_service(Trigger, "~/get_model_info", self._on_model_info)]

    def activate_work(self) -> None:
        """Subscribe, start the timers and the socket bridge: chunks flow from here on."""
        p, spec = self.params, self.engine.policy.spec
        # A copy each: rclpy writes qos_overrides into the profile it is given, which would
        # otherwise reach every later subscription of that kind (and rclpy's own globals).
        self._active_handles = [self._subscribe(topic, copy.copy(_QOS[p[topic.qos]]))
                                for topic in input_topics(p)]
        self._active_handles.append(self.create_timer(1.0, self._publish_diagnostics))
        if p["inference_rate"] > 0:
            self._active_handles.append(self.create_timer(1.0 / p["inference_rate"],
                                                          self._try_infer))
        if self.commands is not None:
            self.commands.start()
        bridge: PolicySocketServer | None = None
        if p["socket_bridge_enabled"]:
            try:
                bridge = self._start_bridge()
            except (OSError, ValueError) as exc:
                self._destroy_active_handles()
                raise StartupError(f"socket bridge: {exc}") from exc
        self.bridge_supervisor.bridge = bridge
        self.active = True
        self.get_logger().info(
            f"policy_server ready: {p['model_name_or_path']} -> {p['action_topic']} "
            f"({self.engine.chunk_size} x {spec.action_dim}, {spec.ctrl_space}/{spec.ctrl_type})"
            f"; inputs: {', '.join(f'{k}={v}' for k, v in self.topics.items())}; socket bridge "
            + (f"on {bridge.address[0]}:{bridge.address[1]}" if bridge else "off"))

    def deactivate_work(self) -> None:
        """Stop the inputs, the timers and the bridge; the model stays loaded. A result still
        in flight is not published."""
        self.active = False
        self._destroy_active_handles()
        self.bridge_supervisor.stop()
        self.bridge_supervisor.bridge = None
        with self._lock:
            self._pending = None
        if self.commands is not None:
            self.commands.stop()
            self.commands.reset()  # a new activation starts without old chunks

    def cleanup_work(self) -> None:
        """Free the model (and its device memory), the publishers and the services."""
        for publisher in (self.chunk_pub, self.trajectory_pub, self.diagnostics_pub):
            if publisher is not None:
                self.destroy_publisher(publisher)
        for service in self._server_services:
            self.destroy_service(service)
        if self.commands is not None:
            self.commands.destroy()
        self.chunk_pub = self.trajectory_pub = self.diagnostics_pub = self.commands = None
        self._server_services = []
        if self.engine is not None:
            self.engine.close()  # closes the policy, which releases the model
        self.engine = self.assembler = None
        gc.collect()

    def close(self) -> None:
        """From any state: stop the bridge, drain the engine, stop forwarding Python logging."""
        if self.active:
            self.deactivate_work()
        self.cleanup_work()
        stop_forwarding(self._log_handler)

    def _destroy_active_handles(self) -> None:
        for handle in self._active_handles:
            if isinstance(handle, Subscription):
                self.destroy_subscription(handle)
            else:
                self.destroy_timer(handle)
        self._active_handles = []

    def _check_fits(self, spec: ActionSpec, cameras: Sequence[str] | None,
                    state: tuple[str, int] | None = None) -> None:
        p = self.params
        size = state_size(p["state_inputs"], p["joint_names"])
        if state is not None and size is not None and size != state[1]:
            raise StartupError(f"{state[0]} has shape ({state[1]},) but state_inputs "
                               f"{list(p['state_inputs'])} with {len(p['joint_names'])} "
                               f"joint_names give ({size},); list the joints the policy was "
                               f"trained with")
        joint_names = p["action_joint_names"]
        if joint_names and len(joint_names) != spec.action_dim:
            raise StartupError(f"action_joint_names has {len(joint_names)} names but the policy "
                               f"produces {spec.action_dim}-D actions")
        if joint_names and not _absolute_joint_targets(spec):
            raise StartupError(f"action_joint_names is set, which publishes a JointTrajectory of "
                               f"absolute joint positions, but the policy's actions are "
                               f"{spec.ctrl_space}/{spec.ctrl_type}; leave action_joint_names "
                               f"empty (ActionChunk carries the convention) or serve a "
                               f"joint/abs policy")
        if cameras is not None and len(cameras) != len(p["camera_topics"]):
            raise StartupError(f"camera_topics has {len(p['camera_topics'])} topics but the "
                               f"policy was trained with {len(cameras)} camera(s) "
                               f"{list(cameras)}; list one topic per camera, in that order")

    # --- services -----------------------------------------------------------------------------

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        """Between episodes: forget the buffered messages, the latched instruction and the
        waiting observation; the next observation is timestep 0."""
        self.assembler = ObservationAssembler(self.assembler.config)
        with self._lock:
            self._pending = None
        if self.commands is not None:
            self.commands.reset()
        response.success = True
        response.message = ("cleared: buffered input messages, the latched instruction, the "
                            "waiting observation, the scheduled commands; the next "
                            "observation is timestep 0")
        return response

    def _on_model_info(self, _request: Trigger.Request, response: Trigger.Response
                       ) -> Trigger.Response:
        response.success = True
        response.message = json.dumps(model_info(self.params, self.engine, self.topics))
        return response

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

    def _start_engine(self) -> Engine:
        p = self.params
        model = p["model_name_or_path"]
        try:
            if model == str(EXAMPLE_CHECKPOINT):
                model = resolve_model(model)  # ./ckpt/... if present, else the cached example
                self.get_logger().warning(f"Serving the example checkpoint {model}: its weights "
                                          f"are untrained; its actions are not meant for a real "
                                          f"robot.")
            engine = make_engine(
                p["backend"], model, LoadOptions(
                    device=p["device"], dataset_id=p["dataset_id"], min_std=p["min_std"],
                    precision=p["precision"], compile=p["compile"],
                    seed=None if p["seed"] < 0 else p["seed"],
                    num_inference_steps=p["num_inference_steps"], use_ema=p["use_ema"],
                    replay_episode=p["replay_episode"],
                    lerobot_image_features=tuple(p["lerobot_image_features"]),
                    lerobot_ctrl_space=p["lerobot_ctrl_space"],
                    lerobot_ctrl_type=p["lerobot_ctrl_type"]),
                chunk_size=p["chunk_size"], max_batch=p["max_batch"],
                max_wait_ms=p["max_wait_ms"],
                ray=RayOptions.from_settings(p, request_timeout=p["socket_inference_timeout"]))
        except (PolicyLoadError, CheckpointError, NormalizationError, ValueError,
                OSError, BackendUnavailable) as exc:  # a bad checkpoint, device, option or
            raise StartupError(str(exc)) from exc  # cluster: say which, one line
        engine.wait_ready()
        return engine

    def _subscribe(self, spec: InputTopic, qos: QoSProfile) -> Subscription:
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

        # qos_overrides./<topic>.subscription.* parameters override the kind's QoS per topic.
        return self.create_subscription(_MSG_TYPES[spec.msg_type], topic, callback, qos,
                                        qos_overriding_options=_QOS_OVERRIDES)

    # --- inference ----------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _try_infer(self) -> None:
        # When no chunk is due (chunk, aggregate modes) the observation is still counted in
        # MetaObs.timestep, not built: the timestep stays the control step (replay indexes its
        # recording by it).
        wanted = self.commands is None or self._wants_chunk()
        try:
            assembled = self.assembler.assemble(self._now_ns(), build=wanted)
        except AssemblyError as exc:
            self.get_logger().warning(f"skipping observation: {exc}",
                                      throttle_duration_sec=WARN_PERIOD_S)
            return
        if assembled is not None:
            self._dispatch(assembled)

    def _wants_chunk(self) -> bool:
        """execution_mode chunk and aggregate: infer only when the plan runs low
        (refill_threshold) and no chunk is already on its way; ensemble: always."""
        if self.commands.infers_on_every_observation:
            return True
        with self._lock:
            if self._in_flight:
                return False
        return self.commands.wants_chunk(self._now_ns())

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
            if not self.context.ok() or not self.active:
                return  # shutting down, or deactivated during inference: not published
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
            self._publish_trajectory(actions, assembled.stamp_ns)
        if self.commands is not None:
            self.commands.add_chunk(actions, output.spec, assembled.stamp_ns, self._now_ns())
        with self.stats.lock:
            self.stats.published += 1
            self.stats.latency_ms.append((self._now_ns() - assembled.stamp_ns) / 1e6)

    def _publish_trajectory(self, actions: np.ndarray, observation_ns: int) -> None:
        p, now = self.params, self._now_ns()
        msg = joint_trajectory(
            actions, p["action_joint_names"],
            trajectory_stamp_ns(p["trajectory_stamp"], observation_ns, now),
            frame_id=p["frame_id"], period_s=p["action_period"],
            time_offset_s=p["trajectory_time_offset"])
        overdue = overdue_s(msg, now)
        if overdue > 0:
            # Published all the same (another consumer may use it); the count and the warning
            # say why a joint_trajectory_controller does not move.
            with self.stats.lock:
                self.stats.trajectories_past += 1
            self.get_logger().warning(
                f"a JointTrajectory on {p['trajectory_topic']} ended {overdue:.3f} s before it "
                f"was published (trajectory_stamp {p['trajectory_stamp']}); a "
                f"joint_trajectory_controller rejects it: use trajectory_stamp now or zero, or "
                f"check the camera and controller clocks", throttle_duration_sec=WARN_PERIOD_S)
        self.trajectory_pub.publish(msg)

    # --- diagnostics --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        self.bridge_supervisor.check()
        status, warnings = inference_status(
            node_name=self.get_name(), now_ns=self._now_ns(), assembler=self.assembler,
            stats=self.stats, rates=self._rates.tick(self.assembler), topics=self.topics,
            max_age_s=self.params["max_observation_age"],
            extra={"socket bridge clients": self.bridge_supervisor.client_count,
                   "socket bridge restarts": self.bridge_supervisor.restarts,
                   **(self.commands.diagnostics(self._now_ns()) if self.commands else {})})
        if warnings.missing:
            self.get_logger().warning(warnings.missing, throttle_duration_sec=WARN_PERIOD_S)
        if warnings.stale:
            self.get_logger().warning(warnings.stale, throttle_duration_sec=WARN_PERIOD_S)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


class PolicyServerNode(PolicyServerWork):
    """The unmanaged node: configured and active from construction (StartupError otherwise)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("policy_server", **node_kwargs)
        self._init_work(read_only=True)
        try:
            self.configure_work()
            self.activate_work()
        except BaseException:
            self.close()  # nothing held, no log forwarding left behind
            raise


def _absolute_joint_targets(spec: ActionSpec) -> bool:
    """Only absolute joint positions may go out as a JointTrajectory."""
    return spec.ctrl_space == "joint" and spec.ctrl_type == "abs"


def _ignore_interrupts() -> None:
    """For the bounded shutdown: a further Ctrl+C must not cut it short with a traceback (in a
    terminal the node gets the SIGINT, then ros2 launch sends its own)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(args: Sequence[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = PolicyServerNode()
    except StartupError as exc:
        rclpy.logging.get_logger("policy_server").error(str(exc))
        rclpy.try_shutdown()
        return 2
    except BaseException as exc:
        # Ctrl+C while the model loads: rclpy's handler shuts the context down, and either a
        # KeyboardInterrupt arrives or the next rcl call (creating a publisher) fails on the
        # dead context. Both are the interrupt, not an error.
        if not isinstance(exc, KeyboardInterrupt | ExternalShutdownException) and rclpy.ok():
            raise
        _ignore_interrupts()
        rclpy.logging.get_logger("policy_server").info("interrupted while starting; exiting")
        rclpy.try_shutdown()
        return 0
    return spin(node)


def spin(node: PolicyServerWork) -> int:
    """Spin `node` until Ctrl+C or shutdown, then shut it down; its exit code."""
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
        _ignore_interrupts()
        # Through Python logging, which falls back to stderr once the ROS context is gone.
        log.info("shutting down: socket bridge, engine, node")
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return node.exit_code


if __name__ == "__main__":
    sys.exit(main())
