"""The node's socket-bridge supervisor: a dead bridge is restarted off the caller's thread."""

from __future__ import annotations

import socket
import threading
import time

from conftest import wait_until

from policy_server_ros.bridge_supervisor import BridgeSupervisor
from policy_server_ros.engine import InferenceEngine
from policy_server_ros.policies.builtin import EchoPolicy
from socket_bridge.server import PolicySocketServer, ServerConfig


def test_check_never_blocks_while_a_dead_bridge_is_stopped_and_restarted() -> None:
    engine = InferenceEngine(EchoPolicy(), warmup=False)
    release = threading.Event()
    started: list[PolicySocketServer] = []

    def start(port: int) -> PolicySocketServer:
        release.wait(10)  # a restart that takes its time (stop() joins client threads too)
        server = PolicySocketServer(engine, ServerConfig(host="127.0.0.1", port=port))
        server.start()
        started.append(server)
        return server

    first = PolicySocketServer(engine, ServerConfig(host="127.0.0.1", port=0))
    first.start()
    gave_up = threading.Event()
    supervisor = BridgeSupervisor(first, start, gave_up.set, max_restarts=1)
    try:
        port = first.address[1]
        first._listener.shutdown(socket.SHUT_RDWR)  # the fault: the accept thread dies
        assert wait_until(lambda: not first.is_alive, 5)
        t0 = time.monotonic()
        for _ in range(20):  # the diagnostics timer keeps ticking meanwhile
            supervisor.check()
        assert time.monotonic() - t0 < 0.5, "check() waited for the restart"
        release.set()
        assert wait_until(lambda: supervisor.restarts == 1 and started, 10)
        assert supervisor.bridge is started[0] and supervisor.bridge.address[1] == port
        started[0]._listener.shutdown(socket.SHUT_RDWR)  # dies again: past max_restarts
        assert wait_until(lambda: not started[0].is_alive, 5)
        supervisor.check()
        assert gave_up.wait(10) and supervisor.bridge is None and supervisor.client_count == 0
    finally:
        supervisor.stop()
        first.stop()
        engine.close()
