"""The TCP server end to end on 127.0.0.1: replies, compatibility, isolation and limits."""

from __future__ import annotations

import logging
import os
import pickle
import resource
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import closed_by_server, raw_roundtrip, running_server, send_raw_frame

from benchmark.base import MetaAction, MetaObs
from policy_server_ros.policies.base import ActionSpec, Policy
from policy_server_ros.policies.builtin import EchoPolicy
from socket_bridge.client import PolicyClient


def _state(seed: float) -> np.ndarray:
    return np.linspace(seed, seed + 1, 14)  # float64, as the guide's client sends


def _expected(state: np.ndarray, steps: int = 100) -> np.ndarray:
    return state.astype(np.float32) + EchoPolicy.STEP * np.arange(steps, dtype=np.float32)[:, None]


def test_unbatched_request_gets_one_meta_action_per_step(echo_server) -> None:
    with PolicyClient(*echo_server.address) as client:
        reply = client.send_meta_obs(MetaObs(state=_state(1.0),
                                             image=np.zeros((1, 3, 48, 64), np.uint8)))
    assert len(reply) == 100 and all(type(a) is MetaAction for a in reply)
    assert {(a.ctrl_space, a.ctrl_type, a.gripper_continuous) for a in reply} == \
        {("joint", "abs", False)}
    assert reply[0].action.dtype == np.float32 and reply[0].action.shape == (14,)
    np.testing.assert_allclose(np.stack([a.action for a in reply]), _expected(_state(1.0)),
                               rtol=1e-6)


def test_batched_request_gets_the_original_servers_form(echo_server) -> None:
    states = np.stack([_state(0.0), _state(5.0), _state(-2.0)])
    with socket.create_connection(echo_server.address) as sock:
        reply = raw_roundtrip(sock, MetaObs(state=states,
                                            image=np.zeros((3, 1, 3, 8, 8), np.uint8)))
    assert isinstance(reply, list) and len(reply) == 100
    assert all(isinstance(step, np.ndarray) and step.dtype == object and step.shape == (3,)
               for step in reply)
    for b in range(3):
        entry = reply[7][b]
        assert set(entry) == {"ctrl_space", "ctrl_type", "action", "gripper_continuous"}
        assert entry["action"].dtype == np.float32
        np.testing.assert_allclose(entry["action"], _expected(states[b])[7], rtol=1e-6)


def test_chunk_size_limits_the_reply() -> None:
    with running_server(chunk_size=10) as server, PolicyClient(*server.address) as client:
        assert len(client.send_meta_obs(MetaObs(state=_state(0)))) == 10


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_guides_hand_written_client(echo_server, protocol: int) -> None:
    # pickle.dumps + struct.pack('>I') + a bare recv loop, plain pickle.loads on the reply.
    with socket.create_connection(echo_server.address) as sock:
        for i in range(3):
            reply = raw_roundtrip(sock, MetaObs(state=_state(i), raw_lang="pick"), protocol)
            assert len(reply) == 100
            np.testing.assert_allclose(reply[0].action, _expected(_state(i))[0], rtol=1e-6)


def test_inference_error_replies_empty_and_keeps_the_connection(echo_server, caplog) -> None:
    caplog.set_level(logging.WARNING)
    with socket.create_connection(echo_server.address) as sock:
        assert raw_roundtrip(sock, MetaObs(state=np.zeros(3))) == []
        assert raw_roundtrip(sock, MetaObs(state=np.array(["not", "numbers"]))) == []
        assert len(raw_roundtrip(sock, MetaObs(state=_state(0)))) == 100
    assert "needs a state of dimension 14" in caplog.text
    assert "must be numeric" in caplog.text


class _Exploding(Policy):
    spec = ActionSpec(action_dim=2, chunk_size=3)

    def forward(self, batch: MetaObs) -> np.ndarray:
        if "explode" in ([batch.raw_lang] if isinstance(batch.raw_lang, str) else batch.raw_lang):
            raise RuntimeError("policy blew up")
        return np.ones((len(batch.state), 3, 2), np.float32)


class _WhereItRuns(Policy):
    """Records the thread of each call; `device` as a torch policy's (a GPU's or the CPU's)."""

    spec = ActionSpec(action_dim=2, chunk_size=3)

    def __init__(self, device_type: str) -> None:
        self.device = type("Device", (), {"type": device_type})()
        self.threads: list[str] = []

    def forward(self, batch: MetaObs) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return np.ones((len(batch.state), 3, 2), np.float32)


@pytest.mark.parametrize(("device_type", "inference_timeout", "thread"),
                         [("cpu", 60.0, "socket-client-"), ("cpu", 0.0, "socket-client-"),
                          ("cuda", 60.0, "inference-engine")])
def test_an_idle_engine_runs_a_cpu_policy_on_the_connections_thread(
        device_type: str, inference_timeout: float, thread: str) -> None:
    policy = _WhereItRuns(device_type)
    with running_server(policy, inference_timeout=inference_timeout) as server, \
            PolicyClient(*server.address) as client:
        for _ in range(3):
            assert len(client.send_meta_obs(MetaObs(state=np.zeros(2)))) == 3
        assert (server._deadlines is None) == (inference_timeout == 0)  # no timeout, no watch
    assert len(policy.threads) == 3 and all(t.startswith(thread) for t in policy.threads)


def test_policy_exception_gives_that_client_empty_reply_only(caplog) -> None:
    with running_server(_Exploding()) as server, \
            PolicyClient(*server.address) as bad, PolicyClient(*server.address) as good:
        assert bad.send_meta_obs(MetaObs(state=np.zeros(2), raw_lang="explode")) == []
        assert len(good.send_meta_obs(MetaObs(state=np.zeros(2)))) == 3
        assert len(bad.send_meta_obs(MetaObs(state=np.zeros(2)))) == 3
    assert "policy blew up" in caplog.text


class _Gadget:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_hostile_pickle_is_refused_logged_and_others_keep_being_served(
        echo_server, tmp_path, caplog) -> None:
    canary = tmp_path / "pwned"
    caplog.set_level(logging.INFO)
    with PolicyClient(*echo_server.address) as bystander, \
            socket.create_connection(echo_server.address) as attacker:
        assert len(bystander.send_meta_obs(MetaObs(state=_state(0)))) == 100
        send_raw_frame(attacker, pickle.dumps(MetaObs(state=_Gadget(canary))))
        assert closed_by_server(attacker)
        assert len(bystander.send_meta_obs(MetaObs(state=_state(1)))) == 100
    assert not canary.exists()
    assert "refused unsafe pickle (refused global posix.system)" in caplog.text
    assert "127.0.0.1" in caplog.text


def test_undecodable_frame_closes_only_that_connection(echo_server, caplog) -> None:
    with socket.create_connection(echo_server.address) as sock, \
            PolicyClient(*echo_server.address) as other:
        send_raw_frame(sock, b"\x80\x04this is not a pickle")
        assert closed_by_server(sock)
        assert len(other.send_meta_obs(MetaObs(state=_state(0)))) == 100
    assert "undecodable frame" in caplog.text


def test_a_non_obs_pickle_closes_the_connection(echo_server, caplog) -> None:
    with socket.create_connection(echo_server.address) as sock:
        send_raw_frame(sock, pickle.dumps({"state": [1, 2]}))
        assert closed_by_server(sock)
    assert "expected a pickled benchmark.base.MetaObs, got dict" in caplog.text


def test_4gib_length_prefix_is_refused_without_allocating(echo_server, caplog) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, this process = server
    with socket.create_connection(echo_server.address) as sock:
        sock.sendall(struct.pack(">I", 0xFFFFFFFF) + b"\x80")
        assert closed_by_server(sock)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 256, f"server memory grew by {grown_mib:.0f} MiB"
    assert "frame of 4294967295 bytes exceeds the limit" in caplog.text
    with PolicyClient(*echo_server.address) as client:
        assert len(client.send_meta_obs(MetaObs(state=_state(0)))) == 100


def test_client_dying_mid_frame_disturbs_no_one(echo_server, caplog) -> None:
    caplog.set_level(logging.INFO)
    with PolicyClient(*echo_server.address) as other:
        dying = socket.create_connection(echo_server.address)
        dying.sendall(struct.pack(">I", 1_000_000) + b"partial")
        assert len(other.send_meta_obs(MetaObs(state=_state(0)))) == 100
        dying.close()
        deadline = time.monotonic() + 5
        while echo_server.client_count > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert echo_server.client_count == 1
        assert len(other.send_meta_obs(MetaObs(state=_state(2)))) == 100
    assert "in the middle of a 1000000-byte frame" in caplog.text


def test_twenty_simultaneous_clients_each_get_their_own_replies(echo_server) -> None:
    errors: list[str] = []
    barrier = threading.Barrier(20)

    def run(index: int) -> None:
        try:
            with PolicyClient(*echo_server.address) as client:
                barrier.wait(timeout=10)
                for round_ in range(5):
                    state = _state(index * 100 + round_)
                    reply = client.send_meta_obs(MetaObs(state=state))
                    got = np.stack([a.action for a in reply])
                    if not np.allclose(got, _expected(state), rtol=1e-6):
                        errors.append(f"client {index} round {round_}: wrong reply")
        except Exception as exc:
            errors.append(f"client {index}: {exc!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    deadline = time.monotonic() + 5  # the server counts a request after its reply is sent
    while echo_server.requests_served < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo_server.requests_served == 100


def test_connections_beyond_the_cap_are_refused(caplog) -> None:
    with running_server(max_connections=2) as server, \
            PolicyClient(*server.address) as a, PolicyClient(*server.address) as b:
        a.send_meta_obs(MetaObs(state=_state(0)))
        b.send_meta_obs(MetaObs(state=_state(0)))
        with socket.create_connection(server.address) as third:
            assert closed_by_server(third)
        assert len(a.send_meta_obs(MetaObs(state=_state(0)))) == 100
    assert "Refused connection" in caplog.text and "--max_connections" in caplog.text


def test_idle_and_slow_clients_are_dropped_after_their_timeouts(caplog) -> None:
    with running_server(idle_timeout=0.3, frame_timeout=0.3) as server, \
            socket.create_connection(server.address) as idle, \
            socket.create_connection(server.address) as slow:
        slow.sendall(struct.pack(">I", 100) + b"x")
        assert closed_by_server(idle) and closed_by_server(slow)
    assert "idle for more than 0.3 s" in caplog.text
    assert "timed out reading a 100-byte frame" in caplog.text


def test_client_reconnects_after_the_server_dropped_an_idle_connection() -> None:
    with running_server(idle_timeout=0.2) as server, PolicyClient(*server.address) as client:
        assert len(client.send_meta_obs(MetaObs(state=_state(0)))) == 100
        time.sleep(0.6)
        assert len(client.send_meta_obs(MetaObs(state=_state(0)))) == 100


def test_guide_log_lines(caplog) -> None:
    caplog.set_level(logging.INFO)
    with running_server() as server, PolicyClient(*server.address) as client:
        for i in range(10):
            client.send_meta_obs(MetaObs(state=_state(i)))
        client.disconnect()
        deadline = time.monotonic() + 5
        while server.client_count and time.monotonic() < deadline:
            time.sleep(0.01)
    text = caplog.text
    assert f"🚀 Policy Server started on 127.0.0.1:{server.address[1]}" in text
    assert "✓ Client #1 connected from ('127.0.0.1'," in text
    assert "  Client #1: 10 requests processed" in text
    assert "  Client #1 connection closed (processed 10 requests)" in text


def test_client_gives_up_after_bounded_retries() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound but not listening: connection refused
        client = PolicyClient("127.0.0.1", port, max_retries=2, backoff=0.05)
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="after 3 attempts"):
            client.connect()
    assert 0.1 <= time.monotonic() - start < 5  # slept 0.05 + 0.1 between attempts


def test_a_request_the_engine_refuses_gets_one_log_line_and_no_traceback(caplog) -> None:
    from policy_server_ros.engine import InferenceEngine
    from socket_bridge.server import PolicySocketServer, ServerConfig

    caplog.set_level(logging.INFO)
    engine = InferenceEngine(EchoPolicy(), warmup=False)
    server = PolicySocketServer(engine, ServerConfig(host="127.0.0.1", port=0))
    server.start()
    try:
        engine.close()  # e.g. shutting down: every request is refused with EngineClosed
        with socket.create_connection(server.address) as sock:
            assert raw_roundtrip(sock, MetaObs(state=np.zeros(14))) == []
            assert raw_roundtrip(sock, MetaObs(state=np.zeros(14))) == []  # still connected
    finally:
        server.stop()
    refused = [r for r in caplog.records if "request not run" in r.getMessage()]
    assert len(refused) == 2 and "inference engine is shut down" in refused[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records), "a traceback was logged"


def test_a_real_policy_leaves_the_receive_buffer_free_for_the_next_frame(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Camera images are views of the connection's receive buffer (safe_loads alias). Once a
    request is answered nothing may keep them (engine, policy, server), or every frame would
    get a fresh 1 MB buffer: with a small real ACT, 1 allocation in 12 frames."""
    from act_fixtures import small_checkpoint

    from policy_server_ros.policies import LoadOptions, load_policy
    from socket_bridge import framing

    buffers: list[int] = []
    read = framing.FrameReader.read

    def counting(self: framing.FrameReader) -> memoryview:
        payload = read(self)
        buffers.append(id(payload.obj))  # an id: holding the buffer would defeat its reuse
        return payload

    monkeypatch.setattr(framing.FrameReader, "read", counting)
    policy = load_policy(small_checkpoint(tmp_path / "act"), LoadOptions(device="cpu"))
    rng = np.random.default_rng(0)
    with running_server(policy) as server, PolicyClient(*server.address) as client:
        for t in range(12):
            obs = MetaObs(state=rng.normal(size=14), timestep=t,
                          image=rng.integers(0, 256, (1, 3, 480, 640), dtype=np.uint8))
            assert len(client.send_meta_obs(obs)) > 0
    assert len(buffers) == 12 and len(set(buffers)) == 1
