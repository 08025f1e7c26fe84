"""ACT: checkpoints whose policy_metadata.json says `"policy_name": "act"`."""

from policy_server_ros.policies.act.policy import ACTPolicy, load_checkpoint

__all__ = ["ACTPolicy", "load_checkpoint"]
