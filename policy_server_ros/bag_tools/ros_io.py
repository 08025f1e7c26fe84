"""rclpy plumbing shared by replay and record: a node in a context of its own (the caller handles
signals), message classes by type name, and a spinning thread."""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from policy_server_ros.bag_tools.storage import BagError


def message_class(msgtype: str) -> type:
    """`pkg/msg/Name` -> the installed Python message class (BagError if not installed)."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not installed here ({exc})") from exc


@contextlib.contextmanager
def ros_node(name: str) -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    """A node and executor in a fresh context; ROS_DOMAIN_ID and discovery settings come from
    the environment. rclpy's own signal handlers stay off: the command line handles Ctrl+C."""
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


class Spinner:
    """Spins an executor on a daemon thread until stopped."""

    def __init__(self, executor: SingleThreadedExecutor) -> None:
        self.executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ros-spin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the context shut down underneath us
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
