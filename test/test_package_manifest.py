"""package.xml names what the code imports, with keys rosdep resolves, so that `rosdep install
--from-paths src` on a ROS 2 install brings every dependency but the documented pip ones."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import REPO_ROOT

FIRST_PARTY = {"policy_server_ros", "socket_bridge", "benchmark"}
# Import name -> rosdep key; None: no key exists, installed by the README's pip step.
KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "builtin_interfaces":
    "builtin_interfaces", "std_msgs": "std_msgs", "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs", "trajectory_msgs": "trajectory_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "launch": "launch", "launch_ros": "launch_ros",
    "std_srvs": "std_srvs", "lifecycle_msgs": "lifecycle_msgs",
    "numpy": "python3-numpy", "yaml": "python3-yaml", "torch": "python3-torch",
    "PIL": "python3-pil", "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm",
    "rosbags": "python3-rosbags-pip", "safetensors": None,
}
# Optional extras (pyproject's [project.optional-dependencies]): imported only by the modules
# of the feature that needs them, never by the core, so package.xml does not list them.
OPTIONAL_EXTRAS = {"ray": "ray"}
# System keys checked in ros/rosdistro's rosdep/python.yaml (commit 8468e88, 2026-08-22);
# python3-safetensors and python3-safetensors-pip are not there.
ROSDEP_PYTHON_KEYS = {"python3-numpy", "python3-yaml", "python3-torch", "python3-pil",
                      "python3-matplotlib", "python3-tqdm", "python3-rosbags-pip",
                      "python3-pytest"}


def _imports() -> dict[str, str]:
    """Top-level module -> a file importing it, over the installed Python packages."""
    found: dict[str, str] = {}
    for package in sorted(FIRST_PARTY):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 \
                    and node.module else []
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(REPO_ROOT)))
    return found


def _manifest() -> dict[str, set[str]]:
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    out: dict[str, set[str]] = {}
    for element in root:
        out.setdefault(element.tag, set()).add((element.text or "").strip())
    return out


def test_every_third_party_import_is_a_dependency_with_a_rosdep_key() -> None:
    manifest = _manifest()
    run_time = manifest.get("depend", set()) | manifest.get("exec_depend", set())
    third_party = {name: where for name, where in _imports().items()
                   if name not in FIRST_PARTY and name not in sys.stdlib_module_names
                   and name not in OPTIONAL_EXTRAS}
    unknown = {name: where for name, where in third_party.items() if name not in KEYS}
    assert not unknown, f"imports without a rosdep decision (add to package.xml and KEYS): " \
                        f"{unknown}"
    missing = {KEYS[name]: where for name, where in third_party.items()
               if KEYS[name] is not None and KEYS[name] not in run_time}
    assert not missing, f"package.xml lacks {missing}"  # before: rcl_interfaces, rosbags
    system = {key for keys in manifest.values() for key in keys if key.startswith("python3-")}
    assert system <= ROSDEP_PYTHON_KEYS, f"not rosdep keys: {system - ROSDEP_PYTHON_KEYS}"


def test_optional_extras_are_declared_in_pyproject() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # tomllib: Python 3.11+ only
    section = pyproject.split("[project.optional-dependencies]", 1)[-1].split("\n[", 1)[0]
    for module, extra in OPTIONAL_EXTRAS.items():
        assert re.search(rf"^{extra} = \[", section, re.M), \
            f"{module} is imported but pyproject has no [{extra}] extra"


def test_launch_and_colcon_test_dependencies() -> None:
    manifest = _manifest()
    # `ros2 launch policy_server_ros server.launch.py` needs the ros2 launch verb.
    assert (REPO_ROOT / "policy_server_ros/launch/server.launch.py").is_file()
    assert "ros2launch" in manifest["exec_depend"]
    # CMakeLists.txt registers the suite with ament_add_pytest_test under BUILD_TESTING.
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert "ament_add_pytest_test(" in cmake
    assert {"ament_cmake_pytest", "python3-pytest"} <= manifest["test_depend"]


def test_the_readme_names_the_pip_only_dependencies() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    pip_only = sorted(name for name, key in KEYS.items() if key is None)
    assert f"`pip install {' '.join(pip_only)}`" in readme
    assert Path(REPO_ROOT / "scripts/check_colcon.sh").is_file()
