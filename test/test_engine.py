"""The inference engine: one worker, futures, per-request failures, chunk size, shutdown."""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import numpy as np
import pytest
from conftest import wait_until

from benchmark.base import MetaObs
from policy_server_ros.engine import EngineBusy, EngineClosed, InferenceEngine, resolve_chunk_size
from policy_server_ros.observation import ObservationError, as_batch
from policy_server_ros.policies import PolicyLoadError, load_policy
from policy_server_ros.policies.base import ActionSpec, Policy
from policy_server_ros.policies.builtin import EchoPolicy, ZeroPolicy


def _rows(raw_lang: str | list[str]) -> list[str]:
    """raw_lang of a single request is its string; of a stacked batch, one entry per row."""
    return [raw_lang] if isinstance(raw_lang, str) else list(raw_lang)


class _Recording(Policy):
    """Records which threads call predict and whether calls ever overlap."""

    spec = ActionSpec(action_dim=2, chunk_size=4)

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.delay = 0.0  # seconds each call stays inside the model

    def forward(self, batch: MetaObs) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if "fail" in _rows(batch.raw_lang):
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

        def forward(self, batch: MetaObs) -> np.ndarray:
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
    with pytest.raises(FileNotFoundError, match="checkpoint folder ckpt/no_such_run does not"):
        load_policy("ckpt/no_such_run")


# --- batching with a real (small) ACT -------------------------------------------------------

@pytest.fixture(scope="module")
def small_act_path(tmp_path_factory):
    from act_fixtures import small_checkpoint

    return small_checkpoint(tmp_path_factory.mktemp("act") / "c")


@pytest.fixture
def small_act(small_act_path):
    """A fresh policy per test: an engine closes (releases) its policy when it shuts down."""
    from policy_server_ros.policies import LoadOptions

    return load_policy(small_act_path, LoadOptions(device="cpu"))


def test_concurrent_submits_are_batched_and_match_single_calls(small_act,
                                                               small_act_path) -> None:
    from act_fixtures import observation

    from policy_server_ros.policies import LoadOptions

    observations = [observation(seed=i) for i in range(6)]
    with InferenceEngine(small_act, max_batch=1, warmup=False) as engine:
        singles = [engine.submit(o).result(30) for o in observations]
    same_act = load_policy(small_act_path, LoadOptions(device="cpu"))
    with InferenceEngine(same_act, max_batch=8, max_wait_ms=200, warmup=False) as engine:
        futures = [engine.submit(o) for o in observations]
        batched = [f.result(30) for f in futures]
    assert max(out.timings_ms["batch_size"] for out in batched) > 1
    for single, together in zip(singles, batched, strict=True):
        assert single.timings_ms["batch_size"] == 1
        np.testing.assert_allclose(together.actions, single.actions, rtol=1e-4, atol=1e-5)
        assert set(together.timings_ms) == {"queue", "preprocess", "forward", "postprocess",
                                            "batch_size"}


def test_batched_requests_and_mixed_shapes_share_a_pass(small_act) -> None:
    from act_fixtures import observation

    with InferenceEngine(small_act, max_batch=16, max_wait_ms=200, warmup=False) as engine:
        futures = [engine.submit(observation(seed=1, batch=3)), engine.submit(observation(seed=2)),
                   engine.submit(MetaObs(state=np.zeros(14)))]  # no image: fails alone
        out_batched, out_single = futures[0].result(30), futures[1].result(30)
        with pytest.raises(ValueError, match="ACT needs MetaObs.image"):
            futures[2].result(30)
    assert out_batched.batched and out_batched.actions.shape == (3, 10, 14)
    assert not out_single.batched and out_single.actions.shape == (1, 10, 14)
    assert out_single.timings_ms["batch_size"] == 4


def test_warm_up_runs_before_the_first_request(small_act) -> None:
    engine = InferenceEngine(small_act)
    try:
        assert engine.wait_ready(60) and engine.warmup_ms is not None and engine.warmup_ms > 0
    finally:
        engine.close()


def test_a_cancelled_request_is_skipped() -> None:
    release = threading.Event()

    class Slow(Policy):
        spec = ActionSpec(action_dim=1, chunk_size=1)

        def forward(self, batch: MetaObs) -> np.ndarray:
            release.wait(5)
            return np.zeros((len(batch.state), 1, 1), np.float32)

    with InferenceEngine(Slow(), max_batch=1) as engine:
        first = engine.submit(MetaObs(state=np.zeros(1)))
        second = engine.submit(MetaObs(state=np.zeros(1)))
        assert second.cancel()
        release.set()
        assert first.result(5).actions.shape == (1, 1, 1)
        third = engine.submit(MetaObs(state=np.zeros(1)))
        assert third.result(5).actions.shape == (1, 1, 1)


def test_a_bad_request_stacked_with_good_ones_fails_alone() -> None:
    gate = threading.Event()
    calls: list[int] = []

    class Gated(Policy):
        spec = ActionSpec(action_dim=1, chunk_size=2)

        def forward(self, batch: MetaObs) -> np.ndarray:
            gate.wait(5)
            calls.append(len(batch.state))
            if np.any(batch.state < 0):
                raise RuntimeError("negative state")
            return np.repeat(batch.state[:, None, :1], 2, axis=1)

    with InferenceEngine(Gated(), max_batch=8, warmup=False) as engine:
        blocker = engine.submit(MetaObs(state=np.ones(1)))  # holds the worker
        time.sleep(0.2)
        good1 = engine.submit(MetaObs(state=np.full(1, 2.0)))
        bad = engine.submit(MetaObs(state=np.full(1, -1.0)))
        good2 = engine.submit(MetaObs(state=np.full(1, 3.0)))
        gate.set()
        assert blocker.result(5).actions[0, 0, 0] == 1
        assert good1.result(5).actions[0, 0, 0] == 2 and good2.result(5).actions[0, 0, 0] == 3
        with pytest.raises(RuntimeError, match="negative state"):
            bad.result(5)
    assert calls == [1, 3, 1, 1, 1]  # the stacked pass failed, then each request alone


def test_non_finite_observations_are_refused() -> None:
    with pytest.raises(ObservationError, match="MetaObs.state contains NaN or infinite"):
        as_batch(MetaObs(state=np.array([0.0, np.nan])))
    with pytest.raises(ObservationError, match="beyond float32's range"):
        as_batch(MetaObs(state=np.array([1e300])))


# --- every future resolves, close is bounded: the interleavings, forced -----------------------

class _Gated(Policy):
    """forward blocks until `release` is set; `entered` says a batch is inside it."""

    spec = ActionSpec(action_dim=1, chunk_size=1)

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, batch: MetaObs) -> np.ndarray:
        self.entered.set()
        self.release.wait(30)
        return np.zeros((len(batch.state), 1, 1), np.float32)


class _GatedPutQueue(queue.SimpleQueue):
    """A request queue whose put pauses (until `go`) after submit has checked that the engine
    is open and before the request is queued: the window close() used to slip into."""

    def __init__(self) -> None:
        super().__init__()
        self.paused, self.go = threading.Event(), threading.Event()

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            self.paused.set()
            self.go.wait(10)
        super().put(item, block, timeout)


def test_a_submit_racing_close_always_resolves() -> None:
    policy = _Gated()
    policy.example_observation = lambda: MetaObs(state=np.zeros(1))  # warm-up waits in forward
    engine = InferenceEngine(policy)
    assert policy.entered.wait(5)
    gated = _GatedPutQueue()
    engine._queue = gated  # swapped while the worker is still warming up, before its first get
    policy.release.set()
    assert engine.wait_ready(5)
    futures: list = []
    submitter = threading.Thread(target=lambda: futures.append(
        engine.submit(MetaObs(state=np.zeros(1)))))
    submitter.start()
    assert gated.paused.wait(5)
    closer = threading.Thread(target=engine.close, kwargs={"timeout": 5})
    closer.start()
    closer.join(1.0)  # before the fix close finished here: worker gone, the request not queued
    gated.go.set()
    submitter.join(5)
    closer.join(10)
    assert not closer.is_alive() and len(futures) == 1
    with contextlib.suppress(EngineClosed):  # served, or refused: never left waiting
        futures[0].result(timeout=5)


def test_close_is_bounded_with_a_hung_policy_and_a_full_queue() -> None:
    policy = _Gated()
    engine = InferenceEngine(policy, max_batch=1, max_queue=2, warmup=False)
    running = engine.submit(MetaObs(state=np.zeros(1)))
    assert policy.entered.wait(5)
    queued = [engine.submit(MetaObs(state=np.zeros(1))) for _ in range(2)]
    with pytest.raises(EngineBusy):
        engine.submit(MetaObs(state=np.zeros(1)))
    assert queued[0].cancel()  # a socket request that timed out stays queued, cancelled
    start = time.monotonic()
    closer = threading.Thread(target=engine.close, kwargs={"timeout": 0.5})
    closer.start()
    closer.join(5)
    assert not closer.is_alive(), "close() hung on the full queue"
    assert time.monotonic() - start < 3
    with pytest.raises(EngineClosed, match="while this request ran"):
        running.result(0)
    assert queued[0].cancelled()
    with pytest.raises(EngineClosed):
        queued[1].result(0)
    with pytest.raises(EngineClosed):
        engine.submit(MetaObs(state=np.zeros(1)))
    policy.release.set()  # the worker comes back, drops its stale result and stops
    engine._worker.join(5)
    assert not engine._worker.is_alive() and running.exception(0) is not None


def test_close_giving_up_in_the_batching_window_fails_the_request_the_worker_holds() -> None:
    # The worker has taken a request and waits (max_wait_ms) for more to batch with it; a
    # close() that gives up right then used to miss it (no longer queued, not yet listed as
    # running), and the policy that then hung left its future unresolved for good.
    policy = _Gated()
    engine = InferenceEngine(policy, max_batch=2, max_wait_ms=60_000, warmup=False)
    held = engine.submit(MetaObs(state=np.zeros(1)))
    assert wait_until(held.running, 5)  # taken by the worker, which waits for a second one
    try:
        engine.close(timeout=0)
        with pytest.raises(EngineClosed):
            held.result(timeout=5)
    finally:
        policy.release.set()


def test_close_twice_and_from_two_threads_is_harmless() -> None:
    engine = InferenceEngine(_Recording(), warmup=False)
    future = engine.submit(MetaObs(state=np.ones(2)))
    threads = [threading.Thread(target=engine.close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    engine.close()
    assert not any(t.is_alive() for t in threads)
    assert future.result(0).actions.shape[-1] == 2  # queued before close: finished, not failed


# --- run_here: a request run on its caller's thread when the engine is idle --------------------

def test_run_here_runs_on_the_calling_thread_when_the_engine_is_idle() -> None:
    policy = _Recording()
    with InferenceEngine(policy, warmup=False) as engine:
        output = engine.run_here(MetaObs(state=np.full(2, 7.0)))
        assert output is not None and not output.batched
        np.testing.assert_array_equal(output.actions, np.full((1, 4, 2), 7.0, np.float32))
        assert set(output.timings_ms) >= {"queue", "preprocess", "forward", "postprocess"}
        with pytest.raises(ObservationError, match="state"):  # as a Future would fail
            engine.run_here(MetaObs(state=np.ones((2, 2, 2))))
    assert policy.threads == {threading.current_thread().name}
    with pytest.raises(EngineClosed):
        engine.run_here(MetaObs(state=np.ones(2)))


class _Accelerated(_Recording):
    device = type("Device", (), {"type": "cuda"})()  # what a torch policy on a GPU reports


def test_run_here_declines_a_busy_engine_a_batching_window_and_an_accelerator() -> None:
    obs = MetaObs(state=np.ones(1))
    gated = _Gated()
    with InferenceEngine(gated, warmup=False) as engine:
        running = engine.submit(obs)
        assert gated.entered.wait(5)
        assert engine.run_here(obs) is None  # the worker holds the model
        gated.release.set()
        running.result(5)
        assert engine.run_here(obs) is not None
    with InferenceEngine(_Recording(), max_wait_ms=5, warmup=False) as engine:
        assert engine.run_here(MetaObs(state=np.ones(2))) is None
    accelerated = _Accelerated()
    assert accelerated.worker_thread_only and not _Recording().worker_thread_only
    with InferenceEngine(accelerated, warmup=False) as engine:
        assert engine.run_here(MetaObs(state=np.ones(2))) is None
        assert engine.submit(MetaObs(state=np.ones(2))).result(5).actions.shape == (1, 4, 2)
    assert accelerated.threads == {"inference-engine"}


def test_callers_running_here_and_the_worker_never_call_the_model_at_once() -> None:
    policy = _Recording()
    policy.delay = 0.001  # callers overlap: some find the engine busy and submit
    results: dict[float, np.ndarray] = {}

    def client(first: int) -> None:
        for i in range(first, first + 30):
            obs = MetaObs(state=np.full(2, float(i)))
            output = engine.run_here(obs) or engine.submit(obs).result(10)
            results[float(i)] = output.actions

    with InferenceEngine(policy, warmup=False) as engine:
        threads = [threading.Thread(target=client, args=(100 * k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(results) == 180 and policy.max_active == 1
    assert len(policy.threads) > 1  # both ways were taken
    for value, actions in results.items():
        assert np.all(actions == value)


def test_close_waits_for_a_request_running_here_before_closing_the_policy() -> None:
    gated = _Gated()
    closed_while_running: list[bool] = []
    gated.close = lambda: closed_while_running.append(not gated.release.is_set())
    engine = InferenceEngine(gated, warmup=False)
    caller = threading.Thread(target=engine.run_here, args=(MetaObs(state=np.ones(1)),))
    caller.start()
    assert gated.entered.wait(5)
    closer = threading.Thread(target=engine.close, kwargs={"timeout": 10})
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and closed_while_running == []  # waits for the model
    gated.release.set()
    caller.join(5)
    closer.join(5)
    assert closed_while_running == [False]
