"""The inference engine: one worker, futures, per-request failures, chunk size, shutdown."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from benchmark.base import MetaObs
from policy_server_ros.engine import EngineClosed, InferenceEngine, resolve_chunk_size
from policy_server_ros.observation import ObservationError, as_batch
from policy_server_ros.policies import PolicyLoadError, load_policy
from policy_server_ros.policies.base import ActionSpec, Policy
from policy_server_ros.policies.builtin import EchoPolicy, ZeroPolicy


class _Recording(Policy):
    """Records which threads call predict and whether calls ever overlap."""

    spec = ActionSpec(action_dim=2, chunk_size=4)

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def predict(self, batch: MetaObs) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.threads.add(threading.current_thread().name)
        if batch.raw_lang == "fail":
            self.active -= 1
            raise RuntimeError("bad request")
        out = np.repeat(batch.state[:, None, :2], 4, axis=1)
        with self.lock:
            self.active -= 1
        return out


def test_model_calls_run_on_one_worker_never_concurrently() -> None:
    policy = _Recording()
    with InferenceEngine(policy) as engine:
        futures = [engine.submit(MetaObs(state=np.full(2, float(i)))) for i in range(40)]
        results = [f.result(5) for f in futures]
    assert policy.threads == {"inference-engine"} and policy.max_active == 1
    for i, out in enumerate(results):
        assert out.actions.shape == (1, 4, 2) and not out.batched
        assert np.all(out.actions == i)


def test_a_failing_request_fails_only_its_own_future() -> None:
    with InferenceEngine(_Recording()) as engine:
        bad = engine.submit(MetaObs(state=np.zeros(2), raw_lang="fail"))
        good = engine.submit(MetaObs(state=np.ones(2)))
        with pytest.raises(RuntimeError, match="bad request"):
            bad.result(5)
        assert np.all(good.result(5).actions == 1)


def test_wrong_action_shape_from_a_policy_is_an_error() -> None:
    class Wrong(Policy):
        spec = ActionSpec(action_dim=3, chunk_size=2)

        def predict(self, batch: MetaObs) -> np.ndarray:
            return np.zeros((1, 2, 4), np.float32)

    with InferenceEngine(Wrong()) as engine, pytest.raises(RuntimeError, match=r"\(1, 2, 4\)"):
        engine.submit(MetaObs(state=np.zeros(3))).result(5)


def test_chunk_size_resolution() -> None:
    policy = ZeroPolicy(chunk_size=100)
    assert resolve_chunk_size(policy, 0) == 100 and resolve_chunk_size(policy, -1) == 100
    assert resolve_chunk_size(policy, 30) == 30
    with pytest.raises(ValueError, match="--chunk_size 150 is more than the 100 actions"):
        resolve_chunk_size(policy, 150)


def test_closed_engine_refuses_new_requests() -> None:
    engine = InferenceEngine(EchoPolicy())
    engine.close()
    with pytest.raises(EngineClosed):
        engine.submit(MetaObs(state=np.zeros(14)))


def test_as_batch_adds_batch_axis_and_casts_float64() -> None:
    batch, batched = as_batch(MetaObs(state=np.zeros(14), image=np.zeros((2, 3, 4, 4), np.uint8)))
    assert not batched and batch.state.shape == (1, 14) and batch.state.dtype == np.float32
    assert batch.image.shape == (1, 2, 3, 4, 4) and batch.image.dtype == np.uint8
    batch, batched = as_batch(MetaObs(state=np.zeros((3, 14), np.float32)))
    assert batched and batch.state.shape == (3, 14)


@pytest.mark.parametrize(("obs", "message"), [
    (MetaObs(state=np.zeros((2, 14)), image=np.zeros((1, 3, 4, 4))), "needs 5 dimensions"),
    (MetaObs(state=np.zeros((2, 14)), image=np.zeros((3, 1, 3, 4, 4))), "batch size 3"),
    (MetaObs(state=[1.0, 2.0]), "must be a numpy array or None, got list"),
    (MetaObs(state=np.array(["a"])), "must be numeric"),
    ({"state": np.zeros(3)}, "expected a benchmark.base.MetaObs, got dict"),
])
def test_as_batch_rejects_malformed_observations(obs: object, message: str) -> None:
    with pytest.raises(ObservationError, match=message):
        as_batch(obs)


def test_load_policy_names_the_available_builtins() -> None:
    assert isinstance(load_policy("builtin:echo"), EchoPolicy)
    with pytest.raises(PolicyLoadError, match="available: builtin:zero, builtin:echo"):
        load_policy("builtin:nope")
    with pytest.raises(PolicyLoadError, match="not implemented in this version yet"):
        load_policy("ckpt/some_run")
