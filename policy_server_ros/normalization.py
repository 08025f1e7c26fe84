"""State and action normalization, as ILStudio's normalize.json describes it.

Types: zscore `(x - mean) / max(std, min_std)`; minmax maps [min, max] to [-1, 1]; percentile
maps [q01, q99] to [-1, 1] and clips; identity. A mask selects the dimensions to transform; the
others pass through unchanged. Computation is float64 (as the original) and cast back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NORM_TYPES = ("zscore", "minmax", "percentile", "identity")
DEFAULT_MIN_STD = 1e-6  # ILStudio used 0.01 until mid-November 2025; checkpoints do not say
_MIN_RANGE = 1e-8  # guards minmax / percentile against constant dimensions

_REQUIRED_STATS = {"zscore": ("mean", "std"), "minmax": ("min", "max"),
                   "percentile": ("q01", "q99"), "identity": ()}


class NormalizationError(ValueError):
    """Statistics or settings that cannot normalize this data; the message says which."""


@dataclass(frozen=True)
class Normalizer:
    """An affine map per dimension, `y = (x - offset) / scale` on the masked dimensions."""

    kind: str
    offset: np.ndarray  # (D,) float64
    scale: np.ndarray  # (D,) float64, > 0
    mask: np.ndarray  # (D,) bool
    clip: bool = False

    @classmethod
    def from_stats(cls, kind: str, stats: Mapping[str, Any], dim: int,
                   mask: Sequence[bool] | None = None,
                   min_std: float = DEFAULT_MIN_STD) -> Normalizer:
        """Build from one `state` or `action` entry of the stats pickle."""
        if kind not in NORM_TYPES:
            raise NormalizationError(f"unknown normalization type {kind!r}; use one of "
                                     f"{', '.join(NORM_TYPES)}")
        columns = {}
        for key in _REQUIRED_STATS[kind]:
            if key not in stats:
                raise NormalizationError(f"{kind} normalization needs '{key}' in the statistics, "
                                         f"which have {sorted(stats)}")
            value = np.asarray(stats[key], dtype=np.float64).reshape(-1)
            if value.shape != (dim,):
                raise NormalizationError(f"statistics '{key}' have {value.size} values, "
                                         f"expected {dim}")
            columns[key] = value
        mask_array = np.ones(dim, bool) if mask is None else np.asarray(mask, bool).reshape(-1)
        if mask_array.shape != (dim,):
            raise NormalizationError(f"norm mask has {mask_array.size} entries, expected {dim}")
        if kind == "zscore":
            offset, scale = columns["mean"], np.maximum(columns["std"], min_std)
        elif kind in ("minmax", "percentile"):
            low, high = (columns["min"], columns["max"]) if kind == "minmax" else \
                (columns["q01"], columns["q99"])
            offset = (high + low) / 2
            scale = np.maximum(high - low, _MIN_RANGE) / 2
        else:
            offset, scale = np.zeros(dim), np.ones(dim)
        return cls(kind, offset, scale, mask_array, clip=kind == "percentile")

    @property
    def dim(self) -> int:
        return self.offset.shape[0]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """(..., D) -> (..., D) in x's dtype (float32 stays float32)."""
        self._check(x)
        y = (x.astype(np.float64) - self.offset) / self.scale
        if self.clip:
            y = np.clip(y, -1.0, 1.0)
        return np.where(self.mask, y, x).astype(x.dtype, copy=False)

    def denormalize(self, y: np.ndarray) -> np.ndarray:
        """The inverse of `normalize` (clipped values cannot be restored)."""
        self._check(y)
        x = y.astype(np.float64) * self.scale + self.offset
        return np.where(self.mask, x, y).astype(y.dtype, copy=False)

    def _check(self, x: np.ndarray) -> None:
        if x.shape[-1] != self.dim:
            raise NormalizationError(f"expected a last dimension of {self.dim}, got shape "
                                     f"{x.shape}")
