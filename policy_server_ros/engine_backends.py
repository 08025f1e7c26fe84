"""Which engine serves the policy: `local` (one worker thread and one model in this process,
engine.InferenceEngine) or `ray` (a Ray Serve deployment whose replicas each hold the model,
ray_backend.RayEngine). Both answer `submit(obs) -> Future[PolicyOutput]` with the same
replies, so the node and the socket bridge do not know which one they use.

Ray is an optional extra (`pip install .[ray]`): this module never imports it, and the local
backend never loads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from policy_server_ros.engine import InferenceEngine
from policy_server_ros.node_parameters import BY_NAME, RAY_ADDRESS
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.policies.base import ActionSpec, PolicyOutput
from socket_bridge.wire_types import MetaObs

BACKENDS = BY_NAME["backend"].choices
RAY_EXTRA_HINT = "pip install 'policy_server_ros[ray]' (ray[serve] 2.60)"


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray backend runs the policy (node parameters / CLI flags ray_*,
    replicas, min_replicas, max_replicas, replica_gpus, replica_cpus)."""

    address: str = "local"
    app_name: str = "policy_server"
    replicas: int = 1
    # Autoscaling when max_replicas > 0: Serve keeps between min_replicas and max_replicas.
    min_replicas: int = 0
    max_replicas: int = 0
    replica_gpus: float = 0.0  # a fraction shares a GPU between replicas
    replica_cpus: float = 1.0
    connect_timeout: float = 30.0  # bounded retry while the cluster is unreachable
    request_timeout: float = 60.0  # a request with no reply by then fails (BackendUnavailable)

    def __post_init__(self) -> None:
        if not re.fullmatch(RAY_ADDRESS["pattern"], self.address):
            raise ValueError(f"ray_address {self.address!r} must be local, auto or host:port "
                             f"(a Ray cluster's head, e.g. 10.0.0.5:6379)")
        if not re.fullmatch(BY_NAME["ray_app"].pattern, self.app_name):
            raise ValueError(f"ray_app {self.app_name!r} must be letters, digits, _ or -")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.max_replicas and not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas} "
                             f"and {self.max_replicas}")
        if self.replica_gpus < 0 or self.replica_cpus < 0:
            raise ValueError("replica_gpus and replica_cpus must be >= 0")
        if self.connect_timeout <= 0 or self.request_timeout <= 0:
            raise ValueError("connect and request timeouts must be > 0")

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], request_timeout: float) -> RayOptions:
        """From node parameters or CLI flags, which share the names (ray_address, ray_app,
        replicas, min_replicas, max_replicas, replica_gpus, replica_cpus,
        ray_connect_timeout); each request waits at most `request_timeout` seconds."""
        return cls(address=values["ray_address"], app_name=values["ray_app"],
                   replicas=values["replicas"], min_replicas=values["min_replicas"],
                   max_replicas=values["max_replicas"], replica_gpus=values["replica_gpus"],
                   replica_cpus=values["replica_cpus"],
                   connect_timeout=values["ray_connect_timeout"],
                   request_timeout=request_timeout)


class ServedPolicy(Protocol):
    """What callers read of the served policy, wherever it runs."""

    spec: ActionSpec
    camera_names: tuple[str, ...] | None
    state_feature: tuple[str, int] | None  # (name, size) of the state it reads, when it says


class Engine(Protocol):
    """The interface the node and the socket bridge use, whatever the backend."""

    policy: ServedPolicy
    chunk_size: int

    def submit(self, obs: MetaObs) -> Future[PolicyOutput]: ...

    def wait_ready(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float = 10.0) -> None: ...


def make_engine(backend: str, model: str, options: LoadOptions, *, chunk_size: int = 0,
                max_batch: int = 8, max_wait_ms: float = 0.0,
                ray: RayOptions | None = None) -> Engine:
    """The engine of `backend` serving `model` (a checkpoint folder or builtin:*). Errors:
    those of load_policy for a bad model, ValueError for bad settings, BackendUnavailable
    when the Ray cluster cannot be reached or the deployment does not start."""
    if backend == "local":
        return InferenceEngine(load_policy(model, options), chunk_size=chunk_size,
                               max_batch=max_batch, max_wait_ms=max_wait_ms)
    if backend == "ray":
        # A cluster this process starts (ray_address local) reports no usage statistics to
        # Ray's servers unless the user asks for it: robots often run on closed networks.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            from policy_server_ros.ray_backend import RayEngine  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise ValueError(f"backend ray needs Ray Serve ({exc}); {RAY_EXTRA_HINT}") from None
        return RayEngine(model, options, chunk_size=chunk_size, max_batch=max_batch,
                         max_wait_ms=max_wait_ms, ray=ray or RayOptions())
    raise ValueError(f"backend {backend!r} is not one of {list(BACKENDS)}")
