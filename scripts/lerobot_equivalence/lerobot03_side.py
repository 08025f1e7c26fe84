#!/usr/bin/env python3
"""LeRobot 0.3.3's side of the <= 0.3 check: its own ACTPolicy writes a checkpoint (dataset
statistics as buffers inside model.safetensors, no processor files) and runs select_action.
Run with lerobot 0.3.3 first on the path (see legacy_03.sh), never in the project's venv.

    python lerobot03_side.py write OUT [--env]     # --env: an environment state, no camera
    python lerobot03_side.py infer CKPT INPUTS.npz OUT.npz     # one camera, 6-D state
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy

CHUNK = 4


def write(out: str, env: bool = False) -> None:
    second = ("observation.environment_state", PolicyFeature(type=FeatureType.ENV, shape=(3,)))\
        if env else ("observation.images.top", PolicyFeature(type=FeatureType.VISUAL,
                                                             shape=(3, 48, 64)))
    features = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,)),
                second[0]: second[1]}
    config = ACTConfig(
        input_features=features,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(5,))},
        device="cpu", pretrained_backbone_weights=None, dim_model=32, n_heads=4,
        dim_feedforward=64, n_encoder_layers=1, n_vae_encoder_layers=1, chunk_size=CHUNK,
        n_action_steps=CHUNK, push_to_hub=False)
    g = torch.Generator().manual_seed(0)
    stats = {"observation.state": {"mean": torch.randn(6, generator=g),
                                   "std": torch.rand(6, generator=g) + 0.1},
             second[0]: {"mean": torch.rand(second[1].shape, generator=g),
                         "std": torch.rand(second[1].shape, generator=g) + 0.1},
             "action": {"mean": torch.randn(5, generator=g),
                        "std": torch.rand(5, generator=g) + 0.1}}
    torch.manual_seed(0)
    ACTPolicy(config, dataset_stats=stats).save_pretrained(out)


def infer(ckpt: str, inputs: str, out: str) -> None:
    policy = ACTPolicy.from_pretrained(ckpt)
    policy.eval()
    data = np.load(inputs)
    results = {}
    for case in ("single", "batch"):
        batch = {"observation.state": torch.from_numpy(data[f"{case}/state"]),
                 "observation.images.top":
                     torch.from_numpy(data[f"{case}/image"][:, 0]).to(torch.float32) / 255}
        policy.reset()
        with torch.no_grad():
            steps = [policy.select_action(dict(batch)) for _ in range(CHUNK)]
        results[case] = torch.stack(steps, dim=1).numpy()
    np.savez(out, **results)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], env="--env" in sys.argv)
    else:
        infer(*sys.argv[2:5])
