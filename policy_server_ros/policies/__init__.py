"""Policies, and the one entry point that builds one from a --model_name_or_path value.

LeRobot checkpoints (no policy_metadata.json; config.json's `type`) are recognised by content
and loaded by policies/lerobot/. Other checkpoint policy types are found by name: the
`policy_name` in a checkpoint's
policy_metadata.json selects the module `policy_server_ros.policies.<policy_name>`, which
provides `load_checkpoint(checkpoint, options) -> Policy`. Adding a policy type is adding one
such module (see act/).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from policy_server_ros.checkpoint import read_checkpoint, resolve_model
from policy_server_ros.policies import lerobot
from policy_server_ros.policies.base import ActionSpec, LoadOptions, Policy, PolicyOutput
from policy_server_ros.policies.builtin import BUILTIN_POLICIES

__all__ = ["BUILTIN_PREFIX", "ActionSpec", "LoadOptions", "Policy", "PolicyLoadError",
           "PolicyOutput", "available_policy_types", "load_policy"]

BUILTIN_PREFIX = "builtin:"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PolicyLoadError(RuntimeError):
    """The policy named on the command line cannot be loaded; the message says how to fix it."""


def available_policy_types() -> list[str]:
    """Names of the modules under policies/ that can load checkpoints."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        if _NAME.match(info.name):
            module = importlib.import_module(f"{__name__}.{info.name}")
            if hasattr(module, "load_checkpoint"):
                names.append(info.name)
    return sorted(names)


def load_policy(name_or_path: str | Path, options: LoadOptions | None = None) -> Policy:
    """Build the policy named by `name_or_path`: `builtin:zero`, `builtin:echo`, or a
    checkpoint folder in ILStudio's layout (see checkpoint.py) or LeRobot's
    (lerobot/layout.py). The default name
    (checkpoint.EXAMPLE_CHECKPOINT) is resolved by checkpoint.resolve_model."""
    options = options or LoadOptions()
    name_or_path = resolve_model(str(name_or_path))
    if name_or_path.startswith(BUILTIN_PREFIX):
        kind = name_or_path[len(BUILTIN_PREFIX):]
        if kind not in BUILTIN_POLICIES:
            raise PolicyLoadError(f"unknown built-in policy {name_or_path!r}; available: "
                                  + ", ".join(BUILTIN_PREFIX + k for k in BUILTIN_POLICIES))
        return BUILTIN_POLICIES[kind]()
    lerobot_folder = lerobot.find_lerobot_folder(Path(name_or_path).expanduser())
    if lerobot_folder is not None:
        return lerobot.load_folder(lerobot_folder, options)
    checkpoint = read_checkpoint(name_or_path)
    kind = checkpoint.policy_name
    available = available_policy_types()
    if not _NAME.match(kind) or kind not in available:
        raise PolicyLoadError(f"unknown policy type {kind!r} in {checkpoint.path}/"
                              f"policy_metadata.json; this server can load: "
                              f"{', '.join(available)}")
    module = importlib.import_module(f"{__name__}.{kind}")
    return module.load_checkpoint(checkpoint, options)
