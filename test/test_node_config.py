"""The node's parameter table, config/server.yaml and the launch file agree.

`launch` and `launch_ros` are not installable here, so the launch file runs against small
stand-ins for the parts of their API it uses (same names, same signatures, same lookup rules).
The test then does what `ros2 launch` does: declare the arguments (filling in defaults), run the
OpaqueFunctions, and read the Node actions' parameters the way the node would (parameter files
matched by node name, then dictionaries, the last value winning). Nothing reads the file as text,
so a misnamed, missing or mistyped argument, a wrong default or an argument that never reaches
the node fails, and arguments built in a loop from NODE_PARAMETERS work unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from conftest import REPO_ROOT

from policy_server_ros.inputs import ParameterError, section_applies
from policy_server_ros.node_parameters import BY_NAME, NODE_PARAMETERS, ParamSpec

LAUNCH_FILE = REPO_ROOT / "policy_server_ros" / "launch" / "server.launch.py"
PACKAGE = "policy_server_ros"
PROCESS_ARGUMENTS = {"params_file", "namespace", "remappings", "log_level", "use_sim_time",
                     "respawn", "respawn_delay", "managed", "autostart"}


def test_server_yaml_lists_every_parameter_with_its_default() -> None:
    data = yaml.safe_load((REPO_ROOT / "config" / "server.yaml").read_text())
    # One section, for the node in any namespace (rcl's wildcard rules).
    assert list(data) == ["/**/policy_server"]
    params = data["/**/policy_server"]["ros__parameters"]
    assert list(params) == [p.name for p in NODE_PARAMETERS]
    for spec in NODE_PARAMETERS:
        assert params[spec.name] == spec.default, spec.name


# ---- stand-ins for launch / launch_ros ------------------------------------------------------


@dataclass
class _Context:
    """launch.LaunchContext's part that substitutions read: the launch configurations."""

    launch_configurations: dict[str, str]


class Substitution:
    def perform(self, context: _Context) -> str:
        raise NotImplementedError


def _check_text(value: Any, what: str) -> None:
    # launch's normalize_to_list_of_substitutions: text, a substitution, or a list of those.
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, str | Substitution):
            raise TypeError(f"{what} must be text or substitutions, got {item!r}")


def _perform(value: Any, context: _Context) -> str:
    """Text of a substitution, or of a list of them (concatenated, as launch does)."""
    _check_text(value, "a substitution")
    items = value if isinstance(value, list | tuple) else [value]
    return "".join(i if isinstance(i, str) else i.perform(context) for i in items)


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name: Any, *, default: Any = None) -> None:
        _check_text(variable_name, "LaunchConfiguration's name")
        self.variable_name, self.default = variable_name, default

    def perform(self, context: _Context) -> str:
        name = _perform(self.variable_name, context)
        if name in context.launch_configurations:
            return context.launch_configurations[name]
        if self.default is not None:
            return _perform(self.default, context)
        raise LookupError(f"launch configuration {name!r} is read but never declared")


class TextSubstitution(Substitution):
    def __init__(self, *, text: str) -> None:
        self.text = text

    def perform(self, context: _Context) -> str:
        return self.text


class PathJoinSubstitution(Substitution):
    def __init__(self, substitutions: list[Any]) -> None:
        self.substitutions = substitutions

    def perform(self, context: _Context) -> str:
        return os.path.join(*(_perform(s, context) for s in self.substitutions))


class FindPackageShare(Substitution):
    def __init__(self, package: Any) -> None:
        self.package = package

    def perform(self, context: _Context) -> str:
        package = _perform(self.package, context)
        if package != PACKAGE:
            raise LookupError(f"package {package!r} not found")
        return str(REPO_ROOT)  # CMake installs config/ and launch/ to share/policy_server_ros


class DeclareLaunchArgument:
    def __init__(self, name: str, *, default_value: Any = None, description: str | None = None,
                 choices: list[str] | None = None, **kwargs: Any) -> None:
        if not isinstance(name, str) or (description is not None
                                         and not isinstance(description, str)):
            raise TypeError("DeclareLaunchArgument's name and description must be text")
        if default_value is not None:
            _check_text(default_value, f"launch argument {name}'s default_value")
        self.name, self.default_value, self.description = name, default_value, description
        self.choices = choices


class OpaqueFunction:
    def __init__(self, *, function: Callable[..., Any], args: Iterable[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, **left_over_kwargs: Any) -> None:
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})


# launch.actions.ExecuteProcess's keyword arguments, which Node passes on.
_EXECUTE_PROCESS_KWARGS = {"cwd", "env", "additional_env", "shell", "sigterm_timeout",
                           "sigkill_timeout", "emulate_tty", "output", "output_format",
                           "log_cmd", "cached_output", "on_exit", "respawn", "respawn_delay",
                           "respawn_max_retries", "prefix", "condition"}


class Node:
    def __init__(self, *, executable: Any, package: Any = None, name: Any = None,
                 namespace: Any = None, exec_name: Any = None, parameters: list[Any] | None = None,
                 remappings: Any = None, ros_arguments: Any = None, arguments: Any = None,
                 **kwargs: Any) -> None:
        unknown = set(kwargs) - _EXECUTE_PROCESS_KWARGS
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        if parameters is not None and not isinstance(parameters, list):
            raise TypeError("Node's parameters must be a list of files and dicts")
        for item in parameters or []:
            if isinstance(item, dict):
                for key, value in item.items():
                    # launch_ros cannot type an empty list: it fails when the node is started.
                    if isinstance(value, list | tuple) and not value:
                        raise TypeError(f"parameter {key}: launch_ros cannot pass an empty list")
        self.executable, self.package, self.name = executable, package, name
        self.namespace, self.parameters = namespace, parameters or []
        self.remappings, self.ros_arguments = remappings, ros_arguments
        self.respawn = kwargs.get("respawn", False)
        self.respawn_delay = kwargs.get("respawn_delay")


class LifecycleNode(Node):
    def __init__(self, *, name: Any, namespace: Any, **kwargs: Any) -> None:
        super().__init__(name=name, namespace=namespace, **kwargs)


def matches_action(target_action: Any) -> Callable[[Any], bool]:
    return lambda action: action is target_action


class ChangeState:
    def __init__(self, *, lifecycle_node_matcher: Callable[[Any], bool],
                 transition_id: int) -> None:
        self.matcher, self.transition_id = lifecycle_node_matcher, transition_id


class EmitEvent:
    def __init__(self, *, event: Any, **kwargs: Any) -> None:
        self.event = event


class OnStateTransition:
    def __init__(self, *, entities: Any = None, target_lifecycle_node: Any = None,
                 transition: str | None = None, start_state: str | None = None,
                 goal_state: str | None = None, matcher: Any = None, **kwargs: Any) -> None:
        self.entities, self.target = list(entities or []), target_lifecycle_node
        self.goal_state = goal_state


class RegisterEventHandler:
    def __init__(self, event_handler: Any, **kwargs: Any) -> None:
        self.event_handler = event_handler


class LaunchDescription:
    def __init__(self, initial_entities: Iterable[Any] | None = None, *,
                 deprecated_reason: str | None = None) -> None:
        self.entities = list(initial_entities or [])


_STAND_INS = {
    "launch": {"LaunchDescription": LaunchDescription},
    "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument,
                       "OpaqueFunction": OpaqueFunction, "EmitEvent": EmitEvent,
                       "RegisterEventHandler": RegisterEventHandler},
    "launch.events": {"matches_action": matches_action},
    "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration,
                             "PathJoinSubstitution": PathJoinSubstitution,
                             "TextSubstitution": TextSubstitution},
    "launch_ros": {},
    "launch_ros.actions": {"Node": Node, "LifecycleNode": LifecycleNode},
    "launch_ros.event_handlers": {"OnStateTransition": OnStateTransition},
    "launch_ros.events": {},
    "launch_ros.events.lifecycle": {"ChangeState": ChangeState},
    "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
}


def _load_launch_file(path: Path) -> types.ModuleType:
    """Import the launch file with the stand-ins in place of launch and launch_ros.

    A name it imports that has no stand-in fails the import: add one here that behaves like the
    real class, rather than loosening this.
    """
    modules = {}
    for name, members in _STAND_INS.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        module.__path__ = []  # a package, so that `launch.actions` imports
        modules[name] = module
    with mock.patch.dict(sys.modules, modules):
        spec = importlib.util.spec_from_file_location("server_launch", path)
        assert spec is not None and spec.loader is not None
        launch_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(launch_module)
    return launch_module


@dataclass
class _Launched:
    arguments: dict[str, DeclareLaunchArgument] = field(default_factory=dict)
    nodes: list[tuple[Node, dict[str, Any]]] = field(default_factory=list)  # with parameters
    emitted: list[ChangeState] = field(default_factory=list)  # lifecycle requests, in order
    handlers: list[OnStateTransition] = field(default_factory=list)


def _node_parameters(node: Node, context: _Context) -> dict[str, Any]:
    """The parameters the node starts with: files (entries for its name or /**), then dicts."""
    name = _perform(node.name, context)
    namespace = _perform(node.namespace, context).strip("/") if node.namespace else ""
    full_name = f"/{namespace}/{name}" if namespace else f"/{name}"
    values: dict[str, Any] = {}
    for item in node.parameters:
        if isinstance(item, dict):
            for key, value in item.items():
                # A substitution's text is read as YAML, as a parameter given as text is.
                values[key] = yaml.safe_load(_perform(value, context)) \
                    if isinstance(value, Substitution) else value
        else:
            data = yaml.safe_load(Path(_perform(item, context)).read_text()) or {}
            for key, section in data.items():  # rcl: sections that match, in file order
                if section_applies(key, full_name):
                    for name, value in (section.get("ros__parameters") or {}).items():
                        # rcl (Kilted): an empty list in a later file does not replace a
                        # value an earlier file gave (test_node_in_process checks this).
                        if value != [] or name not in values:
                            values[name] = value
    return values


def _launch(command_line: dict[str, str]) -> _Launched:
    """`ros2 launch policy_server_ros server.launch.py name:=value ...`, up to starting nodes."""
    description = _load_launch_file(LAUNCH_FILE).generate_launch_description()
    assert isinstance(description, LaunchDescription)
    context = _Context(dict(command_line))
    launched = _Launched()

    def visit(entities: Iterable[Any]) -> None:
        for entity in entities:
            if isinstance(entity, DeclareLaunchArgument):
                assert entity.name not in launched.arguments, f"{entity.name} declared twice"
                launched.arguments[entity.name] = entity
                if entity.name not in context.launch_configurations:
                    assert entity.default_value is not None, f"{entity.name} has no default"
                    context.launch_configurations[entity.name] = _perform(entity.default_value,
                                                                          context)
                value = context.launch_configurations[entity.name]
                assert entity.choices is None or value in entity.choices, (entity.name, value)
            elif isinstance(entity, OpaqueFunction):
                visit(entity.function(context, *entity.args, **entity.kwargs) or [])
            elif isinstance(entity, Node):
                launched.nodes.append((entity, _node_parameters(entity, context)))
            elif isinstance(entity, EmitEvent):
                launched.emitted.append(entity.event)
            elif isinstance(entity, RegisterEventHandler):
                launched.handlers.append(entity.event_handler)
            else:
                raise TypeError(f"no stand-in runs {entity!r}; add one to test_node_config.py")

    visit(description.entities)
    undeclared = set(command_line) - set(launched.arguments)
    assert not undeclared, f"launch arguments not declared: {sorted(undeclared)}"
    return launched


def _the_node(launched: _Launched) -> tuple[Node, dict[str, Any]]:
    assert len(launched.nodes) == 1, f"expected one Node, got {len(launched.nodes)}"
    return launched.nodes[0]


# A value other than the default for each text parameter with a pattern ("12": YAML reads a
# number, the parameter must still get the text).
_PATTERN_EXAMPLES = {"device": "cpu", "ray_address": "10.0.0.5:6379", "ray_app": "12"}


def _other_value(spec: ParamSpec) -> tuple[str, Any]:
    """A value unlike the default, as typed after `name:=` and as the node should receive it."""
    if spec.choices:
        value = next(c for c in spec.choices if c != spec.default)
        return value, value
    if spec.kind is bool:
        return str(not spec.default).lower(), not spec.default
    if spec.kind is list:
        value = ["1.5", "-2"] if spec.allowed == "numbers" else \
            [f"/test/{spec.name}_a", f"/test/{spec.name}_b"]
        return f"[{', '.join(value)}]", value
    if spec.kind is str:
        # A topic, a device, or a string that YAML would read as a number (it stays a string).
        value = f"/test/{spec.name}" if spec.topic else _PATTERN_EXAMPLES.get(spec.name, "12")
        return value, value
    step = 3 if spec.kind is int else 0.25
    value = spec.default + step
    if spec.max is not None and value > spec.max:
        value = spec.default - step
    return str(value), value


def _defaults() -> dict[str, Any]:
    # use_sim_time is rclpy's own parameter; the launch file always sets it (default false).
    return {**{p.name: p.default for p in NODE_PARAMETERS}, "use_sim_time": False}


def _differences(got: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """`name: got (expected ...)` for each parameter that differs, missing or extra."""
    def shown(values: dict[str, Any], key: str) -> str:
        return repr(values[key]) if key in values else "unset"

    return [f"{k}: {shown(got, k)} (expected {shown(expected, k)})"
            for k in sorted(got.keys() | expected.keys()) if shown(got, k) != shown(expected, k)]


def _argument_names(launched: _Launched) -> set[str]:
    return set(launched.arguments) - PROCESS_ARGUMENTS


# ---- the launch file -------------------------------------------------------------------------


def test_every_node_parameter_is_a_launch_argument_with_a_description() -> None:
    # Before: 12 of the node's parameters had no argument, and ros2 launch ignores an
    # undeclared name:=value silently (the README's camera_qos:=reliable did nothing).
    launched = _launch({})
    assert _argument_names(launched) == set(BY_NAME)
    assert set(launched.arguments) >= PROCESS_ARGUMENTS
    for argument in launched.arguments.values():
        assert argument.description, f"launch argument {argument.name} has no description"
    assert "one of: sensor_data, reliable, latched" in launched.arguments["camera_qos"].description


def test_launch_without_arguments_starts_the_installed_node_with_every_default() -> None:
    node, parameters = _the_node(_launch({}))
    context = _Context({})
    package, executable = _perform(node.package, context), _perform(node.executable, context)
    assert package == PACKAGE
    # config/server.yaml's parameters are for the node named policy_server.
    assert _perform(node.name, context) == "policy_server", "the node must be named policy_server"
    # Where launch_ros looks for it: <prefix>/lib/<package>/<executable>, installed by CMake.
    installed = Path(sys.prefix) / "lib" / package / executable
    assert installed.is_file(), f"{installed} is not installed (scripts/setup_venv.sh)"
    assert "from policy_server_ros.node import main" in installed.read_text()
    assert not _differences(parameters, _defaults()), _differences(parameters, _defaults())


def test_each_launch_argument_reaches_the_node_as_its_parameter_type() -> None:
    names = sorted(_argument_names(_launch({})) & BY_NAME.keys())  # others: the test above
    wrong = []
    for name in names:
        text, expected = _other_value(BY_NAME[name])
        _, parameters = _the_node(_launch({name: text}))
        got = parameters.get(name)
        if got != expected or type(got) is not BY_NAME[name].kind:
            wrong.append(f"{name}:={text} gave {got!r}, expected {expected!r}")
        else:
            others = _differences({**parameters, name: None}, {**_defaults(), name: None})
            wrong += [f"{name}:={text} also changed {other}" for other in others]
    assert not wrong, "\n".join(wrong)
    every = {name: _other_value(BY_NAME[name]) for name in names}
    _, parameters = _the_node(_launch({name: text for name, (text, _) in every.items()}))
    expected = {**_defaults(), **{name: value for name, (_, value) in every.items()}}
    assert not _differences(parameters, expected), _differences(parameters, expected)


def test_params_file_argument_and_arguments_overriding_it(tmp_path: Path) -> None:
    params_file = tmp_path / "robot.yaml"
    params_file.write_text(yaml.safe_dump(
        {"policy_server": {"ros__parameters": {"device": "cpu", "socket_port": 6001}}}))
    for command_line, expected in [
            ({"params_file": str(params_file)},
             {"device": "cpu", "socket_port": 6001, "use_sim_time": False}),
            ({"params_file": str(params_file), "device": "cuda:1"},
             {"device": "cuda:1", "socket_port": 6001, "use_sim_time": False}),
            ({"params_file": "''"}, {"use_sim_time": False})]:  # no file: node defaults
        _, parameters = _the_node(_launch(command_line))
        assert not _differences(parameters, expected), (command_line,
                                                        _differences(parameters, expected))


def test_empty_lists_and_strings_reach_the_node() -> None:
    # Before: joint_names:="[]" went to launch_ros in a dict, which cannot type an empty list
    # (TypeError when the node starts); `name:=` alone is refused by ros2 launch, so "''" is
    # the empty string.
    # camera_topics and required_inputs are not empty in the default params_file: before, the
    # launch passed that file and a second one, and rcl kept the first file's lists.
    _, parameters = _the_node(_launch({"joint_names": "[]", "camera_topics": "[]",
                                       "ee_pose_topic": "''", "frame_id": '""'}))
    expected = {**_defaults(), "joint_names": [], "camera_topics": [], "ee_pose_topic": "",
                "frame_id": ""}
    assert not _differences(parameters, expected), _differences(parameters, expected)


def test_process_arguments_reach_the_node_action() -> None:
    node, parameters = _the_node(_launch({
        "namespace": "robot1", "log_level": "debug", "use_sim_time": "true",
        "respawn": "true", "respawn_delay": "3",
        "remappings": "{joint_states: /arm/joint_states, ~/action_chunk: /chunks}"}))
    context = _Context({})
    assert _perform(node.namespace, context) == "robot1"
    assert node.remappings == [("joint_states", "/arm/joint_states"),
                               ("~/action_chunk", "/chunks")]
    assert node.ros_arguments == ["--log-level", "debug"]
    assert (node.respawn, node.respawn_delay) == (True, 3.0)
    assert parameters["use_sim_time"] is True
    # config/server.yaml's values reach the node in the namespace too.
    assert parameters["joint_state_topic"] == "joint_states"


@pytest.mark.parametrize(("command_line", "message"), [
    ({"sync_slop": "-1.0"}, r"parameter sync_slop=-1.0 is outside \[0.0, 10.0\]"),
    ({"camera_qos": "loud"}, r"parameter camera_qos='loud' is not one of"),
    ({"socket_port": "port"}, r"parameter socket_port must be int, got 'port'"),
    ({"joint_names": "[a, b"}, r"launch argument joint_names:='\[a, b' is not valid YAML"),
    ({"use_sim_time": "maybe"}, r"launch argument use_sim_time:='maybe' must be a bool"),
    ({"remappings": "[a, b]"}, r"remappings:='\[a, b\]' must be a mapping of topic names"),
    ({"respawn_delay": "-1"}, r"respawn_delay:=-1.0 must be >= 0"),
])
def test_a_bad_launch_argument_is_one_line_naming_it(command_line, message) -> None:
    with pytest.raises(ParameterError, match=message) as caught:
        _launch(command_line)
    assert "\n" not in str(caught.value)


def test_the_launch_leaves_one_params_file_per_distinct_launch(tmp_path: Path) -> None:
    import tempfile

    folder = Path(tempfile.gettempdir()) / "policy_server_launch"
    node, _ = _the_node(_launch({"frame_id": "one_file_test"}))
    (path,) = node.parameters
    assert Path(path).parent == folder
    again, _ = _the_node(_launch({"frame_id": "one_file_test"}))
    assert again.parameters == [path]  # the same launch reuses its file


def test_managed_launches_the_lifecycle_node_and_autostart_drives_it_to_active() -> None:
    from lifecycle_msgs.msg import Transition

    launched = _launch({"managed": "true"})
    node, parameters = _the_node(launched)
    context = _Context({})
    assert isinstance(node, LifecycleNode)
    assert _perform(node.executable, context) == "policy_server_managed"
    installed = Path(sys.prefix) / "lib" / PACKAGE / "policy_server_managed"
    assert "from policy_server_ros.lifecycle_node import main" in installed.read_text()
    assert not _differences(parameters, _defaults()), _differences(parameters, _defaults())
    # configure is asked for at once; activate when the node reaches inactive.
    assert [e.transition_id for e in launched.emitted] == [Transition.TRANSITION_CONFIGURE]
    assert launched.emitted[0].matcher(node)
    (handler,) = launched.handlers
    assert handler.target is node and handler.goal_state == "inactive"
    (activate,) = handler.entities
    assert activate.event.transition_id == Transition.TRANSITION_ACTIVATE
    assert activate.event.matcher(node)

    manual = _launch({"managed": "true", "autostart": "false"})
    assert isinstance(_the_node(manual)[0], LifecycleNode)
    assert not manual.emitted and not manual.handlers
    plain = _launch({})
    assert not isinstance(_the_node(plain)[0], LifecycleNode) and not plain.emitted
