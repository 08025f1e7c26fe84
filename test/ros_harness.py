"""Real ROS 2 plumbing for node tests: a synthetic robot (camera, joint and pose publishers) in
this process, the node under test in a child process, each test on its own ROS domain id."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import rclpy.executors
from conftest import PYTHON, ServerProcess, wait_until
from geometry_msgs.msg import PoseStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from policy_server_ros.action_messages import stamp_msg

JOINTS = [f"joint{i}" for i in range(14)]
# Fast DDS takes ids 0-232; wrap around (tests run one after another, so an id comes back only
# long after its last user stopped), starting somewhere else per run.
_domains = (1 + (os.getpid() + i) % 232 for i in itertools.count())


def next_domain() -> int:
    """A ROS domain id no other test of this run uses."""
    return next(_domains)


def ros_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    return env


def start_node(domain: int, params: dict[str, Any], cwd: Path | None = None,
               params_file: Path | None = None, namespace: str = "") -> ServerProcess:
    """`python -m policy_server_ros` with `-p name:=value` for each of `params`, after
    `--params-file` when given, in `namespace` when given (`-r __ns:=`)."""
    argv = [PYTHON, "-m", "policy_server_ros", "--ros-args"]
    if namespace:
        argv += ["-r", f"__ns:={namespace}"]
    if params_file is not None:
        argv += ["--params-file", str(params_file)]
    for name, value in params.items():
        if isinstance(value, list):
            text = "[" + ",".join(map(str, value)) + "]"
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        argv += ["-p", f"{name}:={text}"]
    return ServerProcess(argv, cwd=cwd, env=ros_env(domain))


def rgb_image(stamp_ns: int, pixels: np.ndarray, encoding: str = "rgb8") -> Image:
    """(H, W, 3) RGB pixels as an Image in `encoding` (rgb8 or bgr8)."""
    data = pixels[..., ::-1] if encoding == "bgr8" else pixels
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                step=pixels.shape[1] * 3)
    msg.header.stamp = stamp_msg(stamp_ns)
    msg.data = np.ascontiguousarray(data).tobytes()
    return msg


def joint_state(stamp_ns: int, positions: np.ndarray) -> JointState:
    msg = JointState(name=list(JOINTS), position=[float(x) for x in positions])
    msg.header.stamp = stamp_msg(stamp_ns)
    return msg


class SyntheticRobot:
    """Publishes cameras and joint states (and optionally a pose) from a ROS context of its own,
    and records what arrives on the topics it subscribes to."""

    def __init__(self, domain: int, cameras: list[str], joint_topic: str = "/joint_states",
                 pose_topic: str | None = None) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("synthetic_robot", context=self.context)
        self.camera_pubs = [self.node.create_publisher(Image, t, qos_profile_sensor_data)
                            for t in cameras]
        self.joint_pub = self.node.create_publisher(JointState, joint_topic, 10)
        self.pose_pub = self.node.create_publisher(PoseStamped, pose_topic, 10) \
            if pose_topic else None
        self.received: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):  # shut down underneath us
            self.executor.spin()

    def listen(self, topic: str, msg_type: type, qos: Any = 10) -> list[Any]:
        """Start recording `topic`; the returned list fills as messages arrive."""
        box: list[Any] = []
        self.received[topic] = box

        def record(msg: Any) -> None:
            with self._lock:
                box.append(msg)

        self.node.create_subscription(msg_type, topic, record, qos)
        return box

    def wait_for_subscribers(self, timeout: float = 20.0) -> None:
        pubs = [*self.camera_pubs, self.joint_pub] + ([self.pose_pub] if self.pose_pub else [])
        deadline = time.monotonic() + timeout
        while any(p.get_subscription_count() == 0 for p in pubs):
            if time.monotonic() > deadline:
                raise AssertionError("the node never subscribed to the synthetic robot's topics")
            time.sleep(0.05)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def publish(self, stamp_ns: int, images: list[Image], joints: JointState,
                pose: PoseStamped | None = None) -> None:
        for pub, image in zip(self.camera_pubs, images, strict=True):
            pub.publish(image)
        self.joint_pub.publish(joints)
        if pose is not None and self.pose_pub is not None:
            self.pose_pub.publish(pose)

    def run(self, count: int, rate_hz: float,
            frame: Callable[[int, int], tuple[list[Image], JointState]]) -> list[int]:
        """Publish `count` frames at `rate_hz`; frame(i, stamp_ns) builds them. Returns stamps."""
        stamps = []
        period = 1.0 / rate_hz
        next_time = time.monotonic()
        for i in range(count):
            stamp = self.now_ns()
            images, joints = frame(i, stamp)
            self.publish(stamp, images, joints)
            stamps.append(stamp)
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        return stamps

    wait_until = staticmethod(wait_until)

    def close(self) -> None:
        # Stop spinning before destroying anything the spinning thread may touch.
        self.executor.shutdown(timeout_sec=5)
        self._spinner.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@contextlib.contextmanager
def in_process_node(ros_args: Sequence[str] = (), **params: Any) -> Iterator[tuple[Any, Any]]:
    """A PolicyServerNode in this process with these parameter overrides (and `--ros-args`
    `ros_args`, e.g. params files), spun by a SingleThreadedExecutor on a thread named
    'executor' (as main() spins it), on a domain of its own; yields (node, context). Tests that
    need the node's internals use it."""
    from rclpy.parameter import Parameter

    from policy_server_ros.node import PolicyServerNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain(),
               args=["--ros-args", *ros_args] if ros_args else None)
    node = PolicyServerNode(context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in params.items()])
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="executor", daemon=True)
    spinner.start()
    try:
        yield node, context
    finally:
        executor.shutdown(timeout_sec=5)
        spinner.join(5)
        node.close()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
