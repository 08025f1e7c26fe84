"""`benchmark` is a name others use too: ILStudio's checkout has its own `benchmark/` (whose
base.py needs torch and more), and PyPI has an unrelated `benchmark` package. The project's
code never imports `benchmark` (its wire types live in socket_bridge.wire_types; the top-level
`benchmark.base` only re-exports them for the guide's snippets), so whichever `benchmark` comes
first on sys.path, the socket server serves, and its replies name `benchmark.base.MetaAction`
as the protocol says."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, ServerProcess

# ILStudio's benchmark/base.py, cut down: the same dataclasses, and a relative import of the kind
# that fails anywhere but in its checkout.
ILSTUDIO_BASE = '''
from dataclasses import dataclass
import numpy as np
from .utils import resize_with_pad

@dataclass
class MetaAction:
    ctrl_space: str = 'ee'
    ctrl_type: str = 'delta'
    action: np.ndarray = None
    gripper_continuous: bool = False

@dataclass
class MetaObs:
    state: np.ndarray = None
    state_ee: np.ndarray = None
    state_joint: np.ndarray = None
    state_obj: np.ndarray = None
    image: np.ndarray = None
    depth: np.ndarray = None
    pc: np.array = None
    raw_lang: str = ''
    timestep: int = -1
'''

CLIENT = '''
import sys
import numpy as np
from benchmark.base import MetaObs
from socket_bridge.client import PolicyClient

client = PolicyClient("127.0.0.1", int(sys.argv[1]))
client.connect()
batched = client.send_meta_obs(MetaObs(state=np.zeros((1, 14), np.float32),
                                       image=np.zeros((1, 1, 3, 8, 8), np.uint8)))
single = client.send_meta_obs(MetaObs(state=np.zeros(14), image=np.zeros((1, 3, 8, 8), np.uint8)))
client.disconnect()
print(type(MetaObs).__name__, MetaObs.__module__, len(batched), batched[0][0]["action"].shape,
      len(single), type(single[0]).__module__, type(single[0]).__name__, single[0].action.shape)
'''


def _imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_project_code_never_imports_benchmark() -> None:
    files = [*(REPO_ROOT / "policy_server_ros").rglob("*.py"),
             *(REPO_ROOT / "socket_bridge").rglob("*.py"), REPO_ROOT / "start_policy_server.py"]
    importing = [str(f.relative_to(REPO_ROOT)) for f in files if "benchmark" in _imports_of(f)]
    assert not importing, f"import socket_bridge.wire_types instead: {importing}"


def test_benchmark_base_is_the_wire_types_under_their_protocol_name() -> None:
    from benchmark import base
    from socket_bridge import wire_types

    assert base.MetaObs is wire_types.MetaObs and base.MetaAction is wire_types.MetaAction
    assert (wire_types.MetaObs.__module__, wire_types.MetaObs.__qualname__) == \
        ("benchmark.base", "MetaObs")


def _shadowing(directory: Path, kind: str) -> Path:
    package = directory / "benchmark"
    package.mkdir(parents=True)
    if kind == "ilstudio":
        (package / "__init__.py").write_text("")
        (package / "base.py").write_text(ILSTUDIO_BASE)
        (package / "utils.py").write_text("def resize_with_pad(*a):\n    return a\n")
    else:  # PyPI's `benchmark`: a package without a `base` module
        (package / "__init__.py").write_text("from .Benchmark import *  # noqa\n")
        (package / "Benchmark.py").write_text("class Benchmark:\n    pass\n")
    return directory


@pytest.mark.parametrize("kind", ["ilstudio", "pypi"])
def test_the_socket_server_serves_whichever_benchmark_comes_first(tmp_path: Path,
                                                                  kind: str) -> None:
    # The working directory comes first on sys.path (as in an ILStudio checkout); the project's
    # code comes from the checkout through PYTHONPATH, as from site-packages.
    shadow = _shadowing(tmp_path / "cwd", kind)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    server = ServerProcess([PYTHON, "-m", "policy_server_ros.socket_server_cli", "--host",
                            "127.0.0.1", "--port", "0", "-m", "builtin:echo", "--chunk_size",
                            "3"], cwd=shadow, env=env)
    try:
        port = server.port()  # before: the server died importing benchmark.base
        # The client: ILStudio's own classes in an ILStudio checkout, ours elsewhere.
        client = subprocess.run([PYTHON, "-c", textwrap.dedent(CLIENT), str(port)],
                                cwd=shadow if kind == "ilstudio" else tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr + "\n".join(server.lines)
        # Batched: the original's dict entries; unbatched: MetaActions, named as the protocol
        # says (the safe decoder gives the client the project's class for that name).
        assert client.stdout.split() == ["type", "benchmark.base", "3", "(14,)", "3",
                                         "benchmark.base", "MetaAction", "(14,)"]
    finally:
        server.stop(signal.SIGINT)
