"""ACTPolicy: an ILStudio ACT checkpoint behind the engine's Policy interface.

Only `state` is normalized on the way in (zscore/minmax/percentile per normalize.json) and
actions are denormalized on the way out; images travel to the device as uint8 and are scaled and
ImageNet-normalized there.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import torch

from policy_server_ros.checkpoint import WEIGHTS, Checkpoint, DatasetNorm, load_dataset_norm
from policy_server_ros.observation import ObservationError
from policy_server_ros.policies.act.config import ACTConfig
from policy_server_ros.policies.act.model import DETRVAE
from policy_server_ros.policies.base import ActionSpec, LoadOptions, Policy
from policy_server_ros.policies.torch_runtime import autocast, load_weights_strict, resolve_device
from socket_bridge.wire_types import MetaObs

log = logging.getLogger("policy_server_ros.policies.act")

class ACTPolicy(Policy):
    def __init__(self, model: DETRVAE, norm: DatasetNorm, device: torch.device,
                 options: LoadOptions, reply_steps: int | None = None) -> None:
        config = model.config
        self.config = config
        self.norm = norm
        self.device = device
        self.options = options
        self.spec = ActionSpec(action_dim=config.action_dim, chunk_size=config.num_queries,
                               ctrl_space=norm.ctrl_space, ctrl_type=norm.ctrl_type,
                               gripper_continuous=bool(config.extra.get("gripper_continuous",
                                                                        False)))
        self.default_reply_steps = reply_steps
        self.camera_names = config.camera_names
        model = model.eval().to(device, memory_format=torch.channels_last)
        self.model = torch.compile(model) if options.compile else model

    def preprocess(self, batch: MetaObs) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        state, image = batch.state, batch.image
        if state is None or state.shape[-1] != cfg.state_dim:
            raise ObservationError(f"ACT needs MetaObs.state with {cfg.state_dim} values, got "
                                   f"{None if state is None else state.shape[1:]}")
        if image is None or image.shape[1:3] != (cfg.num_cameras, 3):
            raise ObservationError(
                f"ACT needs MetaObs.image of shape (K={cfg.num_cameras}, 3, H, W) for cameras "
                f"{list(cfg.camera_names)}, got {None if image is None else image.shape[1:]}")
        if image.dtype != np.uint8:
            raise ObservationError(f"MetaObs.image must be uint8 (0-255), got {image.dtype}")
        state = self.norm.state.normalize(state.astype(np.float32, copy=False))
        return (torch.from_numpy(np.ascontiguousarray(state)).to(self.device),
                torch.from_numpy(np.ascontiguousarray(image)).to(self.device))

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        state, images = inputs
        with torch.inference_mode(), autocast(self.device, self.options.precision):
            actions = self.model(state, images)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so the engine's forward timing is real
        return actions

    def postprocess(self, outputs: torch.Tensor) -> np.ndarray:
        actions = outputs.float().cpu().numpy()
        return self.norm.action.denormalize(actions)

    def example_observation(self) -> MetaObs:
        cfg = self.config
        h, w = self.options.warmup_image_hw
        return MetaObs(state=np.zeros(cfg.state_dim, np.float32),
                       image=np.zeros((cfg.num_cameras, 3, h, w), np.uint8))

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def load_checkpoint(checkpoint: Checkpoint, options: LoadOptions) -> ACTPolicy:
    """Read config.json, weights and normalization of an ACT checkpoint and place it on the
    requested device."""
    config = ACTConfig.from_dict(checkpoint.config)
    norm = load_dataset_norm(checkpoint.path, options.dataset_id, config.state_dim,
                             config.action_dim, options.min_std)
    device = resolve_device(options.device)
    model = DETRVAE(config)
    load_weights_strict(model, checkpoint.require(WEIGHTS), prefix="model.",
                        ignore=_unused_decoder_layers(config))
    reply_steps = config.chunk_size if 0 < config.chunk_size <= config.num_queries else None
    log.info("Loaded ACT from %s: %d camera(s) %s, state %d, action %d, chunk %d, dataset %s "
             "(%s/%s), device %s, %s%s", checkpoint.path, config.num_cameras,
             list(config.camera_names), config.state_dim, config.action_dim, config.num_queries,
             norm.dataset_id, norm.ctrl_space, norm.ctrl_type, device, options.precision,
             ", compiled" if options.compile else "")
    return ACTPolicy(model, norm, device, options, reply_steps)


def _unused_decoder_layers(config: ACTConfig) -> re.Pattern[str]:
    # Decoder layers after the first never affect the output (see model.py): their weights may
    # be in the checkpoint or not, and are not loaded. Only indices the config declares are
    # tolerated; a layer 9 in a 7-layer config is an error.
    indices = "|".join(str(i) for i in range(1, config.dec_layers))
    return re.compile(rf"transformer\.decoder\.layers\.({indices})\." if indices else r"(?!)")

