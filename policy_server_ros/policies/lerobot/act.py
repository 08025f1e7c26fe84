"""LeRobot's ACT (`"type": "act"`) in plain PyTorch, named as LeRobot's ACT module.

The network differs from ILStudio's ACT (act/model.py) in ways that change actions: every one
of its `n_decoder_layers` runs (LeRobot's default is 1, ILStudio keeps 7 and reads only the
first), the feed-forward activation is configurable, the state and environment-state tokens are
optional, images are normalized by the processor with the dataset's statistics (not inside the
model), and each camera's tokens follow the previous camera's instead of sharing rows. Inference
uses the VAE prior (latent zero); the VAE encoder's weights are in the file but never run.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.policies.act.model import (
    BACKBONE_CHANNELS,
    PositionEmbeddingSine,
    ResNet18Body,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)
from policy_server_ros.policies.base import LoadOptions
from policy_server_ros.policies.lerobot.layout import LeRobotCheckpoint
from policy_server_ros.policies.lerobot.policy import LeRobotPolicy
from policy_server_ros.policies.torch_runtime import load_weights_strict

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
# Weights of the VAE encoder (training only): present in the file, not built here.
VAE_ENCODER = re.compile(r"vae_encoder")


def act_sizes(ckpt: LeRobotCheckpoint) -> dict[str, Any]:
    """config.json's ACT sizes with LeRobot's defaults, checked: one-line errors."""
    c = ckpt.config
    sizes = {"dim_model": c.get("dim_model", 512), "n_heads": c.get("n_heads", 8),
             "dim_feedforward": c.get("dim_feedforward", 3200),
             "n_encoder_layers": c.get("n_encoder_layers", 4),
             "n_decoder_layers": c.get("n_decoder_layers", 1),
             "latent_dim": c.get("latent_dim", 32), "chunk_size": c.get("chunk_size", 100),
             "n_action_steps": c.get("n_action_steps", 100),
             "pre_norm": bool(c.get("pre_norm", False)), "dropout": c.get("dropout", 0.1),
             "activation": c.get("feedforward_activation", "relu")}
    problems = [f"{k} must be a positive integer, got {v!r}" for k, v in sizes.items()
                if k not in ("pre_norm", "dropout", "activation")
                and (not isinstance(v, int) or v < 1)]
    if sizes["activation"] not in ACTIVATIONS:
        problems.append(f"feedforward_activation {sizes['activation']!r} is not one of "
                        f"{sorted(ACTIVATIONS)}")
    if c.get("vision_backbone", "resnet18") != "resnet18" and ckpt.features_of("VISUAL"):
        problems.append(f"vision_backbone {c.get('vision_backbone')!r} is not served (resnet18 "
                        f"is)")
    if c.get("replace_final_stride_with_dilation"):
        problems.append("replace_final_stride_with_dilation is not served")
    if c.get("n_obs_steps", 1) != 1:
        problems.append(f"n_obs_steps {c.get('n_obs_steps')!r} (LeRobot's ACT takes 1)")
    if not ckpt.features_of("VISUAL") and not ckpt.features_of("ENV"):
        problems.append("ACT needs an image or an environment-state input feature")
    if problems:
        raise CheckpointError(f"{ckpt.path}/config.json: " + "; ".join(problems))
    return sizes


class LeRobotACT(nn.Module):
    """LeRobot's `ACT` module for inference: (state, env_state, images) -> normalized actions."""

    def __init__(self, ckpt: LeRobotCheckpoint) -> None:
        super().__init__()
        s = act_sizes(ckpt)
        d = s["dim_model"]
        self.latent_dim, self.chunk_size = s["latent_dim"], s["chunk_size"]
        state = ckpt.features_of("STATE")
        env = ckpt.features_of("ENV")
        self.has_images = bool(ckpt.features_of("VISUAL"))

        def layer(kind: type[nn.Module]) -> nn.Module:
            return kind(d, s["n_heads"], s["dim_feedforward"], s["dropout"], s["pre_norm"],
                        activation=ACTIVATIONS[s["activation"]])

        if self.has_images:
            self.backbone = ResNet18Body()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(layer(TransformerEncoderLayer)
                                            for _ in range(s["n_encoder_layers"]))
        self.encoder.norm = nn.LayerNorm(d) if s["pre_norm"] else nn.Identity()
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(layer(TransformerDecoderLayer)
                                            for _ in range(s["n_decoder_layers"]))
        self.decoder.norm = nn.LayerNorm(d)
        if state:
            self.encoder_robot_state_input_proj = nn.Linear(state[0].shape[0], d)
        if env:
            self.encoder_env_state_input_proj = nn.Linear(env[0].shape[0], d)
        self.encoder_latent_input_proj = nn.Linear(self.latent_dim, d)
        if self.has_images:
            self.encoder_img_feat_input_proj = nn.Conv2d(BACKBONE_CHANNELS, d, kernel_size=1)
        self.encoder_1d_feature_pos_embed = nn.Embedding(1 + len(state) + len(env), d)
        if self.has_images:
            self.encoder_cam_feat_pos_embed = PositionEmbeddingSine(d // 2)
        self.decoder_pos_embed = nn.Embedding(self.chunk_size, d)
        self.action_head = nn.Linear(d, ckpt.action.shape[0])

    def forward(self, state: Tensor | None, env: Tensor | None, images: Tensor | None
                ) -> Tensor:
        """state (B, S), env (B, E) normalized; images (B, K, 3, H, W) normalized float ->
        (B, chunk_size, action_dim), still normalized."""
        first = next(t for t in (images, env, state) if t is not None)
        batch = first.shape[0]
        tokens = [self.encoder_latent_input_proj(first.new_zeros(batch, self.latent_dim))]
        if state is not None:
            tokens.append(self.encoder_robot_state_input_proj(state))
        if env is not None:
            tokens.append(self.encoder_env_state_input_proj(env))
        tokens = torch.stack(tokens)  # (n_1d, B, d)
        pos = self.encoder_1d_feature_pos_embed.weight[:, None]  # (n_1d, 1, d)
        if images is not None:
            cameras = images.shape[1]
            features = self.backbone(images.flatten(0, 1))  # (B*K, 512, h, w)
            cam_pos = self.encoder_cam_feat_pos_embed(features).to(features.dtype)
            features = self.encoder_img_feat_input_proj(features)
            _, d, h, w = features.shape
            # Camera after camera, each row-major: LeRobot's token order.
            features = features.reshape(batch, cameras, d, h * w).permute(1, 3, 0, 2)
            tokens = torch.cat([tokens, features.reshape(cameras * h * w, batch, d)])
            cam_pos = cam_pos.flatten(2).permute(2, 0, 1).repeat(cameras, 1, 1)  # (K*h*w, 1, d)
            pos = torch.cat([pos, cam_pos])
        x = tokens
        for layer in self.encoder.layers:
            x = layer(x, pos)
        memory = self.encoder.norm(x)
        query_pos = self.decoder_pos_embed.weight[:, None]
        out = torch.zeros(self.chunk_size, batch, memory.shape[-1], dtype=pos.dtype,
                          device=memory.device)
        for layer in self.decoder.layers:
            out = layer(out, memory, pos, query_pos)
        return self.action_head(self.decoder.norm(out).transpose(0, 1))


class LeRobotACTPolicy(LeRobotPolicy):
    family = "LeRobot ACT"

    def run_model(self, inputs: dict[str, Tensor | None]) -> Tensor:
        return self.model(inputs["state"], inputs["env"], inputs["images"])


def load_act(ckpt: LeRobotCheckpoint, options: LoadOptions, device: torch.device
             ) -> LeRobotACTPolicy:
    """Build the network from config.json and load model.safetensors (prefix `model.`)."""
    sizes = act_sizes(ckpt)
    model = LeRobotACT(ckpt)
    load_weights_strict(model, ckpt.weights, prefix="model.", ignore=VAE_ENCODER)
    # predict_action_chunk returns the whole chunk; select_action plays n_action_steps of it.
    reply = sizes["n_action_steps"] if sizes["n_action_steps"] < sizes["chunk_size"] else None
    return LeRobotACTPolicy(ckpt, model, device, options, chunk_size=sizes["chunk_size"],
                            reply_steps=reply)
