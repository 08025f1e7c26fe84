"""The `ray` engine backend against a real Ray cluster started here (2 CPUs, loopback only):
replies equal to the local engine's, 16 socket clients each served its own reply, a replica
killed under load (every client answered, none hung, service resumes), and the node publishing
chunks with backend:=ray. One cluster for the whole module; two small applications on it (a
small ACT and builtin:echo, 2 replicas of 0.5 CPU each)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
import yaml
from act_fixtures import IMAGE_HW, observation, small_checkpoint
from conftest import REPO_ROOT, wait_until
from policy_server_ros.msg import ActionChunk
from ray import serve
from ros_harness import JOINTS, SyntheticRobot, joint_state, next_domain, rgb_image, start_node

from benchmark.base import MetaObs
from policy_server_ros.engine import InferenceEngine
from policy_server_ros.engine_backends import RayOptions, make_engine
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.policies.builtin import EchoPolicy
from policy_server_ros.ray_backend import RayEngine
from policy_server_ros.ray_serve import build_app
from socket_bridge.client import PolicyClient
from socket_bridge.reply_encoder import ReplyEncoder
from socket_bridge.server import PolicySocketServer, ServerConfig

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # the cluster below phones nobody
CPU = LoadOptions(device="cpu", warmup_image_hw=IMAGE_HW)
CLIENTS = 16
INFERENCE_TIMEOUT = 10.0  # socket clients and Ray requests: nothing may wait longer


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A 2-CPU Ray cluster on the loopback interface; its GCS address."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="serve", _node_ip_address="127.0.0.1")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        serve.shutdown()
        ray.shutdown()


def _ray(app: str, **kw: object) -> RayOptions:
    return RayOptions(address="auto", app_name=app, replicas=2, replica_cpus=0.5,
                      request_timeout=INFERENCE_TIMEOUT, **kw)


@pytest.fixture(scope="module")
def echo_engine(cluster: str) -> Iterator[RayEngine]:
    # Requests wait up to 20 ms in a replica for a batch, so a killed replica has some in flight.
    engine = make_engine("ray", "builtin:echo", CPU, max_wait_ms=20.0, ray=_ray("echo"))
    yield engine
    engine.close()


def _state(seed: float) -> np.ndarray:
    return np.linspace(seed, seed + 1, 14)


def _expected(state: np.ndarray) -> np.ndarray:
    return state.astype(np.float32) + EchoPolicy.STEP * np.arange(100, dtype=np.float32)[:, None]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    # Ray runs a replica of 0.5 CPU with one intra-op thread (OMP_NUM_THREADS=1). torch's
    # reductions split by thread count, so results are bit-identical at equal thread counts
    # (and differ by float rounding, ~1e-7, otherwise).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_replies_equal_the_local_engines(cluster: str, tmp_path: Path,
                                         one_torch_thread: None) -> None:
    ckpt = small_checkpoint(tmp_path / "act")
    local = InferenceEngine(load_policy(str(ckpt), CPU), chunk_size=10)
    remote = make_engine("ray", str(ckpt), CPU, chunk_size=10, ray=_ray("act"))
    try:
        assert isinstance(remote, RayEngine) and len(remote.replica_pids()) == 2
        assert (remote.chunk_size, remote.policy.spec) == (local.chunk_size, local.policy.spec)
        assert remote.policy.camera_names == local.policy.camera_names
        encoder = ReplyEncoder()
        # Unbatched and batched requests, one at a time so each runs alone on both sides.
        for obs in [observation(seed=s) for s in range(4)] + [observation(seed=9, batch=3)]:
            want = local.submit(obs).result(30)
            got = remote.submit(obs).result(30)
            assert got.batched == want.batched and got.spec == want.spec
            np.testing.assert_array_equal(got.actions, want.actions)
            assert encoder.encode(got) == encoder.encode(want)  # the same reply bytes
        # A bad observation fails with the policy's own error, in one line, as locally.
        bad = MetaObs(state=np.zeros(3))
        with pytest.raises(ValueError) as remote_error:
            remote.submit(bad).result(30)
        with pytest.raises(ValueError) as local_error:
            local.submit(bad).result(30)
        assert str(remote_error.value) == str(local_error.value)
    finally:
        remote.close()
        local.close()
        serve.delete("act")


def _serve(engine: RayEngine) -> PolicySocketServer:
    server = PolicySocketServer(engine, ServerConfig(host="127.0.0.1", port=0,
                                                     inference_timeout=INFERENCE_TIMEOUT))
    server.start()
    return server


def test_sixteen_concurrent_socket_clients_each_get_their_own_reply(
        echo_engine: RayEngine) -> None:
    server = _serve(echo_engine)
    errors: list[str] = []

    def client(i: int) -> None:
        with PolicyClient(*server.address, read_timeout=30) as c:
            for k in range(5):
                state = _state(100.0 * i + k)
                reply = c.send_meta_obs(MetaObs(state=state))
                actions = np.stack([a.action for a in reply]) if reply else None
                if actions is None or not np.array_equal(actions, _expected(state)):
                    errors.append(f"client {i} request {k}: wrong reply")

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        # The server counts a request once its reply is written, which can be just after the
        # client has read it and finished.
        assert wait_until(lambda: server.requests_served == CLIENTS * 5, 5)
    finally:
        server.stop()


def test_a_killed_replica_answers_or_empties_its_requests_and_service_resumes(
        echo_engine: RayEngine, caplog: pytest.LogCaptureFixture) -> None:
    server = _serve(echo_engine)
    pids = echo_engine.replica_pids()
    assert len(pids) == 2
    stop = threading.Event()
    outcomes: list[tuple[str, float]] = []  # ("ok" | "empty" | "wrong", seconds)
    lock = threading.Lock()

    def client(i: int) -> None:
        with PolicyClient(*server.address, read_timeout=INFERENCE_TIMEOUT + 20) as c:
            k = 0
            while not stop.is_set():
                state = _state(10.0 * i + 0.001 * k)
                start = time.monotonic()
                reply = c.send_meta_obs(MetaObs(state=state))
                kind = "empty" if reply == [] else "ok" if np.array_equal(
                    np.stack([a.action for a in reply]), _expected(state)) else "wrong"
                with lock:
                    outcomes.append((kind, time.monotonic() - start))
                k += 1

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(outcomes) >= 50, 30)
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)  # mid-load: the replica's process dies
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(INFERENCE_TIMEOUT + 20)
        assert not any(t.is_alive() for t in threads), "a client hung"
        kinds = [kind for kind, _ in outcomes]
        assert "wrong" not in kinds
        assert max(seconds for _, seconds in outcomes) < INFERENCE_TIMEOUT + 5
        # Serve replaces the dead replica (a new process), and everyone is served again.
        assert wait_until(lambda: len(echo_engine.replica_pids() - {victim}) == 2, 60)
        with PolicyClient(*server.address, read_timeout=30) as c:
            for i in range(CLIENTS):
                state = _state(-7.0 * i)
                reply = c.send_meta_obs(MetaObs(state=state))
                assert np.array_equal(np.stack([a.action for a in reply]), _expected(state))
    finally:
        stop.set()
        server.stop()
    # Requests the dead replica held were answered [] with one line naming the failure.
    failed = [r.getMessage() for r in caplog.records if "replying []" in r.getMessage()]
    assert kinds.count("empty") == len(failed)
    assert all("\n" not in line and "Ray application 'echo'" in line for line in failed)


def test_the_node_publishes_chunks_with_backend_ray(cluster: str, echo_engine: RayEngine
                                                    ) -> None:
    # The node joins the cluster by address and shares the running echo application.
    domain, camera = next_domain(), "/cam0/image_raw"
    node = start_node(domain, {"backend": "ray", "ray_address": cluster, "ray_app": "echo",
                               "model_name_or_path": "builtin:echo", "device": "cpu",
                               "joint_names": JOINTS, "socket_bridge_enabled": False,
                               "camera_topics": [camera]})
    robot = SyntheticRobot(domain, [camera])
    try:
        chunks = robot.listen("/policy_server/action_chunk", ActionChunk)
        node.wait_for("policy_server ready", timeout=90)
        node.wait_for("Attached to the running Ray Serve application 'echo'")
        robot.wait_for_subscribers()
        time.sleep(0.5)
        picture = np.zeros((*IMAGE_HW, 3), np.uint8)
        states = {}

        def frame(i: int, stamp: int):
            states[stamp] = np.linspace(-1, 1, 14) + 0.001 * i
            return [rgb_image(stamp, picture)], joint_state(stamp, states[stamp])

        robot.run(20, 10, frame)
        assert robot.wait_until(lambda: len(chunks) >= 10, 20), "\n".join(node.lines)
        for chunk in chunks:
            stamp = chunk.header.stamp.sec * 1_000_000_000 + chunk.header.stamp.nanosec
            actions = np.asarray(chunk.actions, np.float32).reshape(100, 14)
            np.testing.assert_array_equal(actions, _expected(states[stamp]))
    finally:
        time.sleep(0.5)
        code = node.stop(signal.SIGINT, timeout=30)
        robot.close()
    assert code == 0


def test_the_serve_config_application_is_shared_by_front_ends(cluster: str) -> None:
    # config/ray_serve.yaml's application (as `serve run` builds it, replicas made small for
    # this cluster): a front-end with the same model attaches; one with another model is told.
    config = yaml.safe_load((REPO_ROOT / "config" / "ray_serve.yaml").read_text())
    app = config["applications"][0]
    assert app["import_path"] == "policy_server_ros.ray_serve:build_app"
    serve.run(build_app({**app["args"], "replica_cpus": 0.25}), name="from_config",
              route_prefix=None)
    try:
        engine = make_engine("ray", app["args"]["model_name_or_path"], CPU,
                             ray=_ray("from_config"))
        try:
            assert len(engine.replica_pids()) == app["args"]["replicas"]
            out = engine.submit(MetaObs(state=np.ones(14))).result(30)
            assert out.actions.shape == (1, 100, 14) and not out.actions.any()
        finally:
            engine.close()
        with pytest.raises(ValueError, match="'from_config' already serves builtin:zero, not "
                                             "builtin:echo; choose another ray_app"):
            make_engine("ray", "builtin:echo", CPU, ray=_ray("from_config"))
        with pytest.raises(ValueError, match=r"unknown args \['replica'\]"):
            build_app({"model_name_or_path": "builtin:zero", "replica": 2})
    finally:
        serve.delete("from_config")
