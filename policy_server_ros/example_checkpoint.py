"""Write an example checkpoint in ILStudio's layout (ACT: the server's embedded default).

    python -m policy_server_ros.example_checkpoint     # into the cache directory (below)
    python -m policy_server_ros.example_checkpoint /tmp/tiny --small --cameras 2
    python -m policy_server_ros.example_checkpoint /tmp/dp --policy diffusion_policy --cameras 2
    python -m policy_server_ros.example_checkpoint /tmp/mlp --policy mlp        # also: replay
    python -m policy_server_ros.example_checkpoint /tmp/lr --policy lerobot_act  # LeRobot's layout

Other families (`--policy mlp|diffusion_policy|replay|lerobot_act|lerobot_diffusion`) are
written by their own `policies/<family>/example.py`, each documenting its sizes.

The model has the ALOHA sim transfer-cube hyperparameters (ResNet-18, hidden 512, 4 encoder and
7 decoder layers, chunk 100, 14-D state and action, one 480x640 camera) and deterministic seeded
weights; the statistics are realistic for ALOHA joint positions. It is UNTRAINED: it exercises
the real pipeline at the real cost, it does not solve a task. `--small` writes a tiny model of
the same structure for tests.

The node's and the socket server's default `model_name_or_path` is the original guide's
`ckpt/act_sim_transfer_cube_scripted_zscore_example`. A folder of that name in the working
directory is served as it is; otherwise the example is served from the cache directory,
`$POLICY_SERVER_ROS_CACHE`, else `$XDG_CACHE_HOME/policy_server_ros`, else
`~/.cache/policy_server_ros`, and written there (336 MB, once) on first use. Torch is imported
only to write it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from policy_server_ros.checkpoint import CONFIG, EXAMPLE_CHECKPOINT, METADATA, NORMALIZE, WEIGHTS
from policy_server_ros.policies.act.config import ACTConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger("policy_server_ros.example_checkpoint")

CACHE_ENV = "POLICY_SERVER_ROS_CACHE"
DATASET_ID = "sim_transfer_cube_scripted"
CTRL_SPACE, CTRL_TYPE = "joint", "abs"

# config.json keys ILStudio writes that ACT inference does not use, kept for fidelity.
_ILSTUDIO_EXTRA = {"architectures": ["ACTPolicy"], "history_len": 1, "kl_weight": 10,
                   "lr_backbone": 1e-05, "masks": False, "prediction_len": 100,
                   "torch_dtype": "float32", "transformers_version": "4.45.2"}

ALOHA_CONFIG = ACTConfig(extra=_ILSTUDIO_EXTRA)


def small_config(cameras: int = 1) -> ACTConfig:
    """The same structure at toy size, for tests: fast on a CPU."""
    names = ("primary", "wrist", "left", "right")[:cameras] if cameras <= 4 else \
        tuple(f"cam{i}" for i in range(cameras))
    return ACTConfig(camera_names=names, num_queries=10, chunk_size=10, hidden_dim=32,
                     nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=64,
                     extra={**_ILSTUDIO_EXTRA, "prediction_len": 10})


# One arm of ALOHA: waist, shoulder, elbow, forearm roll, wrist angle, wrist rotate (rad), gripper.
_ARM_MEAN = np.array([0.0, -0.35, 0.75, 0.0, -0.45, 0.0, 0.55])
_ARM_STD = np.array([0.12, 0.22, 0.25, 0.08, 0.28, 0.10, 0.35])


def aloha_stats(dim: int = 14) -> dict:
    """Statistics shaped like ILStudio's stats pickle, for `dim`-D joint state and action."""
    mean = np.resize(_ARM_MEAN, dim)
    std = np.resize(_ARM_STD, dim)

    def part(offset: float) -> dict:
        m = mean + offset
        return {"mean": m.tolist(), "std": std.tolist(), "min": (m - 3 * std).tolist(),
                "max": (m + 3 * std).tolist(), "q01": (m - 2.3 * std).tolist(),
                "q99": (m + 2.3 * std).tolist()}

    return {"num_trajectories": 50, "num_transitions": 20000, "state": part(0.0),
            "action": part(0.01)}


def _seeded_weights(config: ACTConfig, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the original layout, the unused decoder layers included."""
    import torch  # noqa: PLC0415 - only writing the example needs torch

    from policy_server_ros.policies.act.model import (  # noqa: PLC0415
        DETRVAE,
        TransformerDecoderLayer,
    )

    torch.manual_seed(seed)
    model = DETRVAE(config)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(seed + 1)
    for name, tensor in list(state.items()):
        if name.endswith(("running_var", "bn1.weight", "bn2.weight", "downsample.1.weight")):
            # Frozen batch norm with plausible statistics instead of the identity.
            state[name] = 1.0 + 0.1 * torch.rand(tensor.shape, generator=generator)
        elif name.endswith("running_mean"):
            state[name] = 0.05 * torch.randn(tensor.shape, generator=generator)
    for index in range(1, config.dec_layers):
        layer = TransformerDecoderLayer(config.hidden_dim, config.nheads, config.dim_feedforward,
                                        config.dropout, config.pre_norm)
        for key, value in layer.state_dict().items():
            state[f"model.transformer.decoder.layers.{index}.{key}"] = value
    return {k: v.contiguous() for k, v in state.items()}


def write_training_files(out: Path, policy_name: str, state_dim: int, action_dim: int,
                         norm: str = "zscore", *, stats: dict | None = None) -> None:
    """What training writes beside the weights: policy_metadata.json, normalize.json and the
    statistics pickle (`stats`, shaped like aloha_stats' result; default: ALOHA-like joint
    statistics)."""
    (out / METADATA).write_text(json.dumps({"policy_module": f"policy.{policy_name}",
                                            "policy_name": policy_name}, indent=2))
    (out / NORMALIZE).write_text(json.dumps({
        "version": "2.0",
        "datasets": [{"dataset_id": DATASET_ID, "ctrl_space": CTRL_SPACE,
                      "ctrl_type": CTRL_TYPE}],
        "state": {DATASET_ID: norm},
        "action": {DATASET_ID: norm},
    }, indent=2))
    if stats is None:
        stats = aloha_stats(state_dim)
        if action_dim != state_dim:
            stats["action"] = aloha_stats(action_dim)["action"]
    with open(out / f"{DATASET_ID}_stats_{CTRL_SPACE}_{CTRL_TYPE}.pkl", "wb") as f:
        pickle.dump(stats, f)


def write_example_checkpoint(out: str | Path, config: ACTConfig = ALOHA_CONFIG,
                             seed: int = 0) -> Path:
    """Write a complete ACT checkpoint (flat: normalize.json and stats in the same folder)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file  # noqa: PLC0415

    save_file(_seeded_weights(config, seed), str(out / WEIGHTS),
              metadata={"format": "pt", "note": "untrained example weights"})
    (out / CONFIG).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    write_training_files(out, "act", config.state_dim, config.action_dim)
    return out


def cache_dir() -> Path:
    """Where generated files go: $POLICY_SERVER_ROS_CACHE, else $XDG_CACHE_HOME/
    policy_server_ros, else ~/.cache/policy_server_ros."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "policy_server_ros"


def ensure_example_checkpoint(path: str | Path | None = None) -> Path:
    """The example checkpoint at `path` (default: in the cache directory), created on first
    use."""
    path = Path(path) if path is not None else cache_dir() / EXAMPLE_CHECKPOINT.name
    if not (path / WEIGHTS).is_file():
        log.info("Creating the example checkpoint (untrained ACT, ALOHA sim transfer-cube "
                 "sizes, 336 MB) at %s; this happens once (%s chooses the folder)",
                 path.resolve(), CACHE_ENV)
        write_example_checkpoint(path)
    return path


def _image_hw(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width)


# --policy: the module under policies/ whose `example.write_example` writes that family, and
# what it is told (LeRobot's layout serves two families from one module).
FAMILIES = {"act": None, "mlp": ("mlp", {}), "diffusion_policy": ("diffusion_policy", {}),
            "replay": ("replay", {}), "lerobot_act": ("lerobot", {"kind": "act"}),
            "lerobot_diffusion": ("lerobot", {"kind": "diffusion"})}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("out", type=Path, nargs="?",
                        default=cache_dir() / EXAMPLE_CHECKPOINT.name,
                        help=f"folder to write (default: %(default)s; {CACHE_ENV} sets the "
                             f"cache directory)")
    parser.add_argument("--policy", choices=list(FAMILIES), default="act",
                        help="policy family to write; lerobot_* in LeRobot's layout "
                             "(default: act)")
    parser.add_argument("--small", action="store_true", help="a tiny model for tests")
    parser.add_argument("--cameras", type=int, default=None,
                        help="cameras (default: 1; mlp: 0, state only)")
    parser.add_argument("--image", type=_image_hw, default=None, metavar="HxW",
                        help="image size the mlp or diffusion_policy is trained for "
                             "(default: 480x640; --small: 64x64)")
    parser.add_argument("--episodes", type=int, default=2, help="replay: episodes (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    args = parser.parse_args(argv)
    cameras = (0 if args.policy == "mlp" else 1) if args.cameras is None else args.cameras
    if cameras < (1 if args.policy == "act" else 0) or args.episodes < 1:
        parser.error("--cameras must be >= 1 for act (>= 0 otherwise) and --episodes >= 1")
    if args.policy == "act":
        config = small_config(cameras) if args.small else ACTConfig(
            camera_names=small_config(cameras).camera_names, extra=_ILSTUDIO_EXTRA)
        out = write_example_checkpoint(args.out, config, args.seed)
    else:
        import importlib  # noqa: PLC0415

        module, extra = FAMILIES[args.policy]
        family = importlib.import_module(f"policy_server_ros.policies.{module}.example")
        image = args.image or ((48, 64) if args.small and module == "lerobot" else
                               (64, 64) if args.small else (480, 640))
        out = family.write_example(args.out, small=args.small, cameras=cameras, image_hw=image,
                                   seed=args.seed, episodes=args.episodes, **extra)
    print(f"wrote {'small ' if args.small else ''}example {args.policy} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
