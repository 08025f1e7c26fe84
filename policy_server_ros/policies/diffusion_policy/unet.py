"""The noise predictor: Diffusion Policy's conditional 1-D U-Net (Chi et al.), as ILStudio has it.

Module names and registration order are the original's (`mid_modules` before
`diffusion_step_encoder`, ...), so pytorch_model.bin loads by name and ema_model.bin's
shadow_params, a list in `parameters()` order, line up with ours.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        emb = torch.exp(torch.arange(half, device=x.device) * -scale)
        emb = x[:, None] * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Downsample1d(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
                                   nn.GroupNorm(n_groups, c_out), nn.Mish())

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks; the condition scales and shifts each channel in between (FiLM)."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int = 3,
                 n_groups: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Conv1dBlock(c_in, c_out, kernel_size, n_groups),
                                     Conv1dBlock(c_out, c_out, kernel_size, n_groups)])
        self.out_channels = c_out
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, c_out * 2),
                                          nn.Unflatten(-1, (-1, 1)))
        self.residual_conv = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond).reshape(cond.shape[0], 2, self.out_channels, 1)
        out = embed[:, 0] * out + embed[:, 1]
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """Noisy actions (B, T, action_dim), diffusion step, condition (B, cond) -> prediction."""

    def __init__(self, input_dim: int, global_cond_dim: int, *,
                 diffusion_step_embed_dim: int = 256,
                 down_dims: tuple[int, ...] = (256, 512, 1024), kernel_size: int = 5,
                 n_groups: int = 8) -> None:
        super().__init__()
        all_dims = [input_dim, *down_dims]
        dsed = diffusion_step_embed_dim
        cond_dim = dsed + global_cond_dim
        in_out = list(itertools.pairwise(all_dims))
        mid = all_dims[-1]

        def block(c_in: int, c_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(c_in, c_out, cond_dim, kernel_size, n_groups)

        # Registration order as in the original (it decides the order of parameters()).
        self.mid_modules = nn.ModuleList([block(mid, mid), block(mid, mid)])
        diffusion_step_encoder = nn.Sequential(SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4),
                                               nn.Mish(), nn.Linear(dsed * 4, dsed))
        down_modules = nn.ModuleList(
            nn.ModuleList([block(c_in, c_out), block(c_out, c_out),
                           Downsample1d(c_out) if i < len(in_out) - 1 else nn.Identity()])
            for i, (c_in, c_out) in enumerate(in_out))
        up_modules = nn.ModuleList(
            nn.ModuleList([block(c_out * 2, c_in), block(c_in, c_in),
                           Upsample1d(c_in) if i < len(in_out) - 1 else nn.Identity()])
            for i, (c_in, c_out) in enumerate(reversed(in_out[1:])))
        final_conv = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size),
                                   nn.Conv1d(down_dims[0], input_dim, 1))
        self.diffusion_step_encoder = diffusion_step_encoder
        self.up_modules = up_modules
        self.down_modules = down_modules
        self.final_conv = final_conv

    def forward(self, sample: Tensor, timestep: Tensor, global_cond: Tensor) -> Tensor:
        """sample (B, T, C); timestep a 0-d or (B,) integer tensor; global_cond (B, cond)."""
        x = sample.moveaxis(-1, -2)
        steps = timestep.reshape(-1).to(sample.device).expand(sample.shape[0])
        feature = torch.cat([self.diffusion_step_encoder(steps), global_cond], dim=-1)
        return unet_pass(self, x, feature).moveaxis(-1, -2)


def unet_pass(unet: nn.Module, x: Tensor, feature: Tensor) -> Tensor:
    """Down, middle, up (with skips) and the final conv over x (B, C, T), every residual block
    conditioned on `feature` (the step embedding and the condition): shared by ILStudio's and
    LeRobot's U-Nets, whose module lists hold the same kinds of blocks under other names."""
    skips = []
    for resnet, resnet2, downsample in unet.down_modules:
        x = resnet2(resnet(x, feature), feature)
        skips.append(x)
        x = downsample(x)
    for mid in unet.mid_modules:
        x = mid(x, feature)
    for resnet, resnet2, upsample in unet.up_modules:
        x = torch.cat((x, skips.pop()), dim=1)
        x = upsample(resnet2(resnet(x, feature), feature))
    return unet.final_conv(x)
