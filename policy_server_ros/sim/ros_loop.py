"""The closed loop over ROS 2: the simulated robot (SimRobotNode) in this process, the
policy_server node in a child process on sim time, executing chunks with its command stream.

The evaluation's own handles (`sim_eval` node): the policy node's ~/reset between episodes, and
its ~/action_chunk, whose stamps (the observation's sim time) give the inference latency in wall
time: chunk arrival minus the moment that observation was published.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import Trigger

from policy_server_ros.msg import ActionChunk
from policy_server_ros.sim.episodes import CONTROL_PERIOD, JOINT_NAMES
from policy_server_ros.sim.evaluate import (
    EpisodeResult,
    EvalConfig,
    EvalError,
    Pacer,
    Policy,
    VideoRecorder,
)
from policy_server_ros.sim.processes import PolicyProcess, child_env
from policy_server_ros.sim.robot_node import RobotTopics, SimRobotNode

# How the node executes chunks: issue 10's parameter names and values, in one place.
COMMAND_TOPIC = "/policy_server/command"
NODE_COMMAND_PARAMS = {"command_type": "joint_state", "command_topic": COMMAND_TOPIC}


class EvalHelperNode(Node):
    def __init__(self, context: rclpy.Context) -> None:
        super().__init__("sim_eval", context=context)
        self.reset_client = self.create_client(Trigger, "/policy_server/reset")
        self.chunk_stamps: list[tuple[int, int]] = []  # (stamp ns, arrival wall ns)
        self.create_subscription(ActionChunk, "/policy_server/action_chunk", self._on_chunk, 10)

    def _on_chunk(self, msg: ActionChunk) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.chunk_stamps.append((stamp, time.perf_counter_ns()))

    def call_reset(self) -> None:
        if not self.reset_client.wait_for_service(timeout_sec=10):
            raise EvalError("the policy_server node offers no /policy_server/reset")
        future = self.reset_client.call_async(Trigger.Request())
        deadline = time.monotonic() + 10
        while not future.done():
            if time.monotonic() > deadline:
                raise EvalError("/policy_server/reset did not answer in 10 s")
            time.sleep(0.01)


class RosLoop:
    """Owns the ROS context of the simulated robot and the policy node's child process."""

    def __init__(self, config: EvalConfig, policy: Policy, sim: Any) -> None:
        self.config, self.policy = config, policy
        self.context = rclpy.Context()
        # rclpy's signal handlers off: Ctrl+C must raise here, so the episode loop stops and
        # the policy node is shut down (evaluate()'s finally).
        rclpy.init(context=self.context, domain_id=config.domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.robot = SimRobotNode(sim, RobotTopics(command=COMMAND_TOPIC,
                                                   command_type="joint_state"),
                                  context=self.context)
        self.helper = EvalHelperNode(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.robot)
        self.executor.add_node(self.helper)
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._spin.start()
        self.process: PolicyProcess | None = None

    def _spin_forever(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:
                if self.context.ok():  # anything but the context shutting down under us
                    raise

    def node_params(self, replay_folder: Path | None) -> dict[str, Any]:
        c, p = self.config, self.policy
        required = (["cameras"] if p.cameras else []) + ["joints"]
        params: dict[str, Any] = {
            "use_sim_time": True, "device": "cpu", "socket_bridge_enabled": False,
            "model_name_or_path": str(replay_folder or p.path),
            "joint_state_topic": "/joint_states", "joint_names": list(JOINT_NAMES),
            "action_joint_names": list(JOINT_NAMES),
            "camera_topics": ["/camera/top/image_raw"] if p.cameras else [],
            "state_inputs": p.state_inputs or ["joints"],
            # Reliable: a lost observation would shift replay's timestep.
            "camera_qos": "reliable", "state_qos": "reliable",
            "sync_slop": CONTROL_PERIOD / 2, "max_observation_age": 1.0,
            "inference_rate": c.inference_rate, "action_period": CONTROL_PERIOD,
            "execution_mode": c.execution_mode, **NODE_COMMAND_PARAMS,
        }
        if "object" in p.state_inputs:
            params["object_pose_topic"] = "/cube_pose"
            required.append("object")
        params["required_inputs"] = required
        params.update(c.node_params)
        return params

    def start_node(self, replay_folder: Path | None, log_path: Path) -> None:
        self.stop_node()
        self.process = PolicyProcess.node(
            self.node_params(replay_folder), log_path,
            child_env(self.config.domain_id, large_images=self.policy.cameras > 0))
        self.process.wait_ready()
        deadline = time.monotonic() + 20
        while (self.robot.joint_pub.get_subscription_count() == 0
               or self.robot.command_publisher_count() == 0):
            if time.monotonic() > deadline:
                raise EvalError(f"the policy_server node did not connect to the simulated robot "
                                f"in 20 s (log: {log_path})")
            time.sleep(0.05)
        time.sleep(0.3)  # discovery of the remaining topics

    def stop_node(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def close(self) -> None:
        self.stop_node()
        rclpy.shutdown(context=self.context)
        self._spin.join(timeout=2)

    def run_episode(self, seed: int, video: VideoRecorder | None) -> EpisodeResult:
        robot, sim = self.robot, self.robot.sim
        robot.reset(seed)
        self.helper.call_reset()
        self.helper.chunk_stamps.clear()
        published: dict[int, int] = {}  # sim stamp -> wall ns when it was published
        commands_before = robot.commands_received
        rewards: list[float] = []
        pacer = Pacer(self.config.real_time_factor)
        steps_to_success = None
        started = time.perf_counter()
        for step in range(self.config.max_steps):
            image = sim.render() if sim.height > 0 else None
            published[robot.now_ns] = time.perf_counter_ns()
            robot.publish_state(image)
            if video is not None:
                video.add(step, image)
            pacer.wait()
            rewards.append(robot.step())
            if sim.success:
                steps_to_success = step + 1
                break
        wall = time.perf_counter() - started
        latency = [(arrival - published[stamp]) / 1e6
                   for stamp, arrival in list(self.helper.chunk_stamps) if stamp in published]
        return EpisodeResult(seed, sim.success, sim.max_reward, float(sum(rewards)),
                             len(rewards), steps_to_success, wall,
                             len(rewards) * CONTROL_PERIOD,
                             robot.commands_received - commands_before, latency, rewards)
