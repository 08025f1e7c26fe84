#!/usr/bin/env python3
"""This project's side of the equivalence check: the same checkpoint and inputs through
policy_server_ros, compared with the original's outputs (see original_side.py and run_all.sh).

    .venv/bin/python scripts/ilstudio_equivalence/compare.py inputs OUT.npz --state_dim 14 \
        --cameras 1 --image 480x640
    .venv/bin/python scripts/ilstudio_equivalence/compare.py compare CKPT INPUTS.npz ORIGINAL.npz \
        [--seed 0] [--steps 10] [--ema]

    .venv/bin/python scripts/ilstudio_equivalence/compare.py keys WEIGHTS_FILE > listing.tsv
    .venv/bin/python scripts/ilstudio_equivalence/compare.py replay DIR ORIGINAL.npz [--episode N]

`keys` lists a weights file's tensors as `name<TAB>shape<TAB>dtype` (safetensors: sorted, as
test/data/ilstudio_act_keys.tsv; pytorch_model.bin: in file order, which EMA weights follow;
ema_model.bin: its shadow_params in order, named by index). `compare` prints one line with the
max |Δ| over every case and action and exits 1 when it exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from policy_server_ros.observation import as_batch  # noqa: E402
from policy_server_ros.policies import LoadOptions, load_policy  # noqa: E402
from socket_bridge.wire_types import MetaObs  # noqa: E402

ORIGINAL_MIN_STD = 0.01  # the original's zscore floor at the commit compared


def make_inputs(out: Path, state_dim: int, cameras: int, image_hw: tuple[int, int],
                seed: int, *, state_obj_dim: int = 0) -> None:
    """Cases `single` (B=1) and `batch` (B=3): float32 state, uint8 images (B, K, 3, H, W),
    float32 state_obj when asked for (LeRobot's environment state)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for case, batch in (("single", 1), ("batch", 3)):
        arrays[f"{case}/state"] = rng.normal(size=(batch, state_dim)).astype(np.float32)
        if cameras:
            arrays[f"{case}/image"] = rng.integers(0, 256, (batch, cameras, 3, *image_hw),
                                                   dtype=np.uint8)
        if state_obj_dim:
            arrays[f"{case}/state_obj"] = rng.normal(size=(batch, state_obj_dim)).astype(
                np.float32)
    np.savez(out, **arrays)


def ours(ckpt: Path, inputs: Path, options: LoadOptions) -> dict[str, np.ndarray]:
    policy = load_policy(ckpt, options)
    data = np.load(inputs)
    results = {}
    for case in sorted({k.split("/")[0] for k in data.files}):
        image = data[f"{case}/image"] if f"{case}/image" in data.files else None
        state_obj = data[f"{case}/state_obj"] if f"{case}/state_obj" in data.files else None
        batch, _ = as_batch(MetaObs(state=data[f"{case}/state"], image=image,
                                    state_obj=state_obj))
        results[case] = policy.predict(batch)
    return results


def compare(ckpt: Path, inputs: Path, original: Path, options: LoadOptions,
            tolerance: float) -> int:
    theirs = np.load(original)
    mine = ours(ckpt, inputs, options)
    worst = 0.0
    for case, actions in mine.items():
        reference = theirs[case]
        if reference.shape != actions.shape:
            print(f"{ckpt.name} {case}: shape {actions.shape} != original {reference.shape}")
            return 1
        worst = max(worst, float(np.abs(actions.astype(np.float64) - reference).max()))
    scale = max(float(np.abs(theirs[c]).max()) for c in mine)
    verdict = "OK" if worst <= tolerance else "FAIL"
    print(f"{ckpt.name}: max |delta| = {worst:.3g} over {len(mine)} cases "
          f"(max |action| {scale:.3g}; tolerance {tolerance:g}) {verdict}")
    return 0 if worst <= tolerance else 1


_DTYPE_CODES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
                "torch.int64": "I64"}


def tensor_listing(path: Path) -> list[str]:
    import torch  # noqa: PLC0415

    if path.suffix == ".safetensors":
        from safetensors import safe_open  # noqa: PLC0415

        with safe_open(str(path), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in sorted(f.keys())}
    else:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
        if "shadow_params" in tensors:
            tensors = {f"shadow_params.{i}": t for i, t in enumerate(tensors["shadow_params"])}
    return [f"{name}\t{','.join(map(str, t.shape))}\t{_DTYPE_CODES[str(t.dtype)]}"
            for name, t in tensors.items()]


def compare_replay(folder: Path, original: Path, episode: int) -> int:
    """Ours answering timestep t, for every t, against the original's t-th call."""
    theirs = np.load(original)["replies"]
    policy = load_policy(folder, LoadOptions(device="cpu", replay_episode=episode))
    obs = MetaObs(state=np.zeros((len(theirs), 14), np.float32),
                  timestep=np.arange(len(theirs))[:, None])
    mine = policy.predict(as_batch(obs)[0])
    if mine.shape != theirs.shape:
        print(f"{folder.name}: shape {mine.shape} != original {theirs.shape}")
        return 1
    worst = float(np.abs(mine.astype(np.float64) - theirs).max())
    print(f"{folder.name} (replay, episode {episode}): max |delta| = {worst:.3g} over "
          f"{len(theirs)} timesteps {'OK' if worst == 0 else 'FAIL'}")
    return 0 if worst == 0 else 1


def _hw(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)


def main(*, default_steps: int = 10, description: str = __doc__) -> int:
    """The command line; `default_steps` is --steps' default (LeRobot's check passes 0: the
    checkpoint's own)."""
    parser = argparse.ArgumentParser(description=description.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("out", type=Path)
    p.add_argument("--state_dim", type=int, required=True)
    p.add_argument("--cameras", type=int, default=0)
    p.add_argument("--image", type=_hw, default=(64, 64))
    p.add_argument("--state_obj_dim", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("keys")
    p.add_argument("weights", type=Path)
    p = sub.add_parser("replay")
    p.add_argument("folder", type=Path)
    p.add_argument("original", type=Path)
    p.add_argument("--episode", type=int, default=0)
    p = sub.add_parser("compare")
    p.add_argument("ckpt", type=Path)
    p.add_argument("inputs", type=Path)
    p.add_argument("original", type=Path)
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, default=default_steps)
    p.add_argument("--ema", action="store_true")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if args.command == "keys":
        print("\n".join(tensor_listing(args.weights)))
        return 0
    if args.command == "replay":
        return compare_replay(args.folder, args.original, args.episode)
    if args.command == "inputs":
        make_inputs(args.out, args.state_dim, args.cameras, args.image, args.seed,
                    state_obj_dim=args.state_obj_dim)
        return 0
    options = LoadOptions(device="cpu", min_std=ORIGINAL_MIN_STD, seed=args.seed,
                          num_inference_steps=args.steps, use_ema=args.ema)
    return compare(args.ckpt, args.inputs, args.original, options, args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
