"""The policy_server node end to end: real rclpy over Fast DDS, the node in a child process,
a synthetic robot publishing from this one, each test on its own ROS domain id."""

from __future__ import annotations

import re
import signal
import threading
import time

import numpy as np
import pytest
from act_fixtures import IMAGE_HW, small_checkpoint
from conftest import REPO_ROOT, wait_until
from policy_server_ros.msg import ActionChunk
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import (
    JOINTS,
    SyntheticRobot,
    in_process_node,
    joint_state,
    next_domain,
    rgb_image,
    start_node,
)
from trajectory_msgs.msg import JointTrajectory

from benchmark.base import MetaObs
from policy_server_ros.action_messages import chunk_to_array
from socket_bridge.client import PolicyClient

CHUNK_TOPIC = "/policy_server/action_chunk"
PICTURE = np.random.default_rng(0).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class _Session:
    """A node process plus a synthetic robot on a fresh domain; always cleaned up."""

    def __init__(self, params: dict, cameras: list[str], **robot_kw) -> None:
        self.domain = next_domain()
        self.node = start_node(self.domain, {"device": "cpu", "joint_names": JOINTS,
                                             "socket_bridge_enabled": False,
                                             "camera_topics": cameras, **params})
        self.robot = SyntheticRobot(self.domain, cameras, **robot_kw)
        self.chunks = self.robot.listen(CHUNK_TOPIC, ActionChunk)
        self.node.wait_for("policy_server ready", timeout=90)
        self.robot.wait_for_subscribers()
        time.sleep(0.5)  # let best-effort camera writers settle after matching

    def frames(self, count: int, rate: float = 20.0, encoding: str = "rgb8",
               picture: np.ndarray = PICTURE, age_s: float = 0.0) -> list[int]:
        def frame(i: int, stamp: int):
            stamp -= int(age_s * 1e9)
            images = [rgb_image(stamp, picture, encoding) for _ in self.robot.camera_pubs]
            return images, joint_state(stamp, np.linspace(-1, 1, 14) + 0.001 * i)
        return self.robot.run(count, rate, frame)

    def close(self) -> int:
        time.sleep(0.5)
        code = self.node.stop(signal.SIGINT)
        self.robot.close()
        return code


@pytest.fixture
def session_factory():
    sessions: list[_Session] = []

    def make(*args, **kw) -> _Session:
        sessions.append(_Session(*args, **kw))
        return sessions[-1]

    yield make
    for session in sessions:
        if session.node.proc.poll() is None:
            session.close()


@pytest.mark.parametrize("cameras", [1, 2])
def test_chunks_arrive_stamped_with_the_observation_time(session_factory, tmp_path,
                                                         cameras: int) -> None:
    ckpt = small_checkpoint(tmp_path / "act", cameras)
    topics = [f"/cam{i}/image_raw" for i in range(cameras)]
    s = session_factory({"model_name_or_path": str(ckpt)}, topics)
    stamps = s.frames(20, rate=10)
    assert s.robot.wait_until(lambda: len(s.chunks) >= 15), \
        f"{len(s.chunks)} chunks; node log:\n" + "\n".join(s.node.lines)
    for chunk in s.chunks:
        assert _stamp(chunk) in stamps  # stamped with an observation's time, not publication's
        assert (chunk.num_steps, chunk.action_dim, len(chunk.actions)) == (10, 14, 140)
        assert (chunk.ctrl_space, chunk.ctrl_type, chunk.header.frame_id) == \
            ("joint", "abs", "base_link")
        assert chunk.period.nanosec == 20_000_000 and np.isfinite(chunk_to_array(chunk)).all()
    assert len({_stamp(c) for c in s.chunks}) == len(s.chunks)  # one chunk per observation
    assert s.close() == 0
    inputs = ", ".join(f"camera/{i}=/cam{i}/image_raw" for i in range(cameras))
    s.node.wait_for(rf"inputs: {inputs}")



def test_bgr8_and_rgb8_of_the_same_picture_give_the_same_actions(session_factory,
                                                                  tmp_path) -> None:
    ckpt = small_checkpoint(tmp_path / "act")
    s = session_factory({"model_name_or_path": str(ckpt)}, ["/cam/image_raw"])

    def actions_for(encoding: str, picture: np.ndarray) -> np.ndarray:
        s.chunks.clear()
        s.robot.run(6, 10, lambda i, stamp: ([rgb_image(stamp, picture, encoding)],
                                             joint_state(stamp, np.linspace(-1, 1, 14))))
        assert s.robot.wait_until(lambda: len(s.chunks) >= 4)
        return chunk_to_array(s.chunks[-1]).copy()

    rgb = actions_for("rgb8", PICTURE)
    bgr = actions_for("bgr8", PICTURE)
    np.testing.assert_allclose(bgr, rgb, rtol=1e-5, atol=1e-6)
    # The comparison can fail: the same bytes declared with the other channel order differ.
    swapped = actions_for("bgr8", PICTURE[..., ::-1].copy())
    assert not np.allclose(swapped, rgb, rtol=1e-5, atol=1e-6)
    assert s.close() == 0


def test_missing_camera_publishes_nothing_and_warns_throttled(session_factory) -> None:
    s = session_factory({"model_name_or_path": "builtin:echo"}, ["/cam/image_raw"])
    for i in range(40):  # joints only, for 4 s
        stamp = s.robot.now_ns()
        s.robot.joint_pub.publish(joint_state(stamp, np.zeros(14) + i))
        time.sleep(0.1)
    assert s.chunks == []
    assert s.close() == 0
    warnings = [line for line in s.node.lines
                if "waiting for camera/0 on /cam/image_raw" in line]  # joints too, if early
    assert 1 <= len(warnings) <= 2, "\n".join(s.node.lines)  # throttled to one per 5 s


def test_stale_input_publishes_nothing_and_warns(session_factory) -> None:
    s = session_factory({"model_name_or_path": "builtin:echo", "max_observation_age": 0.5},
                        ["/cam/image_raw"])
    s.frames(30, rate=20, age_s=2.0)
    time.sleep(1.5)
    assert s.chunks == []
    assert s.close() == 0
    stale = [line for line in s.node.lines
             if re.search(r"camera/0 on /cam/image_raw is 2\.\d\d s old", line)
             and "(max_observation_age 0.5 s); not running inference" in line]
    assert stale, "\n".join(s.node.lines)


def test_socket_client_is_served_while_ros_inputs_flow(session_factory) -> None:
    s = session_factory({"model_name_or_path": "builtin:echo", "socket_bridge_enabled": True,
                         "socket_host": "127.0.0.1", "socket_port": 0}, ["/cam/image_raw"])
    port = int(re.search(r"socket bridge on 127\.0\.0\.1:(\d+)",
                         s.node.wait_for("socket bridge on")).group(1))
    publisher = threading.Thread(target=s.frames, args=(60, 30))
    publisher.start()
    state = np.linspace(0, 1, 14)
    replies = []
    with PolicyClient("127.0.0.1", port) as client:
        time.sleep(0.3)
        window = s.robot.now_ns()
        for k in range(15):
            replies.append(client.send_meta_obs(MetaObs(state=state + k)))
            time.sleep(0.05)
        window = (window, s.robot.now_ns())
    publisher.join()
    s.robot.wait_until(lambda: len(s.chunks) >= 50, timeout=3)
    for k, reply in enumerate(replies):
        np.testing.assert_allclose(reply[0].action, state + k, rtol=1e-6)
    during = [c for c in s.chunks if window[0] <= _stamp(c) <= window[1]]
    assert len(s.chunks) >= 20 and len(during) >= 5, \
        f"{len(s.chunks)} chunks, {len(during)} while the socket client was served"
    assert s.close() == 0


def test_joint_trajectory_content_and_timing(session_factory) -> None:
    s = session_factory({"model_name_or_path": "builtin:echo", "action_joint_names": JOINTS,
                         "action_period": 0.05, "chunk_size": 20}, ["/cam/image_raw"])
    trajectories = s.robot.listen("/policy_server/joint_trajectory", JointTrajectory)
    time.sleep(0.5)
    stamps = s.frames(10, rate=10)
    assert s.robot.wait_until(lambda: len(trajectories) >= 8)
    trajectory = trajectories[-1]
    assert list(trajectory.joint_names) == JOINTS and len(trajectory.points) == 20
    assert _stamp(trajectory) in stamps
    i = stamps.index(_stamp(trajectory))
    state = np.linspace(-1, 1, 14) + 0.001 * i
    for step, point in enumerate(trajectory.points):
        np.testing.assert_allclose(point.positions, state + 0.01 * step, rtol=1e-5, atol=1e-6)
        assert point.time_from_start.sec * 1e9 + point.time_from_start.nanosec == \
            pytest.approx(step * 0.05e9)
    chunk = next(c for c in s.chunks if _stamp(c) == _stamp(trajectory))
    assert list(chunk.dim_names) == JOINTS
    assert s.close() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_shut_the_node_down_cleanly(sig: int) -> None:
    node = start_node(next_domain(), {"model_name_or_path": "builtin:zero",
                                      "socket_host": "127.0.0.1", "socket_port": 0})
    node.wait_for("policy_server ready", timeout=90)
    time.sleep(1.5)  # Fast DDS can deadlock when a node is stopped within ~0.5 s of starting
    assert node.stop(sig, timeout=20) == 0
    node.wait_for("shutting down: socket bridge, engine, node")
    node.wait_for(r"Policy Server stopped")


def test_a_second_interrupt_during_shutdown_is_not_a_traceback() -> None:
    # In a terminal, Ctrl+C reaches the node and ros2 launch, which then sends its own SIGINT:
    # before, one arriving during shutdown raised KeyboardInterrupt out of destroy_node (a
    # traceback and exit -2, 2 runs in 8 under real launch).
    node = start_node(next_domain(), {"model_name_or_path": "builtin:zero",
                                      "socket_host": "127.0.0.1", "socket_port": 0})
    node.wait_for("policy_server ready", timeout=90)
    time.sleep(1.5)  # Fast DDS can deadlock when a node is stopped within ~0.5 s of starting
    node.proc.send_signal(signal.SIGINT)
    for _ in range(40):  # more interrupts all through the shutdown
        time.sleep(0.01)
        if node.proc.poll() is not None:
            break
        node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(20) == 0, "\n".join(node.lines)
    assert not any("Traceback" in line for line in node.lines), "\n".join(node.lines)


def test_bad_parameters_are_a_clear_start_up_error() -> None:
    node = start_node(next_domain(), {"model_name_or_path": "builtin:zero",
                                      "required_inputs": ["cameras", "lidar"]})
    assert node.proc.wait(60) == 2
    node.wait_for(r"inputs: required inputs \['lidar'\] are not among")
    node = start_node(next_domain(), {"model_name_or_path": "builtin:zero",
                                      "action_joint_names": ["a", "b"]})
    assert node.proc.wait(60) == 2
    node.wait_for(r"action_joint_names has 2 names but the policy produces 14-D actions")


@pytest.mark.parametrize("namespace", ["", "/robot1"])
def test_the_parameter_yaml_loads_into_the_node(tmp_path, namespace: str) -> None:
    # Before: config/server.yaml keyed `policy_server:`, which rcl applies to /policy_server
    # only; under /robot1 every value silently fell back to its default.
    import yaml
    from conftest import REPO_ROOT

    data = yaml.safe_load((REPO_ROOT / "config" / "server.yaml").read_text())
    (params,) = (section["ros__parameters"] for section in data.values())
    params.update(model_name_or_path="builtin:echo", camera_topics=["left/image", "/right/image"],
                  ee_pose_topic="ee_pose", state_inputs=["joints", "ee"],
                  required_inputs=["cameras", "joints", "ee"],
                  socket_bridge_enabled=False, action_topic="/chunks")
    params_file = tmp_path / "robot.yaml"
    params_file.write_text(yaml.safe_dump(data))
    node = start_node(next_domain(), {}, params_file=params_file, namespace=namespace)
    # Relative names (the defaults' joint_states too) resolve in the namespace.
    node.wait_for(rf"policy_server ready: builtin:echo -> /chunks .*inputs: "
                  rf"camera/0={namespace}/left/image, camera/1=/right/image, "
                  rf"joints={namespace}/joint_states, ee={namespace}/ee_pose; socket bridge off",
                  timeout=90)
    time.sleep(1.0)
    assert node.stop(signal.SIGINT) == 0


def test_camera_topics_must_match_the_policys_cameras(tmp_path) -> None:
    ckpt = small_checkpoint(tmp_path / "act", cameras=2)
    node = start_node(next_domain(), {"model_name_or_path": str(ckpt), "device": "cpu",
                                      "camera_topics": ["/only/one"]})
    assert node.proc.wait(60) == 2
    node.wait_for(r"camera_topics has 1 topics but the policy was trained with 2 camera\(s\) "
                  r"\['primary', 'wrist'\]")


def test_non_finite_actions_are_never_published_and_are_counted(session_factory,
                                                                 tmp_path) -> None:
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from safetensors.torch import load_file, save_file

    ckpt = small_checkpoint(tmp_path / "act")
    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors["model.action_head.bias"][3] = torch.nan  # one action dimension becomes NaN
    save_file(tensors, str(ckpt / "model.safetensors"))
    s = session_factory({"model_name_or_path": str(ckpt)}, ["/cam/image_raw"])
    diagnostics = s.robot.listen("/diagnostics", DiagnosticArray)
    s.frames(10, rate=10)
    assert s.robot.wait_until(lambda: any(
        kv.key == "non-finite chunks not published" and int(kv.value) >= 5
        for d in diagnostics for kv in d.status[0].values), timeout=5)
    assert s.chunks == []
    assert s.close() == 0
    assert any("policy produced non-finite actions; not published" in line
               for line in s.node.lines)
    status = diagnostics[-1].status[0]
    assert status.name == "policy_server: inference"
    keys = {kv.key for kv in status.values}
    assert {"model time p50 ms", "camera/0 rate Hz", "joints age s",
            "observations dropped (inference busy)", "socket bridge clients"} <= keys


def test_a_stalled_camera_stops_action_output(session_factory) -> None:
    s = session_factory({"model_name_or_path": "builtin:echo", "max_observation_age": 0.5},
                        ["/cam/image_raw"])
    stamps = s.frames(20, rate=20)
    assert s.robot.wait_until(lambda: len(s.chunks) >= 15)
    stall = stamps[-1]
    for i in range(30):  # the camera stalls; joint states keep coming for 1.5 s
        s.robot.joint_pub.publish(joint_state(s.robot.now_ns(), np.zeros(14) + i))
        time.sleep(0.05)
    count = len(s.chunks)
    time.sleep(1.0)
    assert len(s.chunks) == count
    assert max(_stamp(c) for c in s.chunks) <= stall
    assert s.close() == 0


def test_the_node_keeps_running_through_policy_exceptions(session_factory) -> None:
    s = session_factory({"model_name_or_path": "builtin:echo"}, ["/cam/image_raw"])
    bad = np.full(14, np.nan)  # refused by the engine: the inference of these fails
    s.robot.run(10, 20, lambda i, stamp: ([rgb_image(stamp, PICTURE)], joint_state(stamp, bad)))
    time.sleep(0.5)
    assert s.chunks == []
    s.frames(10, rate=20)
    assert s.robot.wait_until(lambda: len(s.chunks) >= 8)
    assert s.close() == 0
    assert any("inference failed: MetaObs.state contains NaN" in line for line in s.node.lines)


def test_a_dead_socket_bridge_is_detected_and_restarted(caplog) -> None:
    """Restart is the documented choice; after MAX_BRIDGE_RESTARTS the node exits 1."""
    import socket as socket_module

    with in_process_node(model_name_or_path="builtin:echo", socket_host="127.0.0.1",
                          socket_port=0) as (node, _):
        supervisor = node.bridge_supervisor
        host, port = supervisor.bridge.address
        with PolicyClient(host, port) as client:
            assert len(client.send_meta_obs(MetaObs(state=np.zeros(14)))) == 100
        # Fault: the listening socket fails underneath the accept thread.
        supervisor.bridge._listener.shutdown(socket_module.SHUT_RDWR)
        assert wait_until(lambda: supervisor.restarts == 1 and supervisor.bridge.is_alive, 10)
        assert supervisor.bridge.address[1] == port  # clients find it where it was
        with PolicyClient(host, port) as client:
            assert len(client.send_meta_obs(MetaObs(state=np.ones(14)))) == 100
    assert "listening socket failed" in caplog.text
    assert "socket bridge stopped accepting connections; restarting it on port" in caplog.text


def test_a_required_language_instruction_gates_inference(session_factory) -> None:
    from std_msgs.msg import String

    s = session_factory({"model_name_or_path": "builtin:echo", "language_topic": "/instruction",
                         "required_inputs": ["cameras", "joints", "language"]},
                        ["/cam/image_raw"])
    instruction = s.robot.node.create_publisher(String, "/instruction", 10)
    s.frames(10, rate=20)
    time.sleep(1.5)
    assert s.chunks == []  # no instruction yet
    assert s.robot.wait_until(lambda: instruction.get_subscription_count() > 0)
    instruction.publish(String(data="pick up the cube"))
    time.sleep(0.3)
    s.frames(10, rate=20)
    assert s.robot.wait_until(lambda: len(s.chunks) >= 8)
    assert s.close() == 0
    # One line names every missing input (camera and joints too, if it came before the frames).
    assert any("waiting for" in line and "language on /instruction" in line
               for line in s.node.lines), s.node.lines


# --- conventions, hand-off, logging, start-up interrupts ---------------------------------------

def test_a_policy_that_is_not_joint_abs_cannot_drive_a_joint_trajectory() -> None:
    # builtin:zero holds still as zero end-effector deltas; as a JointTrajectory it would have
    # sent every joint to 0 rad.
    node = start_node(next_domain(), {"model_name_or_path": "builtin:zero",
                                      "socket_bridge_enabled": False,
                                      "action_joint_names": [f"j{i}" for i in range(14)]})
    assert node.proc.wait(60) == 2
    line = node.wait_for(r"action_joint_names is set")
    assert "the policy's actions are ee/delta" in line
    assert not any("Traceback" in text for text in node.lines)


def test_results_are_published_on_the_executor_not_the_inference_thread() -> None:
    from policy_server_ros.observation_assembler import Assembled

    with in_process_node(model_name_or_path="builtin:echo", socket_bridge_enabled=False,
                          action_joint_names=JOINTS) as (node, _):
        threads: list[str] = []
        for publisher in (node.chunk_pub, node.trajectory_pub):
            publish = publisher.publish
            publisher.publish = lambda msg, publish=publish: (
                threads.append(threading.current_thread().name), publish(msg))
        for i in range(5):
            node._dispatch(Assembled(MetaObs(state=np.full(14, float(i))), 1_000_000 * (i + 1)))
            assert wait_until(lambda i=i: len(threads) >= 2 * (i + 1), 10)
    # Before: both published from the engine's worker, delaying the rest of its batch.
    assert set(threads) == {"executor"}, threads


def test_the_engines_and_bridges_python_logs_reach_rosout() -> None:
    import rclpy
    from rcl_interfaces.msg import Log

    with in_process_node(model_name_or_path="builtin:echo", socket_host="127.0.0.1",
                          socket_port=0) as (node, context):
        listener = rclpy.create_node("rosout_listener", context=context)
        texts: list[str] = []
        listener.create_subscription(Log, "/rosout", lambda m: texts.append(m.msg),
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                                durability=DurabilityPolicy.TRANSIENT_LOCAL))
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(listener)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            time.sleep(1.0)  # discovery
            host, port = node.bridge_supervisor.bridge.address
            with PolicyClient(host, port) as client:
                client.send_meta_obs(MetaObs(state=np.zeros(14)))
            # socket_bridge.server logs with Python logging; before, only to stderr.
            assert wait_until(lambda: any("Client #1 connected" in t for t in texts), 10), texts
        finally:
            executor.shutdown(timeout_sec=5)
            spinner.join(5)
            listener.destroy_node()


def test_ctrl_c_while_the_model_loads_exits_cleanly(tmp_path) -> None:
    from conftest import PYTHON, ServerProcess
    from ros_harness import ros_env

    # The default model in an empty cache: the node writes the 336 MB example first (seconds).
    env = {**ros_env(next_domain()), "POLICY_SERVER_ROS_CACHE": str(tmp_path / "cache")}
    node = ServerProcess([PYTHON, "-m", "policy_server_ros", "--ros-args", "-p",
                          "socket_bridge_enabled:=false", "-p", "device:=cpu"],
                         cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO_ROOT)})
    node.wait_for(r"Creating the example checkpoint .* at " + re.escape(str(tmp_path / "cache")),
                  timeout=60)
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(60) == 0, "\n".join(node.lines)
    assert not any("Traceback" in line for line in node.lines), "\n".join(node.lines)
    assert not (tmp_path / "ckpt").exists()  # never written into the working directory
