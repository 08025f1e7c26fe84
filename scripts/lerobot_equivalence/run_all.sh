#!/usr/bin/env bash
# Every equivalence check against LeRobot's own inference (side venv: setup_side_venv.sh).
# LeRobot's classes write each checkpoint (seeded weights, seeded statistics); LeRobot's
# predict_action_chunk / select_action between its saved processors and this project's policy
# get the same inputs; max |delta| printed per case (tolerance 1e-4).
#
#   scripts/lerobot_equivalence/run_all.sh 2>/dev/null | grep delta
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
side=("${SIDE_PYTHON:-/work/side/lerobot/bin/python}" "$here/lerobot_side.py")
ours=(.venv/bin/python "$here/compare.py")
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT

check() {  # check NAME CKPT INPUTS [flags...]: LeRobot, then ours
  local name=$1 ckpt=$2 inputs=$3
  shift 3
  "${side[@]}" infer "$ckpt" "$inputs" "$w/$name.npz" "$@" >/dev/null
  echo -n "[$name] "
  "${ours[@]}" compare "$ckpt" "$inputs" "$w/$name.npz" "$@"
}
two_cams='"observation.state": ["STATE", [6]], "observation.images.top": ["VISUAL", [3, 48, 64]],
  "observation.images.wrist": ["VISUAL", [3, 48, 64]], "action": ["ACTION", [5]]'
"${ours[@]}" inputs "$w/in_s6_c2.npz" --state_dim 6 --cameras 2 --image 48x64 --state_obj_dim 4

# --- ACT ---
"${side[@]}" write "$w/act_2cams" --type act --seed 1 --features "{$two_cams}" --config '{
  "dim_model": 32, "n_heads": 4, "dim_feedforward": 64, "n_encoder_layers": 2,
  "n_decoder_layers": 3, "chunk_size": 10, "n_action_steps": 5, "n_vae_encoder_layers": 1}'
check act_2cams_3_decoder_layers "$w/act_2cams" "$w/in_s6_c2.npz"
"${side[@]}" write "$w/act_env" --type act --seed 2 --features '{"observation.state": ["STATE",
  [6]], "observation.environment_state": ["ENV", [4]], "action": ["ACTION", [5]]}' \
  --norm '{"STATE": "MIN_MAX", "ENV": "MEAN_STD", "ACTION": "MIN_MAX"}' --config '{
  "dim_model": 32, "n_heads": 4, "dim_feedforward": 64, "n_encoder_layers": 3, "pre_norm": true,
  "feedforward_activation": "gelu", "chunk_size": 8, "n_action_steps": 8, "use_vae": false}'
check act_env_state_pre_norm_gelu_min_max "$w/act_env" "$w/in_s6_c2.npz"
# (LeRobot's ACT inference reads observation.state's device, so it needs a state feature.)
"${side[@]}" write "$w/act_quantiles" --type act --seed 3 --features '{"observation.state":
  ["STATE", [6]], "observation.images.front": ["VISUAL", [3, 48, 64]], "action": ["ACTION",
  [5]]}' --norm '{"VISUAL": "IDENTITY", "STATE": "QUANTILE10", "ACTION": "QUANTILES"}' \
  --config '{"dim_model": 32, "n_heads": 2, "dim_feedforward": 48, "n_encoder_layers": 1,
  "chunk_size": 6, "n_action_steps": 2}'
"${ours[@]}" inputs "$w/in_s6_c1.npz" --state_dim 6 --cameras 1 --image 48x64
check act_identity_images_quantile_norms "$w/act_quantiles" "$w/in_s6_c1.npz"
rm -rf "$w"/act_*
"${side[@]}" write "$w/act_aloha" --type act --seed 4  # LeRobot's defaults, ALOHA's features
"${ours[@]}" inputs "$w/in_s14_c1_480.npz" --state_dim 14 --cameras 1 --image 480x640
check act_defaults_aloha_480x640 "$w/act_aloha" "$w/in_s14_c1_480.npz"
rm -rf "$w/act_aloha"

# --- Diffusion ---
"${side[@]}" write "$w/dp_ddpm" --type diffusion --seed 2 --features "{$two_cams}" --config '{
  "down_dims": [32, 64], "diffusion_step_embed_dim": 16, "n_groups": 4, "horizon": 8,
  "n_action_steps": 4, "spatial_softmax_num_keypoints": 8, "num_inference_steps": 6}'
check dp_ddpm_2cams_seed3_6steps "$w/dp_ddpm" "$w/in_s6_c2.npz" --seed 3
check dp_ddpm_2cams_seed4_20steps "$w/dp_ddpm" "$w/in_s6_c2.npz" --seed 4 --steps 20
"${side[@]}" write "$w/dp_ddim" --type diffusion --seed 5 --features "{$two_cams,
  \"observation.environment_state\": [\"ENV\", [4]]}" \
  --norm '{"VISUAL": "MIN_MAX", "STATE": "MEAN_STD", "ENV": "MIN_MAX", "ACTION": "MEAN_STD"}' \
  --config '{"down_dims": [16, 32, 64], "diffusion_step_embed_dim": 8, "n_groups": 4,
  "horizon": 16, "n_obs_steps": 3, "n_action_steps": 6, "spatial_softmax_num_keypoints": 4,
  "noise_scheduler_type": "DDIM", "num_inference_steps": 7, "prediction_type": "sample",
  "clip_sample_range": 1.5, "beta_schedule": "linear", "use_film_scale_modulation": false,
  "use_separate_rgb_encoder_per_camera": true, "use_group_norm": false,
  "resize_shape": [40, 54], "crop_ratio": 0.9}'
check dp_ddim_resize_crop_separate_encoders_env_sample "$w/dp_ddim" "$w/in_s6_c2.npz" --seed 1
rm -rf "$w"/dp_*
"${side[@]}" write "$w/dp_pusht" --type diffusion --seed 6 --features '{"observation.state":
  ["STATE", [2]], "observation.image": ["VISUAL", [3, 96, 96]], "action": ["ACTION", [2]]}' \
  --config '{"crop_shape": [84, 84]}'  # LeRobot's defaults (100 DDPM steps), PushT's features
"${ours[@]}" inputs "$w/in_s2_c1_96.npz" --state_dim 2 --cameras 1 --image 96x96
check dp_defaults_pusht_crop84_100steps "$w/dp_pusht" "$w/in_s2_c1_96.npz" --seed 0
