"""The wire types of the policy protocol: `MetaObs` in, `MetaAction` out.

Their pickle name, `benchmark.base.MetaObs` / `benchmark.base.MetaAction`, and the field names
are part of the protocol: ILStudio clients create these classes themselves (from their own
`benchmark/base.py`). The classes live here and call themselves `benchmark.base.*`
(`__module__`); the top-level `benchmark/base.py` only re-exports them, for the guide's
snippets. Nothing in this project imports `benchmark`, so a different `benchmark` package ahead
of ours on sys.path (ILStudio's checkout, or PyPI's `benchmark`) cannot change what the server
runs. Unpickling does not call `__init__`; it restores the instance `__dict__`, so a field
missing from an older client's pickle falls back to the class default below. Importing this
module needs numpy only.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MetaAction", "MetaObs"]


class _ItemAccess:
    """`obj['field']` reads a field, as the original clients and policies do."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._field_names():
            raise KeyError(key)
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in self._field_names()

    def keys(self) -> list[str]:
        return list(self._field_names())

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def _add_batch_axis(value: Any) -> Any:
    return np.asarray(value)[None] if isinstance(value, (np.ndarray, np.generic)) else value


@dataclass
class MetaObs(_ItemAccess):
    """One observation. Unbatched shapes are shown; a batched observation adds a leading B axis.

    state: (D,) the policy's state vector; state_ee / state_joint / state_obj: optional parts;
    image: (K, C, H, W) uint8, K cameras in model order; depth: (K, H, W); pc: (n, 3) points;
    raw_lang: the language instruction; timestep: index of the observation in the episode.
    """

    state: np.ndarray | None = None
    state_ee: np.ndarray | None = None
    state_joint: np.ndarray | None = None
    state_obj: np.ndarray | None = None
    image: np.ndarray | None = None
    depth: np.ndarray | None = None
    pc: np.ndarray | None = None
    raw_lang: str = ""
    timestep: int = -1

    def to_batch(self) -> MetaObs:
        """A batch of one: every array gains a leading axis of size 1; the rest is unchanged."""
        return MetaObs(**{k: _add_batch_axis(v) for k, v in vars(self).items()})


@dataclass
class MetaAction(_ItemAccess):
    """One action (or a chunk of them when `action` is 2-D) and how to interpret it.

    ctrl_space: 'ee' (end effector) or 'joint'; ctrl_type: 'delta' or 'abs';
    gripper_continuous: whether the gripper dimension is continuous rather than open/close.
    """

    ctrl_space: str = "ee"
    ctrl_type: str = "delta"
    action: np.ndarray | None = None
    gripper_continuous: bool = False

    def __len__(self) -> int:
        """0 without an action, 1 for a single action vector, else the number of rows."""
        if self.action is None:
            return 0
        action = np.asarray(self.action)
        return 1 if action.ndim <= 1 else int(action.shape[0])

    def to_batch(self) -> MetaAction:
        """A batch of one: `action` gains a leading axis of size 1."""
        return dataclasses.replace(self, action=_add_batch_axis(self.action))


# The protocol's name for them (see the module docstring); pickles name them by it.
for _wire_type in (MetaObs, MetaAction):
    _wire_type.__module__ = "benchmark.base"
del _wire_type


def protocol_class(cls: type) -> type:
    """The class that `cls`'s protocol name (`benchmark.base.<name>`) resolves to in this
    process, to build what gets pickled: ours, or, where another `benchmark` package comes first
    on sys.path (ILStudio's checkout), that package's class, whose instances pickle to the same
    bytes (pickling ours would fail there as "not the same object"). Where the name resolves to
    nothing (PyPI's unrelated `benchmark`, or a base.py that fails to import), ours is
    registered under it, so that pickle finds it."""
    try:
        module = importlib.import_module(cls.__module__)
    except ImportError:
        module = sys.modules.setdefault(cls.__module__, _protocol_module())
    found = getattr(module, cls.__qualname__, None)
    return found if isinstance(found, type) else cls


def _protocol_module() -> types.ModuleType:
    module = types.ModuleType("benchmark.base", "socket_bridge.wire_types under its wire name")
    module.MetaObs, module.MetaAction = MetaObs, MetaAction
    return module
