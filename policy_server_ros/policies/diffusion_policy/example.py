"""Example Diffusion Policy checkpoints, written as ILStudio's DiffusionPolicyModel.save_pretrained
writes them: config.json, pytorch_model.bin (torch.save of the state_dict) and ema_model.bin
(diffusers' EMAModel state, its shadow_params differing from the model's), plus the training files.

Sizes: ALOHA's 14-D state and action, prediction horizon 16 (the original's default), one camera
at 480x640 (`cameras`, `image_hw`); `small` only shrinks the images to 64x64 (the U-Net's sizes are
fixed in the original, ~89M parameters, so every checkpoint holds about 360 MB, twice with EMA).
Untrained, seeded weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ILSTUDIO_EXTRA = {"ema_power": 0.75, "transformers_version": "4.45.2"}
CAMERA_NAMES = ("primary", "wrist", "left", "right")


def example_config(small: bool = False, cameras: int = 1,
                   image_hw: tuple[int, int] = (480, 640)) -> Any:
    from policy_server_ros.policies.diffusion_policy.config import (  # noqa: PLC0415
        DiffusionPolicyConfig,
    )

    height, width = (64, 64) if small and image_hw == (480, 640) else image_hw
    names = CAMERA_NAMES[:cameras] if cameras <= len(CAMERA_NAMES) else \
        tuple(f"cam{i}" for i in range(cameras))
    return DiffusionPolicyConfig(action_dim=14, state_dim=14, camera_names=names,
                                 image_sizes=tuple(f"({width}, {height})" for _ in names),
                                 prediction_horizon=16, extra=dict(ILSTUDIO_EXTRA))


def write_example(out: str | Path, *, small: bool = False, cameras: int = 1,
                  image_hw: tuple[int, int] = (480, 640), seed: int = 0, config: Any = None,
                  **_unused: Any) -> Path:
    """Write the checkpoint folder `out` (created if needed) and return it."""
    import torch  # noqa: PLC0415 - only writing examples needs torch here

    from policy_server_ros.checkpoint import CONFIG  # noqa: PLC0415
    from policy_server_ros.example_checkpoint import write_training_files  # noqa: PLC0415
    from policy_server_ros.policies.diffusion_policy.model import (  # noqa: PLC0415
        DiffusionPolicyNetwork,
    )
    from policy_server_ros.policies.diffusion_policy.policy import (  # noqa: PLC0415
        EMA_BIN,
        WEIGHTS_BIN,
    )

    config = config or example_config(small, cameras, image_hw)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = DiffusionPolicyNetwork(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # group norms and biases away from their init values
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    torch.save(model.state_dict(), out / WEIGHTS_BIN)
    shadow = [(p + 0.01 * torch.randn(p.shape, generator=generator)).detach()
              for p in model.parameters()]
    torch.save({"decay": 0.9999, "min_decay": 0.0, "optimization_step": 0,
                "update_after_step": 0, "use_ema_warmup": False, "inv_gamma": 1.0,
                "power": ILSTUDIO_EXTRA["ema_power"], "shadow_params": shadow}, out / EMA_BIN)
    (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    write_training_files(out, "diffusion_policy", config.state_dim, config.action_dim)
    return out
