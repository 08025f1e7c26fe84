"""What the checkpoint families with a torch network share: the state normalized on the way in,
actions denormalized on the way out, one device, and honest timing on CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from policy_server_ros.checkpoint import DatasetNorm
from policy_server_ros.observation import ObservationError
from policy_server_ros.policies.base import ActionSpec, LoadOptions, Policy
from socket_bridge.wire_types import MetaObs


class NormalizedTorchPolicy(Policy):
    """A torch network between ILStudio's state normalizer and action denormalizer.

    Subclasses set `family` (named in error messages) and implement `preprocess`/`forward`,
    using `state_tensor` for the normalized state; `postprocess` denormalizes (B, T, A).
    """

    family = "policy"

    def __init__(self, model: torch.nn.Module, norm: DatasetNorm, device: torch.device,
                 options: LoadOptions, *, spec: ActionSpec, state_dim: int) -> None:
        self.norm = norm
        self.device = device
        self.options = options
        self.spec = spec
        self.state_dim = state_dim
        model = model.eval().to(device)
        self.model = torch.compile(model) if options.compile else model

    @staticmethod
    def action_spec(config: Any, norm: DatasetNorm, chunk_size: int) -> ActionSpec:
        """The actions' convention: action_dim from the config, ctrl_space/ctrl_type from the
        normalization entry (as the original reads them), gripper_continuous if configured."""
        return ActionSpec(action_dim=config.action_dim, chunk_size=chunk_size,
                          ctrl_space=norm.ctrl_space, ctrl_type=norm.ctrl_type,
                          gripper_continuous=bool(config.extra.get("gripper_continuous", False)))

    def state_tensor(self, batch: MetaObs) -> torch.Tensor:
        """MetaObs.state (B, state_dim), normalized as in training, on the device."""
        state = batch.state
        if state is None or state.shape[-1] != self.state_dim:
            raise ObservationError(f"{self.family} needs MetaObs.state with {self.state_dim} "
                                   f"values, got {None if state is None else state.shape[1:]}")
        state = self.norm.state.normalize(state.astype(np.float32, copy=False))
        return torch.from_numpy(np.ascontiguousarray(state)).to(self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so the engine's forward timing is real

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        return self.norm.action.denormalize(outputs.float().cpu().numpy())

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
