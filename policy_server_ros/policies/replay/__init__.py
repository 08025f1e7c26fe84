"""replay: serve a recorded action trajectory instead of a model (`"policy_name": "replay"`)."""

from policy_server_ros.policies.replay.policy import ReplayPolicy, load_checkpoint

__all__ = ["ReplayPolicy", "load_checkpoint"]
