"""Diffusion Policy's network in plain PyTorch, named as ILStudio's DiffusionPolicyModel.

`nets.policy.{backbones,pools,linears}.<camera>` encode each camera (vision.py) and
`nets.policy.noise_pred_net` is the U-Net (unet.py); the observation feature is every camera's
projected keypoints followed by the normalized state. pytorch_model.bin loads by name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from policy_server_ros.policies.diffusion_policy.config import (
    DOWN_DIMS,
    KERNEL_SIZE,
    STEP_EMBED_DIM,
    DiffusionPolicyConfig,
)
from policy_server_ros.policies.diffusion_policy.ddim import DDIMSampler
from policy_server_ros.policies.diffusion_policy.unet import ConditionalUnet1D
from policy_server_ros.policies.diffusion_policy.vision import ResNet18Conv, SpatialSoftmax

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_CHANNELS = 512


class DiffusionPolicyNetwork(nn.Module):
    def __init__(self, config: DiffusionPolicyConfig) -> None:
        super().__init__()
        self.config = config
        cameras = range(len(config.camera_names))
        pools = [SpatialSoftmax(BACKBONE_CHANNELS, *config.feature_hw[i], config.num_kp)
                 for i in cameras]
        self.nets = nn.ModuleDict({"policy": nn.ModuleDict({
            "backbones": nn.ModuleList(ResNet18Conv() for _ in cameras),
            "pools": nn.ModuleList(pools),
            "linears": nn.ModuleList(nn.Linear(config.num_kp * 2, config.feature_dimension)
                                     for _ in cameras),
            "noise_pred_net": ConditionalUnet1D(
                config.action_dim, config.cond_dim * config.observation_horizon,
                diffusion_step_embed_dim=STEP_EMBED_DIM, down_dims=DOWN_DIMS,
                kernel_size=KERNEL_SIZE),
        })})
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).reshape(3, 1, 1),
                             persistent=False)

    def condition(self, state: Tensor, images: Tensor | None) -> Tensor:
        """The observation feature (B, cond_dim): state normalized, images (B, K, 3, H, W)
        uint8, scaled and ImageNet-normalized here as the original's select_action does."""
        policy = self.nets["policy"]
        features = []
        if len(self.config.camera_names):
            pixels = (images / 255.0 - self.pixel_mean) / self.pixel_std
            for cam, (backbone, pool, linear) in enumerate(zip(
                    policy["backbones"], policy["pools"], policy["linears"], strict=True)):
                keypoints = pool(backbone(pixels[:, cam]))
                features.append(linear(torch.flatten(keypoints, start_dim=1)))
        return torch.cat([*features, state], dim=1)

    def forward(self, state: Tensor, images: Tensor | None, noise: Tensor,
                sampler: DDIMSampler) -> Tensor:
        """Denoise `noise` (B, prediction_horizon, action_dim) into normalized actions."""
        cond = self.condition(state, images)
        actions = noise
        unet = self.nets["policy"]["noise_pred_net"]
        for index, timestep in enumerate(sampler.timesteps):
            predicted = unet(actions, timestep, cond).float()
            actions = sampler.step(index, predicted, actions)
        return actions
