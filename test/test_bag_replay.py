"""policy_server_bag replay and record over real rclpy / Fast DDS, and a bag replayed into a
running node whose output is recorded and checked against the bag and against `eval`."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from act_fixtures import IMAGE_HW, small_checkpoint
from conftest import PYTHON, ServerProcess, wait_until
from policy_server_ros.msg import ActionChunk
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from ros_harness import JOINTS, SyntheticRobot, joint_state, next_domain, rgb_image, ros_env
from ros_harness import start_node as start_policy_node
from sensor_msgs.msg import Image, JointState

from policy_server_ros.action_messages import chunk_to_array
from policy_server_ros.bag_tools.evaluate import evaluate
from policy_server_ros.bag_tools.sample import (
    CAMERA_TOPICS,
    COMMAND_TOPIC,
    JOINT_TOPIC,
    SampleSpec,
    make_sample,
)
from policy_server_ros.bag_tools.storage import open_bag, read_messages
from policy_server_ros.inputs import node_params
from policy_server_ros.ros_conversions import stamp_ns

CHUNK_TOPIC = "/policy_server/action_chunk"
SPEC = SampleSpec(seconds=3.0, height=IMAGE_HW[0], width=IMAGE_HW[1])


def bag_process(domain: int, *args: str) -> ServerProcess:
    return ServerProcess([PYTHON, "-m", "policy_server_ros.bag_tools", *args],
                         env=ros_env(domain))


class RawListener:
    """Raw (serialized) subscriptions in a ROS context of the test's own."""

    def __init__(self, domain: int, topics: dict[str, type]) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("raw_listener", context=self.context)
        self.received: dict[str, list[bytes]] = {t: [] for t in topics}
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msg_type in topics.items():
            self.node.create_subscription(msg_type, topic, self.received[topic].append, qos,
                                          raw=True)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.spin()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self._thread.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _bag_raw(bag: Path, topic: str, start_ns: int = 0, stop_ns: int = 2**63 - 1) -> list:
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [bytes(raw) for _, t, raw in read_messages(reader, conns)
                if start_ns <= t < stop_ns]


def test_replay_publishes_the_recorded_bytes_of_the_chosen_window(tmp_path) -> None:
    bag = tmp_path / "sample"
    make_sample(bag, SPEC, storage="mcap")
    with open_bag(bag) as reader:
        begin = reader.start_time
    window = (begin + 1_000_000_000, begin + 2_000_000_000)
    domain = next_domain()
    listener = RawListener(domain, {JOINT_TOPIC: JointState, CAMERA_TOPICS[0]: Image})
    try:
        replay = bag_process(domain, "replay", str(bag), "--topics", JOINT_TOPIC,
                             CAMERA_TOPICS[0], "--start", "1", "--duration", "1", "--rate", "2")
        assert replay.proc.wait(60) == 0, "\n".join(replay.lines)
        summary = replay.wait_for(r"^replayed \d+ messages")
        assert wait_until(lambda: len(listener.received[JOINT_TOPIC]) >= 50, timeout=10)
        time.sleep(0.3)
        # Exactly the bag's bytes for that second, in order (no decode, no re-encode).
        for topic in (JOINT_TOPIC, CAMERA_TOPICS[0]):
            assert listener.received[topic] == _bag_raw(bag, topic, *window)
        assert f"{JOINT_TOPIC}: 50" in "\n".join(replay.lines)
        assert f"{CAMERA_TOPICS[0]}: 25" in "\n".join(replay.lines)
        assert "timing error" in summary
        # --rate 2: one second of bag time took about half a second.
        wall = float(re.search(r"in ([\d.]+) s", summary).group(1))
        assert 0.3 < wall < 2.0
    finally:
        listener.close()


def test_record_writes_live_synthetic_robot_topics(tmp_path) -> None:
    domain = next_domain()
    robot = SyntheticRobot(domain, [CAMERA_TOPICS[0]])
    out = tmp_path / "recorded"
    recorder = bag_process(domain, "record", str(out), "--topics", CAMERA_TOPICS[0], "joint_states")
    try:
        recorder.wait_for(rf"recording {re.escape(CAMERA_TOPICS[0])} \(sensor_msgs/msg/Image\)")
        recorder.wait_for(r"recording /joint_states \(sensor_msgs/msg/JointState\)")
        time.sleep(1.0)  # the subscriptions match the robot's publishers
        pictures = {}

        def frame(i: int, stamp: int):
            pictures[stamp] = np.full((*IMAGE_HW, 3), i, np.uint8)
            return [rgb_image(stamp, pictures[stamp])], joint_state(stamp, np.full(14, i / 10))

        stamps = robot.run(30, 20.0, frame)
        time.sleep(0.5)
        assert recorder.stop(signal.SIGINT) == 0
    finally:
        robot.close()
    recorder.wait_for(r"^recorded \d+ messages")
    with open_bag(out) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        assert by_topic[CAMERA_TOPICS[0]].msgtype == "sensor_msgs/msg/Image"
        joints = [reader.deserialize(raw, c.msgtype)
                  for c, _, raw in read_messages(reader, [by_topic[JOINT_TOPIC]])]
        images = [reader.deserialize(raw, c.msgtype)
                  for c, _, raw in read_messages(reader, [by_topic[CAMERA_TOPICS[0]]])]
    assert [stamp_ns(m) for m in joints] == stamps  # reliable: every message, in order
    assert list(joints[3].name) == JOINTS and joints[3].position[0] == pytest.approx(0.3)
    assert len(images) >= 25  # best effort, as the camera publishes
    for image in images:
        np.testing.assert_array_equal(image.data.reshape(*IMAGE_HW, 3),
                                      pictures[stamp_ns(image)])


def test_bag_replayed_into_the_node_gives_one_chunk_per_observation(tmp_path) -> None:
    """make-sample -> replay --restamp -> policy_server (small ACT, two cameras) -> record the
    chunks (sqlite3). Each complete observation window of the bag gives exactly one chunk,
    stamped with the window's (restamped) stamp, and its actions equal what `eval` predicts
    for the same window."""
    bag = tmp_path / "sample"
    make_sample(bag, SPEC, storage="mcap")
    ckpt = small_checkpoint(tmp_path / "ckpt", cameras=2)
    node_config = {"model_name_or_path": str(ckpt), "device": "cpu",
                   "camera_topics": list(CAMERA_TOPICS), "camera_qos": "reliable",
                   "state_qos": "reliable", "socket_bridge_enabled": False}
    domain = next_domain()
    node = start_policy_node(domain, node_config)
    recorder = None
    try:
        node.wait_for("policy_server ready", timeout=90)
        recorder = bag_process(domain, "record", str(tmp_path / "chunks"), "--storage",
                               "sqlite3", "--topics", CHUNK_TOPIC)
        recorder.wait_for(r"recording /policy_server/action_chunk", timeout=30)
        time.sleep(1.0)
        # Half speed leaves the node's CPU inference time to keep up with every frame.
        replay = bag_process(domain, "replay", str(bag), "--restamp", "--rate", "0.5",
                             "--monitor", CHUNK_TOPIC)
        assert replay.proc.wait(90) == 0, "\n".join(replay.lines)
        mapping = replay.wait_for(r"pass 1: header stamps = ")
        time.sleep(1.0)
        assert recorder.stop(signal.SIGINT) == 0, "\n".join(recorder.lines)
    finally:
        if recorder is not None and recorder.proc.poll() is None:
            recorder.stop(signal.SIGINT)
        node.stop(signal.SIGINT)
    clock0, first, rate = re.search(r"= (\d+) \+ \(stamp - (\d+)\) / ([\d.]+)", mapping).groups()
    assert float(rate) == 0.5

    with open_bag(tmp_path / "chunks") as reader:
        assert reader.connections[0].msgtype == "policy_server_ros/msg/ActionChunk"
        chunks = [deserialize_message(bytes(raw), ActionChunk)
                  for _, _, raw in read_messages(reader, reader.connections)]
    # Back to bag time: restamped = clock0 + (stamp - first) / 0.5.
    chunk_stamps = [int(first) + (stamp_ns(c) - int(clock0)) // 2 for c in chunks]
    assert all((stamp_ns(c) - int(clock0)) % 2 == 0 for c in chunks)
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic == CAMERA_TOPICS[0]]
        windows = [stamp_ns(reader.deserialize(raw, c.msgtype))
                   for c, _, raw in read_messages(reader, conns)]
    assert len(windows) == 75
    assert sorted(chunk_stamps) == windows  # one chunk per window, no duplicates
    assert {(c.num_steps, c.action_dim, c.ctrl_space, c.ctrl_type) for c in chunks} == \
        {(chunks[0].num_steps, 14, "joint", "abs")}

    # The node and `eval` assemble and predict alike: the same actions for the same window.
    ev = evaluate(bag, node_params(**node_config), action_topic=COMMAND_TOPIC, progress=False)
    predicted = dict(zip(ev.chunk_stamps_ns.tolist(), ev.predicted, strict=True))
    assert sorted(predicted) == windows
    for stamp, chunk in zip(chunk_stamps, chunks, strict=True):
        np.testing.assert_allclose(chunk_to_array(chunk), predicted[stamp], atol=1e-3)
    assert "action chunks received: 75" in "\n".join(replay.lines)
