"""Engine results handed back to the node's executor thread.

The engine's worker resolves futures; anything its done-callbacks do delays the other requests
of the same batch (socket clients included). So a callback only queues the result and triggers
an rclpy guard condition; the executor then runs `handle` for each result, where publishing,
statistics and submitting the next observation happen.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from rclpy.node import Node

T = TypeVar("T")


class ExecutorHandoff(Generic[T]):
    """`callback(item)` for Future.add_done_callback; `handle(item, future)` runs later on the
    node's executor, in completion order."""

    def __init__(self, node: Node, handle: Callable[[T, Future], Any]) -> None:
        self._handle = handle
        self._done: deque[tuple[T, Future]] = deque()  # append/popleft are thread-safe
        self._guard = node.create_guard_condition(self._drain)

    def callback(self, item: T) -> Callable[[Future], None]:
        """A done-callback that hands `item` and its future to the executor."""
        def done(future: Future) -> None:
            self._done.append((item, future))
            with contextlib.suppress(Exception):  # the node is shutting down: nobody to tell
                self._guard.trigger()

        return done

    def _drain(self) -> None:
        while self._done:
            item, future = self._done.popleft()
            self._handle(item, future)
