"""Example LeRobot checkpoints (LeRobot 0.4's layout), written without lerobot: config.json with
the fields LeRobot 0.4.4 saves, model.safetensors named as LeRobot names it (the VAE encoder's
training-only weights included), and the processor files with seeded statistics.

Sizes: `act` is LeRobot's ACTConfig defaults (dim 512, 4 encoder and 1 decoder layers, chunk
100) and `diffusion` its DiffusionConfig defaults (U-Net 512/1024/2048, horizon 16, 8 actions
kept, 100 DDPM steps), both on ALOHA's features (14-D state and action, cameras of 480x640);
`small` shrinks every size for tests. Untrained, seeded weights: not for a real robot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CAMERA_NAMES = ("top", "wrist", "left", "right")
COMMON = {"device": "cpu", "use_amp": False, "use_peft": False, "push_to_hub": False,
          "repo_id": None, "private": None, "tags": None, "license": None,
          "pretrained_path": None}
ACT_DEFAULTS = {
    "chunk_size": 100, "n_action_steps": 100, "vision_backbone": "resnet18",
    "pretrained_backbone_weights": None, "replace_final_stride_with_dilation": False,
    "pre_norm": False, "dim_model": 512, "n_heads": 8, "dim_feedforward": 3200,
    "feedforward_activation": "relu", "n_encoder_layers": 4, "n_decoder_layers": 1,
    "use_vae": True, "latent_dim": 32, "n_vae_encoder_layers": 4,
    "temporal_ensemble_coeff": None, "dropout": 0.1, "kl_weight": 10.0, "optimizer_lr": 1e-05,
    "optimizer_weight_decay": 0.0001, "optimizer_lr_backbone": 1e-05}
ACT_SMALL = {"dim_model": 32, "n_heads": 4, "dim_feedforward": 64, "n_encoder_layers": 2,
             "n_decoder_layers": 2, "chunk_size": 10, "n_action_steps": 5,
             "n_vae_encoder_layers": 1}
DIFFUSION_DEFAULTS = {
    "horizon": 16, "n_action_steps": 8, "drop_n_last_frames": 7, "vision_backbone": "resnet18",
    "resize_shape": None, "crop_ratio": 1.0, "crop_shape": None, "crop_is_random": True,
    "pretrained_backbone_weights": None, "use_group_norm": True,
    "spatial_softmax_num_keypoints": 32, "use_separate_rgb_encoder_per_camera": False,
    "down_dims": [512, 1024, 2048], "kernel_size": 5, "n_groups": 8,
    "diffusion_step_embed_dim": 128, "use_film_scale_modulation": True,
    "noise_scheduler_type": "DDPM", "num_train_timesteps": 100,
    "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02,
    "prediction_type": "epsilon", "clip_sample": True, "clip_sample_range": 1.0,
    "num_inference_steps": None, "compile_model": False, "compile_mode": "reduce-overhead",
    "do_mask_loss_for_padding": False, "optimizer_lr": 0.0001,
    "optimizer_betas": [0.95, 0.999], "optimizer_eps": 1e-08, "optimizer_weight_decay": 1e-06,
    "scheduler_name": "cosine", "scheduler_warmup_steps": 500}
DIFFUSION_SMALL = {"down_dims": [32, 64], "diffusion_step_embed_dim": 16, "n_groups": 4,
                   "horizon": 8, "n_action_steps": 4, "spatial_softmax_num_keypoints": 8,
                   "num_inference_steps": 6}
NORMALIZATION = {"act": {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
                 "diffusion": {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}}
EPS = 1e-08


def example_config(kind: str, *, small: bool = False, cameras: int = 1,
                   image_hw: tuple[int, int] = (480, 640), state_dim: int = 14,
                   action_dim: int = 14) -> dict[str, Any]:
    """config.json as LeRobot 0.4.4 saves it for these features and sizes."""
    names = CAMERA_NAMES[:cameras] if cameras <= len(CAMERA_NAMES) else \
        tuple(f"cam{i}" for i in range(cameras))
    inputs = {"observation.state": {"type": "STATE", "shape": [state_dim]}}
    inputs.update({f"observation.images.{n}": {"type": "VISUAL", "shape": [3, *image_hw]}
                   for n in names})
    sizes = {**ACT_DEFAULTS, **(ACT_SMALL if small else {})} if kind == "act" else \
        {**DIFFUSION_DEFAULTS, **(DIFFUSION_SMALL if small else {})}
    first = {"chunk_size", "n_action_steps"} if kind == "act" else {"horizon", "n_action_steps"}
    return {"type": kind, "n_obs_steps": 1 if kind == "act" else 2, "input_features": inputs,
            "output_features": {"action": {"type": "ACTION", "shape": [action_dim]}},
            **COMMON, **{k: sizes[k] for k in sizes if k in first},
            "normalization_mapping": dict(NORMALIZATION[kind]),
            **{k: v for k, v in sizes.items() if k not in first}}


def example_stats(features: dict[str, dict], seed: int) -> dict[str, np.ndarray]:
    """Seeded, plausible statistics, flat as the processors save them (`<feature>.<stat>`)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, feature in features.items():
        shape = (3, 1, 1) if feature["type"] == "VISUAL" else tuple(feature["shape"])
        mean = rng.normal(0.4, 0.2, shape) if feature["type"] == "VISUAL" else \
            rng.normal(0, 1, shape)
        values = {"mean": mean, "std": rng.uniform(0.1, 0.5, shape),
                  "min": mean - rng.uniform(0.5, 2.0, shape),
                  "max": mean + rng.uniform(0.5, 2.0, shape)}
        flat.update({f"{name}.{k}": v.astype(np.float32) for k, v in values.items()})
    return flat


def _write_processors(out: Path, config: dict[str, Any], stats: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file  # noqa: PLC0415

    features = {**config["input_features"], **config["output_features"]}
    norm = {"eps": EPS, "features": features, "norm_map": config["normalization_mapping"]}
    device = {"registry_name": "device_processor", "config": {"device": "cpu",
                                                              "float_dtype": None}}
    pre_state = "policy_preprocessor_step_3_normalizer_processor.safetensors"
    post_state = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    pre = {"name": "policy_preprocessor", "steps": [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}}, device,
        {"registry_name": "normalizer_processor", "config": norm, "state_file": pre_state}]}
    post = {"name": "policy_postprocessor", "steps": [
        {"registry_name": "unnormalizer_processor",
         "config": {**norm, "features": config["output_features"]}, "state_file": post_state},
        device]}
    (out / "policy_preprocessor.json").write_text(json.dumps(pre, indent=2))
    (out / "policy_postprocessor.json").write_text(json.dumps(post, indent=2))
    save_file(stats, str(out / pre_state))
    save_file({k: v for k, v in stats.items() if k.startswith("action.")}, str(out / post_state))


def _vae_encoder(config: dict[str, Any]) -> Any:
    """The training-only VAE encoder of LeRobot's ACT, for its weights' names and shapes."""
    from torch import nn  # noqa: PLC0415

    from policy_server_ros.policies.act.model import (  # noqa: PLC0415
        TransformerEncoderLayer,
        sinusoid_table,
    )

    d = config["dim_model"]
    state = config["input_features"]["observation.state"]["shape"][0]
    action = config["output_features"]["action"]["shape"][0]
    vae = nn.Module()
    vae.vae_encoder = nn.Module()
    vae.vae_encoder.layers = nn.ModuleList(
        TransformerEncoderLayer(d, config["n_heads"], config["dim_feedforward"], 0.0,
                                config["pre_norm"])
        for _ in range(config["n_vae_encoder_layers"]))
    if config["pre_norm"]:
        vae.vae_encoder.norm = nn.LayerNorm(d)
    vae.vae_encoder_cls_embed = nn.Embedding(1, d)
    vae.vae_encoder_robot_state_input_proj = nn.Linear(state, d)
    vae.vae_encoder_action_input_proj = nn.Linear(action, d)
    vae.vae_encoder_latent_output_proj = nn.Linear(d, config["latent_dim"] * 2)
    vae.register_buffer("vae_encoder_pos_enc",
                        sinusoid_table(2 + config["chunk_size"], d))
    return vae


def write_example(out: str | Path, *, kind: str = "act", small: bool = False, cameras: int = 1,
                  image_hw: tuple[int, int] = (480, 640), seed: int = 0,
                  **_unused: Any) -> Path:
    """Write the LeRobot checkpoint folder `out` (created if needed) and return it."""
    from safetensors.torch import save_file  # noqa: PLC0415 - only writing examples needs it

    from policy_server_ros.policies.lerobot.layout import (  # noqa: PLC0415
        read_lerobot_checkpoint,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = example_config(kind, small=small, cameras=cameras, image_hw=image_hw)
    (out / "config.json").write_text(json.dumps(config, indent=4))
    _write_processors(out, config, example_stats(
        {**config["input_features"], **config["output_features"]}, seed))
    save_file({}, str(out / "model.safetensors"))  # a placeholder, so the folder reads
    try:
        _write_weights(out, kind, config, read_lerobot_checkpoint(out), seed)
    except BaseException:
        (out / "model.safetensors").unlink()  # never leave a folder that looks complete
        raise
    return out


def _write_weights(out: Path, kind: str, config: dict[str, Any], ckpt: Any, seed: int) -> None:
    import torch  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    torch.manual_seed(seed)
    if kind == "act":
        from policy_server_ros.policies.lerobot.act import LeRobotACT  # noqa: PLC0415

        model, prefix = LeRobotACT(ckpt), "model."
        extra = _vae_encoder(config).state_dict() if config["use_vae"] else {}
    else:
        from policy_server_ros.policies.lerobot.diffusion import (  # noqa: PLC0415
            DiffusionSizes,
            LeRobotDiffusion,
        )

        model, prefix = LeRobotDiffusion(ckpt, DiffusionSizes.from_checkpoint(ckpt)), \
            "diffusion."
        extra = {}
    generator = torch.Generator().manual_seed(seed + 1)
    tensors = {**model.state_dict(), **extra}
    with torch.no_grad():  # biases and norms away from their init values
        for name, t in tensors.items():
            if t.is_floating_point() and t.ndim == 1:
                t.add_(0.05 * torch.randn(t.shape, generator=generator))
                if "running_var" in name:
                    t.abs_().add_(0.5)
    save_file({prefix + k: v.contiguous() for k, v in sorted(tensors.items())},
              str(out / "model.safetensors"))
