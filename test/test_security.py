"""Hostile input and authentication: nothing a peer sends runs, and tokens keep strangers out."""

from __future__ import annotations

import logging
import pickle
import signal
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT, ServerProcess, closed_by_server, running_server
from hostile_pickles import corpus

from benchmark.base import MetaObs
from socket_bridge import auth
from socket_bridge.client import PolicyClient
from socket_bridge.safe_unpickle import UnsafePickleError, safe_loads

CANARY_NAME = "canary_created_by_a_gadget"
CORPUS_NAMES = list(corpus(Path("/nonexistent")))


def test_the_corpus_is_large_and_covers_the_gadget_families() -> None:
    assert len(CORPUS_NAMES) >= 30
    text = " ".join(CORPUS_NAMES)
    for family in ("os.", "posix", "subprocess", "builtins.eval", "builtins.exec", "getattr",
                   "__import__", "importlib", "pickle.loads", "codecs", "functools",
                   "operator", "MetaObs", "numpy object array"):
        assert family in text, family
    for protocol in range(6):
        assert f"(protocol {protocol})" in text


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_each_hostile_pickle_is_refused_without_running(tmp_path: Path, name: str) -> None:
    canary = tmp_path / CANARY_NAME
    data = corpus(canary)[name]
    with pytest.raises(UnsafePickleError):
        safe_loads(data)
    assert not canary.exists(), f"{name} ran"


def test_the_server_refuses_every_hostile_pickle_and_keeps_serving(tmp_path, caplog) -> None:
    canary = tmp_path / CANARY_NAME
    hostile = corpus(canary)
    caplog.set_level(logging.WARNING)
    state = np.linspace(0, 1, 14)
    with running_server() as server, PolicyClient(*server.address) as bystander:
        for i, data in enumerate(hostile.values()):
            with socket.create_connection(server.address) as attacker:
                attacker.sendall(struct.pack(">I", len(data)) + data)
                assert closed_by_server(attacker)
            if i % 5 == 0:  # everyone else keeps being served in between
                reply = bystander.send_meta_obs(MetaObs(state=state + i))
                np.testing.assert_allclose(reply[0].action, state + i, rtol=1e-6)
        assert len(bystander.send_meta_obs(MetaObs(state=state))) == 100
    assert not canary.exists()
    refusals = [r for r in caplog.records if "refused unsafe pickle" in r.getMessage()]
    assert len(refusals) == len(hostile)
    assert all("127.0.0.1" in r.getMessage() for r in refusals)


# --- authentication -------------------------------------------------------------------------

TOKEN = b"correct-horse-battery-staple-0123456789"


def test_authenticated_client_is_served() -> None:
    with running_server(auth_token=TOKEN) as server, \
            PolicyClient(*server.address, auth_token=TOKEN) as client:
        assert len(client.send_meta_obs(MetaObs(state=np.zeros(14)))) == 100
        assert len(client.send_meta_obs(MetaObs(state=np.ones(14)))) == 100


def test_unauthenticated_clients_are_dropped_before_anything_is_unpickled(tmp_path,
                                                                           caplog) -> None:
    canary = tmp_path / CANARY_NAME
    gadget = corpus(canary)["os.system (protocol 2)"]
    with running_server(auth_token=TOKEN) as server:
        for first_frame in (gadget, pickle.dumps(MetaObs(state=np.zeros(14)))):
            with socket.create_connection(server.address) as sock:
                sock.sendall(struct.pack(">I", len(first_frame)) + first_frame)
                assert closed_by_server(sock)
        with socket.create_connection(server.address) as sock:  # oversized "handshake"
            sock.sendall(struct.pack(">I", 50_000_000))
            assert closed_by_server(sock)
    assert not canary.exists()
    assert caplog.text.count("authentication failed") == 2
    assert "refused unsafe pickle" not in caplog.text  # never reached the decoder
    assert "no authentication handshake" in caplog.text


def test_wrong_or_missing_token_is_a_clear_client_error(monkeypatch) -> None:
    monkeypatch.delenv(auth.ENV_VAR, raising=False)
    with running_server(auth_token=TOKEN) as server:
        with pytest.raises(ConnectionError, match="during authentication"):
            PolicyClient(*server.address, auth_token=b"wrong-token-wrong-token-wrong").connect()
        client = PolicyClient(*server.address, max_retries=0)
        client.connect()  # no token: the server hangs up at the first request
        with pytest.raises((ConnectionError, OSError)):
            client.send_meta_obs(MetaObs(state=np.zeros(14)))


def test_client_takes_the_token_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(auth.ENV_VAR, TOKEN.decode())
    with running_server(auth_token=TOKEN) as server, PolicyClient(*server.address) as client:
        assert len(client.send_meta_obs(MetaObs(state=np.zeros(14)))) == 100


def test_token_sources_and_their_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(auth.ENV_VAR, raising=False)
    assert auth.load_token() is None  # off by default
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN.decode() + "\n")
    assert auth.load_token(token_file) == TOKEN
    monkeypatch.setenv(auth.ENV_VAR, "  " + TOKEN.decode() + " ")
    assert auth.load_token() == TOKEN
    token_file.write_text("short")
    with pytest.raises(auth.AuthError, match="at least 16"):
        auth.load_token(token_file)
    with pytest.raises(auth.AuthError, match="cannot read auth token file"):
        auth.load_token(tmp_path / "missing")


def test_binding_beyond_loopback_without_auth_warns(caplog) -> None:
    with running_server(host="0.0.0.0"):
        pass
    assert "without authentication" in caplog.text
    caplog.clear()
    with running_server(), running_server(host="0.0.0.0", auth_token=TOKEN):
        pass
    assert "without authentication" not in caplog.text


def test_cli_reads_the_token_file_and_never_takes_a_token_flag(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN.decode())
    server = ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "-m",
                            "builtin:echo", "--host", "127.0.0.1", "--port", "0",
                            "--auth_token_file", str(token_file)])
    port = server.port()
    with PolicyClient("127.0.0.1", port, auth_token=TOKEN) as client:
        assert len(client.send_meta_obs(MetaObs(state=np.zeros(14)))) == 100
    assert server.stop(signal.SIGINT) == 0
    bad = ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "--auth_token",
                         TOKEN.decode()])
    assert bad.proc.wait(30) == 2
    bad.wait_for("unrecognized arguments: --auth_token")
