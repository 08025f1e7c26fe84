"""ACT in plain PyTorch: shapes, and layer math checked against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from act_fixtures import IMAGE_HW, observation, small_checkpoint
from torch import nn

from policy_server_ros.observation import as_batch
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.policies.act.config import ACTConfig
from policy_server_ros.policies.act.model import (
    DETRVAE,
    PositionEmbeddingSine,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)


@pytest.mark.parametrize("cameras", [1, 2])
@pytest.mark.parametrize("batch", [None, 3])
def test_output_shapes(tmp_path, cameras: int, batch: int | None) -> None:
    policy = load_policy(small_checkpoint(tmp_path / "c", cameras), LoadOptions(device="cpu"))
    actions = policy.predict(as_batch(observation(cameras, batch=batch))[0])
    assert actions.shape == (batch or 1, 10, 14) and actions.dtype == np.float32
    assert np.isfinite(actions).all()


def test_every_camera_contributes(tmp_path) -> None:
    # (Swapping cameras changes nothing: as in the original, every camera gets the same position
    # embedding, so camera identity is not encoded. Changing one camera's picture must matter.)
    policy = load_policy(small_checkpoint(tmp_path / "c", 2), LoadOptions(device="cpu"))
    obs = observation(2)
    base = policy.predict(as_batch(obs)[0])
    for camera in (0, 1):
        changed = observation(2)
        changed.image[camera] = 255 - changed.image[camera]
        assert not np.allclose(policy.predict(as_batch(changed)[0]), base)


def test_wrong_camera_count_is_a_clear_error(tmp_path) -> None:
    policy = load_policy(small_checkpoint(tmp_path / "c", 2), LoadOptions(device="cpu"))
    with pytest.raises(ValueError,
                       match=r"image of shape \(K=2, 3, H, W\).*\['primary', 'wrist'\]"):
        policy.predict(as_batch(observation(1))[0])


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_layer_matches_torch_without_position(pre_norm: bool) -> None:
    torch.manual_seed(0)
    ours = TransformerEncoderLayer(16, 2, 32, 0.0, pre_norm).eval()
    reference = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, norm_first=pre_norm).eval()
    reference.load_state_dict(ours.state_dict())  # same parameter names
    src = torch.randn(7, 3, 16)
    torch.testing.assert_close(ours(src, torch.zeros_like(src)), reference(src))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_layer_matches_torch_without_position(pre_norm: bool) -> None:
    torch.manual_seed(1)
    ours = TransformerDecoderLayer(16, 2, 32, 0.0, pre_norm).eval()
    reference = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, norm_first=pre_norm).eval()
    reference.load_state_dict(ours.state_dict())
    tgt, memory = torch.randn(5, 2, 16), torch.randn(9, 2, 16)
    torch.testing.assert_close(
        ours(tgt, memory, torch.zeros_like(memory), torch.zeros_like(tgt)),
        reference(tgt, memory))


def test_position_embedding_matches_detr_formula() -> None:
    # DETR's PositionEmbeddingSine(normalize=True), written out with cumsum as published.
    feats, h, w = 8, 3, 5
    ones = torch.ones(1, h, w)
    y = ones.cumsum(1) / (h + 1e-6) * 2 * math.pi
    x = ones.cumsum(2) / (w + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(feats) // 2) / feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    expected = torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
    torch.testing.assert_close(PositionEmbeddingSine(feats)(torch.zeros(2, 4, h, w)), expected)


def test_multi_camera_features_sit_side_by_side() -> None:
    # With one camera's image repeated, the two halves of the token sequence are equal.
    torch.manual_seed(0)
    config = ACTConfig(camera_names=("a", "b"), num_queries=4, hidden_dim=16, nheads=2,
                       enc_layers=1, dec_layers=1, dim_feedforward=16)
    model = DETRVAE(config).eval()
    captured = {}
    def capture(_module: nn.Module, args: tuple) -> None:
        captured["src"] = args[0]

    model.transformer.encoder.register_forward_pre_hook(capture)
    image = torch.randint(0, 256, (1, 1, 3, *IMAGE_HW), dtype=torch.uint8)
    with torch.inference_mode():
        model(torch.zeros(1, 14), image.repeat(1, 2, 1, 1, 1))
    src = captured["src"][2:, 0]  # drop latent and proprio tokens; (h * 2w, d)
    h, w = IMAGE_HW[0] // 32, IMAGE_HW[1] // 32
    grid = src.reshape(h, 2 * w, -1)
    torch.testing.assert_close(grid[:, :w], grid[:, w:])
