"""ILStudio's MLP policy network in plain PyTorch, with its config.json keys.

The layer list is built exactly as the original builds it, so `model.safetensors` (saved by
transformers' `save_pretrained`, keys `mlp.<index>.weight|bias`) loads with strict key matching:

    Linear(input_dim, hidden) + activation
    [Dropout if dropout > 0] + Linear(hidden, hidden) + activation      x (num_layers - 2)
    [Dropout if dropout > 0 and num_layers > 1] + Linear(hidden, chunk_size * action_dim)

input_dim is state_dim, plus image_dim when use_camera and image_dim are set: the images are
then flattened (K, C, H, W per row) and concatenated after the state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger("policy_server_ros.policies.mlp")

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}


@dataclass(frozen=True)
class MLPConfig:
    """MLPPolicyConfig's fields, with its defaults."""

    state_dim: int = 14
    action_dim: int = 14
    num_layers: int = 3
    hidden_dim: int = 256
    activation: str = "relu"
    dropout: float = 0.0
    use_camera: bool = False
    image_dim: int | None = None  # flattened K * C * H * W
    chunk_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = [f"{name} must be a positive integer, got {getattr(self, name)!r}"
                    for name in ("state_dim", "action_dim", "num_layers", "hidden_dim",
                                 "chunk_size")
                    if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        if self.image_dim is not None and (not isinstance(self.image_dim, int)
                                           or self.image_dim < 1):
            problems.append(f"image_dim must be a positive integer or null, got "
                            f"{self.image_dim!r}")
        if problems:
            raise ValueError("invalid MLP config.json: " + "; ".join(problems))
        if self.activation.lower() not in ACTIVATIONS:
            # The original falls back to ReLU silently; so do we, but say so.
            log.warning("MLP activation %r is unknown; using relu, as ILStudio does",
                        self.activation)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLPConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **data, "input_dim": self.input_dim}

    @property
    def uses_images(self) -> bool:
        return self.use_camera and self.image_dim is not None

    @property
    def input_dim(self) -> int:
        return self.state_dim + (self.image_dim if self.uses_images else 0)


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS.get(name.lower(), nn.ReLU)()


class MLPNetwork(nn.Module):
    """(B, input_dim) -> (B, chunk_size, action_dim), still normalized."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Linear(config.input_dim, config.hidden_dim),
                                   _activation(config.activation)]
        for _ in range(config.num_layers - 2):
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            layers += [nn.Linear(config.hidden_dim, config.hidden_dim),
                       _activation(config.activation)]
        if config.dropout > 0 and config.num_layers > 1:
            layers.append(nn.Dropout(config.dropout))
        layers.append(nn.Linear(config.hidden_dim, config.chunk_size * config.action_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, state: Tensor, images: Tensor | None = None) -> Tensor:
        """state (B, state_dim) normalized; images (B, K, C, H, W) already scaled, or None."""
        x = state if images is None else torch.cat([state, images.flatten(1)], dim=-1)
        return self.mlp(x).view(x.shape[0], self.config.chunk_size, self.config.action_dim)
