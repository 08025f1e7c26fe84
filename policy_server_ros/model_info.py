"""What the served model expects and produces, as the node's `~/get_model_info` service answers
(JSON): enough for a robot integrator to check the wiring without reading code. No ROS here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policy_server_ros.policies.base import Policy


def describe_policy(policy: Policy) -> dict[str, Any]:
    """What only the loaded policy object knows: its family, class, state size, device and
    normalization. A remote backend computes this where the policy lives and carries it back
    (the policy's `description`)."""
    example = policy.example_observation()
    info: dict[str, Any] = {
        # The policies/ module it comes from: act, builtin, ...
        "family": type(policy).__module__.removeprefix("policy_server_ros.policies.")
        .split(".")[0],
        "policy_class": type(policy).__name__,
        "state_dim": None if example is None or example.state is None
        else int(example.state.shape[-1]),
        "device": str(getattr(policy, "device", "cpu")),
    }
    norm = getattr(policy, "norm", None)
    if norm is not None:
        info["normalization"] = {"dataset_id": norm.dataset_id, "state": norm.state.kind,
                                 "action": norm.action.kind}
    return info


def model_info(params: Mapping[str, Any], engine: Any,
               topics: Mapping[str, str]) -> dict[str, Any]:
    """The checkpoint, family, inputs (with the topics feeding them), action convention and
    chunk, and normalization, of the policy `engine` (any backend) serves with these node
    parameters."""
    policy, spec = engine.policy, engine.policy.spec
    described = getattr(policy, "description", None) or describe_policy(policy)
    names = policy.camera_names or [f"camera/{i}" for i in range(len(params["camera_topics"]))]
    info: dict[str, Any] = {
        "checkpoint": params["model_name_or_path"],
        "backend": params["backend"],
        "family": described["family"],
        "policy_class": described["policy_class"],
        "cameras": [{"name": name, "topic": topics.get(f"camera/{i}")}
                    for i, name in enumerate(names)],
        "state_dim": described["state_dim"],
        "state_inputs": list(params["state_inputs"]),
        "action_dim": spec.action_dim,
        "chunk_size": engine.chunk_size,
        "policy_chunk_size": spec.chunk_size,
        "action_period_s": params["action_period"],
        "ctrl_space": spec.ctrl_space,
        "ctrl_type": spec.ctrl_type,
        "gripper_continuous": spec.gripper_continuous,
        "device": described["device"],
        "precision": params["precision"],
    }
    if "normalization" in described:
        info["normalization"] = described["normalization"]
    return info
