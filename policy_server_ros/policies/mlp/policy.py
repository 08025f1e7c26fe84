"""MLPPolicy: an ILStudio MLP checkpoint behind the engine's Policy interface.

As the original's `select_action`: the normalized state, and with `use_camera` the images scaled
to [0, 1] (uint8, or any image whose maximum exceeds 1, is divided by 255) and flattened.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from policy_server_ros.checkpoint import WEIGHTS, Checkpoint, DatasetNorm, load_dataset_norm
from policy_server_ros.observation import ObservationError
from policy_server_ros.policies.base import LoadOptions
from policy_server_ros.policies.mlp.model import MLPConfig, MLPNetwork
from policy_server_ros.policies.torch_policy import NormalizedTorchPolicy
from policy_server_ros.policies.torch_runtime import autocast, load_weights_strict, resolve_device
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.policies.mlp")


class MLPPolicy(NormalizedTorchPolicy):
    family = "MLP"

    def __init__(self, model: MLPNetwork, norm: DatasetNorm, device: torch.device,
                 options: LoadOptions) -> None:
        config = model.config
        self.config = config
        super().__init__(model, norm, device, options,
                         spec=self.action_spec(config, norm, config.chunk_size),
                         state_dim=config.state_dim)

    def preprocess(self, batch: MetaObs) -> tuple[torch.Tensor, torch.Tensor | None]:
        state = self.state_tensor(batch)
        if not self.config.uses_images:
            return state, None
        image = batch.image
        size = None if image is None else int(np.prod(image.shape[1:]))
        if size != self.config.image_dim:
            raise ObservationError(
                f"MLP needs MetaObs.image with K*C*H*W = {self.config.image_dim} values per "
                f"observation (config.json's image_dim), got "
                f"{None if image is None else image.shape[1:]}")
        return state, torch.from_numpy(np.ascontiguousarray(image)).to(self.device)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        state, images = inputs
        if images is not None and (images.dtype == torch.uint8 or images.max() > 1.0):
            images = images.float() / 255.0
        with torch.inference_mode(), autocast(self.device, self.options.precision):
            actions = self.model(state, images)
        self.synchronize()
        return actions

    def example_observation(self) -> MetaObs | None:
        return MetaObs(state=np.zeros(self.config.state_dim, np.float32)) \
            if not self.config.uses_images else None


def load_checkpoint(checkpoint: Checkpoint, options: LoadOptions) -> MLPPolicy:
    """Read config.json, model.safetensors and the normalization of an MLP checkpoint."""
    config = MLPConfig.from_dict(checkpoint.config)
    weights = checkpoint.require(WEIGHTS)
    norm = load_dataset_norm(checkpoint.path, options.dataset_id, config.state_dim,
                             config.action_dim, options.min_std)
    device = resolve_device(options.device)
    model = MLPNetwork(config)
    load_weights_strict(model, weights)
    log.info("Loaded MLP from %s: %d layers of %d (%s), state %d%s, action %d, chunk %d, "
             "dataset %s (%s/%s), device %s", checkpoint.path, config.num_layers,
             config.hidden_dim, config.activation, config.state_dim,
             f" + image {config.image_dim}" if config.uses_images else "", config.action_dim,
             config.chunk_size, norm.dataset_id, norm.ctrl_space, norm.ctrl_type, device)
    return MLPPolicy(model, norm, device, options)
