"""Launch the policy_server node.

    ros2 launch policy_server_ros server.launch.py model_name_or_path:=/path/to/checkpoint \
        camera_topics:="[/cam_high/image_raw, /cam_wrist/image_raw]" device:=cuda:0

Parameters come from `params_file` (default: the package's config/server.yaml, which lists every
parameter with its default); a launch argument given on the command line overrides that file's
value, and one left out leaves it alone.
"""

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# (name, type, description): each overrides the node parameter of the same name when given.
ARGUMENTS = [
    ("model_name_or_path", "str", "checkpoint folder (ILStudio layout), builtin:zero or "
                                  "builtin:echo"),
    ("dataset_id", "str", "dataset of normalize.json to use; empty = the first"),
    ("chunk_size", "int", "actions per chunk; 0 = config.json's chunk_size"),
    ("device", "str", "cuda, cuda:N or cpu"),
    ("precision", "str", "fp32, bf16 or fp16"),
    ("camera_topics", "list", "camera topics in the model's camera order, e.g. [/cam/image_raw]"),
    ("depth_topics", "list", "depth image topics"),
    ("joint_state_topic", "str", "sensor_msgs/JointState topic; empty = none"),
    ("joint_names", "list", "joint order of the state vector"),
    ("ee_pose_topic", "str", "end-effector geometry_msgs/PoseStamped topic; empty = none"),
    ("language_topic", "str", "std_msgs/String instruction topic; empty = none"),
    ("required_inputs", "list", "inputs an observation must have, e.g. [cameras, joints]"),
    ("state_inputs", "list", "what the state vector concatenates, e.g. [joints] or [joints, ee]"),
    ("sync_slop", "float", "largest stamp difference (s) within one observation"),
    ("max_observation_age", "float", "observations older than this (s) are not used"),
    ("inference_rate", "float", "inference rate in Hz; 0 = every new complete observation"),
    ("action_joint_names", "list", "joint names of the actions; set to publish JointTrajectory"),
    ("action_period", "float", "time (s) between consecutive actions"),
    ("frame_id", "str", "frame_id of the published chunks"),
    ("socket_bridge_enabled", "bool", "serve the TCP socket protocol too"),
    ("socket_host", "str", "socket bridge address"),
    ("socket_port", "int", "socket bridge port"),
]


def _value(text, kind):
    """A launch argument's text as the parameter's type (as `-p name:=value` would parse)."""
    if kind == "str":
        return text
    value = yaml.safe_load(text)
    if kind == "list":
        return [str(v) for v in (value if isinstance(value, list) else [value])]
    return {"int": int, "float": float, "bool": bool}[kind](value)


def _node(context):
    overrides = {}
    for name, kind, _ in ARGUMENTS:
        text = LaunchConfiguration(name).perform(context)
        if text != "":
            overrides[name] = _value(text, kind)
    params_file = LaunchConfiguration("params_file").perform(context)
    return [Node(package="policy_server_ros", executable="policy_server", name="policy_server",
                 output="screen", emulate_tty=True,
                 parameters=[params_file, overrides] if params_file else [overrides])]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([FindPackageShare("policy_server_ros"), "config",
                                            "server.yaml"]),
        description="YAML file with policy_server parameters; empty = node defaults only")]
    arguments += [DeclareLaunchArgument(name, default_value="",
                                        description=f"{description} (empty: from params_file)")
                  for name, _, description in ARGUMENTS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
