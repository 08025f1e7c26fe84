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


def _check_array(name: str, value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"MetaObs.{name} must be a numpy array or None, "
                               f"got {type(value).__name__}")
    if value.dtype.kind not in "biuf":
        raise ObservationError(f"MetaObs.{name} must be numeric, got dtype {value.dtype}")
    if value.dtype.kind == "f":
        if value.dtype != np.float32:
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

    The copy shares array memory with `obs` where no cast is needed.
    """
    if type(obs) is not MetaObs:
        raise ObservationError(f"expected a benchmark.base.MetaObs, got {type(obs).__name__}")
    extra = set(vars(obs)) - set(_FIELDS)
    if extra:
        raise ObservationError(f"MetaObs has unknown fields {sorted(extra)}")
    batched = is_batched(obs)
    arrays: dict[str, np.ndarray | None] = {}
    batch_size = None
    for name in ARRAY_FIELDS:
        value = _check_array(name, getattr(obs, name, None))
        if value is not None:
            want = UNBATCHED_NDIM[name] + (1 if batched else 0)
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
        arrays[name] = value
    raw_lang = getattr(obs, "raw_lang", "")
    if not isinstance(raw_lang, (str, list, tuple, np.ndarray)):
        raise ObservationError(f"MetaObs.raw_lang must be a string, got {type(raw_lang).__name__}")
    timestep = getattr(obs, "timestep", -1)
    return MetaObs(**arrays, raw_lang=raw_lang, timestep=timestep), batched


def batch_size_of(batch: MetaObs) -> int:
    """B of a batched observation (1 when it carries no arrays at all)."""
    for name in ARRAY_FIELDS:
        value = getattr(batch, name)
        if value is not None:
            return int(value.shape[0])
    return 1
