"""LeRobot's checkpoint layout (LeRobot >= 0.4), recognised by content.

    pretrained_model/
      config.json                       {"type": "act" | "diffusion" | ..., "input_features",
                                         "output_features", "normalization_mapping", sizes ...}
      model.safetensors                 weights, prefixed `model.` (ACT) or `diffusion.`
      policy_preprocessor.json          the input pipeline; its `normalizer_processor` step
      policy_preprocessor_step_<i>_normalizer_processor.safetensors    holds the statistics,
      policy_postprocessor.json         flat as `<feature>.<stat>` (e.g. `action.mean`)
      policy_postprocessor_step_<i>_unnormalizer_processor.safetensors

No policy_metadata.json. LeRobot <= 0.3 kept the statistics as buffers inside model.safetensors
(`normalize_inputs.buffer_observation_state.mean`, ...) and wrote no processor files: such a
folder is refused with the command that converts it (LeRobot's own migration script).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_server_ros.checkpoint import CONFIG, METADATA, WEIGHTS, CheckpointError

PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"
# The policy types LeRobot 0.4 registers; only SERVED ones load, the others get a clear no.
LEROBOT_TYPES = ("act", "diffusion", "pi0", "pi05", "pi0_fast", "smolvla", "tdmpc", "vqbet",
                 "sac", "reward_classifier", "groot", "xvla", "wall_x", "sarm")
SERVED = ("act", "diffusion")
FEATURE_TYPES = ("STATE", "VISUAL", "ENV", "ACTION")
NORM_MODES = ("MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY")
# Prefixes of LeRobot <= 0.3's normalization buffers inside model.safetensors.
_OLD_BUFFERS = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
MIGRATE_COMMAND = ("python -m lerobot.processor.migrate_policy_normalization "
                   "--pretrained-path {path}")


@dataclass(frozen=True)
class Feature:
    """One entry of input_features / output_features: `type` and `shape` as LeRobot saves them."""

    name: str
    type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LeRobotCheckpoint:
    """A LeRobot checkpoint folder, read: config, features, statistics, weights' path."""

    path: Path
    type: str
    config: dict[str, Any]
    inputs: tuple[Feature, ...]  # config.json's input_features, in its order
    action: Feature
    norm_map: dict[str, str]  # feature type -> normalization mode (the normalizer's own)
    stats: dict[str, dict[str, np.ndarray]]  # feature -> stat -> values (float32)
    eps: float
    weights: Path

    def features_of(self, kind: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.inputs if f.type == kind)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def recognise(folder: Path) -> bool:
    """True for a folder that is LeRobot's by content: config.json with a string `type` and
    `input_features`, and no policy_metadata.json (which would make it ILStudio's)."""
    if (folder / METADATA).is_file() or not (folder / CONFIG).is_file():
        return False
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("type"), str) and \
        "input_features" in config


def find_lerobot_folder(folder: Path) -> Path | None:
    """The LeRobot checkpoint at `folder`, or in its `pretrained_model/` (what lerobot-train
    writes under checkpoints/<step>/, beside training_state/); None when it is not LeRobot's."""
    for candidate in (folder, folder / "pretrained_model"):
        if recognise(candidate):
            return candidate
    return None


def parse_features(config: dict[str, Any], key: str, path: Path) -> tuple[Feature, ...]:
    raw = config.get(key)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: '{key}' must map feature names to {{type, shape}}")
    features = []
    for name, entry in raw.items():
        kind = entry.get("type") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if kind not in FEATURE_TYPES or not isinstance(shape, list) or \
                not all(isinstance(s, int) and s > 0 for s in shape):
            raise CheckpointError(f"{path}: feature {name!r} of '{key}' needs a type "
                                  f"({', '.join(FEATURE_TYPES)}) and a shape of positive "
                                  f"integers, got {entry!r}")
        features.append(Feature(name, kind, tuple(shape)))
    return tuple(features)


def _weight_names(path: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415

    try:
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def _normalizer_step(folder: Path, pipeline: str, registry_name: str
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The (config, flat statistics) of the pipeline's step named `registry_name`."""
    from safetensors.numpy import load_file  # noqa: PLC0415

    path = folder / pipeline
    spec = _json(path)
    steps = spec.get("steps") if isinstance(spec, dict) else None
    matching = [s for s in steps or [] if isinstance(s, dict)
                and s.get("registry_name") == registry_name]
    if not matching:
        raise CheckpointError(f"{path} has no '{registry_name}' step, so the normalization "
                              f"statistics are unknown")
    step = matching[0]
    config = step.get("config") if isinstance(step.get("config"), dict) else {}
    state_file = step.get("state_file")
    if not isinstance(state_file, str) or not (folder / state_file).is_file():
        raise CheckpointError(f"{path}: the '{registry_name}' step's state file "
                              f"{state_file!r} is missing from {folder}")
    try:
        flat = load_file(str(folder / state_file))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {folder / state_file}: {exc}") from None
    return config, {k: v.astype(np.float32) for k, v in flat.items()}


def _nest(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    nested: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        feature, _, stat = key.rpartition(".")
        nested.setdefault(feature, {})[stat] = value
    return nested


def read_lerobot_checkpoint(folder: Path) -> LeRobotCheckpoint:
    """Read a recognised folder; CheckpointError (one line) for what cannot be served."""
    config = _json(folder / CONFIG)
    kind = config["type"]
    if kind not in SERVED:
        known = "a LeRobot policy type" if kind in LEROBOT_TYPES else "an unknown type"
        raise CheckpointError(f"{folder}/config.json: policy type {kind!r} ({known}) is not "
                              f"served here; LeRobot checkpoints of type "
                              f"{' or '.join(SERVED)} are")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS} (LeRobot saves the weights there)")
    old = [n for n in _weight_names(weights) if n.startswith(_OLD_BUFFERS)]
    if old and not (folder / PREPROCESSOR).is_file():
        raise CheckpointError(
            f"{folder} is a LeRobot <= 0.3 checkpoint (normalization buffers such as {old[0]} "
            f"inside {WEIGHTS}, no {PREPROCESSOR}); convert it with LeRobot >= 0.4: "
            f"{MIGRATE_COMMAND.format(path=folder)}, then serve the {folder.name}_migrated "
            f"folder it writes beside it")
    for name in (PREPROCESSOR, POSTPROCESSOR):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} has no {name} (LeRobot >= 0.4 saves the "
                                  f"normalization statistics with the policy's processors)")
    inputs = parse_features(config, "input_features", folder / CONFIG)
    outputs = parse_features(config, "output_features", folder / CONFIG)
    actions = [f for f in outputs if f.type == "ACTION"]
    if len(actions) != 1 or len(actions[0].shape) != 1:
        raise CheckpointError(f"{folder}/config.json: output_features must hold one 1-D "
                              f"ACTION feature, got {[(f.name, f.shape) for f in outputs]}")
    pre_config, pre_stats = _normalizer_step(folder, PREPROCESSOR, "normalizer_processor")
    _, post_stats = _normalizer_step(folder, POSTPROCESSOR, "unnormalizer_processor")
    norm_map = pre_config.get("norm_map", config.get("normalization_mapping", {}))
    if not isinstance(norm_map, dict) or any(v not in NORM_MODES for v in norm_map.values()):
        raise CheckpointError(f"{folder}/{PREPROCESSOR}: norm_map must map feature types to "
                              f"{', '.join(NORM_MODES)}, got {norm_map!r}")
    stats = _nest(pre_stats)
    # The action is unnormalized with the postprocessor's statistics, as LeRobot does.
    stats.update({k: v for k, v in _nest(post_stats).items() if k == actions[0].name})
    return LeRobotCheckpoint(folder, kind, config, inputs, actions[0], dict(norm_map), stats,
                             float(pre_config.get("eps", 1e-8)), weights)
