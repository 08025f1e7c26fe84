"""DiffusionPolicy: an ILStudio Diffusion Policy checkpoint behind the engine's Policy interface.

As the original's `MetaPolicy.inference` + `select_action`: the normalized state and the uint8
images (each camera at the size it was trained at) condition a DDIM run of
`num_inference_steps` steps from Gaussian noise (B, prediction_horizon, action_dim); the result is
denormalized. With a seed the noise is `torch.randn` right after seeding, as the original draws it
after `torch.manual_seed(seed)` on the same device, so a seeded request reproduces the original's
actions; requests that the engine batches together share one draw, so for that, serve with
max_batch 1. Without a seed the noise is fresh every call.

Weights: `pytorch_model.bin` (the model's state_dict, `torch.save`d), and with use_ema the
parameters of `ema_model.bin` (diffusers' EMAModel state: `shadow_params`, in parameter order)
copied in, as the original's loader does with `using_ema`. Both are read with
`torch.load(weights_only=True)`: a file that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy_server_ros.checkpoint import Checkpoint, CheckpointError, DatasetNorm, load_dataset_norm
from policy_server_ros.observation import ObservationError
from policy_server_ros.policies.base import LoadOptions
from policy_server_ros.policies.diffusion_policy.config import DiffusionPolicyConfig
from policy_server_ros.policies.diffusion_policy.ddim import DDIMSampler
from policy_server_ros.policies.diffusion_policy.model import DiffusionPolicyNetwork
from policy_server_ros.policies.torch_policy import NormalizedTorchPolicy
from policy_server_ros.policies.torch_runtime import (
    WeightsMismatchError,
    autocast,
    load_state_strict,
    resolve_device,
)
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.policies.diffusion_policy")

WEIGHTS_BIN = "pytorch_model.bin"
EMA_BIN = "ema_model.bin"
ILSTUDIO_INFERENCE_STEPS = 10  # what the original's loader sets, whatever config.json says


def load_tensors(path: Path) -> Any:
    """torch.load with weights_only=True; anything else in the file is a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        named = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if named:
            raise CheckpointError(f"{path} is refused: loading it would need arbitrary "
                                  f"unpickling (it names {named.group(1)}), and only tensors "
                                  f"and plain values are ever loaded; re-save it with "
                                  f"torch.save(model.state_dict())") from None
        detail = text.partition("WeightsUnpickler error:")[2].split("\n\n")
        reason = " ".join(" ".join(detail[:2]).split()) or "unreadable"
        raise CheckpointError(f"cannot read {path}: not a torch.save file of tensors "
                              f"({reason})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path}: {first}") from None


def _copy_ema(model: DiffusionPolicyNetwork, path: Path) -> None:
    """The original's `ema.copy_to(model.parameters())`, checked tensor by tensor."""
    state = load_tensors(path)
    shadow = state.get("shadow_params") if isinstance(state, dict) else None
    params = list(model.parameters())
    if not isinstance(shadow, list) or not all(isinstance(t, torch.Tensor) for t in shadow):
        raise CheckpointError(f"{path} has no 'shadow_params' list of tensors (diffusers' "
                              f"EMAModel.state_dict)")
    if len(shadow) != len(params):
        raise WeightsMismatchError(f"{path} holds {len(shadow)} EMA parameters, config.json's "
                                   f"model has {len(params)}")
    names = [name for name, _ in model.named_parameters()]
    wrong = [f"{names[i]} {tuple(s.shape)} (expects {tuple(p.shape)})"
             for i, (s, p) in enumerate(zip(shadow, params, strict=True)) if s.shape != p.shape]
    if wrong:
        raise WeightsMismatchError(f"{path} does not fit config.json: wrong shapes: "
                                   f"{', '.join(wrong[:8])}")
    with torch.no_grad():
        for s, p in zip(shadow, params, strict=True):
            p.copy_(s)


class DiffusionPolicy(NormalizedTorchPolicy):
    family = "Diffusion Policy"

    def __init__(self, model: DiffusionPolicyNetwork, norm: DatasetNorm, device: torch.device,
                 options: LoadOptions) -> None:
        config = model.config
        self.config = config
        super().__init__(model, norm, device, options,
                         spec=self.action_spec(config, norm, config.prediction_horizon),
                         state_dim=config.state_dim)
        self.camera_names = config.camera_names
        self.seed = options.seed
        self.sampler = DDIMSampler(config, options.num_inference_steps, device)

    def preprocess(self, batch: MetaObs) -> tuple[torch.Tensor, torch.Tensor | None]:
        state = self.state_tensor(batch)
        cfg = self.config
        if not cfg.camera_names:
            return state, None
        image = batch.image
        sizes = cfg.image_hw
        if image is None or image.shape[1:3] != (len(sizes), 3) or \
                any(image.shape[3:] != hw for hw in sizes):
            want = ", ".join(f"{name} {h}x{w}" for name, (h, w) in zip(cfg.camera_names, sizes,
                                                                        strict=True))
            raise ObservationError(
                f"Diffusion Policy needs MetaObs.image of shape (K={len(sizes)}, 3, H, W) at the "
                f"trained sizes ({want}), got {None if image is None else image.shape[1:]}")
        if image.dtype != np.uint8:
            raise ObservationError(f"MetaObs.image must be uint8 (0-255), got {image.dtype}")
        return state, torch.from_numpy(np.ascontiguousarray(image)).to(self.device)

    def initial_noise(self, batch: int) -> torch.Tensor:
        shape = (batch, self.config.prediction_horizon, self.config.action_dim)
        if self.seed is None:
            return torch.randn(shape, device=self.device)
        generator = torch.Generator(self.device).manual_seed(self.seed)
        return torch.randn(shape, generator=generator, device=self.device)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        state, images = inputs
        noise = self.initial_noise(state.shape[0])
        with torch.inference_mode(), autocast(self.device, self.options.precision):
            actions = self.model(state, images, noise, self.sampler)
        self.synchronize()
        return actions

    def example_observation(self) -> MetaObs | None:
        sizes = self.config.image_hw
        if len(set(sizes)) > 1:
            return None  # one MetaObs cannot hold cameras of different sizes; skip warm-up
        image = np.zeros((len(sizes), 3, *sizes[0]), np.uint8) if sizes else None
        return MetaObs(state=np.zeros(self.config.state_dim, np.float32), image=image)


def load_checkpoint(checkpoint: Checkpoint, options: LoadOptions) -> DiffusionPolicy:
    """Read config.json, pytorch_model.bin (and ema_model.bin with use_ema) and normalization."""
    config = DiffusionPolicyConfig.from_dict(checkpoint.config)
    if not options.num_inference_steps:  # 0: the original's loader's choice
        options = dataclasses.replace(options, num_inference_steps=ILSTUDIO_INFERENCE_STEPS)
    weights = checkpoint.require(WEIGHTS_BIN)
    ema = checkpoint.require(EMA_BIN) if options.use_ema else None
    DDIMSampler(config, options.num_inference_steps)  # a bad step count fails before loading
    norm = load_dataset_norm(checkpoint.path, options.dataset_id, config.state_dim,
                             config.action_dim, options.min_std)
    device = resolve_device(options.device)
    model = DiffusionPolicyNetwork(config)
    state = load_tensors(weights)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights} must hold a state_dict (names to tensors)")
    load_state_strict(model, state, weights)
    if ema is not None:
        _copy_ema(model, ema)
    log.info("Loaded Diffusion Policy from %s: %d camera(s) %s, state %d, action %d, horizon %d, "
             "%d DDIM steps, %s weights, seed %s, dataset %s (%s/%s), device %s",
             checkpoint.path, len(config.camera_names), list(config.camera_names),
             config.state_dim, config.action_dim, config.prediction_horizon,
             options.num_inference_steps, "EMA" if ema else "model", options.seed,
             norm.dataset_id, norm.ctrl_space, norm.ctrl_type, device)
    return DiffusionPolicy(model, norm, device, options)
