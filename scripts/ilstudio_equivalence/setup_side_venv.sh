#!/usr/bin/env bash
# A side venv with the ORIGINAL system (ILStudio) and what its inference needs, OUTSIDE this
# project: its code is only ever run from there, never imported by this package or its tests.
#
#   scripts/ilstudio_equivalence/setup_side_venv.sh      # -> /tmp/ilstudio-venv, /tmp/ilstudio-src
#
# ILSTUDIO_GIT / ROBOMIMIC_GIT: git directories (or URLs) of github.com/WwZzz/ILStudio and
# github.com/ARISE-Initiative/robomimic. Versions: the original's pins (transformers 4.45.2,
# diffusers 0.35.1) with this project's torch, so differences come from code, not from torch.
set -euo pipefail
venv=${SIDE_VENV:-/tmp/ilstudio-venv}
src=${ILSTUDIO_SRC:-/tmp/ilstudio-src}
robomimic=${ROBOMIMIC_SRC:-/tmp/robomimic-src}
ilstudio_git=${ILSTUDIO_GIT:-https://github.com/WwZzz/ILStudio}
robomimic_git=${ROBOMIMIC_GIT:-https://github.com/ARISE-Initiative/robomimic}

python3 -m venv "$venv"
"$venv/bin/pip" install "torch==2.13.0+cpu" torchvision "transformers==4.45.2" \
  "diffusers==0.35.1" numpy safetensors h5py opencv-python-headless imageio termcolor \
  matplotlib
for pair in "$ilstudio_git $src" "$robomimic_git $robomimic"; do
  set -- $pair
  if [ ! -d "$2" ]; then
    if [ -d "$1" ]; then  # a bare mirror: export its tree (files whose blobs it lacks skipped)
      mkdir -p "$2"
      git --git-dir="$1" ls-tree -r --name-only HEAD | while read -r f; do
        mkdir -p "$2/$(dirname "$f")"
        git --git-dir="$1" show "HEAD:$f" > "$2/$f" 2>/dev/null || rm -f "$2/$f"
      done
    else
      git clone --depth 1 "$1" "$2"
    fi
  fi
done
echo "side venv: $venv; ILStudio: $src; robomimic: $robomimic"
