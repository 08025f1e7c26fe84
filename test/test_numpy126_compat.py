"""Pickles load in both directions between this server (numpy 2.x) and numpy 1.26 clients."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, running_server

NUMPY_1 = "numpy==1.26.0"
VENV_DIR = REPO_ROOT / ".venv-numpy126"


@pytest.fixture(scope="session")
def numpy126_python() -> Path:
    """A second venv holding only numpy 1.26.0; created once, reused across runs."""
    python = VENV_DIR / "bin" / "python"
    marker = VENV_DIR / ".ready"
    if not marker.exists() or marker.read_text() != NUMPY_1:
        venv.create(VENV_DIR, with_pip=True, clear=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        NUMPY_1], check=True, timeout=600)
        marker.write_text(NUMPY_1)
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_ROS_WHEELS")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def test_numpy126_client_round_trips(numpy126_python: Path) -> None:
    with running_server() as server:
        out = subprocess.run(
            [numpy126_python, str(REPO_ROOT / "test" / "numpy126_client.py"),
             *map(str, server.address)],
            capture_output=True, text=True, timeout=120, env=_clean_env())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["numpy"] == "1.26.0"
    state = np.linspace(0.0, 1.0, 14, dtype=np.float32)
    np.testing.assert_allclose(result["client_unbatched"], [state, state + 0.01], rtol=1e-6)
    np.testing.assert_allclose(result["plain_unbatched"], [state, state + 0.01], rtol=1e-6)
    np.testing.assert_allclose(result["client_batched"], state + 1 + 0.01, rtol=1e-6)
    assert result["client_types"] == ["MetaAction"] and result["plain_dtype"] == "float32"
