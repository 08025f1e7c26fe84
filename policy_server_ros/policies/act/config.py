"""ACT hyperparameters, read from the config.json ILStudio saves next to model.safetensors."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# The CVAE latent size is fixed in the original code, not a config key.
LATENT_DIM = 32


@dataclass(frozen=True)
class ACTConfig:
    """Sizes of the ACT model. Defaults are the ALOHA sim transfer-cube values."""

    state_dim: int = 14
    action_dim: int = 14
    camera_names: tuple[str, ...] = ("primary",)
    num_queries: int = 100  # actions the model predicts per observation (its chunk)
    chunk_size: int = 100
    hidden_dim: int = 512
    nheads: int = 8
    enc_layers: int = 4
    dec_layers: int = 7
    dim_feedforward: int = 3200
    dropout: float = 0.1
    pre_norm: bool = False
    backbone: str = "resnet18"
    dilation: bool = False
    position_embedding: str = "sine"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = []
        for name in ("state_dim", "action_dim", "num_queries", "hidden_dim", "nheads",
                     "enc_layers", "dec_layers", "dim_feedforward"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.camera_names:
            problems.append("camera_names must name at least one camera")
        if self.hidden_dim % self.nheads or self.hidden_dim % 2:
            problems.append(f"hidden_dim {self.hidden_dim} must be even and divisible by "
                            f"nheads {self.nheads}")
        if self.backbone != "resnet18":
            problems.append(f"backbone {self.backbone!r} is not supported (only resnet18)")
        if self.dilation:
            problems.append("dilation is not supported with resnet18 (its basic blocks have none)")
        if self.position_embedding not in ("sine", "v2"):
            problems.append(f"position_embedding {self.position_embedding!r} is not supported "
                            f"(only sine)")
        if problems:
            raise ValueError("invalid ACT config.json: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ACTConfig:
        """Build from config.json's keys; keys ACT inference does not use are kept in `extra`."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        if "camera_names" in values:
            values["camera_names"] = tuple(values["camera_names"])
        if "num_queries" not in values and "chunk_size" in values:
            values["num_queries"] = values["chunk_size"]
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["camera_names"] = list(self.camera_names)
        return {**self.extra, **data}

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)
