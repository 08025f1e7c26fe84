"""The inference engine: the one place that runs the policy.

One worker thread owns the policy (and, for torch policies on an accelerator, the device).
Socket handlers and ROS callbacks call `submit(obs)` and get a Future. Requests that are waiting
when the worker becomes free are batched into one forward pass (up to `max_batch` observations,
optionally waiting `max_wait_ms` for more). A failing request fails only its own future, and
every future resolves (result, error or cancellation) whatever the interleaving of `submit`,
the worker and `close`.

A caller that finds the engine idle may instead run its request on its own thread (`run_here`):
the hand-off to the worker and back costs two thread switches, a large share of a request to a
fast policy. Model calls are never concurrent either way: whoever runs the model holds `_model`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

from policy_server_ros.observation import ARRAY_FIELDS, as_batch, batch_size_of
from policy_server_ros.policies.base import Policy, PolicyOutput
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.engine")


class EngineBusy(RuntimeError):
    """The request queue is full; the caller should answer this request with an error."""


class EngineClosed(RuntimeError):
    """The engine has shut down and takes no more requests."""


class BackendUnavailable(RuntimeError):
    """A remote backend could not run this request (its replica died, the cluster is gone, no
    reply in time); the message says which, in one line. The next request may succeed."""


@dataclass
class _Request:
    obs: MetaObs | None  # None once answered
    future: Future
    received: float
    batch: MetaObs | None = None  # validated, batched form
    batched: bool = False

    @property
    def size(self) -> int:
        return 1 if self.batch is None else batch_size_of(self.batch)


def _set_result(future: Future, result: object) -> None:
    # close() may have failed a request the hung worker was still running; its late result
    # then has nobody to go to.
    with contextlib.suppress(InvalidStateError):
        future.set_result(result)


def _set_exception(future: Future, exc: BaseException) -> None:
    """Fail `future` from any state: pending (marked running first, unless cancelled), running,
    or already resolved (left as it is)."""
    with contextlib.suppress(InvalidStateError, RuntimeError):  # RuntimeError: already done
        if not future.running() and not future.set_running_or_notify_cancel():
            return  # cancelled by its caller
        future.set_exception(exc)


def resolve_chunk_size(policy: Policy, chunk_size: int) -> int:
    """Actions per reply: `chunk_size` when > 0, else the policy's default (config.json's
    chunk_size for checkpoints), else its whole chunk. More than the policy produces is a
    start-up error, not a silent cap."""
    produced = policy.spec.chunk_size
    if chunk_size <= 0:
        return policy.default_reply_steps or produced
    if chunk_size > produced:
        raise ValueError(f"--chunk_size {chunk_size} is more than the {produced} actions the "
                         f"policy produces per chunk; use at most {produced} (or 0 for all)")
    return chunk_size


def _signature(batch: MetaObs) -> tuple:
    """Requests with equal signatures can be stacked into one batch."""
    return tuple((name, None if (v := getattr(batch, name)) is None else (v.shape[1:], v.dtype))
                 for name in ARRAY_FIELDS)


def _per_row(value: object, size: int) -> list:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == size:
        return list(value)
    return [value] * size


def _stack(requests: list[_Request]) -> MetaObs:
    if len(requests) == 1:
        return requests[0].batch
    arrays = {}
    for name in ARRAY_FIELDS:
        parts = [getattr(r.batch, name) for r in requests]
        arrays[name] = None if parts[0] is None else np.concatenate(parts)
    raw_lang = [x for r in requests for x in _per_row(r.batch.raw_lang, r.size)]
    timestep = [x for r in requests for x in _per_row(r.batch.timestep, r.size)]
    return MetaObs(**arrays, raw_lang=raw_lang, timestep=timestep)


def warm_up(policy: Policy, max_batch: int) -> float | None:
    """One pass at batch size 1 and, when batching is on, one at 2: the second makes
    torch.compile generalize over the batch dimension (else each new batch size recompiles
    for tens of seconds mid-service) and lets CUDA libraries pick kernels for batches.
    Milliseconds it took; None when the policy has no example or the pass failed."""
    obs = policy.example_observation()
    if obs is None:
        return None
    single = as_batch(obs)[0]
    start = time.perf_counter()
    try:
        policy.predict(single)
        if max_batch > 1:
            pair = _Request(obs, Future(), start, single, False)
            policy.predict(_stack([pair, pair]))
    except Exception:
        log.exception("warm-up pass failed; requests will show the same error")
        return None
    took = (time.perf_counter() - start) * 1e3
    log.info("Warm-up pass took %.0f ms", took)
    return took


def run_batch(policy: Policy, chunk_size: int, observations: list[MetaObs],
              received: list[float] | None = None) -> list[Future]:
    """Run `observations` as the engine's worker runs what it took from its queue (validated,
    stacked by signature, one forward pass per group, a failing group retried one by one), on
    the calling thread; one resolved Future (PolicyOutput or the error) per observation.
    For backends that batch requests themselves (a Ray Serve replica): the same numbers as
    the local engine, by the same code. `received`: perf_counter times, for the queue time."""
    now = time.perf_counter()
    requests = [_Request(obs, Future(), now if received is None else received[i])
                for i, obs in enumerate(observations)]
    for request in requests:
        request.future.set_running_or_notify_cancel()
        _validate(request)
    _process(policy, chunk_size, requests)
    return [request.future for request in requests]


def _validate(request: _Request) -> int:
    """Bring a running request to batched form; rows it adds to the batch."""
    try:
        request.batch, request.batched = as_batch(request.obs)
    except Exception as exc:
        _set_exception(request.future, exc)
        return 0
    return request.size


def _process(policy: Policy, chunk_size: int, requests: list[_Request]) -> None:
    # Done already: close() gave up on this batch and failed it; nobody waits for it.
    live = [r for r in requests if r.batch is not None and not r.future.done()]
    groups: dict[tuple, list[_Request]] = defaultdict(list)
    for request in live:
        groups[_signature(request.batch)].append(request)
    for group in groups.values():
        try:
            _run_group(policy, chunk_size, group)
        except Exception as exc:
            if len(group) == 1:
                _set_exception(group[0].future, exc)
            else:  # find the culprit: each request alone, failing only its own future
                for request in group:
                    try:
                        _run_group(policy, chunk_size, [request])
                    except Exception as single_exc:
                        _set_exception(request.future, single_exc)


def _predict(policy: Policy, chunk_size: int, batch: MetaObs,
             rows: int) -> tuple[np.ndarray, dict[str, float]]:
    """The policy's actions for `batch` of `rows` observations, (rows, chunk_size, A) float32,
    and the pass's timings (ms). Its inputs are let go of on return: the observations' arrays
    can be views of a socket's receive buffer, reused only once nothing refers to it."""
    t0 = time.perf_counter()
    inputs = policy.preprocess(batch)
    t1 = time.perf_counter()
    raw = policy.forward(inputs)
    t2 = time.perf_counter()
    actions = np.asarray(policy.postprocess(raw))
    t3 = time.perf_counter()
    spec = policy.spec
    expected = (rows, spec.chunk_size, spec.action_dim)
    if actions.shape != expected:
        raise RuntimeError(f"policy returned actions of shape {actions.shape}, "
                           f"expected {expected}")
    return actions[:, :chunk_size].astype(np.float32, copy=False), {
        "preprocess": (t1 - t0) * 1e3, "forward": (t2 - t1) * 1e3,
        "postprocess": (t3 - t2) * 1e3, "batch_size": float(rows)}


def _run_group(policy: Policy, chunk_size: int, group: list[_Request]) -> None:
    started = time.perf_counter()
    sizes = [request.size for request in group]
    actions, timings = _predict(policy, chunk_size, _stack(group), sum(sizes))
    start = 0
    for request, size in zip(group, sizes, strict=True):
        request.obs = request.batch = None  # before anyone sees the result (see _predict)
        output = PolicyOutput(actions=actions[start:start + size], batched=request.batched,
                              spec=policy.spec, timings_ms={
                                  "queue": (started - request.received) * 1e3, **timings})
        _set_result(request.future, output)
        start += size


class InferenceEngine:
    """Runs `policy` on a worker thread; `submit` is safe to call from any thread.

    max_batch: most observations per forward pass (1 disables batching);
    max_wait_ms: how long a batch may wait for more requests (0: only what is already queued,
    so a lone client never waits, and `run_here` may run a request on its caller's thread);
    warmup: run the policy's example observation once at start.
    """

    def __init__(self, policy: Policy, *, chunk_size: int = 0, max_batch: int = 8,
                 max_wait_ms: float = 0.0, max_queue: int = 64, warmup: bool = True) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.policy = policy
        self.chunk_size = resolve_chunk_size(policy, chunk_size)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1e3
        self.warmup_ms: float | None = None
        # SimpleQueue (C): a cheaper hand-off than queue.Queue (~15% of submit-to-result for
        # builtin:zero here); its bound is `_queued`, counted under `_lock` by submit and _take.
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._max_queue = max_queue
        self._queued = 0
        # Taken around "closed?" + enqueue in submit and around setting it in close, so no
        # request can be queued once close has begun; and around the worker taking a request
        # and close giving up on the worker, so every taken request is failed by one of them.
        self._lock = threading.Lock()
        self._closed = False
        self._abandoned = False  # close() timed out and failed the worker's requests itself
        self._running: list[_Request] = []  # taken by the worker and not yet finished
        # Held by whoever runs the model: the worker (warm-up, each batch) or a run_here caller.
        self._model = threading.Lock()
        # A batching window is a promise to wait for company; and an accelerator's handles
        # belong to the worker thread (Policy.worker_thread_only).
        self._caller_may_run = max_wait_ms == 0 and not policy.worker_thread_only
        self._ready = threading.Event()
        self._worker = threading.Thread(target=self._run, args=(warmup,), name="inference-engine",
                                        daemon=True)
        self._worker.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the warm-up pass is done (requests submitted earlier simply queue)."""
        return self._ready.wait(timeout)

    @property
    def max_queue(self) -> int:
        """Requests that may wait at once; `submit` raises EngineBusy beyond it."""
        return self._max_queue

    def submit(self, obs: MetaObs) -> Future:
        """Queue one observation; the Future resolves to a PolicyOutput or to the error.
        Raises EngineBusy when the queue is full and EngineClosed after `close`."""
        request = _Request(obs, Future(), time.perf_counter())
        with self._lock:
            if self._closed:
                raise EngineClosed("the inference engine is shut down")
            if self._queued >= self._max_queue:
                raise EngineBusy(f"inference queue full ({self._max_queue} requests waiting)")
            self._queued += 1
            self._queue.put(request)
        return request.future

    def run_here(self, obs: MetaObs) -> PolicyOutput | None:
        """Run one observation on the calling thread, when the engine is idle (nothing queued,
        the model free, no batching window) and the policy may run off the worker; None when
        it may not: then `submit` it. Raises what the request fails with (a bad observation,
        the policy's error) and EngineClosed after `close`. Unlike a Future, this cannot be
        abandoned at a timeout: the caller waits for the policy (the socket server answers []
        at its inference timeout meanwhile)."""
        # _running: the worker has taken requests and waits for the model: it goes first.
        if not self._caller_may_run or self._queued or self._running or \
                not self._model.acquire(blocking=False):
            return None
        try:
            if self._closed:
                raise EngineClosed("the inference engine is shut down")
            batch, batched = as_batch(obs)
            actions, timings = _predict(self.policy, self.chunk_size, batch,
                                        batch_size_of(batch))
            del batch  # see _predict
            return PolicyOutput(actions, batched, self.policy.spec, {"queue": 0.0, **timings})
        finally:
            self._model.release()

    def _run(self, warmup: bool) -> None:
        if warmup:
            with self._model:
                self.warmup_ms = warm_up(self.policy, self.max_batch)
        self._ready.set()
        while True:
            first = self._queue.get()
            if first is None:
                return self._fail_leftovers()
            stop = self._serve(first)
            del first  # a failed request still holds its observation (see _run_group)
            if stop:
                return self._fail_leftovers()

    def _serve(self, first: _Request) -> bool:
        """Run `first` and what can be batched with it; whether the stop sentinel was taken."""
        requests, stop = self._gather(first)
        try:
            with self._model:
                _process(self.policy, self.chunk_size, requests)
        except Exception as exc:  # a bug here must not kill the worker and hang everyone
            log.exception("inference engine error")
            for request in requests:
                _set_exception(request.future, exc)
        with self._lock:
            self._running = []
        return stop

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        """`first` plus what is queued (waiting up to max_wait), within max_batch rows."""
        requests = [first]
        rows = self._take(first)
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 and self._queue.empty():  # the common case: no exception
                break
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return requests, True
            requests.append(item)
            rows += self._take(item)
        return requests, False

    def _take(self, request: _Request) -> int:
        """Claim a request just taken from the queue and validate it; rows it adds to the batch
        (0 when it was cancelled, refused or is malformed).

        Claiming (marking it running and listing it in `_running`) happens under the lock that
        close() holds when it gives up on the worker, so a request is either listed in time for
        close() to fail it, or taken after that and failed here: none is left to a worker that
        may hang in the policy, whatever close()'s timeout and the batching window.
        """
        with self._lock:
            self._queued -= 1
            claimed = not self._abandoned
            if claimed:
                if not request.future.set_running_or_notify_cancel():
                    return 0  # the caller gave up (cancelled) while it was queued
                self._running.append(request)
        if not claimed:
            _set_exception(request.future, EngineClosed("the inference engine shut down"))
            return 0
        return _validate(request)  # outside the lock: submitters need not wait for it

    def _fail_leftovers(self) -> None:
        """Fail what is still queued: requests that close() will never let the worker run."""
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                _set_exception(request.future, EngineClosed("the inference engine shut down"))

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued requests, stop the worker and release the policy, within `timeout`
        seconds. What is not finished by then fails with EngineClosed (the batch of a hung
        policy included, which is then left to its thread, and the policy is not released)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        self._queue.put(None)  # the stop sentinel, after the queued requests
        self._worker.join(max(deadline - time.monotonic(), 0))
        self._fail_leftovers()
        if not self._worker.is_alive():
            # A run_here caller may still be in the model; it finds the engine closed after.
            if self._model.acquire(timeout=max(deadline - time.monotonic(), 0)):
                self.policy.close()
                self._model.release()
            else:
                log.warning("a request on its caller's thread still runs the policy after "
                            "%.1f s; leaving the policy open", timeout)
            return
        with self._lock:  # from here on the worker fails what it takes (see _take)
            self._abandoned = True
            stranded, self._running = self._running, []
        for request in stranded:
            _set_exception(request.future, EngineClosed(
                f"the inference engine shut down while this request ran (> {timeout:.1f} s)"))
        self._queue.put(None)  # drained above: the worker stops if it ever comes back
        log.warning("inference worker still busy after %.1f s; leaving it behind", timeout)

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
