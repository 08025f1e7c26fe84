"""Which topics feed which observation input, and how each message converts: one table for the
node (live topics) and the rosbag evaluator (recorded ones), so both assemble observations the
same way. Also reads the node's parameters without ROS (params YAML + `name:=value` overrides)
for tools that run without a node. No rclpy here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policy_server_ros.node_parameters import BY_NAME, NODE_PARAMETERS, TOPIC_PATTERN, ParamSpec
from policy_server_ros.observation_assembler import AssemblerConfig
from policy_server_ros.ros_conversions import (
    JointOrder,
    compressed_to_chw,
    depth_to_meters,
    image_to_chw,
    pointcloud_xyz,
    pose_to_vector,
)

RCLPY_PARAMETERS = frozenset({"use_sim_time", "qos_overrides", "start_type_description_service"})


class ParameterError(ValueError):
    """A parameter file or override the node would not accept; the message says which."""


@dataclass(frozen=True)
class InputTopic:
    """One subscription: assembler input `name` is fed from `topic` (ROS type `msg_type`)
    through `convert`; `qos` names the parameter holding its QoS. Unstamped inputs (language)
    take the arrival time instead of a header stamp."""

    name: str
    topic: str
    msg_type: str
    convert: Callable[[Any], Any]
    qos: str
    stamped: bool = True


def _language(msg: Any) -> str:
    return str(msg.data)


def input_topics(params: Mapping[str, Any]) -> list[InputTopic]:
    """The node's subscriptions for these parameters, in a fixed order."""
    p = params
    out = []
    for i, topic in enumerate(p["camera_topics"]):
        if topic.endswith("/compressed"):
            out.append(InputTopic(f"camera/{i}", topic, "sensor_msgs/msg/CompressedImage",
                                  compressed_to_chw, "camera_qos"))
        else:
            out.append(InputTopic(f"camera/{i}", topic, "sensor_msgs/msg/Image", image_to_chw,
                                  "camera_qos"))
    out += [InputTopic(f"depth/{i}", topic, "sensor_msgs/msg/Image", depth_to_meters,
                       "camera_qos") for i, topic in enumerate(p["depth_topics"])]
    if p["joint_state_topic"]:
        out.append(InputTopic("joints", p["joint_state_topic"], "sensor_msgs/msg/JointState",
                              JointOrder(p["joint_names"]).positions, "state_qos"))
    if p["ee_pose_topic"]:
        out.append(InputTopic("ee", p["ee_pose_topic"], "geometry_msgs/msg/PoseStamped",
                              pose_to_vector, "state_qos"))
    if p["object_pose_topic"]:
        out.append(InputTopic("object", p["object_pose_topic"], "geometry_msgs/msg/PoseStamped",
                              pose_to_vector, "state_qos"))
    if p["pointcloud_topic"]:
        out.append(InputTopic("pointcloud", p["pointcloud_topic"], "sensor_msgs/msg/PointCloud2",
                              pointcloud_xyz, "state_qos"))
    if p["language_topic"]:
        out.append(InputTopic("language", p["language_topic"], "std_msgs/msg/String", _language,
                              "language_qos", stamped=False))
    return out


EE_POSE_SIZE = 7  # x, y, z, qx, qy, qz, qw


def state_size(state_inputs: Sequence[str], joint_names: Sequence[str]) -> int | None:
    """Length of MetaObs.state these parameters build, or None when it is only known from the
    messages (joints in the state but joint_names empty: the message's own order)."""
    if "joints" in state_inputs and not joint_names:
        return None
    return len(joint_names) * ("joints" in state_inputs) + EE_POSE_SIZE * ("ee" in state_inputs)


def assembler_config(params: Mapping[str, Any]) -> AssemblerConfig:
    """The observation assembler's configuration for these parameters (ValueError if they do
    not make a usable one)."""
    p = params
    return AssemblerConfig(
        cameras=len(p["camera_topics"]), depths=len(p["depth_topics"]),
        has_joints=bool(p["joint_state_topic"]), has_ee=bool(p["ee_pose_topic"]),
        has_object=bool(p["object_pose_topic"]),
        has_pointcloud=bool(p["pointcloud_topic"]), has_language=bool(p["language_topic"]),
        required=tuple(p["required_inputs"]), state_parts=tuple(p["state_inputs"]),
        slop_s=p["sync_slop"], max_age_s=p["max_observation_age"])


# --- the node's parameters without ROS -------------------------------------------------------

def check_param(name: str, value: Any) -> Any:
    """`value` as node parameter `name` takes it (ints widen to float, None is empty);
    ParameterError naming the parameter, the value and what is allowed otherwise."""
    spec = BY_NAME.get(name)
    if spec is None:
        raise ParameterError(f"unknown parameter {name!r}; the node's parameters are: "
                             f"{', '.join(s.name for s in NODE_PARAMETERS)}")
    if spec.is_list:
        if value is None:
            value = []
        if not isinstance(value, list | tuple):
            raise ParameterError(f"parameter {name} must be a list, got {value!r}")
        value = [str(v) for v in value]
        for item in value:
            _check_text(spec, item, value)
        return value
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is str and value is None:
        value = ""
    if type(value) is not spec.kind:
        raise ParameterError(f"parameter {name} must be {spec.kind.__name__}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise ParameterError(f"parameter {name}={value!r} is not one of {list(spec.choices)}")
    if spec.min is not None and not spec.min <= value <= spec.max:
        raise ParameterError(f"parameter {name}={value!r} is outside [{spec.min}, {spec.max}]")
    if spec.kind is str and value:
        _check_text(spec, value, value)
    return value


def _check_text(spec: ParamSpec, item: str, value: Any) -> None:
    """A text value, or one item of a list value: its pattern, or a ROS topic name."""
    if spec.topic and not re.fullmatch(TOPIC_PATTERN, item):
        raise ParameterError(f"parameter {spec.name}={value!r}: {item!r} is not a valid ROS "
                             f"topic name (letters, digits and _ in /-separated tokens, none "
                             f"starting with a digit)")
    if spec.pattern and not re.fullmatch(spec.pattern, item):
        raise ParameterError(f"parameter {spec.name}={value!r} must be {spec.allowed}")


def resolve_topic(name: str, namespace: str = "/", node_name: str = "policy_server") -> str:
    """The absolute name ROS gives topic `name` for a node in `namespace` (relative names join
    the namespace, `~/x` goes under the node's name); how the rosbag tools find the node's
    topics in a bag recorded with absolute names."""
    namespace = "/" + namespace.strip("/")
    if name.startswith("/"):
        return name
    if name == "~" or name.startswith("~/"):
        name = f"{node_name}{name[1:]}"
    return f"{namespace.rstrip('/')}/{name}"


def section_applies(key: str, node: str) -> bool:
    """Whether a params-file section key (`policy_server`, `/robot1/policy_server`,
    `/**/policy_server`, `/**`, `/*/policy_server`) names the node `node` (fully qualified),
    by rcl's rules: `/**` matches any number of namespace levels, `*` exactly one token."""
    if not key.startswith("/"):
        key = "/" + key  # a bare node name means the root namespace
    pattern = re.escape(key).replace(r"/\*\*", "(/[^/]+)*").replace(r"\*", "[^/]+")
    return re.fullmatch(pattern, node) is not None


def load_params_file(path: Path, node: str = "/policy_server") -> dict[str, Any]:
    """The parameters a ROS 2 params YAML gives the node with fully qualified name `node`
    (sections `/**/policy_server:`, `policy_server:`, `/**:` ... with `ros__parameters`, later
    sections winning as in rcl), checked against the node's table."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read params file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"params file {path} is not a mapping of node names")
    found: dict[str, Any] = {}
    matched = False
    for key, section in data.items():
        if isinstance(key, str) and isinstance(section, dict) and section_applies(key, node):
            matched = True
            found.update(section.get("ros__parameters") or {})
    if not matched:
        raise ParameterError(f"params file {path} has no section for the node {node} (e.g. "
                             f"'/**/policy_server:' with 'ros__parameters:')")
    # rclpy's own parameters (per-topic QoS overrides, sim time) are not the node's to check.
    return {name: check_param(name, value) for name, value in found.items()
            if name not in RCLPY_PARAMETERS and not name.startswith("qos_overrides.")}


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`name:=value` items (values in YAML, as `--ros-args -p` reads them)."""
    out = {}
    for item in items:
        name, sep, text = item.partition(":=")
        if not sep:
            raise ParameterError(f"parameter override {item!r} is not name:=value")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ParameterError(f"parameter override {item!r}: {exc}") from exc
        out[name.strip()] = check_param(name.strip(), value)
    return out


def node_params(params_file: Path | None = None, overrides: Iterable[str] = (),
                **values: Any) -> dict[str, Any]:
    """Every node parameter: defaults, then the params file, then `name:=value` overrides,
    then keyword values (skipped when None)."""
    params = {spec.name: spec.default for spec in NODE_PARAMETERS}
    if params_file is not None:
        params.update(load_params_file(params_file))
    params.update(parse_overrides(overrides))
    params.update({k: check_param(k, v) for k, v in values.items() if v is not None})
    return params
