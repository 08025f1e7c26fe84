"""LeRobot's Diffusion Policy (`"type": "diffusion"`) in plain PyTorch, named as LeRobot's
DiffusionModel (weights prefixed `diffusion.`).

Its parts differ from ILStudio's (diffusion_policy/) where it matters: one image encoder shared by
all cameras unless `use_separate_rgb_encoder_per_camera`, optional resize (bilinear, antialiased)
and center crop before the backbone, SpatialSoftmax over a `pos_grid` buffer, a ReLU after the
keypoint projection, the U-Net's sizes and FiLM scale from config.json, the state first in the
condition, DDPM (LeRobot's default; it adds seeded noise at every step but the last) or DDIM,
and `n_obs_steps` observations per condition.

The server is stateless per request, so the condition repeats the current observation
`n_obs_steps` times: LeRobot's own `select_action` does exactly this on the first call after
`reset()`; later calls of a LeRobot rollout would condition on the previous observations too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.policies.base import LoadOptions
from policy_server_ros.policies.diffusion_policy.ddim import DDIMSampler, betas_for
from policy_server_ros.policies.diffusion_policy.vision import group_norm, resnet18_trunk
from policy_server_ros.policies.lerobot.layout import LeRobotCheckpoint
from policy_server_ros.policies.lerobot.policy import LeRobotPolicy
from policy_server_ros.policies.lerobot.unet import LeRobotUnet1d
from policy_server_ros.policies.torch_runtime import load_weights_strict

BACKBONE_CHANNELS = 512


@dataclasses.dataclass(frozen=True)
class DiffusionSizes:
    """config.json's Diffusion Policy fields, with LeRobot's defaults."""

    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    resize_shape: tuple[int, int] | None = None
    crop_shape: tuple[int, int] | None = None
    use_group_norm: bool = True
    spatial_softmax_num_keypoints: int = 32
    use_separate_rgb_encoder_per_camera: bool = False
    down_dims: tuple[int, ...] = (512, 1024, 2048)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    use_film_scale_modulation: bool = True
    noise_scheduler_type: str = "DDPM"
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    num_inference_steps: int | None = None

    @classmethod
    def from_checkpoint(cls, ckpt: LeRobotCheckpoint) -> DiffusionSizes:
        c = ckpt.config
        values = {f.name: c[f.name] for f in dataclasses.fields(cls) if f.name in c}
        for key in ("resize_shape", "crop_shape", "down_dims"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if values.get("resize_shape") is not None:  # as DiffusionConfig.__post_init__ derives it
            ratio = c.get("crop_ratio", 1.0)
            values["crop_shape"] = None if ratio >= 1.0 else tuple(
                int(s * ratio) for s in values["resize_shape"])
        sizes = cls(**values)
        problems = []
        if c.get("vision_backbone", "resnet18") != "resnet18":
            problems.append(f"vision_backbone {c.get('vision_backbone')!r} is not served "
                            f"(resnet18 is)")
        if sizes.noise_scheduler_type not in ("DDPM", "DDIM"):
            problems.append(f"noise_scheduler_type {sizes.noise_scheduler_type!r} is not DDPM "
                            f"or DDIM")
        if sizes.prediction_type not in ("epsilon", "sample"):
            problems.append(f"prediction_type {sizes.prediction_type!r} is not epsilon or sample")
        if sizes.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            problems.append(f"beta_schedule {sizes.beta_schedule!r} is not served")
        if sizes.horizon % 2 ** len(sizes.down_dims):
            problems.append(f"horizon {sizes.horizon} is not a multiple of "
                            f"{2 ** len(sizes.down_dims)}")
        if not ckpt.features_of("STATE"):
            problems.append("LeRobot's Diffusion Policy needs an observation.state feature")
        if not sizes.n_action_steps <= sizes.horizon - sizes.n_obs_steps + 1:
            problems.append(f"n_action_steps {sizes.n_action_steps} exceeds horizon - "
                            f"n_obs_steps + 1")
        if problems:
            raise CheckpointError(f"{ckpt.path}/config.json: " + "; ".join(problems))
        return sizes

    def steps(self, requested: int) -> int:
        """Denoising steps: the request, else config.json's, else every training step."""
        steps = requested or self.num_inference_steps or self.num_train_timesteps
        if not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be between 1 and the "
                             f"{self.num_train_timesteps} training timesteps of config.json, "
                             f"got {steps}")
        return steps


class SpatialSoftmax(nn.Module):
    """LeRobot's keypoints: (N, C, h, w) -> (N, num_kp, 2) expected (x, y) over `pos_grid`."""

    def __init__(self, channels: int, height: int, width: int, num_kp: int) -> None:
        super().__init__()
        self.nets = nn.Conv2d(channels, num_kp, kernel_size=1)
        self.num_kp, self.hw = num_kp, height * width
        pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, width), np.linspace(-1.0, 1.0, height))
        grid = np.stack([pos_x.reshape(-1), pos_y.reshape(-1)], axis=1)
        self.register_buffer("pos_grid", torch.from_numpy(grid).float())

    def forward(self, features: Tensor) -> Tensor:
        attention = F.softmax(self.nets(features).reshape(-1, self.hw), dim=-1)
        return (attention @ self.pos_grid).view(-1, self.num_kp, 2)


def _feature_hw(height: int, width: int) -> tuple[int, int]:
    for _ in range(5):  # the stride-2 stages of ResNet-18 each round up
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


class RgbEncoder(nn.Module):
    """One image encoder: resize, center crop, ResNet-18 trunk, keypoints, linear, ReLU."""

    def __init__(self, sizes: DiffusionSizes, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.resize, self.crop = sizes.resize_shape, sizes.crop_shape
        norm = group_norm if sizes.use_group_norm else nn.BatchNorm2d
        self.backbone = resnet18_trunk(norm)
        hw = self.crop or self.resize or image_hw
        kp = sizes.spatial_softmax_num_keypoints
        self.pool = SpatialSoftmax(BACKBONE_CHANNELS, *_feature_hw(*hw), kp)
        self.out = nn.Linear(kp * 2, kp * 2)
        self.feature_dim = kp * 2

    def forward(self, x: Tensor) -> Tensor:
        if self.resize is not None:  # torchvision's Resize on a float tensor
            x = F.interpolate(x, size=list(self.resize), mode="bilinear", align_corners=False,
                              antialias=True)
        if self.crop is not None:  # torchvision's center_crop (its Python round, half to even)
            height, width = x.shape[-2:]
            top = round((height - self.crop[0]) / 2.0)
            left = round((width - self.crop[1]) / 2.0)
            x = x[..., top:top + self.crop[0], left:left + self.crop[1]]
        keypoints = self.pool(self.backbone(x))
        return F.relu(self.out(torch.flatten(keypoints, start_dim=1)))


class DDPMSampler:
    """diffusers' DDPMScheduler ("fixed_small" variance, "leading" spacing, no thresholding),
    its per-step scalars precomputed in float32 with the same operations."""

    def __init__(self, sizes: DiffusionSizes, steps: int, device: torch.device) -> None:
        self.config = sizes
        alphas_cumprod = torch.cumprod(1.0 - betas_for(sizes), dim=0)
        stride = sizes.num_train_timesteps // steps
        timesteps = (np.arange(0, steps) * stride).round()[::-1].copy().astype(np.int64)
        self.timesteps = torch.from_numpy(timesteps).to(device)
        one = torch.tensor(1.0)
        self._steps = []
        for i, t in enumerate(timesteps.tolist()):
            prev = int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1
            alpha_t = alphas_cumprod[t]
            alpha_prev = alphas_cumprod[prev] if prev >= 0 else one
            beta_t, beta_prev = 1 - alpha_t, 1 - alpha_prev
            current_alpha = alpha_t / alpha_prev
            current_beta = 1 - current_alpha
            original_coeff = (alpha_prev ** 0.5 * current_beta) / beta_t
            sample_coeff = current_alpha ** 0.5 * beta_prev / beta_t
            variance = torch.clamp((1 - alpha_prev) / (1 - alpha_t) * current_beta, min=1e-20)
            std = variance ** 0.5 if t > 0 else None
            self._steps.append(tuple(v.to(device) if v is not None else None for v in
                                     (alpha_t, beta_t, original_coeff, sample_coeff, std)))

    def step(self, index: int, model_output: Tensor, sample: Tensor,
             generator: torch.Generator | None) -> Tensor:
        alpha_t, beta_t, original_coeff, sample_coeff, std = self._steps[index]
        if self.config.prediction_type == "epsilon":
            original = (sample - beta_t ** 0.5 * model_output) / alpha_t ** 0.5
        else:
            original = model_output
        if self.config.clip_sample:
            bound = self.config.clip_sample_range
            original = original.clamp(-bound, bound)
        prev = original_coeff * original + sample_coeff * sample
        if std is None:
            return prev
        noise = torch.randn(model_output.shape, generator=generator, device=model_output.device,
                            dtype=model_output.dtype)
        return prev + std * noise


class LeRobotDiffusion(nn.Module):
    """LeRobot's DiffusionModel for inference: one observation (repeated n_obs_steps times)
    and initial noise -> the n_action_steps actions LeRobot keeps, still normalized."""

    def __init__(self, ckpt: LeRobotCheckpoint, sizes: DiffusionSizes) -> None:
        super().__init__()
        self.sizes = sizes
        images = ckpt.features_of("VISUAL")
        env = ckpt.features_of("ENV")
        cond = ckpt.features_of("STATE")[0].shape[0] + (env[0].shape[0] if env else 0)
        if images:
            hw = images[0].shape[1:]
            if sizes.use_separate_rgb_encoder_per_camera:
                self.rgb_encoder = nn.ModuleList(RgbEncoder(sizes, hw) for _ in images)
                cond += self.rgb_encoder[0].feature_dim * len(images)
            else:
                self.rgb_encoder = RgbEncoder(sizes, hw)
                cond += self.rgb_encoder.feature_dim * len(images)
        self.unet = LeRobotUnet1d(ckpt.action.shape[0], cond * sizes.n_obs_steps, sizes)

    def condition(self, state: Tensor, env: Tensor | None, images: Tensor | None) -> Tensor:
        """(B, n_obs_steps * cond): per observation step state, camera features, env state."""
        parts = [state]
        if images is not None:
            batch = images.shape[0]
            if isinstance(self.rgb_encoder, nn.ModuleList):
                features = [enc(images[:, k]) for k, enc in enumerate(self.rgb_encoder)]
                parts.append(torch.cat(features, dim=-1))
            else:
                parts.append(self.rgb_encoder(images.flatten(0, 1)).reshape(batch, -1))
        if env is not None:
            parts.append(env)
        step = torch.cat(parts, dim=-1)
        return step.repeat(1, self.sizes.n_obs_steps)

    def forward(self, state: Tensor, env: Tensor | None, images: Tensor | None,
                sampler: DDIMSampler | DDPMSampler, generator: torch.Generator | None
                ) -> Tensor:
        cond = self.condition(state, env, images)
        shape = (state.shape[0], self.sizes.horizon, self.unet.action_dim)
        sample = torch.randn(shape, generator=generator, device=state.device,
                             dtype=torch.float32)
        for index, t in enumerate(sampler.timesteps):
            output = self.unet(sample, t.expand(shape[0]), cond).float()
            if isinstance(sampler, DDPMSampler):
                sample = sampler.step(index, output, sample, generator)
            else:
                sample = sampler.step(index, output, sample)
        start = self.sizes.n_obs_steps - 1
        return sample[:, start:start + self.sizes.n_action_steps]


class LeRobotDiffusionPolicy(LeRobotPolicy):
    family = "LeRobot Diffusion Policy"

    def __init__(self, *args: Any, sampler: DDIMSampler | DDPMSampler, seed: int | None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sampler, self.seed = sampler, seed

    def run_model(self, inputs: dict[str, Tensor | None]) -> Tensor:
        # Seeded: every draw (initial noise, then DDPM's per-step noise) from one generator
        # seeded per call, as LeRobot draws them from torch's global one after manual_seed.
        generator = None if self.seed is None else \
            torch.Generator(self.device).manual_seed(self.seed)
        return self.model(inputs["state"], inputs["env"], inputs["images"], self.sampler,
                          generator)


def load_diffusion(ckpt: LeRobotCheckpoint, options: LoadOptions, device: torch.device
                   ) -> LeRobotDiffusionPolicy:
    sizes = DiffusionSizes.from_checkpoint(ckpt)
    steps = sizes.steps(options.num_inference_steps)
    sampler = (DDPMSampler if sizes.noise_scheduler_type == "DDPM" else DDIMSampler)(
        sizes, steps, device)
    model = LeRobotDiffusion(ckpt, sizes)
    load_weights_strict(model, ckpt.weights, prefix="diffusion.")
    return LeRobotDiffusionPolicy(ckpt, model, device, options, chunk_size=sizes.n_action_steps,
                                  reply_steps=None, sampler=sampler, seed=options.seed)
