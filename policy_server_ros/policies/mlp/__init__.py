"""MLP (ILStudio's policy/mlp): checkpoints whose metadata says `"policy_name": "mlp"`."""

from policy_server_ros.policies.mlp.policy import MLPPolicy, load_checkpoint

__all__ = ["MLPPolicy", "load_checkpoint"]
