#!/usr/bin/env bash
# Regenerate the test data recorded from LeRobot (0.4.4): what its own classes save (config.json,
# processor files, tensor listings) and golden outputs of its own inference. Needs the side venv
# (setup_side_venv.sh); run from the repository root:
#
#   scripts/lerobot_equivalence/make_test_data.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
side=("${SIDE_PYTHON:-/work/side/lerobot/bin/python}" "$here/lerobot_side.py")
ours=(.venv/bin/python "$here/compare.py")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=test/data/lerobot
rm -rf $data && mkdir -p $data

# Layout: LeRobot's defaults on ALOHA's features (14-D state and action, one 480x640 camera),
# everything but the weights, plus a listing of the weights.
for kind in act diffusion; do
  "${side[@]}" write "$work/$kind" --type $kind --seed 0
  mkdir -p $data/${kind}_aloha
  cp "$work/$kind"/*.json "$work/$kind"/policy_*.safetensors $data/${kind}_aloha/
  "${ours[@]}" keys "$work/$kind/model.safetensors" > $data/${kind}_aloha/keys.tsv
  rm -rf "${work:?}/$kind"
done

# A LeRobot 0.3.3 checkpoint (statistics inside model.safetensors), tiny: the refusal's input.
w03="$work/lerobot03"
"$(dirname "${side[0]}")/pip" download -q --no-deps lerobot==0.3.3 -d "$w03"
python3 -m zipfile -e "$w03"/lerobot-0.3.3-*.whl "$w03/src"
PYTHONPATH="$w03/src" "${side[0]}" "$here/lerobot03_side.py" write $data/act_0.3.3_env --env

# Golden 1: tiny checkpoints LeRobot saved (no cameras, so no ResNet: committed whole), inputs,
# LeRobot's outputs.
env_features='{"observation.state": ["STATE", [6]], "observation.environment_state": ["ENV",
  [4]], "action": ["ACTION", [5]]}'
"${side[@]}" write $data/env_act --type act --seed 7 --features "$env_features" --config '{
  "dim_model": 16, "n_heads": 2, "dim_feedforward": 32, "n_encoder_layers": 2,
  "n_decoder_layers": 2, "chunk_size": 6, "n_action_steps": 3, "n_vae_encoder_layers": 1}'
"${side[@]}" write $data/env_diffusion --type diffusion --seed 8 --features "$env_features" \
  --config '{"down_dims": [16, 32], "diffusion_step_embed_dim": 8, "n_groups": 4, "horizon": 8,
  "n_action_steps": 4, "num_inference_steps": 5}'
"${ours[@]}" inputs $data/env_inputs.npz --state_dim 6 --state_obj_dim 4 --seed 1
"${side[@]}" infer $data/env_act $data/env_inputs.npz $data/env_act_outputs.npz
"${side[@]}" infer $data/env_diffusion $data/env_inputs.npz \
  $data/env_diffusion_outputs_seed3.npz --seed 3
"${ours[@]}" compare $data/env_act $data/env_inputs.npz $data/env_act_outputs.npz
"${ours[@]}" compare $data/env_diffusion $data/env_inputs.npz \
  $data/env_diffusion_outputs_seed3.npz --seed 3

# Golden 2: LeRobot's outputs on the small two-camera examples THIS project writes (seed 0;
# tens of MB each, so the tests rewrite them instead of committing them).
"${ours[@]}" inputs $data/camera_inputs.npz --state_dim 14 --cameras 2 --image 48x64 --seed 2
for kind in act diffusion; do
  .venv/bin/python -m policy_server_ros.example_checkpoint "$work/ex_$kind" \
    --policy lerobot_$kind --small --cameras 2 >/dev/null
  "${side[@]}" infer "$work/ex_$kind" $data/camera_inputs.npz \
    $data/example_${kind}_outputs_seed3.npz --seed 3
  "${ours[@]}" compare "$work/ex_$kind" $data/camera_inputs.npz \
    $data/example_${kind}_outputs_seed3.npz --seed 3
done
