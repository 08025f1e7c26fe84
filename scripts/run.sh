#!/usr/bin/env bash
# Quick start, command 1: set up the venv, then run the policy_server ROS 2 node serving the
# example checkpoint, with the socket bridge on port 5000. Extra arguments are ROS arguments,
# e.g. scripts/run.sh -p device:=cpu -p camera_topics:="[/cam/image_raw]"
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup_venv.sh"
# Whole camera frames over best-effort QoS need a large shared-memory segment (see README).
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$root/config/fastdds_large_shm.xml}
cd "$root"
exec "${VENV:-$root/.venv}/bin/python" -m policy_server_ros --ros-args "$@"
