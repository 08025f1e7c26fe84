"""The node's parameter table, config/server.yaml and the launch file agree."""

from __future__ import annotations

import ast

import yaml
from conftest import REPO_ROOT

from policy_server_ros.node_parameters import BY_NAME, NODE_PARAMETERS

LAUNCH_FILE = REPO_ROOT / "policy_server_ros" / "launch" / "server.launch.py"


def test_server_yaml_lists_every_parameter_with_its_default() -> None:
    data = yaml.safe_load((REPO_ROOT / "config" / "server.yaml").read_text())
    params = data["policy_server"]["ros__parameters"]
    assert list(params) == [p.name for p in NODE_PARAMETERS]
    for spec in NODE_PARAMETERS:
        assert params[spec.name] == spec.default, spec.name


def _launch_arguments() -> list[tuple[str, str, str]]:
    # `launch` is not installable here; read the file's argument table without importing it.
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "ARGUMENTS":
            return ast.literal_eval(node.value)
    raise AssertionError("ARGUMENTS table not found in server.launch.py")


def test_launch_arguments_are_node_parameters_of_the_same_type() -> None:
    kinds = {str: "str", int: "int", float: "float", bool: "bool", list: "list"}
    arguments = _launch_arguments()
    assert len(arguments) >= 20
    for name, kind, description in arguments:
        assert name in BY_NAME, f"launch argument {name} is not a node parameter"
        assert kinds[BY_NAME[name].kind] == kind, name
        assert description
    important = {"model_name_or_path", "dataset_id", "chunk_size", "device", "camera_topics",
                 "joint_state_topic", "joint_names", "required_inputs", "state_inputs",
                 "sync_slop", "max_observation_age", "inference_rate", "socket_bridge_enabled",
                 "socket_port", "action_joint_names"}
    assert important <= {name for name, _, _ in arguments}


def test_launch_file_declares_params_file_and_runs_the_installed_executable() -> None:
    text = LAUNCH_FILE.read_text()
    assert '"params_file"' in text and '"server.yaml"' in text
    assert 'executable="policy_server"' in text and 'package="policy_server_ros"' in text
    compile(text, str(LAUNCH_FILE), "exec")  # valid Python for ros2 launch
