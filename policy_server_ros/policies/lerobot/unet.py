"""LeRobot's DiffusionConditionalUnet1d: the noise predictor of its Diffusion Policy.

Its building blocks are ILStudio's (diffusion_policy/unet.py: the sinusoidal step embedding and
the Conv1d-GroupNorm-Mish block), but its residual blocks are named `conv1`/`conv2`, FiLM scale
is optional, down/up sampling convs sit directly in the module lists, and every size comes from
config.json, so the module tree (and the weight names) is its own.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from policy_server_ros.policies.diffusion_policy.unet import (
    Conv1dBlock,
    SinusoidalPosEmb,
    unet_pass,
)


class ResidualBlock1d(nn.Module):
    """Two conv blocks; the condition shifts (and with FiLM scale, scales) the channels."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, *, kernel_size: int, n_groups: int,
                 film_scale: bool) -> None:
        super().__init__()
        self.film_scale, self.out_channels = film_scale, c_out
        self.conv1 = Conv1dBlock(c_in, c_out, kernel_size, n_groups)
        self.cond_encoder = nn.Sequential(nn.Mish(),
                                          nn.Linear(cond_dim, c_out * 2 if film_scale else c_out))
        self.conv2 = Conv1dBlock(c_out, c_out, kernel_size, n_groups)
        self.residual_conv = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        out = self.conv1(x)
        embed = self.cond_encoder(cond).unsqueeze(-1)
        if self.film_scale:
            out = embed[:, :self.out_channels] * out + embed[:, self.out_channels:]
        else:
            out = out + embed
        return self.conv2(out) + self.residual_conv(x)


class LeRobotUnet1d(nn.Module):
    """(B, T, action_dim) noisy actions, (B,) timesteps, (B, cond) -> the prediction."""

    def __init__(self, action_dim: int, global_cond_dim: int, sizes: Any) -> None:
        super().__init__()
        self.action_dim = action_dim
        dsed, dims = sizes.diffusion_step_embed_dim, list(sizes.down_dims)
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed))
        in_out = [(action_dim, dims[0]), *itertools.pairwise(dims)]

        def block(c_in: int, c_out: int) -> ResidualBlock1d:
            return ResidualBlock1d(c_in, c_out, dsed + global_cond_dim,
                                   kernel_size=sizes.kernel_size, n_groups=sizes.n_groups,
                                   film_scale=sizes.use_film_scale_modulation)

        last = len(in_out) - 1
        self.down_modules = nn.ModuleList(
            nn.ModuleList([block(c_in, c_out), block(c_out, c_out),
                           nn.Conv1d(c_out, c_out, 3, 2, 1) if i < last else nn.Identity()])
            for i, (c_in, c_out) in enumerate(in_out))
        self.mid_modules = nn.ModuleList([block(dims[-1], dims[-1]), block(dims[-1], dims[-1])])
        self.up_modules = nn.ModuleList(
            nn.ModuleList([block(c_in * 2, c_out), block(c_out, c_out),
                           nn.ConvTranspose1d(c_out, c_out, 4, 2, 1) if i < last else
                           nn.Identity()])
            for i, (c_out, c_in) in enumerate(reversed(in_out[1:])))
        self.final_conv = nn.Sequential(Conv1dBlock(dims[0], dims[0], sizes.kernel_size),
                                        nn.Conv1d(dims[0], action_dim, 1))

    def forward(self, x: Tensor, timestep: Tensor, global_cond: Tensor) -> Tensor:
        x = x.moveaxis(-1, -2)
        feature = torch.cat([self.diffusion_step_encoder(timestep), global_cond], dim=-1)
        return unet_pass(self, x, feature).moveaxis(-1, -2)
