"""The generated ActionChunk message: built by CMake, carried over real rclpy / Fast DDS."""

from __future__ import annotations

import array
import os
import time

import numpy as np
import rclpy
import rclpy.executors
from policy_server_ros.msg import ActionChunk
from rclpy.serialization import deserialize_message, serialize_message


def _chunk() -> ActionChunk:
    actions = np.arange(3 * 14, dtype=np.float32).reshape(3, 14) / 7
    msg = ActionChunk()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.header.frame_id = "base_link"
    msg.ctrl_space, msg.ctrl_type, msg.gripper_continuous = "joint", "abs", True
    msg.period.nanosec = 20_000_000  # 50 Hz
    msg.num_steps, msg.action_dim = actions.shape
    msg.actions = array.array("f", actions.tobytes())
    msg.dim_names = [f"joint{i}" for i in range(14)]
    return msg


def test_fields_survive_cdr_serialization() -> None:
    msg = deserialize_message(serialize_message(_chunk()), ActionChunk)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
        (12, 345, "base_link")
    assert (msg.ctrl_space, msg.ctrl_type, msg.gripper_continuous) == ("joint", "abs", True)
    assert msg.period.nanosec == 20_000_000 and (msg.num_steps, msg.action_dim) == (3, 14)
    decoded = np.frombuffer(msg.actions, dtype=np.float32).reshape(msg.num_steps, msg.action_dim)
    np.testing.assert_array_equal(decoded, np.arange(42, dtype=np.float32).reshape(3, 14) / 7)
    assert msg.dim_names[13] == "joint13"


def test_published_and_received_across_nodes() -> None:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=100 + os.getpid() % 100)
    try:
        talker = rclpy.create_node("chunk_talker", context=context)
        listener = rclpy.create_node("chunk_listener", context=context)
        received: list[ActionChunk] = []
        listener.create_subscription(ActionChunk, "action_chunk", received.append, 10)
        publisher = talker.create_publisher(ActionChunk, "action_chunk", 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            publisher.publish(_chunk())
            executor.spin_once(timeout_sec=0.1)
        assert received and received[0].num_steps == 3 and received[0].ctrl_space == "joint"
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=context)
