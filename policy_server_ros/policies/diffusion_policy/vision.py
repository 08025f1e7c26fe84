"""Per-camera image encoders: robomimic's ResNet18Conv with GroupNorm, SpatialSoftmax keypoints.

ILStudio builds each camera's encoder from robomimic: torchvision's ResNet-18 without its pooling
head (`nets.0` conv1 ... `nets.7` layer4) with every BatchNorm replaced by GroupNorm of 16
channels per group, then a 1x1 conv to `num_kp` keypoint maps whose spatial softmax gives each
keypoint's expected (x, y) in [-1, 1], then a linear projection.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from policy_server_ros.policies.act.model import BasicBlock

CHANNELS_PER_GROUP = 16


def group_norm(channels: int) -> nn.GroupNorm:
    """replace_bn_with_gn's replacement for a BatchNorm2d of `channels`."""
    return nn.GroupNorm(channels // CHANNELS_PER_GROUP, channels)


def resnet18_trunk(norm: Callable[[int], nn.Module] = group_norm) -> nn.Sequential:
    """(N, 3, H, W) -> (N, 512, ceil(H/32), ceil(W/32)), indexed as robomimic's `nets` (and as
    LeRobot's `nn.Sequential(*children[:-2])`); `norm` builds every normalization layer."""

    def layer(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(c_in, c_out, stride, norm=norm),
                             BasicBlock(c_out, c_out, norm=norm))

    return nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), norm(64),
                         nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
                         layer(64, 64, 1), layer(64, 128, 2), layer(128, 256, 2),
                         layer(256, 512, 2))


class ResNet18Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.nets = resnet18_trunk()

    def forward(self, x: Tensor) -> Tensor:
        return self.nets(x)


class SpatialSoftmax(nn.Module):
    """(N, C, h, w) features -> (N, num_kp, 2) expected keypoint coordinates."""

    def __init__(self, channels: int, height: int, width: int, num_kp: int,
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.nets = nn.Conv2d(channels, num_kp, kernel_size=1)
        self.num_kp, self.height, self.width = num_kp, height, width
        self.register_buffer("temperature", torch.ones(1) * temperature)
        pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, width), np.linspace(-1.0, 1.0, height))
        self.register_buffer("pos_x", torch.from_numpy(pos_x.reshape(1, -1)).float())
        self.register_buffer("pos_y", torch.from_numpy(pos_y.reshape(1, -1)).float())

    def forward(self, features: Tensor) -> Tensor:
        logits = self.nets(features).reshape(-1, self.height * self.width)
        attention = F.softmax(logits / self.temperature, dim=-1)
        expected_x = torch.sum(self.pos_x * attention, dim=1, keepdim=True)
        expected_y = torch.sum(self.pos_y * attention, dim=1, keepdim=True)
        return torch.cat([expected_x, expected_y], 1).view(-1, self.num_kp, 2)
