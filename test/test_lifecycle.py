"""The managed (lifecycle) node driven through the standard lifecycle services (lifecycle_msgs)
over real rclpy, and the ~/reset and ~/get_model_info services: what each state publishes and
holds."""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import rclpy
from conftest import wait_until
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from policy_server_ros.msg import ActionChunk
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_harness import in_process_node, joint_state, next_domain
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from policy_server_ros.lifecycle_node import ManagedPolicyServerNode

CHUNKS = "/policy_server/action_chunk"
JOINT_PARAMS = {"camera_topics": [], "required_inputs": ["joints"], "device": "cpu",
                "socket_bridge_enabled": False}


def _call(client: Any, request: Any, timeout: float = 30.0) -> Any:
    """Call a service through `client`, whose node an executor spins on another thread (the
    client must exist before the executor starts waiting, or it is not in its wait set)."""
    assert client.wait_for_service(timeout_sec=timeout), f"no service {client.srv_name}"
    done = threading.Event()
    future = client.call_async(request)
    future.add_done_callback(lambda _: done.set())
    assert done.wait(timeout), f"{client.srv_name} did not answer"
    return future.result()


class _Robot:
    """A client node in the same process: lifecycle requests, joint states out, chunks in."""

    def __init__(self, context: Any) -> None:
        self.node = Node("robot", context=context)
        self.chunks: list[ActionChunk] = []
        self.node.create_subscription(ActionChunk, CHUNKS, self.chunks.append, 10)
        self.joints = self.node.create_publisher(JointState, "/joint_states", 10)
        self._change = self.node.create_client(ChangeState, "/policy_server/change_state")
        self._get = self.node.create_client(GetState, "/policy_server/get_state")

    def change(self, transition: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition
        return _call(self._change, request).success

    def state(self) -> str:
        return _call(self._get, GetState.Request()).current_state.label

    def publish_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stamp = self.node.get_clock().now().nanoseconds
            self.joints.publish(joint_state(stamp, np.zeros(14)))
            time.sleep(0.05)


@contextmanager
def _managed(**params: Any) -> Iterator[tuple[ManagedPolicyServerNode, _Robot]]:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain())
    node = ManagedPolicyServerNode(context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in params.items()])
    robot = _Robot(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(robot.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node, robot
    finally:
        executor.shutdown(timeout_sec=5)
        spinner.join(5)
        node.close()
        node.destroy_node()
        robot.node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_the_lifecycle_transitions_and_what_each_state_publishes_and_holds() -> None:
    with _managed(model_name_or_path="/no/such/checkpoint", **JOINT_PARAMS) as (node, robot):
        assert robot.state() == "unconfigured"
        assert robot.node.count_publishers(CHUNKS) == 0
        # A failed configure: reported, and the node stays unconfigured, not dead.
        assert not robot.change(Transition.TRANSITION_CONFIGURE)
        assert robot.state() == "unconfigured" and node.engine is None
        # Parameters change while unconfigured (and only then); the next try works.
        assert node.set_parameters([Parameter("model_name_or_path",
                                              value="builtin:echo")])[0].successful
        assert robot.change(Transition.TRANSITION_CONFIGURE)
        assert robot.state() == "inactive" and node.engine is not None
        assert not node.set_parameters([Parameter("chunk_size", value=5)])[0].successful
        # Inactive: the model is loaded, but nothing is subscribed and nothing published.
        assert robot.node.count_subscribers("/joint_states") == 0
        robot.publish_for(0.5)
        assert robot.chunks == []

        assert robot.change(Transition.TRANSITION_ACTIVATE)
        assert robot.state() == "active"
        assert wait_until(lambda: robot.node.count_subscribers("/joint_states") == 1, 10)
        robot.publish_for(1.0)
        assert wait_until(lambda: len(robot.chunks) > 0, 10)

        assert robot.change(Transition.TRANSITION_DEACTIVATE)
        assert robot.state() == "inactive" and node.engine is not None  # the model stays
        time.sleep(0.3)
        published = len(robot.chunks)
        robot.publish_for(0.5)
        assert len(robot.chunks) == published

        policy = weakref.ref(node.engine.policy)
        assert robot.change(Transition.TRANSITION_CLEANUP)
        gc.collect()
        assert robot.state() == "unconfigured" and node.engine is None
        assert policy() is None  # the model is released
        assert robot.node.count_publishers(CHUNKS) == 0

        # Configured again after cleanup, then shut down from active.
        assert robot.change(Transition.TRANSITION_CONFIGURE)
        assert robot.change(Transition.TRANSITION_ACTIVATE)
        assert robot.change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert robot.state() == "finalized" and node.engine is None


def test_reset_and_model_info_services() -> None:
    with in_process_node(model_name_or_path="builtin:echo", language_topic="instruction",
                         **JOINT_PARAMS) as (node, context):
        client = Node("client", context=context)
        model_info = client.create_client(Trigger, "/policy_server/get_model_info")
        reset = client.create_client(Trigger, "/policy_server/reset")
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(client)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            info = json.loads(_call(model_info, Trigger.Request()).message)
            assert info["family"] == "builtin" and info["action_dim"] == 14
            assert (info["ctrl_space"], info["ctrl_type"]) == ("joint", "abs")
            assert info["chunk_size"] == 100 and info["action_period_s"] == 0.02
            assert info["cameras"] == [] and info["checkpoint"] == "builtin:echo"

            node.assembler.add("joints", 1, np.zeros(14))
            node.assembler.add("language", 1, "pick up the cube")
            node.assembler.timestep = 7
            reply = _call(reset, Trigger.Request())
            assert reply.success and "timestep 0" in reply.message
            assert node.assembler.language is None and node.assembler.timestep == 0
            assert not node.assembler.inputs["joints"].buffer
        finally:
            executor.shutdown(timeout_sec=5)
            spinner.join(5)
            client.destroy_node()
