"""The guide's command lines: start_policy_server.py, scripts/start_policy_server.sh and
policy_client_example.py, as flags and as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, ServerProcess

from policy_server_ros.socket_server_cli import parse_args


def test_defaults_are_the_guides() -> None:
    args = parse_args([])
    assert (args.host, args.port, args.dataset_id, args.chunk_size, args.device) == \
        ("0.0.0.0", 5000, "", 0, "cuda")
    assert args.model_name_or_path == "ckpt/act_sim_transfer_cube_scripted_zscore_example"


def test_short_aliases() -> None:
    args = parse_args(["-p", "6001", "-m", "builtin:echo"])
    assert args.port == 6001 and args.model_name_or_path == "builtin:echo"


@pytest.mark.parametrize("argv", [["--bogus"], ["--por", "5"], ["--port", "many"]])
def test_unknown_or_bad_flags_exit_with_usage(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "usage: start_policy_server.py" in capsys.readouterr().err


def test_config_file_sets_values_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("port: 7000\nchunk_size: 20\nmax_connections: 3\ndevice: cpu\n")
    args = parse_args(["--config", str(config), "--port", "7001"])
    assert (args.port, args.chunk_size, args.max_connections, args.device) == \
        (7001, 20, 3, "cpu")


def test_shipped_config_example_parses() -> None:
    args = parse_args(["--config", str(REPO_ROOT / "config" / "socket_server.yaml")])
    assert args.port == 5000 and args.idle_timeout == 600


@pytest.mark.parametrize(("text", "message"), [
    ("prot: 7000\n", "unknown keys ['prot']"),
    ("port: lots\n", "port: 'lots' must be an integer in [0, 65535]"),
    ("log_level: LOUD\n", "'LOUD' is not one of"),
    ("- port\n", "must hold a mapping"),
    ("port: [\n", "is not valid YAML"),
])
def test_bad_config_files_are_errors(tmp_path: Path, text: str, message: str, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config)])
    assert message in capsys.readouterr().err


def test_missing_config_file_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--config", "/nonexistent/server.yaml"])
    assert "cannot read --config /nonexistent/server.yaml" in capsys.readouterr().err


def _server(*extra: str) -> ServerProcess:
    return ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "--host",
                          "127.0.0.1", "--port", "0", *extra])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_server_serves_the_example_client_and_exits_cleanly_on(sig: int) -> None:
    server = _server("-m", "builtin:echo", "--chunk_size", "20")
    port = server.port()
    client = subprocess.run([PYTHON, str(REPO_ROOT / "policy_client_example.py"), "--port",
                             str(port), "--num_requests", "3", "--delay", "0"],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert client.returncode == 0, client.stderr
    assert client.stdout.count("received 20 actions (first action shape (14,))") == 3
    assert server.stop(sig) == 0
    server.wait_for(r"Client #1 connection closed \(processed 3 requests\)")
    server.wait_for(r"Policy Server stopped \(3 requests served\)")


def test_server_start_up_errors_are_plain_messages() -> None:
    server = _server("-m", "builtin:nope")
    assert server.proc.wait(30) == 2
    server.wait_for(r"unknown built-in policy 'builtin:nope'; available: builtin:zero")
    server = _server("-m", "builtin:zero", "--chunk_size", "500")
    assert server.proc.wait(30) == 2
    server.wait_for(r"--chunk_size 500 is more than the 100 actions")


def test_shell_launcher_works_from_any_directory_with_model_path(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": PYTHON}
    server = ServerProcess([str(REPO_ROOT / "scripts" / "start_policy_server.sh"),
                            "--model_path", "builtin:echo", "--host", "127.0.0.1",
                            "--port", "0", "--chunk_size", "5"], cwd=tmp_path, env=env)
    server.port()
    server.wait_for(r"Serving builtin:echo \(chunk of 5 actions")
    assert server.stop(signal.SIGTERM) == 0


def test_example_client_reports_an_unreachable_server() -> None:
    out = subprocess.run([PYTHON, str(REPO_ROOT / "policy_client_example.py"), "--port", "1",
                          "--num_requests", "1"], capture_output=True, text=True, timeout=60,
                         cwd=REPO_ROOT)
    assert out.returncode == 1
    assert "cannot connect to policy server at localhost:1" in out.stderr
    assert "Traceback" not in out.stderr


def test_policy_client_importable_from_the_example_module() -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from policy_client_example import PolicyClient
    from socket_bridge.client import PolicyClient as Client
    assert PolicyClient is Client


def test_server_serves_an_act_checkpoint_to_the_example_client(tmp_path: Path) -> None:
    from act_fixtures import small_checkpoint

    ckpt = small_checkpoint(tmp_path / "act")
    server = _server("-m", str(ckpt), "--device", "cpu", "--warmup_image_size", "64x80")
    port = server.port()
    server.wait_for(r"Warm-up pass took")
    client = subprocess.run([PYTHON, str(REPO_ROOT / "policy_client_example.py"), "--port",
                             str(port), "--num_requests", "2", "--delay", "0"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert client.returncode == 0, client.stderr + "\n".join(server.lines)
    assert client.stdout.count("received 10 actions (first action shape (14,))") == 2
    assert server.stop(signal.SIGTERM) == 0
    server.wait_for(r"Loaded ACT from .*1 camera\(s\) \['primary'\].*joint/abs")


def test_default_model_is_the_example_checkpoint_created_on_first_use(tmp_path: Path) -> None:
    # Run in an empty directory: the example is written to the cache directory, not there.
    cache = tmp_path / "cache"
    server = ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "--host",
                            "127.0.0.1", "--port", "0", "--device", "cpu"], cwd=tmp_path,
                           env={**os.environ, "POLICY_SERVER_ROS_CACHE": str(cache)})
    port = server.port()
    server.wait_for(r"Creating the example checkpoint .* at " + re.escape(str(cache)) +
                    r"/act_sim_transfer_cube_scripted_zscore_example; this happens once")
    server.wait_for(r"Serving .*/cache/act_sim_transfer_cube_scripted_zscore_example \(chunk "
                    r"of 100 actions, ctrl_space=joint, ctrl_type=abs\); ready")
    client = subprocess.run([PYTHON, str(REPO_ROOT / "policy_client_example.py"), "--port",
                             str(port), "--num_requests", "1"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert client.returncode == 0, client.stderr
    assert "received 100 actions (first action shape (14,))" in client.stdout
    assert server.stop(signal.SIGINT) == 0
    assert (cache / "act_sim_transfer_cube_scripted_zscore_example" /
            "model.safetensors").stat().st_size > 300e6
    assert not (tmp_path / "ckpt").exists()


def test_bad_checkpoint_is_a_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "not_a_ckpt").mkdir()
    server = _server("-m", str(tmp_path / "not_a_ckpt"), "--device", "cpu")
    assert server.proc.wait(60) == 2
    server.wait_for(r"has no policy_metadata.json")
    assert not any("Traceback" in line for line in server.lines)


def test_an_unwritable_cache_for_the_example_is_a_start_up_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # as root, permissions would not stop a write
    server = ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "--host",
                            "127.0.0.1", "--port", "0", "--device", "cpu"], cwd=tmp_path,
                           env={**os.environ, "POLICY_SERVER_ROS_CACHE": str(blocker / "cache")})
    assert server.proc.wait(60) == 2
    server.wait_for(r"cannot write the example checkpoint to .*a_file/cache.*set "
                    r"POLICY_SERVER_ROS_CACHE to a writable folder")
    assert not any("Traceback" in line for line in server.lines), "\n".join(server.lines)
