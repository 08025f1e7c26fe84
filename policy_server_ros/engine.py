"""The inference engine: the one place that runs the policy.

One worker thread owns the policy (and, for torch policies, the device). Socket handlers and ROS
callbacks call `submit(obs)` and get a Future; they never call the model themselves, so model
calls are never concurrent. A failing request fails only its own future.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from benchmark.base import MetaObs
from policy_server_ros.observation import as_batch, batch_size_of
from policy_server_ros.policies.base import Policy, PolicyOutput

log = logging.getLogger("policy_server_ros.engine")


class EngineBusy(RuntimeError):
    """The request queue is full; the caller should answer this request with an error."""


class EngineClosed(RuntimeError):
    """The engine has shut down and takes no more requests."""


@dataclass
class _Request:
    obs: MetaObs
    future: Future
    received: float


def resolve_chunk_size(policy: Policy, chunk_size: int) -> int:
    """Actions per reply: the policy's whole chunk for chunk_size <= 0, else chunk_size.

    Asking for more actions than the policy produces is a start-up error, not a silent cap.
    """
    produced = policy.spec.chunk_size
    if chunk_size <= 0:
        return produced
    if chunk_size > produced:
        raise ValueError(f"--chunk_size {chunk_size} is more than the {produced} actions the "
                         f"policy produces per chunk; use at most {produced} (or 0 for all)")
    return chunk_size


class InferenceEngine:
    """Runs `policy` on a worker thread; `submit` is safe to call from any thread."""

    def __init__(self, policy: Policy, *, chunk_size: int = 0, max_queue: int = 64) -> None:
        self.policy = policy
        self.chunk_size = resolve_chunk_size(policy, chunk_size)
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_queue)
        self._closed = threading.Event()
        self._worker = threading.Thread(target=self._run, name="inference-engine", daemon=True)
        self._worker.start()

    def submit(self, obs: MetaObs) -> Future:
        """Queue one observation; the Future resolves to a PolicyOutput or to the error."""
        if self._closed.is_set():
            raise EngineClosed("the inference engine is shut down")
        request = _Request(obs, Future(), time.perf_counter())
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise EngineBusy(f"inference queue full ({self._queue.maxsize} requests waiting)") \
                from None
        return request.future

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                self._fail_leftovers()
                return
            if request.future.set_running_or_notify_cancel():
                try:
                    request.future.set_result(self._infer(request))
                except Exception as exc:  # reported to this request's caller only
                    request.future.set_exception(exc)

    def _fail_leftovers(self) -> None:
        # Requests that raced with close() must not leave their callers waiting forever.
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None and request.future.set_running_or_notify_cancel():
                request.future.set_exception(EngineClosed("the inference engine shut down"))

    def _infer(self, request: _Request) -> PolicyOutput:
        started = time.perf_counter()
        batch, batched = as_batch(request.obs)
        actions = np.asarray(self.policy.predict(batch))
        spec = self.policy.spec
        expected = (batch_size_of(batch), spec.chunk_size, spec.action_dim)
        if actions.shape != expected:
            raise RuntimeError(f"policy returned actions of shape {actions.shape}, "
                               f"expected {expected}")
        finished = time.perf_counter()
        return PolicyOutput(
            actions=actions[:, : self.chunk_size].astype(np.float32, copy=False),
            batched=batched,
            spec=spec,
            timings_ms={"queue": (started - request.received) * 1e3,
                        "inference": (finished - started) * 1e3},
        )

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued requests, stop the worker and release the policy."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._queue.put(None)
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("inference worker still busy after %.1f s; leaving it behind", timeout)
            return
        self.policy.close()

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
