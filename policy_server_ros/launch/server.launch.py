"""Launch the policy_server node.

    ros2 launch policy_server_ros server.launch.py model_name_or_path:=/path/to/checkpoint \
        camera_topics:="[/cam_high/image_raw, /cam_wrist/image_raw]" device:=cuda:0
    ros2 launch policy_server_ros server.launch.py --show-args

Every node parameter is a launch argument of the same name, generated from the node's
parameter table (policy_server_ros/node_parameters.py), so none can be missing. Parameters come
from `params_file` (default: the package's config/server.yaml, which lists every parameter with
its default); an argument given on the command line overrides that file's value, one left out
leaves it alone. Values are read as YAML, as `-p name:=value` reads them: an empty list is
`name:="[]"` and an empty string `name:="''"` (`ros2 launch` rejects `name:=` with nothing after
it). A value the node would refuse stops the launch with one line naming the parameter.

Besides: `namespace`, `remappings` (a YAML mapping of topic names, e.g.
"{joint_states: /arm/joint_states}", relative names resolved in the namespace), `log_level`,
`use_sim_time`, `respawn` and `respawn_delay`; and `managed:=true` to start the lifecycle node
(policy_server_managed), which `autostart` (default true) takes through configure and activate
the way launch_ros drives lifecycle nodes (`autostart:=false` leaves it unconfigured for a
lifecycle manager).
"""

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from policy_server_ros.inputs import ParameterError
from policy_server_ros.launch_arguments import (
    NOT_GIVEN,
    argument_description,
    argument_value,
    node_params_file,
)
from policy_server_ros.node_parameters import NODE_PARAMETERS

NODE_NAME = "policy_server"
LOG_LEVELS = ["debug", "info", "warn", "error", "fatal"]

# (name, default, description): how the node runs, not what it computes.
PROCESS_ARGUMENTS = [
    ("namespace", "", "namespace of the node; relative topic names resolve in it"),
    ("remappings", "{}", "topic remappings as a YAML mapping, e.g. "
                         "\"{joint_states: /arm/joint_states, camera/color/image_raw: /cam}\""),
    ("log_level", "info", "log level of the node (" + ", ".join(LOG_LEVELS) + ")"),
    ("use_sim_time", "false", "take time from /clock (set for simulators and bag replay)"),
    ("respawn", "false", "start the node again when it exits"),
    ("respawn_delay", "2.0", "seconds to wait before respawning"),
    ("managed", "false", "start the managed (lifecycle) node, policy_server_managed"),
    ("autostart", "true", "with managed: configure, then activate, once it is up"),
]


def _yaml(name, text, kind):
    """A process argument's text as `kind`; ParameterError naming the argument otherwise."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is dict and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise ParameterError(f"launch argument {name}:={text!r} must be a "
                             f"{'mapping of topic names' if kind is dict else kind.__name__}")
    return value


def _node(context):
    def text(name):
        return LaunchConfiguration(name).perform(context)

    values = {spec.name: argument_value(spec.name, text(spec.name))
              for spec in NODE_PARAMETERS if text(spec.name) != NOT_GIVEN}
    values["use_sim_time"] = _yaml("use_sim_time", text("use_sim_time"), bool)
    params_file = text("params_file")
    namespace = text("namespace").strip("/")
    node = f"/{namespace}/{NODE_NAME}" if namespace else f"/{NODE_NAME}"
    parameters = [str(node_params_file(
        params_file if params_file not in ("", "''", '""') else None, values, node))]
    respawn_delay = _yaml("respawn_delay", text("respawn_delay"), float)
    if respawn_delay < 0:
        raise ParameterError(f"launch argument respawn_delay:={respawn_delay} must be >= 0")
    options = {"package": "policy_server_ros", "name": NODE_NAME, "namespace": namespace,
               "output": "screen", "emulate_tty": True, "parameters": parameters,
               "remappings": list(_yaml("remappings", text("remappings"), dict).items()),
               "ros_arguments": ["--log-level", text("log_level")],
               "respawn": _yaml("respawn", text("respawn"), bool),
               "respawn_delay": respawn_delay}
    if not _yaml("managed", text("managed"), bool):
        return [Node(executable="policy_server", **options)]
    node = LifecycleNode(executable="policy_server_managed", **options)
    if not _yaml("autostart", text("autostart"), bool):
        return [node]
    return [node,
            # Activate once configure has brought it to inactive, then ask for configure.
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, goal_state="inactive",
                entities=[_transition(node, Transition.TRANSITION_ACTIVATE)])),
            _transition(node, Transition.TRANSITION_CONFIGURE)]


def _transition(node, transition_id):
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                       transition_id=transition_id))


def generate_launch_description():
    arguments = [DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([FindPackageShare("policy_server_ros"), "config",
                                            "server.yaml"]),
        description="YAML file with policy_server parameters; \"''\" = node defaults only")]
    arguments += [DeclareLaunchArgument(name, default_value=default, description=description,
                                        **({"choices": LOG_LEVELS} if name == "log_level" else {}))
                  for name, default, description in PROCESS_ARGUMENTS]
    arguments += [DeclareLaunchArgument(spec.name, default_value=NOT_GIVEN,
                                        description=argument_description(spec))
                  for spec in NODE_PARAMETERS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
