"""The ILStudio checkpoint layout: what files a checkpoint folder holds and where to find them.

    run/                                   a training output folder
      normalize.json                       dataset list and normalization types (v2.0)
      <dataset_id>_stats_<ctrl_space>_<ctrl_type>.pkl
      checkpoint-5000/                     one saved step (or the files directly in run/)
        policy_metadata.json               {"policy_module": "policy.act", "policy_name": "act"}
        config.json                        model hyperparameters
        model.safetensors                  weights (ACT, MLP; Diffusion Policy: pytorch_model.bin)

normalize.json is looked up in the parent folder first, then the folder itself, so
`run/checkpoint-N` finds `run/normalize.json`; the stats pickle is looked up beside the
normalize.json that was found first, then in the same two folders. Nothing falls back
silently: every missing piece is an error that says what was searched and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy_server_ros.normalization import DEFAULT_MIN_STD, NORM_TYPES, Normalizer
from socket_bridge.safe_unpickle import safe_loads

METADATA = "policy_metadata.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
NORMALIZE = "normalize.json"

# The default model_name_or_path: the original guide's name for the example checkpoint.
EXAMPLE_CHECKPOINT = Path("ckpt/act_sim_transfer_cube_scripted_zscore_example")


def resolve_model(name: str) -> str:
    """The folder to serve for `model_name_or_path`: `name` itself, except for the default
    name, which means ./ckpt/... when that folder exists and else the example in the cache
    directory (example_checkpoint.cache_dir), written there on first use."""
    if name != str(EXAMPLE_CHECKPOINT):
        return name
    # Imported here: writing the example needs torch, which reading checkpoints does not.
    from policy_server_ros.example_checkpoint import (  # noqa: PLC0415
        CACHE_ENV,
        cache_dir,
        ensure_example_checkpoint,
    )

    target = EXAMPLE_CHECKPOINT if EXAMPLE_CHECKPOINT.is_dir() else None
    try:
        return str(ensure_example_checkpoint(target))
    except OSError as exc:  # an unwritable cache folder: a start-up error, not a traceback
        raise CheckpointError(f"cannot write the example checkpoint to "
                              f"{target or cache_dir()}: {exc.strerror or exc}; set {CACHE_ENV} "
                              f"to a writable folder, or pass model_name_or_path") from None


class CheckpointError(ValueError):
    """The checkpoint folder is incomplete or inconsistent; the message says how to fix it."""


@dataclass(frozen=True)
class DatasetNorm:
    """The chosen dataset entry of normalize.json with its statistics loaded."""

    dataset_id: str
    ctrl_space: str
    ctrl_type: str
    state: Normalizer
    action: Normalizer


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder, read: metadata and config parsed, the weights' path known."""

    path: Path
    policy_name: str
    metadata: dict[str, Any]
    config: dict[str, Any]
    weights: Path  # model.safetensors; families that store weights otherwise ignore it

    def require(self, name: str | Path) -> Path:
        """The file `name` of this folder, or a CheckpointError naming it."""
        path = self.path / name
        if not path.is_file():
            raise CheckpointError(f"{self.path} has no {name}")
        return path


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Check the folder holds a checkpoint and read its metadata and config."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist; pass "
                                f"--model_name_or_path a training output or checkpoint folder")
    metadata_path = folder / METADATA
    if not metadata_path.is_file():
        raise CheckpointError(f"{folder} has no {METADATA}, so the policy type is unknown; "
                              f"is this a checkpoint folder (with config.json and "
                              f"model.safetensors)?")
    metadata = _read_json(metadata_path, "policy metadata")
    name = metadata.get("policy_name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{metadata_path} has no 'policy_name' (e.g. "
                              f'{{"policy_module": "policy.act", "policy_name": "act"}})')
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG} with the model's hyperparameters")
    config = _read_json(config_path, "model config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    return Checkpoint(folder, name, metadata, config, folder / WEIGHTS)


def _search_folders(folder: Path) -> list[Path]:
    return [folder.resolve().parent, folder.resolve()]


def find_normalize_json(folder: Path) -> Path:
    """normalize.json in the parent folder, else in the folder itself."""
    searched = _search_folders(folder)
    for candidate in searched:
        if (candidate / NORMALIZE).is_file():
            return candidate / NORMALIZE
    raise FileNotFoundError(
        f"No normalize.json found in {' or '.join(str(p) for p in searched)}. Training writes "
        f"it to the run's output folder; pass --model_name_or_path that folder or one of its "
        f"checkpoint-N subfolders.")


def load_dataset_norm(folder: Path, dataset_id: str = "", state_dim: int | None = None,
                      action_dim: int | None = None,
                      min_std: float = DEFAULT_MIN_STD) -> DatasetNorm:
    """Pick the dataset entry (`''` = the first) and load its statistics into normalizers."""
    normalize_path = find_normalize_json(folder)
    spec = _read_json(normalize_path, "normalization spec")
    datasets = spec.get("datasets") if isinstance(spec, dict) else None
    if not isinstance(datasets, list) or not datasets:
        raise CheckpointError(f"{normalize_path} lists no datasets")
    ids = [d.get("dataset_id") for d in datasets if isinstance(d, dict)]
    if dataset_id:
        if dataset_id not in ids:
            raise CheckpointError(f"unknown --dataset_id {dataset_id!r}; {normalize_path} has: "
                                  f"{', '.join(map(str, ids))}")
        entry = datasets[ids.index(dataset_id)]
    else:
        entry = datasets[0]
    for key in ("dataset_id", "ctrl_space", "ctrl_type"):
        if not isinstance(entry.get(key), str):
            raise CheckpointError(f"{normalize_path}: dataset entry lacks '{key}': {entry}")
    chosen = entry["dataset_id"]
    stats_name = f"{chosen}_stats_{entry['ctrl_space']}_{entry['ctrl_type']}.pkl"
    stats = _load_stats(stats_name, [normalize_path.parent, *_search_folders(folder)])

    def normalizer(part: str, dim: int | None) -> Normalizer:
        kind = (spec.get(part) or {}).get(chosen)
        if kind not in NORM_TYPES:
            raise CheckpointError(f"{normalize_path}: '{part}' has no normalization type for "
                                  f"{chosen!r} (got {kind!r}; expected one of {NORM_TYPES})")
        part_stats = stats.get(part)
        if not isinstance(part_stats, dict):
            raise CheckpointError(f"{stats_name} has no '{part}' statistics")
        size = dim if dim is not None else len(next(iter(part_stats.values()), []))
        return Normalizer.from_stats(kind, part_stats, size, entry.get(f"{part}_norm_mask"),
                                     min_std=min_std)

    return DatasetNorm(chosen, entry["ctrl_space"], entry["ctrl_type"],
                       normalizer("state", state_dim), normalizer("action", action_dim))


def _load_stats(name: str, folders: list[Path]) -> dict[str, Any]:
    searched = list(dict.fromkeys(folders))
    for folder in searched:
        path = folder / name
        if path.is_file():
            try:
                # Checkpoints come from elsewhere too: containers, numbers and arrays only.
                stats = safe_loads(path.read_bytes(), allow_wire_types=False)
            except Exception as exc:
                raise CheckpointError(f"cannot read statistics {path}: {exc}") from exc
            if not isinstance(stats, dict):
                raise CheckpointError(f"{path} must hold a dict of statistics")
            return stats
    raise FileNotFoundError(f"statistics file {name} not found in "
                            f"{' or '.join(str(p) for p in searched)}; it is written by training "
                            f"next to normalize.json")
