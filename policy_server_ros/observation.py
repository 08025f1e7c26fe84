"""Checking a MetaObs and bringing it into the batched form policies take.

Reproduces ILStudio's handling: an unbatched observation (state (D,), image (K, C, H, W)) gains a
batch axis, float64 arrays are cast to float32. Anything else malformed raises ObservationError
with a message naming the field, which the caller reports to the client.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from socket_bridge.wire_types import MetaObs

ARRAY_FIELDS = ("state", "state_ee", "state_joint", "state_obj", "image", "depth", "pc")
# Number of dimensions of each array field in an unbatched observation.
UNBATCHED_NDIM = {"state": 1, "state_ee": 1, "state_joint": 1, "state_obj": 1,
                  "image": 4, "depth": 3, "pc": 2}
_FIELDS = (*ARRAY_FIELDS, "raw_lang", "timestep")


class ObservationError(ValueError):
    """The observation cannot be given to the policy; the message says which field and why."""


_FIELD_SET = frozenset(_FIELDS)
_FLOAT32 = np.dtype(np.float32)


def _check_array(name: str, value: Any) -> np.ndarray:
    """`value` (not None) as the numeric array a policy takes: float arrays as finite float32."""
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"MetaObs.{name} must be a numpy array or None, "
                               f"got {type(value).__name__}")
    kind = value.dtype.kind
    if kind not in "biuf":
        raise ObservationError(f"MetaObs.{name} must be numeric, got dtype {value.dtype}")
    if kind == "f":
        if value.dtype != _FLOAT32:
            with np.errstate(over="ignore"):  # out-of-range values become inf, refused below
                value = value.astype(np.float32)
        if not np.isfinite(value).all():
            raise ObservationError(f"MetaObs.{name} contains NaN or infinite values (or values "
                                   f"beyond float32's range)")
    return value


def is_batched(obs: MetaObs) -> bool:
    """Batched when state is 2-D, or, without a state, when the image is 5-D."""
    for name in ("state", "image"):
        value = getattr(obs, name, None)
        if isinstance(value, np.ndarray):
            return value.ndim == UNBATCHED_NDIM[name] + 1
    return False


def as_batch(obs: Any) -> tuple[MetaObs, bool]:
    """Validate `obs` and return (batched copy, whether the original was batched).

    The copy shares array memory with `obs` where no cast is needed. Every request passes
    here, so it reads the instance dict once (a field missing from an older client's pickle
    is the class default: None for arrays) and builds the copy without dataclass __init__.
    """
    if type(obs) is not MetaObs:
        raise ObservationError(f"expected a benchmark.base.MetaObs, got {type(obs).__name__}")
    fields = vars(obs)
    if not fields.keys() <= _FIELD_SET:
        raise ObservationError(f"MetaObs has unknown fields {sorted(fields.keys() - _FIELD_SET)}")
    batched = is_batched(obs)
    values: dict[str, Any] = dict.fromkeys(ARRAY_FIELDS)
    batch_size = None
    for name in ARRAY_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        value = _check_array(name, value)
        want = UNBATCHED_NDIM[name] + batched
        if value.ndim != want:
            form = "batched" if batched else "unbatched"
            raise ObservationError(f"MetaObs.{name} has shape {value.shape}; a {form} "
                                   f"observation needs {want} dimensions")
        if not batched:
            value = value[None]
        if batch_size is None:
            batch_size = value.shape[0]
        elif value.shape[0] != batch_size:
            raise ObservationError(f"MetaObs.{name} has batch size {value.shape[0]}, "
                                   f"other fields have {batch_size}")
        values[name] = value
    raw_lang = fields.get("raw_lang", "")
    if not isinstance(raw_lang, (str, list, tuple, np.ndarray)):
        raise ObservationError(f"MetaObs.raw_lang must be a string, got {type(raw_lang).__name__}")
    values["raw_lang"] = raw_lang
    values["timestep"] = fields.get("timestep", -1)
    batch = object.__new__(MetaObs)  # as unpickling makes one: all fields set, checked above
    batch.__dict__ = values
    return batch, batched


def batch_size_of(batch: MetaObs) -> int:
    """B of a batched observation (1 when it carries no arrays at all)."""
    for name in ARRAY_FIELDS:
        value = getattr(batch, name)
        if value is not None:
            return int(value.shape[0])
    return 1
