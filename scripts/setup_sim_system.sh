#!/usr/bin/env bash
# The Debian packages headless MuJoCo rendering needs (MUJOCO_GL=egl): libegl1 libegl-mesa0
# libgl1-mesa-dri. Installs them when missing and this runs as root with apt-get; otherwise
# says what to install. scripts/test.sh runs it: the suite renders a short closed loop.
set -euo pipefail
packages=(libegl1 libegl-mesa0 libgl1-mesa-dri)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing ${missing[*]} (headless rendering for the simulator)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "error: the simulator needs ${missing[*]}: apt-get install ${missing[*]}" >&2
  exit 1
fi
