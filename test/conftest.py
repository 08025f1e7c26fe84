"""Shared fixtures: a real socket server on 127.0.0.1 with a real engine, and raw-socket helpers."""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from policy_server_ros.engine import InferenceEngine
from policy_server_ros.policies.base import Policy
from policy_server_ros.policies.builtin import EchoPolicy
from socket_bridge.server import PolicySocketServer, ServerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

# ROS 2 tests stay on this machine and keep their logs out of ~/.ros. With Fast DDS's default
# 512 KiB shared-memory segment, best-effort (sensor-data QoS) image streams lose most frames;
# tests use the profile the README recommends for cameras (a 16 MiB segment).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(REPO_ROOT / "config" / "fastdds_large_shm.xml"))
os.environ.setdefault("ROS_LOG_DIR",
                      str(Path(tempfile.gettempdir()) / "policy_server_ros_test_logs"))
PYTHON = sys.executable


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@contextlib.contextmanager
def running_server(policy: Policy | None = None, chunk_size: int = 0,
                   **config: object) -> Iterator[PolicySocketServer]:
    """A PolicySocketServer on an ephemeral loopback port, serving `policy` (default echo)."""
    engine = InferenceEngine(policy or EchoPolicy(), chunk_size=chunk_size)
    server = PolicySocketServer(engine, ServerConfig(**{"host": "127.0.0.1", "port": 0,
                                                        **config}))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        engine.close()


@pytest.fixture
def echo_server() -> Iterator[PolicySocketServer]:
    with running_server() as server:
        yield server


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """The guide's hand-written receive loop."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def raw_roundtrip(sock: socket.socket, obj: object, protocol: int = 4) -> object:
    """Send one frame with plain pickle + struct and read the reply, like the guide's client."""
    payload = pickle.dumps(obj, protocol=protocol)
    sock.sendall(struct.pack(">I", len(payload)) + payload)
    (length,) = struct.unpack(">I", recv_exactly(sock, 4))
    return pickle.loads(recv_exactly(sock, length))


def send_raw_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the server hangs up (EOF or reset) within `timeout` without sending a frame."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class ServerProcess:
    """A server CLI run as a child process; its log lines are collected as they arrive."""

    def __init__(self, argv: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(argv, cwd=cwd or REPO_ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> str:
        """Return the first log line (old or new) matching the regex `pattern`."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if re.search(pattern, line):
                    return line
            seen = len(self.lines)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self._queue.empty()):
                raise AssertionError(f"no log line matching {pattern!r}; got:\n"
                                     + "\n".join(self.lines))
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=min(remaining, 0.2))

    def port(self) -> int:
        line = self.wait_for(r"Policy Server started on")
        return int(re.search(r":(\d+)$", line).group(1))

    def stop(self, sig: int, timeout: float = 15.0) -> int:
        """Send `sig`, wait for exit (killing it past `timeout`), return the exit code."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("process did not exit after signal; log:\n"
                                 + "\n".join(self.lines)) from None
