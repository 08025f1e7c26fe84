"""ACT (Action Chunking with Transformers) inference in plain PyTorch.

Module and parameter names follow the original ACT / ILStudio code exactly (a ResNet-18 under
`backbones.0.0.body`, `transformer.encoder/decoder`, the CVAE's `encoder`, `cls_embed`, ...), so a
`model.safetensors` trained there loads with strict key matching once its `model.` prefix is
removed. Inference uses the CVAE prior: the latent is zero, so the CVAE encoder's weights are
loaded but never run.

Two behaviours of the original are reproduced on purpose:
* its decoder returns every layer's (normed) output and the head reads index 0, so only the
  first decoder layer affects actions: we build and run just that layer, and the loader accepts
  checkpoints with or without the weights of the others;
* all cameras share one backbone, and their feature maps are concatenated along the width, each
  with its own copy of the sine position embedding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from policy_server_ros.policies.act.config import LATENT_DIM, ACTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_CHANNELS = 512  # ResNet-18 layer4


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all stored as buffers."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block; `norm` builds its normalization layers (ACT keeps
    frozen batch norm, Diffusion Policy group norm)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1,
                 norm: Callable[[int], nn.Module] = FrozenBatchNorm2d) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = norm(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Body(nn.Module):
    """ResNet-18 up to layer4 (no pooling head): (N, 3, H, W) -> (N, 512, H/32, W/32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = ResNet18Body()

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class PositionEmbeddingSine(nn.Module):
    """DETR's normalized sine embedding of (row, column) positions; has no parameters."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, features: Tensor) -> Tensor:
        """(N, C, h, w) -> (1, 2 * num_pos_feats, h, w), float32."""
        h, w = features.shape[-2:]
        device = features.device
        eps = 1e-6
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        y = (y / (h + eps) * self.scale)[:, None].expand(h, w)
        x = (x / (w + eps) * self.scale)[None, :].expand(h, w)
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor")
                                     / self.num_pos_feats)
        pos_x = x[..., None] / dim_t
        pos_y = y[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=3).flatten(2)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=3).flatten(2)
        return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)[None]


class TransformerEncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 pre_norm: bool, *, activation: Callable[[Tensor], Tensor] = torch.relu
                 ) -> None:
        super().__init__()
        self.activation = activation  # the feed-forward's (LeRobot: relu, gelu or glu)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        if self.pre_norm:
            x = self.norm1(src)
            q = x + pos
            src = src + self.self_attn(q, q, value=x, need_weights=False)[0]
            return src + self._feed_forward(self.norm2(src))
        q = src + pos
        src = self.norm1(src + self.self_attn(q, q, value=src, need_weights=False)[0])
        return self.norm2(src + self._feed_forward(src))


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 pre_norm: bool, *, activation: Callable[[Tensor], Tensor] = torch.relu
                 ) -> None:
        super().__init__()
        self.activation = activation
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        key = memory + pos
        if self.pre_norm:
            x = self.norm1(tgt)
            q = x + query_pos
            tgt = tgt + self.self_attn(q, q, value=x, need_weights=False)[0]
            x = self.norm2(tgt)
            tgt = tgt + self.multihead_attn(x + query_pos, key, value=memory,
                                            need_weights=False)[0]
            x = self.norm3(tgt)
            return tgt + self.linear2(self.dropout(self.activation(self.linear1(x))))
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, q, value=tgt, need_weights=False)[0])
        attended = self.multihead_attn(tgt + query_pos, key, value=memory, need_weights=False)[0]
        tgt = self.norm2(tgt + attended)
        return self.norm3(tgt + self.linear2(self.dropout(self.activation(self.linear1(tgt)))))


class TransformerEncoder(nn.Module):
    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(config.hidden_dim, config.nheads, config.dim_feedforward,
                                    config.dropout, config.pre_norm)
            for _ in range(config.enc_layers))
        self.norm = nn.LayerNorm(config.hidden_dim) if config.pre_norm else None

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """Only layer 0: the original's head reads the first layer's normed output (see above)."""

    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TransformerDecoderLayer(
            config.hidden_dim, config.nheads, config.dim_feedforward, config.dropout,
            config.pre_norm)])
        self.norm = nn.LayerNorm(config.hidden_dim)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        return self.norm(self.layers[0](tgt, memory, pos, query_pos))


class Transformer(nn.Module):
    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(config)
        self.decoder = TransformerDecoder(config)


def sinusoid_table(positions: int, dim: int) -> Tensor:
    """The CVAE encoder's fixed position table, (1, positions, dim)."""
    position = torch.arange(positions, dtype=torch.float64)[:, None]
    exponent = 2 * torch.div(torch.arange(dim), 2, rounding_mode="floor") / dim
    table = position / torch.pow(10000.0, exponent.to(torch.float64))[None, :]
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.float()[None]


class DETRVAE(nn.Module):
    """The ACT network. `forward` runs inference from the prior (latent z = 0)."""

    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.config = config
        self.transformer = Transformer(config)
        self.backbones = nn.ModuleList(
            [nn.Sequential(Backbone(), PositionEmbeddingSine(d // 2))])
        self.input_proj = nn.Conv2d(BACKBONE_CHANNELS, d, kernel_size=1)
        self.input_proj_robot_state = nn.Linear(config.state_dim, d)
        self.query_embed = nn.Embedding(config.num_queries, d)
        self.additional_pos_embed = nn.Embedding(2, d)  # for the latent and proprio tokens
        self.latent_out_proj = nn.Linear(LATENT_DIM, d)
        self.action_head = nn.Linear(d, config.action_dim)
        self.is_pad_head = nn.Linear(d, 1)
        # The CVAE encoder: needed to load checkpoints, never run at inference.
        self.encoder = TransformerEncoder(config)
        self.cls_embed = nn.Embedding(1, d)
        self.encoder_action_proj = nn.Linear(config.action_dim, d)
        self.encoder_joint_proj = nn.Linear(config.state_dim, d)
        self.latent_proj = nn.Linear(d, LATENT_DIM * 2)
        self.register_buffer("pos_table", sinusoid_table(config.num_queries + 2, d))
        mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def forward(self, state: Tensor, images: Tensor) -> Tensor:
        """state: (B, state_dim) normalized float; images: (B, K, 3, H, W) uint8 -> actions
        (B, num_queries, action_dim), still normalized."""
        batch, cameras = images.shape[:2]
        backbone, position = self.backbones[0]
        # uint8 -> [0, 1] -> ImageNet-normalized, folded into one affine step on the device.
        pixels = images.flatten(0, 1).to(self.pixel_mean.dtype)
        pixels = ((pixels - self.pixel_mean) / self.pixel_std).contiguous(
            memory_format=torch.channels_last)
        features = self.input_proj(backbone(pixels))  # (B*K, d, h, w)
        _, d, h, w = features.shape
        # Cameras side by side along the width, as torch.cat(per_camera, dim=3) in the original.
        src = features.reshape(batch, cameras, d, h, w).permute(0, 2, 3, 1, 4).reshape(
            batch, d, h, cameras * w)
        pos = position(features).to(src.dtype).repeat(1, 1, 1, cameras)  # (1, d, h, K*w)
        src = src.flatten(2).permute(2, 0, 1)  # (h*K*w, B, d)
        pos = pos.flatten(2).permute(2, 0, 1).expand(-1, batch, -1)
        latent = self.latent_out_proj(state.new_zeros(batch, LATENT_DIM))
        proprio = self.input_proj_robot_state(state)
        src = torch.cat([torch.stack([latent, proprio]), src])
        pos = torch.cat([self.additional_pos_embed.weight[:, None].expand(-1, batch, -1), pos])
        memory = self.transformer.encoder(src, pos)
        query_pos = self.query_embed.weight[:, None].expand(-1, batch, -1)
        hs = self.transformer.decoder(torch.zeros_like(query_pos), memory, pos, query_pos)
        return self.action_head(hs.transpose(0, 1))
