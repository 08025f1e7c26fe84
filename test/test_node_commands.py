"""The node's command stream (execution_mode) over real rclpy: a synthetic robot publishes joint
states and listens to ~/command. builtin:echo answers step i of a chunk with state + 0.01 * i,
and the robot writes its frame number k into the state, so every command says which
observation's chunk and which step of it the node played; the tests check that step against
the time the command was stamped for (latency compensation), the inference scheduling per
mode, the stream's rate and /diagnostics, and that a /clock publisher drives the timer under
use_sim_time."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import rclpy
from conftest import wait_until
from diagnostic_msgs.msg import DiagnosticArray
from policy_server_ros.msg import ActionChunk
from ros_harness import JOINTS, SyntheticRobot, in_process_node, joint_state, next_domain
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from policy_server_ros.action_messages import stamp_msg

S = 1_000_000_000
MS = 1_000_000
PERIOD_NS = 20 * MS
JOINT_ONLY = {"model_name_or_path": "builtin:echo", "socket_bridge_enabled": False,
              "camera_topics": [], "required_inputs": ["joints"], "action_period": 0.02,
              "action_joint_names": JOINTS}


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * S + msg.header.stamp.nanosec


def _diagnostics(messages: list[DiagnosticArray]) -> dict[str, str]:
    return {kv.key: kv.value for kv in messages[-1].status[0].values}


def _run_robot(node: Any, context: Any, seconds: float, rate_hz: float = 50.0
               ) -> tuple[dict[int, int], list[JointState], list[ActionChunk], dict[str, str]]:
    """Publish frames k = 0, 1, ... (state = k) for `seconds`; return the frames' stamps by k,
    the commands, the chunks and the last /diagnostics."""
    robot = SyntheticRobot(context.get_domain_id(), cameras=[])
    try:
        commands = robot.listen("/policy_server/command", JointState)
        chunks = robot.listen("/policy_server/action_chunk", ActionChunk)
        diagnostics = robot.listen("/diagnostics", DiagnosticArray)
        robot.wait_for_subscribers()
        assert wait_until(lambda: robot.node.count_publishers("/policy_server/command") > 0, 10)
        stamps = robot.run(int(seconds * rate_hz), rate_hz, lambda k, stamp: (
            [], joint_state(stamp, np.full(14, float(k)))))
        node._publish_diagnostics()
        assert wait_until(lambda: len(diagnostics) > 0, 10)
        return dict(enumerate(stamps)), list(commands), list(chunks), _diagnostics(diagnostics)
    finally:
        robot.close()


def _check_played_steps(stamps: dict[int, int], commands: list[JointState]) -> list[int]:
    """Every command is step i of the chunk from frame k with i = the steps between frame k's
    stamp and the command's: nothing played late, nothing early. Returns the frames played."""
    frames = []
    for command in commands:
        value = np.asarray(command.position)
        assert list(command.name) == JOINTS
        assert np.ptp(value) < 1e-6  # echo keeps the 14 joints equal
        k = int(np.floor(value[0] + 1e-6))
        step = round((value[0] - k) / 0.01)
        assert step == round((_stamp(command) - stamps[k]) / PERIOD_NS), (k, step)
        frames.append(k)
    return frames


def test_chunk_mode_plays_each_chunk_from_the_step_for_now_and_refills_at_the_threshold() -> None:
    with in_process_node(**JOINT_ONLY, chunk_size=20, execution_mode="chunk",
                         command_type="joint_state", refill_threshold=0.5,
                         hold_timeout=0.0) as (node, context):
        stamps, commands, chunks, diagnostics = _run_robot(node, context, seconds=2.0)
        # Every observation counts in MetaObs.timestep, also those not run (replay needs it).
        assert node.assembler.timestep >= len(stamps) - 3
    assert len(commands) > 40
    frames = _check_played_steps(stamps, commands)
    # A new chunk only when half of the newest one is left: about one every 10 steps (minus the
    # steps inference takes), not one per frame as without execution.
    assert len(chunks) <= len(stamps) / 4
    assert len(set(frames)) >= 3  # the plan was refilled, several times
    intervals = np.diff([_stamp(c) for c in commands]) / MS
    assert 15 <= float(np.median(intervals)) <= 25  # 50 Hz on the node's clock
    assert 0 < int(diagnostics["commands published"]) <= len(commands) + 2
    assert float(diagnostics["command interval p50 ms"]) == pytest.approx(20, abs=5)


def test_ensemble_infers_on_every_observation_and_averages_the_chunks() -> None:
    with in_process_node(**JOINT_ONLY, chunk_size=10, execution_mode="ensemble",
                         command_type="joint_state", ensemble_decay=0.01) as (node, context):
        stamps, commands, chunks, _ = _run_robot(node, context, seconds=1.0)
    assert len(chunks) >= len(stamps) / 2  # every observation (newest wins while busy)
    # Each command averages the chunks covering its time: frames k..k+j, each contributing
    # its state k' + 0.01 * (steps since k'), so the value lies within the newest's and the
    # oldest's, strictly between when several overlap.
    overlapping = 0
    for command in commands[len(commands) // 2:]:
        t = _stamp(command)
        covering = [k for k, s in stamps.items() if 0 <= round((t - s) / PERIOD_NS) < 10
                    and any(_stamp(c) <= t for c in chunks if _stamp(c) == s)]
        values = [k + 0.01 * round((t - stamps[k]) / PERIOD_NS) for k in covering]
        if len(values) > 1:
            overlapping += 1
            assert min(values) - 1e-6 <= command.position[0] <= max(values) + 1e-6
    assert overlapping > 0


def test_sim_time_drives_the_command_timer() -> None:
    with in_process_node(**JOINT_ONLY, chunk_size=10, use_sim_time=True,
                         execution_mode="chunk", command_type="float64_array",
                         hold_timeout=0.0) as (node, context):
        robot = SyntheticRobot(context.get_domain_id(), cameras=[])
        clock_pub = robot.node.create_publisher(Clock, "/clock", 10)
        commands = robot.listen("/policy_server/command", Float64MultiArray)
        chunks = robot.listen("/policy_server/action_chunk", ActionChunk)
        try:
            robot.wait_for_subscribers()

            def set_clock(t_ns: int) -> None:
                assert wait_until(lambda: (clock_pub.publish(Clock(clock=stamp_msg(t_ns))),
                                           node.get_clock().now().nanoseconds == t_ns)[1], 10)

            set_clock(100 * S)
            robot.publish(100 * S, [], joint_state(100 * S, np.full(14, 1.0)))
            assert wait_until(lambda: len(chunks) == 1, 10)
            before = len(commands)
            for step in range(1, 6):  # five control periods of sim time
                set_clock(100 * S + step * PERIOD_NS)
                assert wait_until(lambda n=before + step: len(commands) >= n, 10)
            values = [c.data[0] for c in commands[before:before + 5]]
            np.testing.assert_allclose(values, 1.0 + 0.01 * np.arange(1, 6), atol=1e-6)
            time.sleep(0.3)  # wall time passes, sim time does not: no further commands
            assert len(commands) == before + 5
        finally:
            robot.close()


@pytest.mark.parametrize(("params", "message"), [
    ({"execution_mode": "ensemble", "command_type": "joint_state", "action_joint_names": []},
     "command_type joint_state sends absolute joint positions by name: it needs "
     "action_joint_names"),
    ({"execution_mode": "chunk", "max_command_step": [0.1, 0.2]},
     "max_command_step has 2 values; give 1 or one per action dimension (14)"),
    ({"execution_mode": "chunk", "command_min": [1.0], "command_max": [0.0]},
     "command_min [1.0] is above command_max [0.0]"),
])
def test_command_parameters_that_do_not_fit_the_policy_are_one_line_errors(
        params: dict, message: str) -> None:
    from rclpy.parameter import Parameter

    from policy_server_ros.node import PolicyServerNode, StartupError

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain())
    try:
        with pytest.raises(StartupError) as info:
            PolicyServerNode(context=context, parameter_overrides=[
                Parameter(name, value=value)
                for name, value in {**JOINT_ONLY, **params}.items()])
        assert message in str(info.value) and "\n" not in str(info.value)
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("mode", ["ensemble", "aggregate"])
def test_a_delta_policy_is_refused_for_averaging_modes_and_served_in_chunk_mode(
        tmp_path, mode: str) -> None:
    import json

    from rclpy.parameter import Parameter

    from policy_server_ros.node import PolicyServerNode, StartupError
    from policy_server_ros.policies.mlp.example import write_example

    folder = write_example(tmp_path / "mlp", small=True)
    normalize = json.loads((folder / "normalize.json").read_text())
    normalize["datasets"][0]["ctrl_type"] = "delta"
    (folder / "normalize.json").write_text(json.dumps(normalize))
    (stats,) = folder.glob("*_stats_joint_abs.pkl")
    stats.rename(stats.with_name(stats.name.replace("_abs.pkl", "_delta.pkl")))
    params = {**JOINT_ONLY, "model_name_or_path": str(folder), "device": "cpu",
              "action_joint_names": []}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain())
    try:
        with pytest.raises(StartupError) as info:
            PolicyServerNode(context=context, parameter_overrides=[
                Parameter(k, value=v) for k, v in {**params, "execution_mode": mode}.items()])
        assert str(info.value).startswith(f"execution_mode {mode} averages targets")
        assert "these are delta actions" in str(info.value) and "\n" not in str(info.value)
        node = PolicyServerNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in {**params, "execution_mode": "chunk"}.items()])
        assert node.commands is not None and node.commands.spec.ctrl_type == "delta"
        node.close()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
