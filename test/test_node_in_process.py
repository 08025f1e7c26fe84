"""The policy_server node's safety rules and threading, driven in this process (ros_harness.
in_process_node): a chunk whose convention changes per reply never becomes a JointTrajectory,
and a dying socket bridge never holds up the executor."""

from __future__ import annotations

import dataclasses
import socket
import threading

import numpy as np
import pytest
import rclpy
from conftest import REPO_ROOT, wait_until
from ros_harness import JOINTS, in_process_node, next_domain

from benchmark.base import MetaObs
from policy_server_ros.observation_assembler import Assembled


def _record_publishes(publisher) -> list:
    """Messages passed to `publisher.publish` from now on (they are still published)."""
    sent: list = []
    publish = publisher.publish
    publisher.publish = lambda msg: (sent.append(msg), publish(msg))
    return sent


def _diagnostics(node) -> dict[str, str]:
    """One /diagnostics tick, run here, as {key: value} (the timer's ticks run as well)."""
    publisher = node.diagnostics_pub
    sent: list = []
    publish = publisher.publish
    publisher.publish = sent.append
    try:
        node._publish_diagnostics()
    finally:
        publisher.publish = publish
    return {kv.key: kv.value for kv in sent[0].status[0].values}


def test_a_reply_that_is_not_joint_abs_is_never_published_as_a_joint_trajectory() -> None:
    # The start-up check sees the policy's spec once; a policy may answer in another convention
    # later (the engine stamps each reply with the spec it ran under). Such a chunk still goes out
    # as an ActionChunk, which names its convention, but never as absolute joint positions.
    with in_process_node(model_name_or_path="builtin:echo", socket_bridge_enabled=False,
                         action_joint_names=JOINTS) as (node, _):
        chunks, trajectories = (_record_publishes(node.chunk_pub),
                                _record_publishes(node.trajectory_pub))
        node._dispatch(Assembled(MetaObs(state=np.zeros(14)), 1_000_000))
        assert wait_until(lambda: len(chunks) == 1 and len(trajectories) == 1, 10)

        policy = node.engine.policy
        policy.spec = dataclasses.replace(policy.spec, ctrl_space="ee", ctrl_type="delta")
        node._dispatch(Assembled(MetaObs(state=np.zeros(14)), 2_000_000))
        assert wait_until(lambda: _diagnostics(node)["chunks published"] == "2", 10)
        assert len(trajectories) == 1  # before: 14 joints sent to the ee deltas as positions
        assert (chunks[1].ctrl_space, chunks[1].ctrl_type) == ("ee", "delta")
        assert _diagnostics(node)["trajectories refused (not joint/abs)"] == "1"


def test_the_diagnostics_tick_never_waits_for_a_socket_bridge_restart() -> None:
    # Stopping a dead bridge joins its client threads (seconds with a stuck client). The tick
    # runs on the executor: waiting there would stop every subscription and publication.
    with in_process_node(model_name_or_path="builtin:echo", socket_host="127.0.0.1",
                         socket_port=0) as (node, _):
        bridge = node.bridge_supervisor.bridge
        release = threading.Event()
        stop = bridge.stop
        bridge.stop = lambda: (release.wait(10), stop())  # a client thread that takes its time
        bridge._listener.shutdown(socket.SHUT_RDWR)  # the fault: the accept thread dies
        assert wait_until(lambda: not bridge.is_alive, 5)
        ticked = threading.Event()
        threading.Thread(target=lambda: (node._publish_diagnostics(), ticked.set()),
                         daemon=True).start()
        try:
            # Before: the tick itself stopped and restarted the bridge, so it waited for stop().
            assert ticked.wait(5), "the diagnostics tick waited for the bridge's stop()"
        finally:
            release.set()
        assert wait_until(lambda: node.bridge_supervisor.restarts == 1
                          and node.bridge_supervisor.bridge.is_alive, 10)


def test_diagnostics_count_the_socket_bridges_clients() -> None:
    # Read from the bridge's own count when the tick runs, not pushed by a bridge callback.
    from socket_bridge.client import PolicyClient

    with in_process_node(model_name_or_path="builtin:echo", socket_host="127.0.0.1",
                         socket_port=0) as (node, _):
        host, port = node.bridge_supervisor.bridge.address
        assert _diagnostics(node)["socket bridge clients"] == "0"
        with PolicyClient(host, port) as client:
            client.send_meta_obs(MetaObs(state=np.zeros(14)))
            assert _diagnostics(node)["socket bridge clients"] == "1"
        assert wait_until(lambda: _diagnostics(node)["socket bridge clients"] == "0", 10)



@pytest.mark.parametrize("mode", ["observation", "now", "zero"])
def test_trajectory_stamp_modes_and_a_trajectory_that_already_ended(mode: str) -> None:
    # A joint_trajectory_controller rejects a trajectory whose stamp + last time_from_start is
    # before now. Before: always stamped with the observation, point 0 at 0 s, no warning.
    with in_process_node(model_name_or_path="builtin:echo", socket_bridge_enabled=False,
                         action_joint_names=JOINTS, chunk_size=5, action_period=0.02,
                         trajectory_stamp=mode, trajectory_time_offset=0.1) as (node, _):
        trajectories = _record_publishes(node.trajectory_pub)
        observed = node.get_clock().now().nanoseconds - 2_000_000_000  # 2 s of latency
        node._dispatch(Assembled(MetaObs(state=np.zeros(14)), observed))
        assert wait_until(lambda: len(trajectories) == 1, 10)
        published = node.get_clock().now().nanoseconds
        msg = trajectories[0]
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        offsets = [p.time_from_start.sec + p.time_from_start.nanosec / 1e9 for p in msg.points]
        np.testing.assert_allclose(offsets, [0.1, 0.12, 0.14, 0.16, 0.18])
        if mode == "observation":
            assert stamp == observed
        elif mode == "now":
            assert observed + 1_900_000_000 < stamp <= published
        else:
            assert stamp == 0
        # Only the observation stamp makes this one end (at +0.18 s) before it was published.
        assert _diagnostics(node)["trajectories ending in the past"] == \
            ("1" if mode == "observation" else "0")


def test_an_empty_list_reaches_the_node_from_the_launch_file_s_params_file(tmp_path) -> None:
    # rcl (Kilted) does not let `x: []` in a later params file replace `x: [a]` from an earlier
    # one (this is why the launch file writes one merged file); from one file the node reads
    # the empty list as empty.
    from rclpy.node import Node as RclpyNode

    from policy_server_ros.launch_arguments import node_params_file

    earlier, later = tmp_path / "a.yaml", tmp_path / "b.yaml"
    earlier.write_text("/**:\n  ros__parameters: {names: [a]}\n")
    later.write_text("/**:\n  ros__parameters: {names: []}\n")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain(), args=[
        "--ros-args", "--params-file", str(earlier), "--params-file", str(later)])
    try:
        probe = RclpyNode("probe", context=context)
        assert probe.declare_parameter("names", ["default"]).value == ["a"]
        probe.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)

    merged = node_params_file(str(REPO_ROOT / "config" / "server.yaml"), {
        "model_name_or_path": "builtin:zero", "socket_bridge_enabled": False,
        "camera_topics": [], "required_inputs": ["joints"]}, "/policy_server", tmp_path)
    with in_process_node(ros_args=["--params-file", str(merged)]) as (node, _):
        assert node.params["camera_topics"] == [] and node.params["required_inputs"] == ["joints"]
        assert "camera/0" not in node.topics


def test_a_params_file_overrides_the_qos_of_one_input_topic(tmp_path) -> None:
    # The ROS 2 convention, qos_overrides./<topic>.subscription.<policy>, on top of the per-kind
    # QoS (state_qos sensor_data: best effort).
    from rclpy.qos import ReliabilityPolicy

    from policy_server_ros.inputs import load_params_file

    params = tmp_path / "qos.yaml"
    params.write_text("/**/policy_server:\n  ros__parameters:\n    qos_overrides:\n"
                      "      /joint_states:\n        subscription:\n"
                      "          reliability: reliable\n          depth: 3\n")
    assert load_params_file(params) == {}  # rclpy's, not the node's: the bag tools skip them
    with in_process_node(ros_args=["--params-file", str(params)],
                         model_name_or_path="builtin:echo", socket_bridge_enabled=False,
                         ee_pose_topic="ee_pose") as (node, _):
        (joints,) = node.get_subscriptions_info_by_topic("/joint_states")
        (pose,) = node.get_subscriptions_info_by_topic("/ee_pose")
        assert joints.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # as DDS sees it
        assert pose.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # the kind's
        (subscription,) = [s for s in node.subscriptions if s.topic_name == "/joint_states"]
        assert subscription.qos_profile.depth == 3
