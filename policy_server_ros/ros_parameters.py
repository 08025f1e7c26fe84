"""The node's parameters declared with rclpy, from the one table (node_parameters.py), and
checked by the same rules as everywhere else (inputs.check_param): a bad value is one line
naming the parameter, the value and what is allowed, never an rclpy traceback.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from policy_server_ros.inputs import ParameterError, check_param
from policy_server_ros.node_parameters import NODE_PARAMETERS, ParamSpec


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Read-only, with the description, choices and range `ros2 param describe` shows. Scalars
    are dynamically typed so that check_param decides (e.g. `-p sync_slop:=1` is 1.0, as in the
    params-file readers, where rclpy would refuse an integer for a double)."""
    extra = f" (one of: {', '.join(spec.choices)})" if spec.choices else ""
    out = ParameterDescriptor(description=spec.description + extra, read_only=True,
                              dynamic_typing=not spec.is_list)
    if spec.kind is int and spec.min is not None:
        out.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max),
                                          step=0)]
    elif spec.kind is float and spec.min is not None:
        out.floating_point_range = [FloatingPointRange(from_value=spec.min, to_value=spec.max,
                                                       step=0.0)]
    return out


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every node parameter on `node` and return their checked values; ParameterError
    (one line) for the first bad one."""
    values = {}
    for spec in NODE_PARAMETERS:
        # An empty list has no element type: declare its type instead of a default.
        default = Parameter.Type.STRING_ARRAY if spec.is_list and not spec.default \
            else spec.default
        try:
            value = node.declare_parameter(spec.name, default, descriptor(spec)).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            # Only a given value can be refused; check_param says why in our words.
            given = node._parameter_overrides[spec.name].value
            check_param(spec.name, given)
            raise ParameterError(f"parameter {spec.name}={given!r}: "
                                 f"{str(exc).splitlines()[0]}") from None
        values[spec.name] = check_param(spec.name, value)
    return values
