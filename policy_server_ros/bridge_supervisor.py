"""Keeps the node's socket bridge accepting, without blocking the executor.

The bridge's accept thread can die (its listening socket broken underneath it). Stopping the
dead bridge joins its client threads, which can take seconds, so the restart runs on a thread
of its own; `check` only looks and, at most, starts that thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from socket_bridge.server import PolicySocketServer

log = logging.getLogger("policy_server_ros.bridge_supervisor")


class BridgeSupervisor:
    """Restarts a dead bridge on its port with `start(port)`, up to `max_restarts` times; after
    that calls `give_up()` once (the node then exits non-zero)."""

    def __init__(self, bridge: PolicySocketServer | None,
                 start: Callable[[int], PolicySocketServer], give_up: Callable[[], None],
                 max_restarts: int = 3) -> None:
        self.bridge = bridge
        self.restarts = 0
        self._start, self._give_up, self._max = start, give_up, max_restarts
        self._restarting: threading.Thread | None = None

    @property
    def client_count(self) -> int:
        bridge = self.bridge
        return bridge.client_count if bridge is not None else 0

    def check(self) -> None:
        """Non-blocking: if the bridge died, restart it (or give up) on a background thread."""
        bridge = self.bridge
        if bridge is None or bridge.is_alive or (self._restarting is not None
                                                 and self._restarting.is_alive()):
            return
        self._restarting = threading.Thread(target=self._restart, args=(bridge,),
                                            name="bridge-restart", daemon=True)
        self._restarting.start()

    def _restart(self, dead: PolicySocketServer) -> None:
        port = dead.address[1]
        dead.stop()
        if self.restarts >= self._max:
            log.critical("socket bridge died again after %d restarts; shutting the node down",
                         self.restarts)
            self.bridge = None
            self._give_up()
            return
        self.restarts += 1
        log.error("socket bridge stopped accepting connections; restarting it on port %d "
                  "(restart %d of at most %d)", port, self.restarts, self._max)
        try:
            self.bridge = self._start(port)
        except OSError as exc:
            log.error("socket bridge restart failed: %s", exc)

    def stop(self) -> None:
        """Stop the bridge (after any restart in progress)."""
        if self._restarting is not None:
            self._restarting.join(10)
        if self.bridge is not None:
            self.bridge.stop()
