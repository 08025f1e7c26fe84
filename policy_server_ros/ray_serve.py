"""The Ray Serve deployment that serves a policy: each replica loads the checkpoint (any
family) on its own device and runs observations through the local engine's own batch code
(engine.run_batch), so its replies equal the local engine's. `@serve.batch` gathers the
requests that reach a replica together (max_batch, max_wait_ms), as the local engine's queue
does.

Started by ray_backend.RayEngine (`backend:=ray`), or on its own from a Serve config file:

    serve run config/ray_serve.yaml      # import_path: policy_server_ros.ray_serve:build_app

Imports Ray: load it only for the ray backend (the `[ray]` extra).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from concurrent.futures import Future
from typing import Any

from ray import serve
from ray.serve.config import AutoscalingConfig

from policy_server_ros.checkpoint import resolve_model
from policy_server_ros.engine import resolve_chunk_size, run_batch, warm_up
from policy_server_ros.engine_backends import RayOptions
from policy_server_ros.model_info import describe_policy
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.policies.base import PolicyOutput
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.ray_serve")

DEPLOYMENT_NAME = "PolicyReplica"


@serve.deployment(name=DEPLOYMENT_NAME, health_check_period_s=2.0, health_check_timeout_s=30.0,
                  graceful_shutdown_timeout_s=5.0)
class PolicyReplica:
    """One replica: one model on one device. `infer` answers one observation; `describe` tells
    a front-end what it serves; `pid` names the replica's process (for fault tests)."""

    def __init__(self, model: str, options: LoadOptions, chunk_size: int, max_batch: int,
                 max_wait_ms: float) -> None:
        self.model = model
        self.policy = load_policy(model, options)
        self.chunk_size = resolve_chunk_size(self.policy, chunk_size)
        self.max_batch = max_batch
        warm_up(self.policy, max_batch)
        self._infer_batch.set_max_batch_size(max_batch)
        self._infer_batch.set_batch_wait_timeout_s(max_wait_ms / 1e3)

    def describe(self) -> dict[str, Any]:
        policy = self.policy
        return {"model": self.model, "spec": policy.spec, "chunk_size": self.chunk_size,
                "camera_names": policy.camera_names,
                "state_feature": policy.state_feature,
                "default_reply_steps": policy.default_reply_steps,
                "action_period": policy.action_period, "max_batch": self.max_batch,
                "description": describe_policy(policy)}

    def pid(self) -> int:
        return os.getpid()

    async def infer(self, obs: MetaObs) -> PolicyOutput:
        """The policy's output for `obs`, or its error (raised here, re-raised by the caller)."""
        future: Future = await self._infer_batch(obs)
        return future.result()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def _infer_batch(self, observations: list[MetaObs]) -> list[Future]:
        # Off the replica's event loop, so requests keep arriving (and batching) meanwhile;
        # serve.batch runs one batch at a time, so model calls are never concurrent.
        return await asyncio.to_thread(run_batch, self.policy, self.chunk_size, observations)

    def __del__(self) -> None:
        policy = getattr(self, "policy", None)
        if policy is not None:
            policy.close()


def observation_fields(obs: MetaObs) -> dict[str, Any]:
    """Ray serializer of MetaObs: its fields. Without it cloudpickle would send the class by
    value (its pickle name, benchmark.base, is not imported in a front-end), and the replica
    would get a look-alike class that the engine rightly refuses."""
    return dict(obs.__dict__)


def observation_from_fields(fields: dict[str, Any]) -> MetaObs:
    """Ray deserializer of MetaObs, run in the replica (as unpickling does: no __init__)."""
    obs = MetaObs.__new__(MetaObs)
    obs.__dict__.update(fields)
    return obs


def policy_application(model: str, options: LoadOptions, *, chunk_size: int = 0,
                       max_batch: int = 8, max_wait_ms: float = 0.0,
                       ray: RayOptions | None = None) -> serve.Application:
    """The Serve application: PolicyReplica with replicas and resources from `ray`."""
    ray = ray or RayOptions()
    # Replicas batch up to max_batch requests; more in flight per replica lets a batch fill.
    settings: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": ray.replica_cpus, "num_gpus": ray.replica_gpus},
        "max_ongoing_requests": max(2 * max_batch, 4)}
    if ray.max_replicas > 0:
        settings["autoscaling_config"] = AutoscalingConfig(
            min_replicas=ray.min_replicas, max_replicas=ray.max_replicas,
            initial_replicas=max(ray.min_replicas, 1),
            target_ongoing_requests=max(max_batch, 1))
        settings["num_replicas"] = "auto"
    else:
        settings["num_replicas"] = ray.replicas
    return PolicyReplica.options(**settings).bind(model, options, chunk_size, max_batch,
                                                  max_wait_ms)


# Keys of `serve run`'s args (config/ray_serve.yaml): the policy's, the engine's and the
# replicas'. The same names as the node's parameters.
_LOAD_KEYS = {f.name for f in dataclasses.fields(LoadOptions)} - {"warmup_image_hw"}
_ENGINE_KEYS = {"chunk_size": int, "max_batch": int, "max_wait_ms": float}
_RAY_KEYS = {"replicas": "replicas", "min_replicas": "min_replicas",
             "max_replicas": "max_replicas", "replica_gpus": "replica_gpus",
             "replica_cpus": "replica_cpus"}


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder for `serve run` / a Serve config file: `args` holds
    model_name_or_path and any of the node's parameters of the policy (device, dataset_id,
    min_std, precision, compile, seed, num_inference_steps, use_ema, replay_episode), the
    engine (chunk_size, max_batch, max_wait_ms) and the replicas (replicas, min_replicas,
    max_replicas, replica_gpus, replica_cpus). An unknown key is an error naming the known ones.
    """
    args = dict(args)
    known = {"model_name_or_path"} | _LOAD_KEYS | set(_ENGINE_KEYS) | set(_RAY_KEYS)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown args {unknown} for policy_server_ros.ray_serve:build_app; "
                         f"known: {sorted(known)}")
    if "model_name_or_path" not in args:
        raise ValueError("args must name model_name_or_path (a checkpoint folder reachable on "
                         "every worker machine, or builtin:zero / builtin:echo)")
    model = resolve_model(str(args.pop("model_name_or_path")))
    if args.get("seed") is not None and int(args["seed"]) < 0:
        args["seed"] = None  # the node's -1: fresh noise every call
    options = LoadOptions(**{k: args[k] for k in _LOAD_KEYS if k in args})
    engine = {k: kind(args[k]) for k, kind in _ENGINE_KEYS.items() if k in args}
    ray = RayOptions(**{field: args[k] for k, field in _RAY_KEYS.items() if k in args})
    return policy_application(model, options, ray=ray, **engine)
