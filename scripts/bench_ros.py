"""The synthetic robot the node benchmarks publish from: cameras and a joint state at a fixed
rate, from a ROS context of its own in the benchmark's process, plus the subscriptions they
record."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Before rclpy loads: big images over Fast DDS shared memory, discovery on this machine only.
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(
    Path(__file__).resolve().parents[1] / "config" / "fastdds_large_shm.xml"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "201")

import rclpy
import rclpy.executors
from builtin_interfaces.msg import Time
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

JOINTS = [f"joint{i}" for i in range(14)]


def _stamp(t_ns: int) -> Time:
    return Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9)


class BenchRobot:
    """Publishes 480x640 rgb8 frames on `cameras` and a 14-joint state on /joint_states."""

    def __init__(self, cameras: list[str]) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_robot", context=self.context)
        self.cams = [self.node.create_publisher(Image, t, qos_profile_sensor_data)
                     for t in cameras]
        self.joints = self.node.create_publisher(JointState, "/joint_states", 10)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()
        self.pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3),
                                                        dtype=np.uint8).tobytes()

    def listen(self, topic: str, msg_type: type, record: Callable[[Any], None],
               qos: Any = 50) -> None:
        self.node.create_subscription(msg_type, topic, record, qos)

    def wait_for_node(self) -> None:
        while any(p.get_subscription_count() == 0 for p in [*self.cams, self.joints]):
            time.sleep(0.05)
        time.sleep(1.0)

    def run(self, seconds: float, rate: float) -> int:
        """Publish frames (same stamp on every camera and the joints) for `seconds`."""
        frames = int(seconds * rate)
        next_time = time.monotonic()
        for i in range(frames):
            stamp = _stamp(time.time_ns())
            for pub in self.cams:
                image = Image(height=480, width=640, encoding="rgb8", step=1920,
                              data=self.pixels)
                image.header.stamp = stamp
                pub.publish(image)
            state = JointState(name=JOINTS, position=[0.01 * i] * 14)
            state.header.stamp = stamp
            self.joints.publish(state)
            next_time += 1 / rate
            time.sleep(max(0.0, next_time - time.monotonic()))
        return frames

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self._spinner.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
