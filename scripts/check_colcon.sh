#!/usr/bin/env bash
# The colcon path, checked against the ROS 2 wheels (no ROS install here): `colcon build` and
# `colcon test` of this package with the project venv (scripts/setup_venv.sh) as the ROS prefix,
# the way a user builds it in a venv holding the wheels. colcon itself lives in a venv of its
# own (.venv-colcon): colcon-core installs pytest plugins that must not enter the project venv.
#
# Checks: the build finds everything through CMakeLists.txt's wheel detection (not SKBUILD),
# installs the executables, launch file, config and ament index marker where ros2 launch looks,
# and registers the pytest suite with ctest; `colcon test` then runs a small part of it
# (PYTEST_ADDOPTS, default `-k framing`) through that registration. The whole suite runs in CI
# directly (scripts/test.sh).
#
#   scripts/check_colcon.sh                 # build dir: build/colcon
#   PYTEST_ADDOPTS="-x" scripts/check_colcon.sh   # the whole suite through colcon test
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
colcon_venv=$root/.venv-colcon
work=$root/build/colcon
python=${PYTHON:-python3}

"$root/scripts/setup_venv.sh" >/dev/null
if [ ! -x "$colcon_venv/bin/colcon" ]; then
  echo "==> creating $colcon_venv (colcon only)"
  "$python" -m venv "$colcon_venv"
  "$colcon_venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$root/requirements/colcon.txt"
fi

# The project venv's python first: CMake's FindPython3 takes it, and with it the ROS prefix.
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
colcon=("$colcon_venv/bin/colcon" --log-base "$work/log")
paths=(--paths "$root" --build-base "$work/build" --install-base "$work/install")

echo "==> colcon build"
"${colcon[@]}" build "${paths[@]}" --event-handlers console_direct+ \
  --cmake-args -DPython3_EXECUTABLE="$venv/bin/python"

install=$work/install/policy_server_ros  # colcon default: one prefix per package
for path in share/ament_index/resource_index/packages/policy_server_ros \
    share/policy_server_ros/launch/server.launch.py share/policy_server_ros/config/server.yaml \
    share/policy_server_ros/package.xml lib/policy_server_ros/policy_server \
    lib/policy_server_ros/policy_server_bag; do
  [ -e "$install/$path" ] || { echo "error: colcon did not install $path" >&2; exit 1; }
done
head -1 "$install/lib/policy_server_ros/policy_server" | grep -qx "#!$venv/bin/python\(3[.0-9]*\)\?" \
  || { echo "error: the installed policy_server does not run the venv's python" >&2; exit 1; }

echo "==> colcon test (PYTEST_ADDOPTS=${PYTEST_ADDOPTS:=-k framing})"
export PYTEST_ADDOPTS
"${colcon[@]}" test "${paths[@]}" --event-handlers console_direct+ --ctest-args -R '^pytest$'
"${colcon[@]}" test-result --test-result-base "$work/build" --verbose
