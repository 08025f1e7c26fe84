"""The node's parameters declared with rclpy, from the one table (node_parameters.py), and
checked by the same rules as everywhere else (inputs.check_param): a bad value is one line
naming the parameter, the value and what is allowed (inputs.ParameterError), never an rclpy
traceback.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node

from policy_server_ros.inputs import check_param
from policy_server_ros.node_parameters import NODE_PARAMETERS, ParamSpec


def descriptor(spec: ParamSpec, read_only: bool = True) -> ParameterDescriptor:
    """The description, with choices and range, for `ros2 param describe`. Dynamically typed
    and without rclpy ranges, so that declaring never fails: check_param decides, in
    read_parameters (a managed node must get to `configure` to report a bad value; and
    `-p sync_slop:=1` is 1.0 here, where rclpy would refuse an integer for a double)."""
    extra = f" (one of: {', '.join(spec.choices)})" if spec.choices else ""
    if spec.min is not None:
        extra += f" [{spec.min}, {spec.max}]"
    if spec.allowed:
        extra += f" ({spec.allowed})"
    return ParameterDescriptor(description=spec.description + extra, read_only=read_only,
                               dynamic_typing=True)


def declare_parameters(node: Node, read_only: bool = True) -> None:
    """Declare every node parameter on `node` (an empty list as "not set": it has no type)."""
    for spec in NODE_PARAMETERS:
        default = None if spec.is_list and not spec.default else spec.default
        node.declare_parameter(spec.name, default, descriptor(spec, read_only))


def read_parameters(node: Node) -> dict[str, Any]:
    """Every node parameter's value, checked; ParameterError (one line) for the first bad
    one."""
    values = {}
    for spec in NODE_PARAMETERS:
        try:
            value = node.get_parameter(spec.name).value
        except ParameterUninitializedException:  # an empty list, or `[]` in a params file
            value = None
        values[spec.name] = check_param(spec.name, value)
    return values
