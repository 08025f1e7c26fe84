"""Launch arguments for the node's parameters, without launch itself: how an argument's text
becomes a parameter value, and the params file that carries them to the node. The launch file
(launch/server.launch.py) declares one argument per entry of the parameter table, so the two
cannot drift, and hands what the user gave to `overrides_file`. No launch or rclpy here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from policy_server_ros.inputs import ParameterError, check_param, section_applies
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


def node_params_file(params_file: str | None, values: Mapping[str, Any], node: str,
                     directory: Path | None = None) -> Path:
    """One params file for the node with fully qualified name `node`: the sections of
    `params_file` that apply to it (rcl's rules, in file order), then `values` on top.

    One file, not `params_file` plus a second one: rcl does not let `x: []` in a later file
    override `x: [a]` in an earlier one (measured with Kilted), so `name:="[]"` would be lost;
    and not a dict, because launch_ros cannot pass an empty list at all (it has no element type).
    From a file alone, the node reads `[]` as empty. The file is named by its content under
    <tmp>/policy_server_launch, so repeated launches reuse it instead of piling files up."""
    merged: dict[str, Any] = {}
    if params_file:
        try:
            data = yaml.safe_load(Path(params_file).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ParameterError(f"cannot read params_file {params_file}: "
                                 f"{str(exc).splitlines()[0]}") from exc
        for key, section in (data or {}).items() if isinstance(data, dict) else ():
            if isinstance(key, str) and isinstance(section, dict) and section_applies(key, node):
                merged.update(section.get("ros__parameters") or {})
    merged.update(values)
    text = yaml.safe_dump({"/**/" + node.rsplit("/", 1)[-1]: {"ros__parameters": merged}},
                          default_flow_style=False, sort_keys=False)
    folder = (directory or Path(tempfile.gettempdir())) / "policy_server_launch"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)  # atomic: a concurrent launch never reads half a file
    return path
