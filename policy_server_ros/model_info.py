"""What the served model expects and produces, as the node's `~/get_model_info` service answers
(JSON): enough for a robot integrator to check the wiring without reading code. No ROS here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policy_server_ros.engine import InferenceEngine


def model_info(params: Mapping[str, Any], engine: InferenceEngine,
               topics: Mapping[str, str]) -> dict[str, Any]:
    """The checkpoint, family, inputs (with the topics feeding them), action convention and
    chunk, and normalization, of the policy `engine` serves with these node parameters."""
    policy, spec = engine.policy, engine.policy.spec
    example = policy.example_observation()
    state_dim = None if example is None or example.state is None else int(example.state.shape[-1])
    names = policy.camera_names or [f"camera/{i}" for i in range(len(params["camera_topics"]))]
    info: dict[str, Any] = {
        "checkpoint": params["model_name_or_path"],
        # The policies/ module it comes from: act, builtin, ...
        "family": type(policy).__module__.removeprefix("policy_server_ros.policies.")
        .split(".")[0],
        "policy_class": type(policy).__name__,
        "cameras": [{"name": name, "topic": topics.get(f"camera/{i}")}
                    for i, name in enumerate(names)],
        "state_dim": state_dim,
        "state_inputs": list(params["state_inputs"]),
        "action_dim": spec.action_dim,
        "chunk_size": engine.chunk_size,
        "policy_chunk_size": spec.chunk_size,
        "action_period_s": params["action_period"],
        "ctrl_space": spec.ctrl_space,
        "ctrl_type": spec.ctrl_type,
        "gripper_continuous": spec.gripper_continuous,
        "device": str(getattr(policy, "device", "cpu")),
        "precision": params["precision"],
    }
    norm = getattr(policy, "norm", None)
    if norm is not None:
        info["normalization"] = {"dataset_id": norm.dataset_id, "state": norm.state.kind,
                                 "action": norm.action.kind}
    return info
