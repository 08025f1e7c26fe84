"""The `ray` engine backend: observations go through a Ray Serve DeploymentHandle to the
replicas of ray_serve.PolicyReplica, each holding the model on its own device.

    RayEngine(model, options, ray=RayOptions(address="auto", replicas=2)).submit(obs)

It connects to a cluster (`local`: one started in this process; `auto`: the one running on
this machine; host:port: a cluster's head), retrying for `connect_timeout` seconds before it
gives up with one line. On the cluster it attaches to the Serve application `app_name` if it
runs (started by another node or by `serve run`; it must serve the same model), else deploys
it. Replies are the replicas' PolicyOutput, computed by the local engine's batch code, so they
equal the local engine's. A request whose replica dies, or that gets no reply within
`request_timeout`, fails with engine.BackendUnavailable (socket clients get `[]`, the node
counts a failure); Serve replaces dead replicas and later requests go to live ones.

Imports Ray: loaded only by engine_backends.make_engine for the ray backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as ray_exceptions
from ray import serve
from ray.serve.schema import ApplicationStatus

from policy_server_ros.checkpoint import resolve_model
from policy_server_ros.engine import BackendUnavailable, EngineClosed
from policy_server_ros.engine_backends import RayOptions
from policy_server_ros.policies import BUILTIN_PREFIX, LoadOptions
from policy_server_ros.policies.base import ActionSpec, PolicyOutput
from policy_server_ros.ray_serve import (
    observation_fields,
    observation_from_fields,
    policy_application,
)
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.ray_backend")

# Replicas load a checkpoint and warm up; a GPU model takes a while.
DEPLOY_TIMEOUT_S = 300.0
# An application in these states is someone's: wait for it and share it, never replace it.
_LIVE = (ApplicationStatus.RUNNING, ApplicationStatus.DEPLOYING, ApplicationStatus.UNHEALTHY)


@dataclass
class RemotePolicy:
    """What the node reads of the policy the replicas serve (engine.policy for this backend)."""

    spec: ActionSpec
    camera_names: tuple[str, ...] | None
    default_reply_steps: int | None
    action_period: float | None
    description: dict[str, Any]  # model_info.describe_policy, computed in a replica
    state_feature: tuple[str, int] | None = None

    def example_observation(self) -> None:
        return None


class RayEngine:
    """An engine whose policy runs in a Ray Serve deployment; `submit` is thread-safe."""

    def __init__(self, model: str, options: LoadOptions, *, chunk_size: int = 0,
                 max_batch: int = 8, max_wait_ms: float = 0.0,
                 ray: RayOptions | None = None) -> None:
        self.options = ray or RayOptions()
        self._closed = False
        self._started_ray = _connect(self.options)
        try:
            self._handle = _deploy_or_attach(_model_id(model), options, self.options,
                                             chunk_size=chunk_size, max_batch=max_batch,
                                             max_wait_ms=max_wait_ms)
            info = self._handle.describe.remote().result(timeout_s=self.options.request_timeout)
        except BaseException:
            self._shutdown_ray()
            raise
        self.model = info["model"]
        self.chunk_size = info["chunk_size"]
        self.max_batch = info["max_batch"]
        self.policy = RemotePolicy(info["spec"], info["camera_names"],
                                   info["default_reply_steps"], info["action_period"],
                                   info["description"], info.get("state_feature"))
        # Requests are awaited on one event loop of ours: a handle's responses are awaitable,
        # and a timed-out or cancelled Future cancels the request on the replica too.
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="ray-backend",
                                             daemon=True)
        self._loop_thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """The deployment was running when the constructor returned."""
        return True

    def submit(self, obs: MetaObs) -> Future[PolicyOutput]:
        """Send one observation to a replica; the Future resolves to its PolicyOutput, to the
        policy's own error (a bad observation), or to BackendUnavailable."""
        if self._closed:
            raise EngineClosed("the inference engine is shut down")
        return asyncio.run_coroutine_threadsafe(self._call(obs), self._loop)

    async def _call(self, obs: MetaObs) -> PolicyOutput:
        sent = time.perf_counter()
        timeout = self.options.request_timeout
        try:
            output = await asyncio.wait_for(self._handle.infer.remote(obs), timeout)
        except TimeoutError:
            raise BackendUnavailable(f"no reply from Ray application {self.options.app_name!r} "
                                     f"within {timeout:g} s") from None
        except ray_exceptions.RayTaskError as exc:  # the policy raised: its own error, here
            cause = exc.cause
            raise (cause if isinstance(cause, Exception) else
                   BackendUnavailable(_one_line(exc))) from None
        except (ray_exceptions.RayError, RuntimeError) as exc:  # replica died, cluster gone
            raise BackendUnavailable(f"Ray application {self.options.app_name!r}: "
                                     f"{type(exc).__name__}: {_one_line(exc)}") from None
        output.timings_ms["round_trip"] = (time.perf_counter() - sent) * 1e3
        return output

    def replica_pids(self, attempts: int = 32) -> set[int]:
        """Process ids of the replicas that answered `attempts` calls (for fault drills)."""
        responses = [self._handle.pid.remote() for _ in range(attempts)]
        return {r.result(timeout_s=self.options.request_timeout) for r in responses}

    def close(self, timeout: float = 10.0) -> None:
        """Stop sending; a cluster this engine started (`local`) is shut down, a shared one
        and its application are left running for the other front-ends."""
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout)
        self._shutdown_ray()

    def _shutdown_ray(self) -> None:
        if self._started_ray:
            with contextlib.suppress(Exception):
                serve.shutdown()
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _model_id(model: str) -> str:
    """The model as replicas must name it: builtin:* as is, a folder as an absolute path (a
    replica's working directory is not ours; on other machines the same path must exist)."""
    model = resolve_model(model)
    if model.startswith(BUILTIN_PREFIX):
        return model
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {model} not found (the ray backend checks the path "
                                f"here; replicas must see it at the same path)")
    return str(path.resolve())


def _connect(options: RayOptions) -> bool:
    """Join the cluster (True when this call started one); BackendUnavailable after
    connect_timeout seconds of failed tries."""
    if ray.is_initialized():  # this process is already a driver (tests, an embedding app)
        _ensure_serve()
        return False
    if options.address == "local":
        # On the loopback interface: a cluster of this process is for this machine only.
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 namespace="serve", _node_ip_address="127.0.0.1")
        _ensure_serve()
        return True
    _send_token_if_any()
    deadline = time.monotonic() + options.connect_timeout
    delay, tries = 0.5, 0
    while True:
        tries += 1
        try:
            _probe(options.address)
            ray.init(address=options.address, log_to_driver=False, namespace="serve")
            break
        except (ConnectionError, OSError, RuntimeError) as exc:
            ray.shutdown()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendUnavailable(
                    f"cannot reach the Ray cluster at ray_address={options.address} after "
                    f"{tries} tries in {options.connect_timeout:g} s ({_one_line(exc)}); start "
                    f"one with `ray start --head` or use ray_address:=local") from None
            log.warning("Ray cluster at %s not reachable (%s); retrying in %.1f s",
                        options.address, _one_line(exc), min(delay, remaining))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)
    _ensure_serve()
    return False


def _send_token_if_any() -> None:
    """Clusters of `ray start --head` (Ray 2.60) require their token (~/.ray/auth_token, or
    RAY_AUTH_TOKEN). Ray's CLI turns token mode on when a token exists, but ray.init joining
    by address does not, and is refused; this does what the CLI does. RAY_AUTH_MODE set by the
    user wins. (A private helper of the pinned Ray; without it, set RAY_AUTH_MODE=token.)"""
    try:
        from ray._private.authentication.authentication_token_setup import (  # noqa: PLC0415
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _probe(address: str) -> None:
    """Fail fast (OSError) when host:port does not accept TCP: ray.init would wait long."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
        pass


def _ensure_serve() -> None:
    ray.util.register_serializer(MetaObs, serializer=observation_fields,
                                 deserializer=observation_from_fields)
    # No HTTP proxy: front-ends reach the replicas through handles, and no port is bound.
    serve.start(http_options={"location": "NoServer"})


def _deploy_or_attach(model: str, load: LoadOptions, options: RayOptions, **engine: Any) -> Any:
    """A handle to application `app_name`: the running one if it serves `model`, else a new
    deployment; waits (bounded) until its replicas are up."""
    name = options.app_name
    running = serve.status().applications.get(name)
    if running is not None and running.status in _LIVE:
        # Started by another front-end or by `serve run` (which returns while it deploys):
        # wait for it rather than replace it.
        _wait_running(name)
        handle = serve.get_app_handle(name)
        served = handle.describe.remote().result(timeout_s=options.request_timeout)["model"]
        if served != model:
            raise ValueError(f"Ray application {name!r} already serves {served}, not {model}; "
                             f"choose another ray_app, or the same model")
        log.info("Attached to the running Ray Serve application %r (%s); its replica settings "
                 "apply", name, served)
        return handle
    app = policy_application(model, load, ray=options, **engine)
    serve.run_many([serve.RunTarget(target=app, name=name, route_prefix=None)],
                   wait_for_applications_running=False)
    _wait_running(name)
    log.info("Deployed Ray Serve application %r: %s", name, model)
    return serve.get_app_handle(name)


def _wait_running(name: str) -> None:
    """Until application `name` runs; BackendUnavailable when it fails or takes too long."""
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while True:
        status = serve.status().applications.get(name)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            break
        if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
            raise BackendUnavailable(f"Ray application {name!r} failed to deploy: "
                                     f"{_one_line(status.message)}")
        if time.monotonic() > deadline:
            message = "" if status is None else f": {_one_line(status.message)}"
            raise BackendUnavailable(f"Ray application {name!r} not running after "
                                     f"{DEPLOY_TIMEOUT_S:g} s (are there enough CPUs/GPUs for "
                                     f"its replicas?){message}")
        time.sleep(0.2)


def _one_line(exc: object) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
