"""Policies and the one entry point that builds one from a --model_name_or_path value."""

from __future__ import annotations

from policy_server_ros.policies.base import ActionSpec, Policy, PolicyOutput
from policy_server_ros.policies.builtin import BUILTIN_POLICIES

__all__ = ["BUILTIN_PREFIX", "ActionSpec", "Policy", "PolicyLoadError", "PolicyOutput",
           "load_policy"]

BUILTIN_PREFIX = "builtin:"


class PolicyLoadError(RuntimeError):
    """The policy named on the command line cannot be loaded; the message says how to fix it."""


def load_policy(name_or_path: str, *, device: str = "cuda", dataset_id: str = "") -> Policy:
    """Build the policy named by `name_or_path`.

    `builtin:zero` and `builtin:echo` need no checkpoint (see policies/builtin.py). `device` and
    `dataset_id` select the device and the normalization statistics of checkpoint policies.
    """
    if name_or_path.startswith(BUILTIN_PREFIX):
        kind = name_or_path[len(BUILTIN_PREFIX):]
        if kind not in BUILTIN_POLICIES:
            raise PolicyLoadError(f"unknown built-in policy {name_or_path!r}; available: "
                                  + ", ".join(BUILTIN_PREFIX + k for k in BUILTIN_POLICIES))
        return BUILTIN_POLICIES[kind]()
    raise PolicyLoadError(
        f"cannot load {name_or_path!r}: checkpoint policies (ACT) are not implemented in this "
        f"version yet; use one of " + ", ".join(BUILTIN_PREFIX + k for k in BUILTIN_POLICIES))
