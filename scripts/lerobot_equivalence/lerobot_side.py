#!/usr/bin/env python3
"""LeRobot's side of the equivalence check; runs in a side venv with `lerobot` installed
(setup_side_venv.sh), never in the project's. LeRobot's own classes write checkpoints and run
inference: `predict_action_chunk` (ACT) or `select_action` n_action_steps times after `reset`
(Diffusion), between the processors it saved.

    python lerobot_side.py write OUT --type act --seed 0 [--config JSON] [--features JSON] \
        [--norm JSON]
    python lerobot_side.py infer CKPT INPUTS.npz OUT.npz [--seed 0] [--steps N]

INPUTS.npz holds per case (`single`, `batch`): `state` (B, S) float32, `image` (B, K, 3, H, W)
uint8 with cameras in config.json's image-feature order, `state_obj` (B, E) for
observation.environment_state. OUT.npz holds each case's actions (B, T, A).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors

DEFAULT_FEATURES = {"observation.state": ["STATE", [14]],
                    "observation.images.top": ["VISUAL", [3, 480, 640]], "action": ["ACTION", [14]]}


def _stats(features: dict[str, PolicyFeature], rng: np.random.Generator) -> dict:
    """Seeded statistics of a plausible dataset for every feature (images per channel)."""
    stats = {}
    for name, feature in features.items():
        shape = (feature.shape[0], 1, 1) if feature.type is FeatureType.VISUAL else feature.shape
        mean = rng.normal(0.4, 0.2, shape) if feature.type is FeatureType.VISUAL else \
            rng.normal(0, 1, shape)
        std = rng.uniform(0.1, 0.5, shape)
        low = mean - rng.uniform(0.5, 2.0, shape)
        high = mean + rng.uniform(0.5, 2.0, shape)
        stats[name] = {k: torch.tensor(v, dtype=torch.float32) for k, v in
                       {"mean": mean, "std": std, "min": low, "max": high,
                        "q01": low * 0.9 + mean * 0.1, "q99": high * 0.9 + mean * 0.1,
                        "q10": low * 0.5 + mean * 0.5, "q90": high * 0.5 + mean * 0.5}.items()}
    return stats


def write(out: Path, kind: str, seed: int, *, config: dict, features: dict, norm: dict) -> None:
    feats = {name: PolicyFeature(type=FeatureType(t), shape=tuple(s))
             for name, (t, s) in features.items()}
    cfg = make_policy_config(
        kind, device="cpu", push_to_hub=False, pretrained_backbone_weights=None,
        input_features={k: v for k, v in feats.items() if v.type is not FeatureType.ACTION},
        output_features={k: v for k, v in feats.items() if v.type is FeatureType.ACTION},
        **({"normalization_mapping": {k: NormalizationMode(v) for k, v in norm.items()}}
           if norm else {}), **config)
    torch.manual_seed(seed)
    policy = get_policy_class(kind)(cfg)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # biases, norms and frozen batch-norm statistics away from init
        for name, t in policy.state_dict().items():
            if t.is_floating_point() and t.ndim == 1:
                t.add_(0.05 * torch.randn(t.shape, generator=generator))
                if "running_var" in name:
                    t.abs_().add_(0.5)
    policy.save_pretrained(out)
    pre, post = make_pre_post_processors(cfg, dataset_stats=_stats(feats,
                                                                    np.random.default_rng(seed)))
    pre.save_pretrained(out)
    post.save_pretrained(out)


def infer(ckpt: Path, inputs: Path, out: Path, seed: int, steps: int | None) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    policy = get_policy_class(config["type"]).from_pretrained(str(ckpt))
    policy.config.device = "cpu"
    policy.eval()
    if steps is not None and config["type"] == "diffusion":
        policy.diffusion.num_inference_steps = steps
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(ckpt))
    images = [k for k, v in policy.config.input_features.items()
              if v.type is FeatureType.VISUAL]
    state = [k for k, v in policy.config.input_features.items() if v.type is FeatureType.STATE]
    env = [k for k, v in policy.config.input_features.items() if v.type is FeatureType.ENV]
    data = np.load(inputs)
    results = {}
    for case in sorted({k.split("/")[0] for k in data.files}):
        batch = {}
        if state:
            batch[state[0]] = torch.from_numpy(data[f"{case}/state"])
        if env:
            batch[env[0]] = torch.from_numpy(data[f"{case}/state_obj"])
        for k, name in enumerate(images):
            batch[name] = torch.from_numpy(data[f"{case}/image"][:, k]).to(torch.float32) / 255
        with torch.no_grad():
            if config["type"] == "act":
                actions = post(policy.predict_action_chunk(pre(batch)))
            else:
                policy.reset()
                torch.manual_seed(seed)
                steps_out = [post(policy.select_action(pre(dict(batch))))
                             for _ in range(policy.config.n_action_steps)]
                actions = torch.stack(steps_out, dim=1)
        results[case] = actions.numpy()
        print(f"{case}: actions {tuple(actions.shape)}")
    np.savez(out, **results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("write")
    p.add_argument("out", type=Path)
    p.add_argument("--type", default="act", choices=("act", "diffusion"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=json.loads, default={})
    p.add_argument("--features", type=json.loads, default=DEFAULT_FEATURES)
    p.add_argument("--norm", type=json.loads, default={})
    p = sub.add_parser("infer")
    p.add_argument("ckpt", type=Path)
    p.add_argument("inputs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    args = parser.parse_args()
    if args.command == "write":
        write(args.out, args.type, args.seed, config=args.config, features=args.features,
              norm=args.norm)
    else:
        infer(args.ckpt, args.inputs, args.out, args.seed, args.steps)


if __name__ == "__main__":
    main()
