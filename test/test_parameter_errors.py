"""Every bad parameter and flag is one line naming it, the value and what is allowed (exit 2
from the command line), never a traceback: swept over the whole parameter table and every
numeric flag of start_policy_server.py, so a new parameter or flag is covered when added."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import rclpy
from conftest import PYTHON, REPO_ROOT
from rclpy.parameter import Parameter
from ros_harness import next_domain, start_node

from policy_server_ros.node import PolicyServerNode, StartupError
from policy_server_ros.node_parameters import NODE_PARAMETERS, ParamSpec
from policy_server_ros.socket_server_cli import parse_args


def _bad_values(spec: ParamSpec) -> list[tuple[Any, str]]:
    """(value, what the message must say) for each way this parameter can be wrong."""
    if spec.is_list:
        out = [(5, "must be a list")]
    elif spec.kind is bool:
        out = [("maybe", "must be bool")]
    elif spec.kind is str:
        out = [(12, "must be str")]
    else:
        out = [("fast", f"must be {spec.kind.__name__}")]
    if spec.min is not None:
        out += [(spec.kind(spec.min) - 1, "is outside"), (spec.kind(spec.max) + 1, "is outside")]
    if spec.choices:
        out.append(("bogus", "is not one of"))
    if spec.pattern:
        bad = "gpu 0"  # no pattern here admits a space
        out.append(([bad] if spec.is_list else bad, f"must be {spec.allowed}"))
    if spec.topic:
        bad = "/cam/2nd image"
        out.append(([bad] if spec.is_list else bad, "is not a valid ROS topic name"))
    return out


CASES = [(spec.name, value, message) for spec in NODE_PARAMETERS
         for value, message in _bad_values(spec)]


def test_every_bad_node_parameter_is_one_line_naming_it() -> None:
    wrong = []
    domain = next_domain()  # one for all: the nodes never talk, and ids stop at 232
    for name, value, message in CASES:
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain)
        try:
            PolicyServerNode(context=context, parameter_overrides=[Parameter(name, value=value)])
            wrong.append(f"{name}={value!r} was accepted")
        except StartupError as exc:
            text = str(exc)
            if "\n" in text or name not in text or repr(value) not in text \
                    or message not in text:
                wrong.append(f"{name}={value!r}: {text!r} (expected {message!r})")
        except Exception as exc:  # an rclpy exception: a traceback on the command line
            wrong.append(f"{name}={value!r} raised {type(exc).__name__}: {exc}")
        finally:
            rclpy.try_shutdown(context=context)
    assert not wrong, "\n".join(wrong)


def test_a_float_parameter_takes_an_integer() -> None:
    # rclpy refuses an integer for a double parameter; -p sync_slop:=1 means 1.0.
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=next_domain())
    try:
        node = PolicyServerNode(context=context, parameter_overrides=[
            Parameter("model_name_or_path", value="builtin:zero"),
            Parameter("socket_bridge_enabled", value=False), Parameter("sync_slop", value=1)])
        assert node.params["sync_slop"] == 1.0 and type(node.params["sync_slop"]) is float
        node.close()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_the_command_line_gets_one_line_and_exit_2() -> None:
    node = start_node(next_domain(), {"sync_slop": -1.0})  # before: an rclpy traceback
    assert node.proc.wait(60) == 2, "\n".join(node.lines)
    assert not any("Traceback" in line for line in node.lines), "\n".join(node.lines)
    node.wait_for(r"parameter sync_slop=-1.0 is outside \[0.0, 10.0\]")


# start_policy_server.py: (flag, bad value, what the message must say).
FLAG_CASES = [
    ("--port", "-1", "must be an integer in [0, 65535]"),
    ("--port", "70000", "must be an integer in [0, 65535]"),
    ("--chunk_size", "-5", "must be an integer in [0, 100000]"),
    ("--min_std", "0", "must be a number in (0, 1]"),
    ("--max_batch", "0", "must be an integer in [1, 1024]"),
    ("--max_wait_ms", "-1", "must be a number in [0, 10000]"),
    ("--max_frame_bytes", "10", "must be an integer in [1024, 2147483647]"),
    ("--max_connections", "0", "must be an integer in [1, 4096]"),
    ("--frame_timeout", "0", "must be a number in (0, 3600]"),
    ("--idle_timeout", "-1", "must be a number in [0, 86400]"),
    ("--send_timeout", "nan", "must be a number in (0, 3600]"),
    ("--inference_timeout", "inf", "must be a number in (0, 3600]"),
    ("--warmup_image_size", "0x640", "must be HxW with H, W in [1, 8192]"),
    ("--device", "gpu", "must be cpu, cuda or cuda:N"),
    ("--seed", "-1", "must be an integer in [0, 2147483647]"),
    ("--num_inference_steps", "-1", "must be an integer in [0, 10000]"),
    ("--replay_episode", "-1", "must be an integer in [0, 1000000]"),
    ("--ray_address", "nowhere", "must be local, auto or host:port"),
    ("--ray_app", "a b", "must be letters, digits, _ or -"),
    ("--replicas", "0", "must be an integer in [1, 1024]"),
    ("--min_replicas", "-1", "must be an integer in [0, 1024]"),
    ("--max_replicas", "2000", "must be an integer in [0, 1024]"),
    ("--replica_gpus", "-1", "must be a number in [0, 64]"),
    ("--replica_cpus", "-0.5", "must be a number in [0, 1024]"),
    ("--ray_connect_timeout", "0", "must be a number in [0.1, 3600]"),
]


def test_the_flag_sweep_covers_every_flag_that_takes_a_value() -> None:
    from policy_server_ros.socket_server_cli import build_parser

    # Free text (paths, names, addresses) or choices argparse checks itself.
    free = {"--config", "--host", "--model_name_or_path", "--dataset_id", "--auth_token_file",
            "--precision", "--log_level", "--backend", "--lerobot_ctrl_space",
            "--lerobot_ctrl_type"}
    flags = {action.option_strings[0] for action in build_parser()._actions
             if action.option_strings and action.nargs is None and action.const is None
             and action.option_strings[0] not in ("--help",)}
    assert flags - free - {"--compile", "--use_ema"} == {flag for flag, _, _ in FLAG_CASES}


def test_every_bad_flag_is_one_line_and_exit_2(capsys) -> None:
    wrong = []
    for flag, value, message in FLAG_CASES:
        with pytest.raises(SystemExit) as exited:
            parse_args([flag, value])
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        if exited.value.code != 2 or len(errors) != 1 or flag not in errors[0] \
                or message not in errors[0]:
            wrong.append(f"{flag} {value}: exit {exited.value.code}, {errors}")
    assert not wrong, "\n".join(wrong)  # before: --chunk_size -5 served the whole chunk


def test_a_bad_flag_value_in_the_config_file_is_one_line(tmp_path, capsys) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("chunk_size: -5\n")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--config", str(config)])
    assert exited.value.code == 2
    assert "chunk_size: -5 must be an integer in [0, 100000]" in capsys.readouterr().err


def test_start_policy_server_refuses_a_negative_chunk_size() -> None:
    result = subprocess.run([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "--chunk_size",
                             "-5", "-m", "builtin:zero"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --chunk_size: '-5' must be an integer in [0, 100000]" in result.stderr
