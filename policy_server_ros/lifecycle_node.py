"""`policy_server_managed`: the policy_server node as a managed (lifecycle) node.

    policy_server_managed --ros-args --params-file config/server.yaml
    ros2 lifecycle set /policy_server configure   # check parameters, load and warm up the model
    ros2 lifecycle set /policy_server activate    # subscribe, publish, serve the socket bridge

The same work as `policy_server` (node.PolicyServerWork), run on transitions: configure checks
the parameters and loads the model (a failure returns FAILURE with the reason logged, and the
node stays unconfigured, ready for another try); activate starts inputs, outputs and the socket
bridge; deactivate stops them and keeps the model; cleanup frees the model; shutdown works from
any state. Parameters can be changed while the node is unconfigured (and only then), so a
failed configure can be fixed with `ros2 param set` and tried again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from policy_server_ros.node import PolicyServerWork, StartupError, spin
from policy_server_ros.node_parameters import BY_NAME


class ManagedPolicyServerNode(PolicyServerWork, LifecycleNode):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("policy_server", **node_kwargs)
        self._init_work(read_only=False)
        self.add_on_set_parameters_callback(self._only_while_unconfigured)

    def _only_while_unconfigured(self, params: list[Parameter]) -> SetParametersResult:
        # Others (rclpy's qos_overrides.*, declared read-only on activate) are not ours to judge.
        if self.engine is None or not any(p.name in BY_NAME for p in params):
            return SetParametersResult(successful=True)
        return SetParametersResult(successful=False, reason=(
            "policy_server parameters change only while unconfigured: deactivate and clean up "
            "first"))

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure_work()
        except StartupError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.activate_work()
        except StartupError as exc:
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate_work()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.cleanup_work()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.active:
            self.deactivate_work()
        self.cleanup_work()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # An exception in a transition: release everything; SUCCESS goes to unconfigured.
        if self.active:
            self.deactivate_work()
        self.cleanup_work()
        return TransitionCallbackReturn.SUCCESS


def main(args: Sequence[str] | None = None) -> int:
    rclpy.init(args=args)
    return spin(ManagedPolicyServerNode())  # declaring parameters never fails; configure checks


if __name__ == "__main__":
    sys.exit(main())
