"""The node's per-step commands (command_mode), driven in this process with real rclpy: the
command timer runs on the node's clock (sim time here, from a /clock publisher), each command is
the scheduler's action for that time, clamped, and counted in /diagnostics."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from conftest import wait_until
from ros_harness import JOINTS, in_process_node, next_domain
from rosgraph_msgs.msg import Clock

from benchmark.base import MetaObs
from policy_server_ros.action_messages import stamp_msg
from policy_server_ros.observation_assembler import Assembled

S = 1_000_000_000
MS = 1_000_000


def _record(publisher) -> list:
    sent: list = []
    publish = publisher.publish
    publisher.publish = lambda msg: (sent.append(msg), publish(msg))
    return sent


def _diagnostics(node) -> dict[str, str]:
    publisher, sent = node.diagnostics_pub, []
    publish, publisher.publish = publisher.publish, sent.append
    try:
        node._publish_diagnostics()
    finally:
        publisher.publish = publish
    return {kv.key: kv.value for kv in sent[0].status[0].values}


def _stamp(msg) -> int:
    return msg.header.stamp.sec * S + msg.header.stamp.nanosec


def test_commands_follow_the_sim_clock_and_are_clamped() -> None:
    with in_process_node(model_name_or_path="builtin:echo", socket_bridge_enabled=False,
                         chunk_size=10, action_period=0.02, use_sim_time=True,
                         command_mode="chunk", command_type="joint_state",
                         action_joint_names=JOINTS, hold_timeout=0.0,
                         command_upper_limits=[1.025]) as (node, context):
        clock_node = rclpy.create_node("sim_clock", context=context)
        clock_pub = clock_node.create_publisher(Clock, "/clock", 10)
        published: list[int] = []

        def set_clock(t_ns: int) -> None:
            published.append(t_ns)
            assert wait_until(lambda: (clock_pub.publish(Clock(clock=stamp_msg(t_ns))),
                                       node.get_clock().now().nanoseconds == t_ns)[1], 10)

        try:
            set_clock(100 * S)
            commands, chunks = _record(node.command_pub), _record(node.chunk_pub)
            # echo: step i of the chunk is state + 0.01 * i; the observation is at 100 s.
            node._dispatch(Assembled(MetaObs(state=np.ones(14)), 100 * S))
            assert wait_until(lambda: len(chunks) == 1, 10)
            set_clock(100 * S + 40 * MS)  # step 2
            assert wait_until(lambda: any(_stamp(c) == 100 * S + 40 * MS for c in commands), 10)
            set_clock(100 * S + 60 * MS)  # step 3: 1.03, clamped to 1.025
            assert wait_until(lambda: any(_stamp(c) == 100 * S + 60 * MS for c in commands), 10)
            time.sleep(0.3)  # wall time passes, sim time does not: no further commands
            by_stamp = {_stamp(c): c for c in commands}
            assert set(by_stamp) <= set(published)
            step2, step3 = by_stamp[100 * S + 40 * MS], by_stamp[100 * S + 60 * MS]
            assert list(step2.name) == JOINTS
            np.testing.assert_allclose(step2.position, np.full(14, 1.02), rtol=0, atol=1e-6)
            np.testing.assert_allclose(step3.position, np.full(14, 1.025), rtol=0, atol=1e-9)
            diagnostics = _diagnostics(node)
            assert diagnostics["commands clamped"] == "1"
            assert int(diagnostics["commands published"]) == len(commands)
        finally:
            clock_node.destroy_node()


def test_a_command_type_by_joint_name_needs_joint_names() -> None:
    from rclpy.parameter import Parameter

    from policy_server_ros.node import PolicyServerNode, StartupError

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain())
    try:
        with pytest.raises(StartupError, match="command_type joint_state sends absolute joint "
                                               "positions by name: it needs action_joint_names"):
            PolicyServerNode(context=context, parameter_overrides=[
                Parameter("model_name_or_path", value="builtin:echo"),
                Parameter("socket_bridge_enabled", value=False),
                Parameter("command_mode", value="ensemble"),
                Parameter("command_type", value="joint_state")])
        with pytest.raises(StartupError, match="command_max_step has 2 values; give 1 or one"):
            PolicyServerNode(context=context, parameter_overrides=[
                Parameter("model_name_or_path", value="builtin:echo"),
                Parameter("socket_bridge_enabled", value=False),
                Parameter("command_mode", value="chunk"),
                Parameter("command_max_step", value=[0.1, 0.2])])
    finally:
        rclpy.try_shutdown(context=context)
