"""Diffusion Policy (ILStudio's policy/diffusion_policy): `"policy_name": "diffusion_policy"`."""

from policy_server_ros.policies.diffusion_policy.policy import DiffusionPolicy, load_checkpoint

__all__ = ["DiffusionPolicy", "load_checkpoint"]
