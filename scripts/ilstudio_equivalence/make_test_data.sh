#!/usr/bin/env bash
# Regenerate the test data recorded from the ORIGINAL (ILStudio) code: tensor listings and
# config.json of checkpoints its own classes save, and golden outputs of its own inference.
# Needs the side venv (setup_side_venv.sh); run from the repository root:
#
#   scripts/ilstudio_equivalence/make_test_data.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
side=${SIDE_PYTHON:-/tmp/ilstudio-venv/bin/python}
orig=("$side" "$here/original_side.py")
ours=(.venv/bin/python "$here/compare.py")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=test/data

# --- mlp -------------------------------------------------------------------------------------
# Listing and config.json of the example's default sizes, saved by the original's MLPPolicy.
"${orig[@]}" write-mlp "$work/mlp" --config '{"state_dim": 14, "action_dim": 14, "num_layers": 3,
  "hidden_dim": 256, "chunk_size": 20, "dropout": 0.1, "activation": "relu"}'
"${ours[@]}" keys "$work/mlp/model.safetensors" > $data/ilstudio_mlp_keys.tsv
cp "$work/mlp/config.json" $data/ilstudio_mlp_config.json
# Golden: a tiny camera MLP saved by the original (committed whole), its inputs, its outputs.
g=$data/golden/mlp
rm -rf $g && mkdir -p $g
"${orig[@]}" write-mlp $g/checkpoint --seed 3 --config '{"state_dim": 6, "action_dim": 5,
  "num_layers": 3, "hidden_dim": 16, "chunk_size": 4, "dropout": 0.1, "activation": "gelu",
  "use_camera": true, "image_dim": 384}'
"${ours[@]}" inputs $g/inputs.npz --state_dim 6 --cameras 2 --image 8x8 --seed 1
"${orig[@]}" infer $g/checkpoint $g/inputs.npz $g/original_outputs.npz
"${ours[@]}" compare $g/checkpoint $g/inputs.npz $g/original_outputs.npz

# --- diffusion_policy ----------------------------------------------------------------------------
# Listings (pytorch_model.bin in file order; ema_model.bin's shadow_params in order) and
# config.json of the example's default sizes, saved by the original's DiffusionPolicyModel.
"${orig[@]}" write-dp "$work/dp" --config '{"state_dim": 14, "action_dim": 14,
  "camera_names": ["primary"], "image_sizes": ["(640, 480)"], "prediction_horizon": 16}'
"${ours[@]}" keys "$work/dp/pytorch_model.bin" > $data/ilstudio_diffusion_policy_keys.tsv
"${ours[@]}" keys "$work/dp/ema_model.bin" > $data/ilstudio_diffusion_policy_ema_keys.tsv
cp "$work/dp/config.json" $data/ilstudio_diffusion_policy_config.json
rm -rf "$work/dp"
# Golden: the original's inference on the small example checkpoint THIS project writes (seed 0;
# 720 MB, so it is rewritten by the test instead of committed): seeded noise, 10 steps with the
# model's weights and 4 steps with the EMA weights.
g=$data/golden/diffusion_policy
rm -rf $g && mkdir -p $g
.venv/bin/python -m policy_server_ros.example_checkpoint "$work/dp_small" \
  --policy diffusion_policy --small --seed 0
"${ours[@]}" inputs $g/inputs.npz --state_dim 14 --cameras 1 --image 64x64 --seed 2
"${orig[@]}" infer "$work/dp_small" $g/inputs.npz $g/original_outputs_seed7_steps10.npz --seed 7
"${orig[@]}" infer "$work/dp_small" $g/inputs.npz $g/original_outputs_seed3_steps4_ema.npz \
  --seed 3 --steps 4 --ema
"${ours[@]}" compare "$work/dp_small" $g/inputs.npz $g/original_outputs_seed7_steps10.npz --seed 7
"${ours[@]}" compare "$work/dp_small" $g/inputs.npz $g/original_outputs_seed3_steps4_ema.npz \
  --seed 3 --steps 4 --ema
