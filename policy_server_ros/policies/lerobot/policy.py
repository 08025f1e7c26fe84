"""A LeRobot checkpoint behind the engine's Policy interface: LeRobot's feature names mapped
to MetaObs, its processors' normalization around the family's network.

Input mapping (documented in the README):
* `observation.state` <- MetaObs.state; `observation.environment_state` <- MetaObs.state_obj;
* image features <- MetaObs.image cameras: camera k feeds the k-th name of
  `LoadOptions.lerobot_image_features`, by default config.json's image features in their order.
Images arrive as uint8 (B, K, 3, H, W), become float32 in [0, 1] (x / 255, as LeRobot's
robot-side conversion), then each camera is normalized with its own feature's statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.observation import ObservationError
from policy_server_ros.policies.base import ActionSpec, LoadOptions, Policy
from policy_server_ros.policies.lerobot.layout import Feature, LeRobotCheckpoint
from policy_server_ros.policies.lerobot.normalization import FeatureNorm
from policy_server_ros.policies.torch_runtime import autocast
from socket_bridge.wire_types import MetaObs


def camera_features(images: Sequence[Feature], names: Sequence[str]) -> list[int]:
    """For each of config.json's image features, in its order, the MetaObs camera feeding it.

    `names` (lerobot_image_features) lists the feature of each camera in camera order; empty
    means config.json's order. Every image feature must be named exactly once.
    """
    wanted = [f.name for f in images]
    if not names:
        return list(range(len(wanted)))
    if sorted(names) != sorted(wanted):
        raise CheckpointError(f"lerobot_image_features {list(names)} must name each of the "
                              f"checkpoint's image features once, in camera order: {wanted}")
    return [list(names).index(name) for name in wanted]


def check_image_shapes(images: Sequence[Feature]) -> tuple[int, int] | None:
    """(H, W) shared by every image feature; a one-line error naming the odd one out."""
    if not images:
        return None
    first = images[0]
    for feature in images:
        if len(feature.shape) != 3 or feature.shape[0] != 3:
            raise CheckpointError(f"image feature {feature.name} has shape {feature.shape}; "
                                  f"only 3-channel (3, H, W) images are served")
        if feature.shape != first.shape:
            raise CheckpointError(f"image feature {feature.name} has shape {feature.shape} but "
                                  f"{first.name} has {first.shape}; MetaObs carries cameras of "
                                  f"one size")
    return first.shape[1], first.shape[2]


class LeRobotPolicy(Policy):
    """The shared part of LeRobot's families; subclasses give `family` and `run_model`."""

    family = "LeRobot policy"

    def __init__(self, ckpt: LeRobotCheckpoint, model: torch.nn.Module, device: torch.device,
                 options: LoadOptions, *, chunk_size: int, reply_steps: int | None) -> None:
        self.ckpt, self.device, self.options = ckpt, device, options
        self.spec = ActionSpec(action_dim=ckpt.action.shape[0], chunk_size=chunk_size,
                               ctrl_space=options.lerobot_ctrl_space,
                               ctrl_type=options.lerobot_ctrl_type)
        self.default_reply_steps = reply_steps
        images = ckpt.features_of("VISUAL")
        self.image_hw = check_image_shapes(images)
        self.camera_order = camera_features(images, options.lerobot_image_features)
        self.camera_names = tuple(options.lerobot_image_features) or \
            tuple(f.name for f in images)
        states, envs = ckpt.features_of("STATE"), ckpt.features_of("ENV")
        for group in (states, envs):
            if len(group) > 1 or any(len(f.shape) != 1 for f in group):
                raise CheckpointError(f"{ckpt.path}/config.json: expected at most one 1-D "
                                      f"feature of type {group[0].type}, got "
                                      f"{[(f.name, f.shape) for f in group]}")
        self.state, self.env = (states or [None])[0], (envs or [None])[0]
        self.state_feature = (self.state.name, self.state.shape[0]) if self.state else None

        def norm(feature: Feature) -> FeatureNorm:
            return FeatureNorm(feature.name, ckpt.norm_map.get(feature.type, "IDENTITY"),
                               ckpt.stats.get(feature.name), eps=ckpt.eps, shape=feature.shape,
                               device=device)

        self.image_norms = [norm(f) for f in images]
        self.state_norm = norm(self.state) if self.state else None
        self.env_norm = norm(self.env) if self.env else None
        self.action_norm = norm(ckpt.action)
        model = model.eval().to(device)
        self.model = torch.compile(model) if options.compile else model

    def _vector(self, value: Any, feature: Feature, field: str, norm: FeatureNorm) -> Tensor:
        if value is None or value.shape[1:] != feature.shape:
            raise ObservationError(f"{feature.name} (MetaObs.{field}) needs shape "
                                   f"{feature.shape}, got "
                                   f"{None if value is None else tuple(value.shape[1:])}")
        array = np.ascontiguousarray(value, dtype=np.float32)
        return norm.normalize(torch.from_numpy(array).to(self.device))

    def preprocess(self, batch: MetaObs) -> dict[str, Tensor | None]:
        inputs: dict[str, Tensor | None] = {"state": None, "env": None, "images": None}
        if self.state is not None:
            inputs["state"] = self._vector(batch.state, self.state, "state", self.state_norm)
        if self.env is not None:
            inputs["env"] = self._vector(batch.state_obj, self.env, "state_obj", self.env_norm)
        if self.image_hw is not None:
            image = batch.image
            want = (len(self.camera_order), 3, *self.image_hw)
            if image is None or image.shape[1:] != want:
                got = None if image is None else tuple(image.shape[1:])
                raise ObservationError(f"{', '.join(self.camera_names)} (MetaObs.image) need "
                                       f"shape (K, C, H, W) = {want}, got {got}")
            if image.dtype != np.uint8:
                raise ObservationError(f"MetaObs.image must be uint8 (0-255), got {image.dtype}")
            pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
            pixels = pixels[:, self.camera_order].to(torch.float32) / 255
            inputs["images"] = torch.stack(
                [norm.normalize(pixels[:, k]) for k, norm in enumerate(self.image_norms)], dim=1)
        return inputs

    def run_model(self, inputs: dict[str, Tensor | None]) -> Tensor:
        raise NotImplementedError

    def forward(self, inputs: dict[str, Tensor | None]) -> Tensor:
        with torch.inference_mode(), autocast(self.device, self.options.precision):
            actions = self.run_model(inputs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so the engine's forward timing is real
        return actions

    def postprocess(self, outputs: Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.action_norm.unnormalize(outputs.float()).cpu().numpy()

    def example_observation(self) -> MetaObs:
        image = None
        if self.image_hw is not None:
            image = np.zeros((len(self.camera_order), 3, *self.image_hw), np.uint8)
        return MetaObs(
            state=np.zeros(self.state.shape, np.float32) if self.state else None,
            state_obj=np.zeros(self.env.shape, np.float32) if self.env else None, image=image)

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
