"""LeRobot checkpoints (LeRobot >= 0.4): ACT and Diffusion Policy, recognised by content.

A folder with config.json holding `"type"` and `input_features` and no policy_metadata.json is
LeRobot's (layout.py; also found in a training step's `pretrained_model/`); `load_folder` reads
it and builds the family named by `type`. No lerobot,
torchvision or diffusers at run time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from policy_server_ros.policies.base import LoadOptions, Policy
from policy_server_ros.policies.lerobot.layout import find_lerobot_folder, read_lerobot_checkpoint

__all__ = ["find_lerobot_folder", "load_folder"]

log = logging.getLogger("policy_server_ros.policies.lerobot")


def load_folder(folder: Path, options: LoadOptions) -> Policy:
    """Load the LeRobot checkpoint in `folder` (what find_lerobot_folder found)."""
    # torch only now: importing the policies package (the CLIs' --help, replay) must not load it.
    from policy_server_ros.policies.torch_runtime import resolve_device  # noqa: PLC0415

    ckpt = read_lerobot_checkpoint(folder)
    device = resolve_device(options.device)
    if ckpt.type == "act":
        from policy_server_ros.policies.lerobot.act import load_act  # noqa: PLC0415

        policy = load_act(ckpt, options, device)
    else:
        from policy_server_ros.policies.lerobot.diffusion import load_diffusion  # noqa: PLC0415

        policy = load_diffusion(ckpt, options, device)
    log.info("Loaded LeRobot %s from %s: cameras %s, state %s, action %d, chunk %d (%d per "
             "reply), normalization %s, actions %s/%s, device %s", ckpt.type, folder,
             list(policy.camera_names), policy.state_feature, policy.spec.action_dim,
             policy.spec.chunk_size, policy.default_reply_steps or policy.spec.chunk_size,
             ckpt.norm_map, policy.spec.ctrl_space, policy.spec.ctrl_type, device)
    return policy
