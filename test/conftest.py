"""Shared fixtures: a real socket server on 127.0.0.1 with a real engine, and raw-socket helpers."""

from __future__ import annotations

import contextlib
import pickle
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy_server_ros.engine import InferenceEngine
from policy_server_ros.policies.base import Policy
from policy_server_ros.policies.builtin import EchoPolicy
from socket_bridge.server import PolicySocketServer, ServerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@contextlib.contextmanager
def running_server(policy: Policy | None = None, chunk_size: int = 0,
                   **config: object) -> Iterator[PolicySocketServer]:
    """A PolicySocketServer on an ephemeral loopback port, serving `policy` (default echo)."""
    engine = InferenceEngine(policy or EchoPolicy(), chunk_size=chunk_size)
    server = PolicySocketServer(engine, ServerConfig(host="127.0.0.1", port=0, **config))
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
