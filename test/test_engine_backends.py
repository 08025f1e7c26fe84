"""Choosing the engine backend: the local one never loads Ray, bad Ray settings are one-line
errors, and an unreachable cluster is a bounded retry ending in a clear message, not a hang.
No cluster is started here (test_ray_backend.py has the one)."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT, ServerProcess

from benchmark.base import MetaObs
from policy_server_ros.engine import BackendUnavailable
from policy_server_ros.engine_backends import RayOptions, make_engine
from policy_server_ros.policies import LoadOptions
from policy_server_ros.socket_server_cli import parse_args

NO_RAY_AFTER_LOCAL = """
import sys
import numpy as np
from benchmark.base import MetaObs
from policy_server_ros.engine_backends import make_engine
from policy_server_ros.policies import LoadOptions
import policy_server_ros.node, policy_server_ros.socket_server_cli, socket_bridge.server
engine = make_engine("local", "builtin:echo", LoadOptions(device="cpu"))
assert engine.submit(MetaObs(state=np.zeros(14))).result(10).actions.shape == (1, 100, 14)
engine.close()
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print("ray modules:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_the_local_backend_never_imports_ray() -> None:
    # A fresh interpreter: the node, the CLI and the socket server modules plus a request
    # through the local engine leave Ray unloaded (it is an optional extra).
    result = subprocess.run([PYTHON, "-c", NO_RAY_AFTER_LOCAL], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ray modules: []" in result.stdout


@pytest.mark.parametrize(("settings", "message"), [
    ({"address": "somewhere"}, "ray_address 'somewhere' must be local, auto or host:port"),
    ({"app_name": "a b"}, "ray_app 'a b' must be letters"),
    ({"replicas": 0}, "replicas must be >= 1"),
    ({"min_replicas": 3, "max_replicas": 2}, "need 0 <= min_replicas <= max_replicas"),
    ({"replica_gpus": -1.0}, "replica_gpus and replica_cpus must be >= 0"),
])
def test_bad_ray_settings_are_one_line_errors(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RayOptions(**settings)


def test_an_unknown_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"backend 'gpu' is not one of \['local', 'ray'\]"):
        make_engine("gpu", "builtin:zero", LoadOptions(device="cpu"))


def test_an_unreachable_cluster_is_retried_then_a_clear_error() -> None:
    # Nothing listens on port 1: the connection is retried with backoff for connect_timeout
    # seconds, then the error names the address and what to do.
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as error:
        make_engine("ray", "builtin:zero", LoadOptions(device="cpu"),
                    ray=RayOptions(address="127.0.0.1:1", connect_timeout=1.5))
    took = time.monotonic() - start
    assert 1.0 < took < 10, took
    message = str(error.value)
    assert "\n" not in message
    assert "cannot reach the Ray cluster at ray_address=127.0.0.1:1 after" in message
    assert "ray start --head" in message


def test_cli_backend_flags_parse_and_are_checked(capsys) -> None:
    args = parse_args(["--backend", "ray", "--ray_address", "10.0.0.5:6379", "--replicas", "4",
                       "--replica_gpus", "0.5", "--max_wait_ms", "5"])
    options = RayOptions.from_settings(vars(args), args.inference_timeout)
    assert (args.backend, options.address, options.replicas, options.replica_gpus) == \
        ("ray", "10.0.0.5:6379", 4, 0.5)
    assert options.request_timeout == args.inference_timeout == 60.0
    defaults = parse_args([])
    assert (defaults.backend, defaults.ray_address, defaults.ray_app, defaults.replicas) == \
        ("local", "local", "policy_server", 1)
    for bad in (["--backend", "gpu"], ["--ray_address", "nowhere"], ["--replicas", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
        assert "usage: start_policy_server.py" in capsys.readouterr().err


def test_cli_with_an_unreachable_cluster_exits_2_with_one_line() -> None:
    server = ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "-m",
                            "builtin:zero", "--backend", "ray", "--ray_address", "127.0.0.1:1",
                            "--ray_connect_timeout", "1"])
    assert server.proc.wait(60) == 2
    server.wait_for(r"ERROR cannot reach the Ray cluster at ray_address=127.0.0.1:1")
    assert not any("Traceback" in line for line in server.lines)


def test_the_engine_protocol_is_what_the_local_engine_offers() -> None:
    engine = make_engine("local", "builtin:echo", LoadOptions(device="cpu"), max_wait_ms=1.0)
    try:
        assert engine.wait_ready(10) and engine.chunk_size == 100
        assert engine.policy.spec.action_dim == 14 and engine.policy.camera_names is None
        out = engine.submit(MetaObs(state=np.ones(14))).result(10)
        assert out.actions[0, 3, 0] == np.float32(1.03)
    finally:
        engine.close()
