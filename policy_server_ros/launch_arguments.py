"""Launch arguments for the node's parameters, without launch itself: how an argument's text
becomes a parameter value, and the params file that carries them to the node. The launch file
(launch/server.launch.py) declares one argument per entry of the parameter table, so the two
cannot drift, and hands what the user gave to `overrides_file`. No launch or rclpy here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from policy_server_ros.inputs import ParameterError, check_param
from policy_server_ros.node_parameters import BY_NAME, ParamSpec

# A launch argument with this text was not given: the params file's value (or the default)
# stands. `ros2 launch` rejects `name:=` with nothing after it, so the empty text cannot be a
# value anyway; an empty string is spelled `name:="''"` and an empty list `name:="[]"`.
NOT_GIVEN = ""


def argument_description(spec: ParamSpec) -> str:
    """The launch argument's help text: the parameter's description and its default."""
    extra = f" (one of: {', '.join(spec.choices)})" if spec.choices else ""
    default = yaml.safe_dump(spec.default, default_flow_style=True).strip().removesuffix("...")
    return (f"{spec.description}{extra}. Node default: {default.strip()}; not given: "
            f"params_file's value. Empty string: \"''\", empty list: \"[]\"")


def argument_value(name: str, text: str) -> Any:
    """A launch argument's text as the value of node parameter `name`: read as YAML, as
    `-p name:=value` reads it, except that a string parameter keeps text that YAML would read
    as another type (`frame_id:=12` is the string '12'). ParameterError (one line naming the
    parameter) for a value the node would refuse."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"launch argument {name}:={text!r} is not valid YAML: "
                             f"{str(exc).splitlines()[0]}") from exc
    spec = BY_NAME.get(name)
    if spec is not None and spec.kind is str and not isinstance(value, str | None):
        value = text
    return check_param(name, value)


def overrides_file(values: Mapping[str, Any], node_name: str = "policy_server",
                   directory: Path | None = None) -> Path:
    """A params file holding `values` for the node in any namespace. The launch file passes
    this instead of a dict because launch_ros cannot pass an empty list (it has no element
    type; launch_ros raises TypeError), while the node reads `[]` from a file as empty."""
    with tempfile.NamedTemporaryFile("w", prefix=f"{node_name}_launch_", suffix=".yaml",
                                     dir=directory, delete=False) as out:
        yaml.safe_dump({f"/**/{node_name}": {"ros__parameters": dict(values)}}, out,
                       default_flow_style=False, sort_keys=False)
    return Path(out.name)
