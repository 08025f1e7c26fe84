"""The simulated ALOHA as a ROS 2 robot: it owns time, publishes what a real one would, and
applies the latest command at each 20 ms control step.

Per step k (sim time t_k = k * 20 ms, counted across episodes so time never runs backwards):
`/clock` = t_k, then `joint_states` (the 14 named joints, positions and velocities), the cube
pose (`geometry_msgs/PoseStamped`) and, when a camera size is set, the `top` camera (rgb8), all
stamped t_k; then the newest command received goes to the physics for the step from t_k to
t_k+1. Rendering costs ~60 ms per 480x640 frame here, so every node in the loop runs on sim
time (use_sim_time); `real_time_factor` paces the steps against the wall clock (1 = real time,
0 = as fast as the simulator goes).

Commands: sensor_msgs/JointState (positions, by name, in any order; a stamp older than the
episode's start is from the previous episode and ignored) or std_msgs/Float64MultiArray (14
values in JOINT_NAMES order). No command yet in an episode: the arms hold their start pose.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from policy_server_ros.ros_conversions import ConversionError, JointOrder
from policy_server_ros.sim.episodes import CONTROL_PERIOD, JOINT_NAMES
from policy_server_ros.sim.transfer_cube import TransferCubeSim

COMMAND_TYPES = {"joint_state": JointState, "float64_array": Float64MultiArray}
PERIOD_NS = round(CONTROL_PERIOD * 1e9)


@dataclass(frozen=True)
class RobotTopics:
    """Topic names of the simulated robot (relative names follow its namespace)."""

    camera: str = "camera/top/image_raw"
    joint_states: str = "joint_states"
    cube_pose: str = "cube_pose"
    command: str = "/policy_server/command"
    command_type: str = "joint_state"


def _stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SimRobotNode(Node):
    """Publishes the simulator's state and clock and collects commands; `step()` advances it.
    Callbacks (commands) run on an executor thread; `step()` runs on the caller's."""

    def __init__(self, sim: TransferCubeSim, topics: RobotTopics = RobotTopics(),
                 name: str = "aloha_sim", context: Any = None) -> None:
        super().__init__(name, context=context)
        if topics.command_type not in COMMAND_TYPES:
            raise ValueError(f"command_type {topics.command_type!r} is not one of "
                             f"{list(COMMAND_TYPES)}")
        self.sim = sim
        self.topics = topics
        # Reliable, so that no observation of a step is lost between two local processes
        # (the policy server's best-effort subscriptions match it too).
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.joint_pub = self.create_publisher(JointState, topics.joint_states, qos)
        self.cube_pub = self.create_publisher(PoseStamped, topics.cube_pose, qos)
        self.camera_pub = self.create_publisher(Image, topics.camera, qos) \
            if sim.height > 0 else None
        self.command_sub = self.create_subscription(COMMAND_TYPES[topics.command_type],
                                                    topics.command, self._on_command, qos)
        self._order = JointOrder(JOINT_NAMES)
        self._lock = threading.Lock()
        self._command: np.ndarray | None = None
        self.commands_received = 0
        self.commands_refused = 0
        self.now_ns = 0  # sim time, monotonic across episodes
        self.episode_start_ns = 0
        self._hold: np.ndarray | None = None  # the start pose, until the first command

    # --- commands ------------------------------------------------------------------------
    def _on_command(self, msg: JointState | Float64MultiArray) -> None:
        try:
            if isinstance(msg, JointState):
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if 0 < stamp < self.episode_start_ns:
                    return  # computed for the previous episode
                command = self._order.positions(msg).astype(np.float64)
            else:
                command = np.asarray(msg.data, dtype=np.float64)
            if command.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(command)):
                raise ConversionError(f"a command is {len(JOINT_NAMES)} finite values, got "
                                      f"shape {command.shape}")
        except ConversionError as exc:
            self.commands_refused += 1
            self.get_logger().warning(f"command on {self.topics.command} refused: {exc}",
                                      throttle_duration_sec=5.0)
            return
        with self._lock:
            self._command = command
            self.commands_received += 1

    def command_publisher_count(self) -> int:
        return self.count_publishers(self.command_sub.topic_name)

    def latest_command(self) -> np.ndarray | None:
        with self._lock:
            return self._command

    # --- episodes ------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """A new episode: the cube at the seed's pose, commands forgotten, time goes on."""
        self.sim.reset(seed)
        with self._lock:
            self._command = None
        self.now_ns += PERIOD_NS  # the new episode starts one step after the last one ended
        self.episode_start_ns = self.now_ns
        self._hold = self.sim.joint_positions()

    def publish_state(self, image: np.ndarray | None = None) -> None:
        """/clock, then the joint states, the cube pose and the camera, stamped now."""
        stamp = _stamp(self.now_ns)
        self.clock_pub.publish(Clock(clock=stamp))
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = list(JOINT_NAMES)
        joints.position = self.sim.joint_positions().tolist()
        joints.velocity = self.sim.joint_velocities().tolist()
        self.joint_pub.publish(joints)
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = "world"
        x, y, z, qx, qy, qz, qw = self.sim.cube_pose().tolist()
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = x, y, z
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = qx, qy, qz, qw
        self.cube_pub.publish(pose)
        if self.camera_pub is not None and image is not None:
            msg = Image()
            msg.header.stamp = stamp
            msg.header.frame_id = "top"
            msg.height, msg.width = image.shape[:2]
            msg.encoding = "rgb8"
            msg.step = 3 * msg.width
            msg.data = image.tobytes()  # tobytes: assigning the array checks every element
            self.camera_pub.publish(msg)

    def step(self) -> float:
        """Apply the newest command (the start pose before the first) for one control step."""
        if self._hold is None:
            raise RuntimeError("reset(seed) starts an episode before step()")
        command = self.latest_command()
        reward = self.sim.step(self._hold if command is None else command)
        self.now_ns += PERIOD_NS
        return reward
