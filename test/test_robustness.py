"""Resource limits, faults and fuzzing of the socket bridge: it stays up, stays bounded, and
accounts for every connection."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import resource
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import closed_by_server, raw_roundtrip, running_server, wait_until
from hostile_pickles import amplifiers, corpus

from benchmark.base import MetaAction, MetaObs
from policy_server_ros.observation import as_batch
from policy_server_ros.policies.base import ActionSpec, Policy
from socket_bridge.client import PolicyClient
from socket_bridge.protocol import decode_request
from socket_bridge.safe_unpickle import safe_loads


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- fuzzing ------------------------------------------------------------------------------

def _seeds(canary: Path) -> list[bytes]:
    rng = np.random.default_rng(1)
    obs = MetaObs(state=rng.normal(size=14), image=rng.integers(0, 256, (2, 3, 8, 8), np.uint8),
                  depth=np.ones((2, 8, 8), np.float32), raw_lang="pick", timestep=3)
    reply = [MetaAction(action=np.arange(14, dtype=np.float32)) for _ in range(3)]
    batched = [np.array([{"action": np.zeros(2, np.float32), "ctrl_space": "ee"}], dtype=object)]
    seeds = [pickle.dumps(x, protocol=p) for x in (obs, reply, batched) for p in range(6)]
    # The corpus's amplifiers are up to 68 KB; small ones (4 KB) keep 100,000 mutations fast,
    # and their mutations still repeat constructions, nest containers and reuse the memo.
    gadgets = [data for name, data in corpus(canary).items()
               if not name.startswith("amplification")]
    return seeds + gadgets + list(amplifiers(count=1, text_size=1024).values())


def _mutate(seed: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    data = bytearray(seed)
    kind = rng.integers(5)
    if kind == 0:  # flip a few bytes
        for i in rng.integers(0, len(data), size=rng.integers(1, 5)):
            data[i] = int(rng.integers(256))
    elif kind == 1:  # truncate
        del data[rng.integers(0, len(data)):]
    elif kind == 2:  # insert random bytes (often opcodes)
        at = int(rng.integers(0, len(data) + 1))
        data[at:at] = rng.integers(0, 256, size=rng.integers(1, 9), dtype=np.uint8).tobytes()
    elif kind == 3:  # splice two pickles
        other = seeds[rng.integers(len(seeds))]
        data = data[: rng.integers(0, len(data) + 1)] + other[rng.integers(0, len(other) + 1):]
    else:  # a random opcode-sized integer argument: memo indices, lengths
        at = int(rng.integers(0, max(1, len(data) - 4)))
        data[at:at + 4] = struct.pack("<I", int(rng.integers(0, 2**32)))
    return bytes(data)


def test_decoding_survives_100000_mutated_pickles(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    seeds = _seeds(canary)
    rng = np.random.default_rng(2024)
    rss_before = _rss_mib()
    outcomes: dict[str, int] = {}
    for _ in range(100_000):
        data = _mutate(seeds[rng.integers(len(seeds))], rng, seeds)
        try:
            obs = decode_request(data)
            as_batch(obs)  # what the server does next must fail cleanly too
            outcome = "decoded"
        except Exception as exc:  # any exception is a clean refusal; a crash would end the run
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sum(outcomes.values()) == 100_000
    assert outcomes.get("UnsafePickleError", 0) > 1000 and outcomes.get("decoded", 0) > 100
    assert not canary.exists()
    assert _rss_mib() - rss_before < 200, f"memory grew by {_rss_mib() - rss_before:.0f} MiB"


def test_safe_loads_never_raises_anything_but_exceptions(tmp_path: Path) -> None:
    # Replies and stats files go through safe_loads directly: same property, other entry.
    seeds = _seeds(tmp_path / "canary")
    rng = np.random.default_rng(7)
    for _ in range(20_000):
        with contextlib.suppress(Exception):
            safe_loads(_mutate(seeds[rng.integers(len(seeds))], rng, seeds))
    assert not (tmp_path / "canary").exists()


def test_the_server_accounts_for_every_fuzzed_connection(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    seeds = _seeds(tmp_path / "canary")
    rng = np.random.default_rng(99)
    frames = []
    for i in range(2000):
        kind = i % 4
        if kind == 0:  # a mutated pickle in a proper frame
            body = _mutate(seeds[rng.integers(len(seeds))], rng, seeds)
            frames.append(struct.pack(">I", len(body)) + body)
        elif kind == 1:  # a lying length prefix, then a little data and hang up
            frames.append(struct.pack(">I", int(rng.integers(0, 2**32))) + b"\x80\x04")
        elif kind == 2:  # raw noise
            frames.append(rng.integers(0, 256, size=int(rng.integers(1, 64)),
                                       dtype=np.uint8).tobytes())
        else:  # a valid request, then the reply is never read
            body = pickle.dumps(MetaObs(state=np.zeros(14)))
            frames.append(struct.pack(">I", len(body)) + body)

    def hit(frame: bytes) -> None:
        with socket.create_connection(server.address) as sock:
            sock.sendall(frame)

    with running_server(frame_timeout=0.5) as server:
        fds, threads = _fds(), threading.active_count()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(hit, frames))
        assert wait_until(lambda: server.client_count == 0, 30)
        with PolicyClient(*server.address) as client:
            assert len(client.send_meta_obs(MetaObs(state=np.zeros(14)))) == 100
        assert wait_until(lambda: _fds() == fds and threading.active_count() == threads, 10)
    opened = caplog.text.count("connected from")
    closed = caplog.text.count("connection closed (processed")
    assert opened == closed == 2001


# --- limits -------------------------------------------------------------------------------

def test_a_one_byte_per_second_client_is_dropped_without_delaying_others(caplog) -> None:
    with running_server(frame_timeout=2.0) as server:
        slow = socket.create_connection(server.address)
        stop = threading.Event()

        def trickle() -> None:
            payload = struct.pack(">I", 1000) + b"x" * 1000
            for byte in payload:
                if stop.wait(1.0):
                    return
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        with PolicyClient(*server.address) as client:
            for i in range(20):
                start = time.monotonic()
                assert len(client.send_meta_obs(MetaObs(state=np.full(14, i)))) == 100
                assert time.monotonic() - start < 0.5
                time.sleep(0.05)
        assert closed_by_server(slow, timeout=5)
        stop.set()
        slow.close()
    assert "timed out reading" in caplog.text


def test_half_open_idle_connections_are_dropped(caplog) -> None:
    with running_server(idle_timeout=0.5) as server:
        idle = [socket.create_connection(server.address) for _ in range(5)]
        assert wait_until(lambda: server.client_count == 5, 5)
        assert wait_until(lambda: server.client_count == 0, 5)
        for sock in idle:
            assert closed_by_server(sock, timeout=1)
            sock.close()
    assert caplog.text.count("idle for more than 0.5 s") == 5


def test_descriptors_and_threads_return_to_baseline_after_1000_cycles() -> None:
    with running_server() as server:
        with PolicyClient(*server.address) as warm:
            warm.send_meta_obs(MetaObs(state=np.zeros(14)))
        assert wait_until(lambda: server.client_count == 0)
        fds, threads = _fds(), threading.active_count()
        for i in range(1000):
            with socket.create_connection(server.address) as sock:
                if i % 2:
                    assert len(raw_roundtrip(sock, MetaObs(state=np.zeros(14)))) == 100
        assert wait_until(lambda: server.client_count == 0, 10)
        assert wait_until(lambda: _fds() == fds and threading.active_count() == threads, 10), \
            f"fds {fds} -> {_fds()}, threads {threads} -> {threading.active_count()}"
        assert server.requests_served == 501


# --- faults ---------------------------------------------------------------------------------

class _Faulty(Policy):
    """raw_lang selects a fault: 'hang' sleeps, 'oom' raises CUDA out-of-memory, 'slow' takes
    half a second; anything else answers ones."""

    spec = ActionSpec(action_dim=2, chunk_size=3)

    def __init__(self) -> None:
        self.release = threading.Event()

    def forward(self, batch: MetaObs) -> np.ndarray:
        langs = [batch.raw_lang] if isinstance(batch.raw_lang, str) else list(batch.raw_lang)
        if "hang" in langs:
            self.release.wait(10)
        if "slow" in langs:
            time.sleep(0.5)
        if "oom" in langs:
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.ones((len(langs), 3, 2), np.float32)


class _FaultyOnTheWorker(_Faulty):
    worker_thread_only = True  # as a policy on a GPU: never run on a connection's thread


@pytest.mark.parametrize("policy_class", [_Faulty, _FaultyOnTheWorker],
                         ids=["run on the connection thread", "run on the engine worker"])
def test_a_hanging_policy_gives_a_timed_out_reply_and_a_log_line(policy_class, caplog) -> None:
    caplog.set_level(logging.INFO)
    policy = policy_class()
    with running_server(policy, inference_timeout=0.5) as server, \
            PolicyClient(*server.address) as client:
        start = time.monotonic()
        assert client.send_meta_obs(MetaObs(state=np.zeros(2), raw_lang="hang")) == []
        assert 0.4 < time.monotonic() - start < 3
        policy.release.set()  # the policy comes back: service resumes
        assert wait_until(lambda: len(client.send_meta_obs(MetaObs(state=np.zeros(2)))) == 3, 5)
    assert caplog.text.count("inference took longer than 0.5 s (--inference_timeout); "
                             "replying []") == 1
    if policy_class is _Faulty:  # its own thread ran it; the watchdog answered []
        assert "the request answered [] at the inference timeout finished; its late result " \
               "is dropped" in caplog.text


def test_a_client_vanishing_mid_inference_causes_no_error_storm(caplog) -> None:
    caplog.set_level(logging.INFO)
    with running_server(_Faulty()) as server:
        for _ in range(3):
            sock = socket.create_connection(server.address)
            body = pickle.dumps(MetaObs(state=np.zeros(2), raw_lang="slow"))
            sock.sendall(struct.pack(">I", len(body)) + body)
            sock.close()  # gone while its request is in the engine
        with PolicyClient(*server.address) as client:
            assert len(client.send_meta_obs(MetaObs(state=np.zeros(2)))) == 3
        assert wait_until(lambda: server.client_count == 0, 10)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) <= 3, [r.getMessage() for r in problems]  # at most one line each
    assert not any(r.exc_info for r in problems)


def test_cuda_out_of_memory_gives_empty_reply_and_advice(caplog) -> None:
    with running_server(_Faulty()) as server, PolicyClient(*server.address) as client:
        assert client.send_meta_obs(MetaObs(state=np.zeros(2), raw_lang="oom")) == []
        assert len(client.send_meta_obs(MetaObs(state=np.zeros(2)))) == 3
    assert "out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in caplog.text
    assert "--device cpu" in caplog.text and "--chunk_size" in caplog.text


# --- soak -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_act_path(tmp_path_factory) -> Path:
    from act_fixtures import small_checkpoint

    return small_checkpoint(tmp_path_factory.mktemp("soak") / "act")


def test_soak_every_reply_answers_its_own_request(small_act_path: Path) -> None:
    """8 clients x 100 requests against a small real ACT (scripts/stress_socket.py runs
    8 x 2000): no reply lost, duplicated or answering another request; memory flat."""
    from act_fixtures import observation

    from policy_server_ros.engine import InferenceEngine
    from policy_server_ros.policies import LoadOptions, load_policy
    from socket_bridge.server import PolicySocketServer, ServerConfig

    observations = [observation(seed=i) for i in range(16)]
    reference = load_policy(small_act_path, LoadOptions(device="cpu"))
    expected = [reference.predict(as_batch(o)[0])[0] for o in observations]
    engine = InferenceEngine(load_policy(small_act_path, LoadOptions(device="cpu")),
                             max_batch=8, warmup=False)
    server = PolicySocketServer(engine, ServerConfig(host="127.0.0.1", port=0))
    server.start()
    errors: list[str] = []
    rss_start = _rss_mib()

    def client(index: int) -> int:
        rng = np.random.default_rng(index)
        with PolicyClient(*server.address) as c:
            for n in range(100):
                k = int(rng.integers(len(observations)))
                reply = c.send_meta_obs(observations[k])
                got = np.stack([a.action for a in reply]) if reply else None
                if got is None or not np.allclose(got, expected[k], rtol=1e-4, atol=1e-5):
                    errors.append(f"client {index} request {n}: reply does not match")
        return 100

    try:
        with ThreadPoolExecutor(8) as pool:
            served = sum(pool.map(client, range(8)))
    finally:
        server.stop()
        engine.close()
    assert errors == [] and served == 800 and server.requests_served == 800
    assert _rss_mib() - rss_start < 100


class _Holding(Policy):
    """Holds an observation whose state[0] is 1 until released, then reports whether its image
    changed meanwhile (the server decodes images as views of its receive buffer). It runs on the
    engine's worker, so that the connection reads its next frame while the request is held
    (run on the connection's own thread, the next frame would wait for it)."""

    spec = ActionSpec(action_dim=2, chunk_size=3)
    worker_thread_only = True

    def __init__(self) -> None:
        self.release, self.entered = threading.Event(), threading.Event()
        self.changed: bool | None = None

    def forward(self, batch: MetaObs) -> np.ndarray:
        if batch.state[0, 0] == 1:
            before = batch.image.copy()
            self.entered.set()
            self.release.wait(10)
            self.changed = not np.array_equal(before, batch.image)
        return np.ones((len(batch.image), 3, 2), np.float32)


def test_a_request_still_running_keeps_its_image_when_the_next_frame_arrives() -> None:
    """A request times out while the policy holds its image (a view of the frame buffer); the
    client's next frame must land in another buffer."""
    policy = _Holding()

    def obs(hold: int, fill: int) -> MetaObs:  # one skeleton for all: only array bytes differ
        return MetaObs(state=np.array([float(hold), 0.0]),
                       image=np.full((1, 3, 480, 640), fill, np.uint8))  # 0.9 MB: aliased

    with running_server(policy, inference_timeout=0.3) as server, \
            PolicyClient(*server.address) as client:
        assert len(client.send_meta_obs(obs(0, 0))) == 3  # the skeleton and template learned
        assert client.send_meta_obs(obs(1, 1)) == []  # held past the timeout
        assert policy.entered.wait(5)
        sender = threading.Thread(target=client.send_meta_obs, args=(obs(0, 2),))
        sender.start()  # its frame arrives while the held request still has its image
        time.sleep(0.5)
        policy.release.set()
        sender.join(10)
    assert policy.changed is False
