"""Diffusion Policy hyperparameters: DiffusionPolicyConfig's config.json keys and defaults."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field, fields
from typing import Any

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
# The noise predictor's sizes: fixed in the original (ConditionalUnet1D's defaults), not config.
DOWN_DIMS = (256, 512, 1024)
STEP_EMBED_DIM = 256
KERNEL_SIZE = 5


def parse_image_size(value: Any) -> tuple[int, int]:
    """An `image_sizes` entry, '(W, H)' as the original writes it (or a list), as (H, W)."""
    try:
        parsed = ast.literal_eval(value) if isinstance(value, str) else value
        width, height = (int(v) for v in parsed)
    except (ValueError, TypeError, SyntaxError):
        raise ValueError(f"invalid Diffusion Policy config.json: image size {value!r} is not "
                         f"'(width, height)'") from None
    return height, width


@dataclass(frozen=True)
class DiffusionPolicyConfig:
    """Defaults are DiffusionPolicyConfig's (the original); image_sizes hold (width, height)."""

    action_dim: int = 7
    state_dim: int = 7
    camera_names: tuple[str, ...] = ("primary",)
    image_sizes: tuple[str, ...] = ("(256, 256)",)
    observation_horizon: int = 1
    prediction_horizon: int = 16
    num_inference_timesteps: int = 10
    feature_dimension: int = 64
    num_kp: int = 32
    num_train_timesteps: int = 100
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "squaredcos_cap_v2"
    clip_sample: bool = True
    prediction_type: str = "epsilon"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = [f"{name} must be a positive integer, got {getattr(self, name)!r}"
                    for name in ("action_dim", "state_dim", "prediction_horizon",
                                 "feature_dimension", "num_kp", "num_train_timesteps")
                    if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        if self.observation_horizon != 1:
            problems.append(f"observation_horizon {self.observation_horizon!r} is not supported "
                            f"(the original's inference uses one observation)")
        if len(self.image_sizes) < len(self.camera_names):
            problems.append(f"image_sizes has {len(self.image_sizes)} entries for "
                            f"{len(self.camera_names)} cameras")
        levels = 2 ** (len(DOWN_DIMS) - 1)
        if isinstance(self.prediction_horizon, int) and self.prediction_horizon % levels:
            problems.append(f"prediction_horizon {self.prediction_horizon} must be a multiple of "
                            f"{levels} (the U-Net halves it {len(DOWN_DIMS) - 1} times)")
        if self.beta_schedule not in BETA_SCHEDULES:
            problems.append(f"beta_schedule {self.beta_schedule!r} is not one of {BETA_SCHEDULES}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type {self.prediction_type!r} is not one of "
                            f"{PREDICTION_TYPES}")
        if problems:
            raise ValueError("invalid Diffusion Policy config.json: " + "; ".join(problems))
        self.image_hw  # noqa: B018 - parses every size, raising on a malformed one

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionPolicyConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("camera_names", "image_sizes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["camera_names"] = list(self.camera_names)
        data["image_sizes"] = list(self.image_sizes)
        return {**self.extra, **data}

    @property
    def image_hw(self) -> tuple[tuple[int, int], ...]:
        """(H, W) of each camera's images."""
        return tuple(parse_image_size(s) for s in self.image_sizes[:len(self.camera_names)])

    @property
    def feature_hw(self) -> tuple[tuple[int, int], ...]:
        """(h, w) of each camera's ResNet-18 feature map: every stride-2 stage rounds up."""
        return tuple((math.ceil(h / 32), math.ceil(w / 32)) for h, w in self.image_hw)

    @property
    def cond_dim(self) -> int:
        return self.feature_dimension * len(self.camera_names) + self.state_dim
