"""DDIM sampling (deterministic, eta = 0), computed as diffusers' DDIMScheduler computes it.

The original configures DDIMScheduler with set_alpha_to_one=True, steps_offset=0, "leading"
timestep spacing and no thresholding; this reproduces that arithmetic in float32, operation for
operation, so a seeded run matches the original to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from policy_server_ros.policies.diffusion_policy.config import DiffusionPolicyConfig

MAX_BETA = 0.999


def betas_for(config: DiffusionPolicyConfig) -> Tensor:
    """The training noise schedule, float32 (num_train_timesteps,)."""
    n = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, n, dtype=torch.float32)
    if config.beta_schedule == "scaled_linear":
        return torch.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, n,
                              dtype=torch.float32) ** 2

    def alpha_bar(t: float) -> float:  # squaredcos_cap_v2: the cosine schedule
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), MAX_BETA)
                         for i in range(n)], dtype=torch.float32)


class DDIMSampler:
    """`steps` denoising steps from pure noise; `step` is one DDIMScheduler.step."""

    def __init__(self, config: DiffusionPolicyConfig, steps: int,
                 device: torch.device | str = "cpu") -> None:
        n = config.num_train_timesteps
        if not 1 <= steps <= n:
            raise ValueError(f"num_inference_steps must be between 1 and the "
                             f"{n} training timesteps of config.json, got {steps}")
        self.config = config
        alphas_cumprod = torch.cumprod(1.0 - betas_for(config), dim=0)
        stride = n // steps
        timesteps = (np.arange(0, steps) * stride).round()[::-1].copy().astype(np.int64)
        self.timesteps = torch.from_numpy(timesteps).to(device)
        one = torch.tensor(1.0)
        # Per step: (alpha_prod_t, alpha_prod_t_prev) as float32 0-d tensors on the device.
        self._alphas = [(alphas_cumprod[t].to(device),
                         (alphas_cumprod[t - stride] if t - stride >= 0 else one).to(device))
                        for t in timesteps.tolist()]

    def step(self, index: int, model_output: Tensor, sample: Tensor) -> Tensor:
        """The sample one step less noisy, after the `index`-th timestep."""
        alpha_prod_t, alpha_prod_t_prev = self._alphas[index]
        beta_prod_t = 1 - alpha_prod_t
        kind = self.config.prediction_type
        if kind == "epsilon":
            pred_original = (sample - beta_prod_t ** 0.5 * model_output) / alpha_prod_t ** 0.5
            pred_epsilon = model_output
        elif kind == "sample":
            pred_original = model_output
            pred_epsilon = (sample - alpha_prod_t ** 0.5 * pred_original) / beta_prod_t ** 0.5
        else:  # v_prediction
            pred_original = alpha_prod_t ** 0.5 * sample - beta_prod_t ** 0.5 * model_output
            pred_epsilon = alpha_prod_t ** 0.5 * model_output + beta_prod_t ** 0.5 * sample
        if self.config.clip_sample:
            bound = getattr(self.config, "clip_sample_range", 1.0)  # LeRobot's is configurable
            pred_original = pred_original.clamp(-bound, bound)
        direction = (1 - alpha_prod_t_prev) ** 0.5 * pred_epsilon
        return alpha_prod_t_prev ** 0.5 * pred_original + direction
