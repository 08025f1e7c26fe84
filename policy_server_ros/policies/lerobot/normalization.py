"""Per-feature normalization as LeRobot's normalizer/unnormalizer processor steps compute it.

Modes by feature type (the processor's norm_map): MEAN_STD `(x - mean) / (std + eps)`, back
`x * std + mean`; MIN_MAX `2 (x - min) / (max - min) - 1`, back `(x + 1) / 2 (max - min) + min`;
QUANTILES / QUANTILE10 the same with q01/q99 or q10/q90; IDENTITY unchanged. A zero range is
replaced by eps; a feature without statistics passes through unchanged, as in LeRobot. Computed
in float32 on the policy's device, operation for operation as LeRobot does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from policy_server_ros.checkpoint import CheckpointError

_BOUNDS = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
           "QUANTILE10": ("q10", "q90")}


class FeatureNorm:
    """One feature's transform; statistics broadcast against the feature's trailing shape."""

    def __init__(self, name: str, mode: str, stats: dict[str, np.ndarray] | None, *,
                 eps: float, shape: tuple[int, ...], device: torch.device) -> None:
        self.name, self.mode, self.eps = name, mode, eps
        self.stats: dict[str, Tensor] = {}
        if mode == "IDENTITY" or not stats:
            self.mode = "IDENTITY"
            return
        needed = ("mean", "std") if mode == "MEAN_STD" else _BOUNDS[mode]
        for key in needed:
            if key not in stats:
                raise CheckpointError(f"{mode} normalization of {name!r} needs '{key}' "
                                      f"statistics; the processor files have {sorted(stats)}")
            value = torch.from_numpy(np.asarray(stats[key], np.float32)).to(device)
            try:
                torch.broadcast_shapes(value.shape, shape)
            except RuntimeError:
                raise CheckpointError(f"statistics '{key}' of {name!r} have shape "
                                      f"{tuple(value.shape)}, which does not fit the feature's "
                                      f"shape {shape}") from None
            self.stats[key] = value

    def _range(self) -> tuple[Tensor, Tensor]:
        low, high = (self.stats[k] for k in _BOUNDS[self.mode])
        denom = high - low
        return low, torch.where(denom == 0, torch.tensor(self.eps, device=denom.device), denom)

    def normalize(self, x: Tensor) -> Tensor:
        if self.mode == "IDENTITY":
            return x
        if self.mode == "MEAN_STD":
            return (x - self.stats["mean"]) / (self.stats["std"] + self.eps)
        low, denom = self._range()
        return 2 * (x - low) / denom - 1

    def unnormalize(self, x: Tensor) -> Tensor:
        if self.mode == "IDENTITY":
            return x
        if self.mode == "MEAN_STD":
            return x * self.stats["std"] + self.stats["mean"]
        low, denom = self._range()
        if self.mode == "MIN_MAX":
            return (x + 1) / 2 * denom + low
        return (x + 1.0) * denom / 2.0 + low
