#!/usr/bin/env bash
# Every equivalence check against the ORIGINAL's own inference (side venv: setup_side_venv.sh).
# For each family, checkpoints written both ways (by the original's classes, and by this
# project's example writers), the same inputs through both implementations, max |delta| printed.
#
#   scripts/ilstudio_equivalence/run_all.sh 2>/dev/null | grep delta
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
orig=("${SIDE_PYTHON:-/tmp/ilstudio-venv/bin/python}" "$here/original_side.py")
ours=(.venv/bin/python "$here/compare.py")
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT

check() {  # check NAME CKPT INPUTS [compare flags...]: the original, then ours
  local name=$1 ckpt=$2 inputs=$3
  shift 3
  "${orig[@]}" infer "$ckpt" "$inputs" "$w/$name.npz" "$@" >/dev/null
  echo -n "[$name] "
  "${ours[@]}" compare "$ckpt" "$inputs" "$w/$name.npz" "$@"
}

# --- mlp ---
"${orig[@]}" write-mlp "$w/mlp_orig" --seed 1 --config '{"state_dim": 6, "action_dim": 5,
  "num_layers": 3, "hidden_dim": 32, "chunk_size": 8, "dropout": 0.1, "activation": "gelu"}'
"${ours[@]}" inputs "$w/in_s6.npz" --state_dim 6
check mlp_original_written_state "$w/mlp_orig" "$w/in_s6.npz"
"${orig[@]}" write-mlp "$w/mlp_cam" --seed 2 --norm minmax --config '{"state_dim": 6,
  "action_dim": 5, "num_layers": 4, "hidden_dim": 32, "chunk_size": 4, "use_camera": true,
  "image_dim": 1920, "activation": "tanh"}'
"${ours[@]}" inputs "$w/in_s6_c2.npz" --state_dim 6 --cameras 2 --image 16x20
check mlp_original_written_camera "$w/mlp_cam" "$w/in_s6_c2.npz"
.venv/bin/python -m policy_server_ros.example_checkpoint "$w/mlp_ours" --policy mlp >/dev/null
"${ours[@]}" inputs "$w/in_s14.npz" --state_dim 14
check mlp_ours_written_state "$w/mlp_ours" "$w/in_s14.npz"
.venv/bin/python -m policy_server_ros.example_checkpoint "$w/mlp_ours_cam" --policy mlp \
  --cameras 1 --image 48x64 >/dev/null
"${ours[@]}" inputs "$w/in_s14_c1_48.npz" --state_dim 14 --cameras 1 --image 48x64
check mlp_ours_written_camera "$w/mlp_ours_cam" "$w/in_s14_c1_48.npz"

# --- diffusion_policy ---
"${orig[@]}" write-dp "$w/dp_orig" --seed 4 --config '{"state_dim": 6, "action_dim": 5,
  "camera_names": ["primary", "wrist"], "image_sizes": ["(64, 48)", "(64, 48)"],
  "prediction_horizon": 16}'
"${ours[@]}" inputs "$w/in_s6_c2_48.npz" --state_dim 6 --cameras 2 --image 48x64
check dp_original_written_2cams_seed7_10steps "$w/dp_orig" "$w/in_s6_c2_48.npz" --seed 7
check dp_original_written_2cams_seed3_100steps_ema "$w/dp_orig" "$w/in_s6_c2_48.npz" \
  --seed 3 --steps 100 --ema
rm -rf "$w/dp_orig"
"${orig[@]}" write-dp "$w/dp_nocam" --norm minmax --config '{"state_dim": 4, "action_dim": 3,
  "camera_names": [], "image_sizes": [], "prediction_horizon": 8, "beta_schedule": "linear",
  "prediction_type": "sample", "clip_sample": false}'
"${ours[@]}" inputs "$w/in_s4.npz" --state_dim 4 --cameras 1 --image 8x8  # the original needs one
check dp_original_written_no_camera_linear_sample_7steps "$w/dp_nocam" "$w/in_s4.npz" \
  --seed 0 --steps 7
rm -rf "$w/dp_nocam"
.venv/bin/python -m policy_server_ros.example_checkpoint "$w/dp_ours" \
  --policy diffusion_policy >/dev/null  # ALOHA sizes, one 480x640 camera
"${ours[@]}" inputs "$w/in_s14_c1_480.npz" --state_dim 14 --cameras 1 --image 480x640
check dp_ours_written_480x640_seed0_10steps "$w/dp_ours" "$w/in_s14_c1_480.npz" --seed 0
check dp_ours_written_480x640_seed5_100steps_ema "$w/dp_ours" "$w/in_s14_c1_480.npz" \
  --seed 5 --steps 100 --ema
rm -rf "$w/dp_ours"

# --- replay ---
.venv/bin/python -m policy_server_ros.example_checkpoint "$w/replay" --policy replay >/dev/null
python3 - "$w/replay/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["past_end"] = "zero"  # the original's dataset pads zeros
json.dump(c, open(sys.argv[1], "w"))
PY
for episode in 0 1; do
  "${orig[@]}" replay "$w/replay" "$w/replay_$episode.npz" --episode $episode >/dev/null
  echo -n "[replay_episode_$episode] "
  "${ours[@]}" replay "$w/replay" "$w/replay_$episode.npz" --episode $episode
done
