"""Answering at the inference timeout for requests that run on their connection's own thread.

When the engine is idle, a connection's thread runs its request itself (InferenceEngine.run_here)
and, unlike a thread waiting on a Future, cannot give up on it when `inference_timeout` passes.
This watchdog does it instead: such a request is armed with its deadline, and if the deadline
passes first, the watchdog takes it and calls `on_expired` (the server answers [] and logs why);
when the request finishes first, the connection disarms it and sends its reply. Taking and
disarming happen under one lock, so every request is answered exactly once.

Arming is a dict insert: nothing is woken. The watchdog sleeps until the earliest armed deadline,
or for one timeout when nothing is armed, so a request that finishes in time costs it nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger("policy_server_ros.socket_server")


class ReplyDeadlines:
    """Deadlines `timeout` seconds after `arm`, watched by one thread until `close`."""

    def __init__(self, timeout: float, on_expired: Callable[[Any], None]) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.timeout = timeout
        self._on_expired = on_expired
        self._armed: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="socket-deadlines", daemon=True)
        self._thread.start()

    def arm(self, key: Hashable, item: Any) -> None:
        """Start the clock for `key` (one request at a time per key); `item` goes to
        on_expired if the deadline passes before `disarm`."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            self._armed[key] = (deadline, item)

    def disarm(self, key: Hashable) -> bool:
        """Stop the clock; False when the deadline passed first (on_expired has the request)."""
        with self._lock:
            return self._armed.pop(key, None) is not None

    def close(self, timeout: float = 5.0) -> None:
        self._closed.set()
        self._thread.join(timeout)

    def _watch(self) -> None:
        wait = self.timeout
        while not self._closed.wait(wait):
            now = time.monotonic()
            with self._lock:
                expired = [key for key, (deadline, _) in self._armed.items() if deadline <= now]
                items = [self._armed.pop(key)[1] for key in expired]
                earliest = min((deadline for deadline, _ in self._armed.values()),
                               default=now + self.timeout)
            for item in items:
                try:
                    self._on_expired(item)
                except Exception:  # one bad answer must not stop the watch for the others
                    log.exception("answering a request past its deadline failed")
            wait = max(earliest - time.monotonic(), 0.0)
