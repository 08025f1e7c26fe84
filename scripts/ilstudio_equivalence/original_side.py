#!/usr/bin/env python3
# ruff: noqa: PLC0415, I001, PLR0917 - the original's modules exist only in the side venv
"""The ORIGINAL system's side of the equivalence check; runs in a side venv, never in this project.

    ILSTUDIO_SRC=/tmp/ilstudio-src ROBOMIMIC_SRC=/tmp/robomimic-src \
        /tmp/ilstudio-venv/bin/python original_side.py write-mlp OUT --config '{"state_dim": 4}'
    ... original_side.py write-dp OUT --config '{...}' --seed 0
    ... original_side.py infer CKPT INPUTS.npz OUT.npz [--seed S] [--steps N] [--ema]
    ... original_side.py replay REPLAY_FOLDER OUT.npz [--episode N]

`write-*` builds the model with ILStudio's own classes (policy.mlp.MLPPolicy,
policy.diffusion_policy.DiffusionPolicyModel), perturbs its weights with a seeded generator (so
that biases and norms are not at their init values) and saves it with the model's own
`save_pretrained`, plus policy_metadata.json, normalize.json and a stats pickle as training writes
them. `infer` is the original server's path: `load_normalizers`, `load_model_from_checkpoint`,
`model.eval()`, `MetaPolicy(...).inference(MetaObs)`, with `torch.manual_seed(seed)` right before
each call when --seed is given; it saves the denormalized, time-major reply as (B, T, A).
`replay` feeds the original's policy/replay `Replay` model the chunks its EpisodicDataset would
(actions[t : t + chunk], zero-padded past the end) with identity normalization, calls
MetaPolicy.inference once per step t (its Replay counts calls) and saves the (T, chunk, A) replies.

Only what cannot run on this machine is changed, from outside the original's files:
* `.cuda()` / `.to('cuda')` (hard-coded in the original's Diffusion Policy) stay on the CPU;
* torchvision's compiled ops cannot load here (no matching CPU build), so its meta registrations
  are skipped; resnet18 and transforms.Normalize are pure Python and run unchanged;
* robomimic's ResNet18Conv(pretrained=True) would download ImageNet weights: it gets none (the
  checkpoint's weights replace them anyway);
* benchmark/utils.py imports tianshou for vectorized simulators: a stub module stands in;
* a bug of the original: MLPPolicy._init_weights(self) takes no module, but transformers 4.45.2
  (the version the original pins) calls `_init_weights(module)` inside `from_pretrained`, so
  ILStudio cannot load its own MLP checkpoints (TypeError). The call transformers makes before
  loading the weights is made a no-op; every weight then comes from the checkpoint;
* another: policy/replay imports EpisodicDataset from data_utils.utils, which no longer has it;
  the name is set to None so that the module (whose Replay class never uses it) imports.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np

sys.path[:0] = [os.environ.get("ILSTUDIO_SRC", "/tmp/ilstudio-src"),
                os.environ.get("ROBOMIMIC_SRC", "/tmp/robomimic-src")]
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
_tianshou_env = types.ModuleType("tianshou.env")
_tianshou_env.SubprocVectorEnv = object
sys.modules.setdefault("tianshou", types.ModuleType("tianshou"))
sys.modules["tianshou.env"] = _tianshou_env

import torch  # noqa: E402
import torchvision.models  # noqa: E402

_resnet18 = torchvision.models.resnet18
torchvision.models.resnet18 = lambda *a, weights=None, **kw: _resnet18(weights=None, **kw)
torch.nn.Module.cuda = lambda self, device=None: self
_module_to = torch.nn.Module.to


def _to_cpu(self, *args, **kwargs):
    args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
    if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
        kwargs["device"] = "cpu"
    return _module_to(self, *args, **kwargs)


torch.nn.Module.to = _to_cpu

DATASET_ID = "equivalence_set"


def _stats(state_dim: int, action_dim: int) -> dict:
    rng = np.random.default_rng(123)

    def part(dim: int) -> dict:
        mean = rng.normal(size=dim)
        std = rng.uniform(0.1, 0.5, dim)
        return {"mean": mean.tolist(), "std": std.tolist(), "min": (mean - 3 * std).tolist(),
                "max": (mean + 3 * std).tolist(), "q01": (mean - 2 * std).tolist(),
                "q99": (mean + 2 * std).tolist()}

    return {"num_trajectories": 5, "num_transitions": 500, "state": part(state_dim),
            "action": part(action_dim)}


def _training_files(out: Path, module: str, state_dim: int, action_dim: int,
                    norm: str) -> None:
    (out / "policy_metadata.json").write_text(json.dumps(
        {"policy_module": f"policy.{module}", "policy_name": module}))
    (out / "normalize.json").write_text(json.dumps({
        "version": "2.0",
        "datasets": [{"dataset_id": DATASET_ID, "ctrl_space": "joint", "ctrl_type": "abs"}],
        "state": {DATASET_ID: norm}, "action": {DATASET_ID: norm}}))
    with open(out / f"{DATASET_ID}_stats_joint_abs.pkl", "wb") as f:
        pickle.dump(_stats(state_dim, action_dim), f)


def _perturb(model: torch.nn.Module, seed: int, scale: float) -> None:
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


def write_mlp(out: Path, config: dict, seed: int, norm: str) -> None:
    from policy.mlp import MLPPolicy, MLPPolicyConfig

    torch.manual_seed(seed)
    model = MLPPolicy(MLPPolicyConfig(**config))
    _perturb(model, seed, 0.05)
    model.save_pretrained(str(out))
    cfg = model.config
    _training_files(out, "mlp", cfg.state_dim, cfg.action_dim, norm)


def write_dp(out: Path, config: dict, seed: int, norm: str) -> None:
    from policy.diffusion_policy import DiffusionPolicyConfig, DiffusionPolicyModel

    torch.manual_seed(seed)
    model = DiffusionPolicyModel(DiffusionPolicyConfig(**config))
    # EMA shadows were taken at construction; perturbing now makes them differ from the model.
    _perturb(model, seed, 0.02)
    model.save_pretrained(str(out))
    cfg = model.config
    _training_files(out, "diffusion_policy", cfg.state_dim, cfg.action_dim, norm)


def _let_mlp_checkpoints_load() -> None:
    from policy.mlp import MLPPolicy

    init = MLPPolicy._init_weights
    MLPPolicy._init_weights = lambda self, *module: None if module else init(self)


def infer(ckpt: Path, inputs: Path, out: Path, seed: int | None, steps: int, ema: bool) -> None:
    from benchmark.base import MetaObs, MetaPolicy
    from data_utils.utils import load_normalizers
    from policy.direct_loader import load_model_from_checkpoint

    _let_mlp_checkpoints_load()

    args = argparse.Namespace(model_name_or_path=str(ckpt), dataset_id="", chunk_size=100000,
                              device="cpu")
    normalizers, ctrl_space, ctrl_type = load_normalizers(args)
    args.ctrl_space, args.ctrl_type = ctrl_space, ctrl_type
    args.model_args = {"num_inference_steps": steps, "using_ema": ema}
    model = load_model_from_checkpoint(str(ckpt), args)["model"]
    model.eval()
    policy = MetaPolicy(policy=model, chunk_size=args.chunk_size,
                        action_normalizer=normalizers["action"],
                        state_normalizer=normalizers["state"], ctrl_space=ctrl_space,
                        ctrl_type=ctrl_type)
    data = np.load(inputs)
    results = {}
    for case in sorted({k.split("/")[0] for k in data.files}):
        state = data[f"{case}/state"]
        image = data[f"{case}/image"] if f"{case}/image" in data.files else None
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            replies = policy.inference(MetaObs(state=state, image=image))
        actions = np.stack([[np.asarray(item["action"]) for item in step] for step in replies])
        results[case] = actions.transpose(1, 0, 2).astype(np.float32)  # (B, T, A)
    np.savez(out, **results)
    print(f"original: {len(results)} cases -> {out}")


def replay(folder: Path, out: Path, episode: int) -> None:
    import data_utils.utils
    from benchmark.base import MetaObs, MetaPolicy
    from data_utils.normalize import Identity

    # policy/replay imports EpisodicDataset from data_utils.utils, which no longer defines it
    # (an ImportError in the original); the Replay class itself never uses it.
    data_utils.utils.EpisodicDataset = None
    from policy.replay import Replay

    config = json.loads((folder / "config.json").read_text())
    actions = np.load(folder / "actions.npz")[f"episode_{episode}"].astype(np.float32)
    steps, chunk = actions.shape[0], config["chunk_size"]
    padded = np.concatenate([actions, np.zeros((chunk, actions.shape[1]), np.float32)])
    chunks = [torch.from_numpy(padded[t:t + chunk]) for t in range(steps)]
    space, kind = config["ctrl_space"], config["ctrl_type"]
    model = Replay(chunks, ctrl_type=kind, ctrl_space=space)
    policy = MetaPolicy(policy=model, chunk_size=100000, action_normalizer=Identity(kind, space),
                        state_normalizer=Identity(kind, space), ctrl_space=space, ctrl_type=kind)
    replies = []
    for _ in range(steps):
        reply = policy.inference(MetaObs(state=np.zeros((1, 14), np.float32)))
        # A (chunk, A) answer is not "chunked" to MetaPolicy: one step whose row holds the chunk.
        replies.append(np.stack([np.asarray(item["action"]) for item in reply[0]]))
    np.savez(out, replies=np.stack(replies))
    print(f"original replay: {steps} steps -> {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("write-mlp", "write-dp"):
        p = sub.add_parser(name)
        p.add_argument("out", type=Path)
        p.add_argument("--config", default="{}", help="config class keyword arguments, JSON")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--norm", default="zscore")
    p = sub.add_parser("infer")
    p.add_argument("ckpt", type=Path)
    p.add_argument("inputs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ema", action="store_true")
    p = sub.add_parser("replay")
    p.add_argument("folder", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--episode", type=int, default=0)
    args = parser.parse_args()
    if args.command == "replay":
        replay(args.folder, args.out, args.episode)
        return 0
    if args.command == "infer":
        infer(args.ckpt, args.inputs, args.out, args.seed, args.steps, args.ema)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    writer = write_mlp if args.command == "write-mlp" else write_dp
    writer(args.out, json.loads(args.config), args.seed, args.norm)
    print(f"original {args.command}: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
