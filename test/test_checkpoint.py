"""Loading ILStudio-layout checkpoints: round trip, lookup rules and every error."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from act_fixtures import observation, small_checkpoint
from conftest import REPO_ROOT
from safetensors.torch import load_file, save_file

from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.engine import InferenceEngine, resolve_chunk_size
from policy_server_ros.example_checkpoint import write_example_checkpoint
from policy_server_ros.observation import as_batch
from policy_server_ros.policies import LoadOptions, PolicyLoadError, load_policy
from policy_server_ros.policies.act.config import ACTConfig
from policy_server_ros.policies.torch_runtime import WeightsMismatchError
from socket_bridge.safe_unpickle import UnsafePickleError

CPU = LoadOptions(device="cpu")
STATS = "sim_transfer_cube_scripted_stats_joint_abs.pkl"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "act_small")


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ckpt, tmp_path / "copy"))


def test_round_trip_write_load_same_outputs(ckpt: Path, tmp_path: Path) -> None:
    obs = as_batch(observation(seed=3))[0]
    first = load_policy(ckpt, CPU).predict(obs)
    again = load_policy(_copy(ckpt, tmp_path), CPU).predict(obs)
    assert first.shape == (1, 10, 14) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    other_obs = as_batch(observation(seed=4))[0]
    assert not np.allclose(load_policy(ckpt, CPU).predict(other_obs), first)


def test_same_seed_writes_the_same_weights(tmp_path: Path) -> None:
    a = load_file(str(small_checkpoint(tmp_path / "a", seed=7) / "model.safetensors"))
    b = load_file(str(small_checkpoint(tmp_path / "b", seed=7) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_full_size_example_has_the_original_tensor_layout_and_config(tmp_path: Path) -> None:
    from safetensors import safe_open

    out = write_example_checkpoint(tmp_path / "full")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        ours = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    reference = {}
    for line in (REPO_ROOT / "test" / "data" / "ilstudio_act_keys.tsv").read_text().splitlines():
        name, shape, dtype = line.split("\t")
        reference[name] = (tuple(int(s) for s in shape.split(",")), dtype)
    assert ours == reference and len(ours) == 344
    original = json.loads((REPO_ROOT / "test" / "data" / "ilstudio_act_config.json").read_text())
    assert json.loads((out / "config.json").read_text()) == original


def _run_with_two_normalize_jsons(ckpt: Path, tmp_path: Path) -> Path:
    """run/checkpoint-500 where run/ and checkpoint-500/ each hold a different normalize.json.

    run/ keeps the original (dataset sim_transfer_cube_scripted, zscore) and its stats; the step's
    own names dataset step_own with minmax state normalization and its own stats. The step also
    holds a sim_transfer_cube_scripted stats file whose state mean is shifted by 5, so using it
    instead of run/'s shows in the normalizer's offset.
    """
    run = tmp_path / "run"
    step = run / "checkpoint-500"
    step.mkdir(parents=True)
    for name in ("policy_metadata.json", "config.json", "model.safetensors"):
        shutil.copy(ckpt / name, step / name)
    for name in ("normalize.json", STATS):
        shutil.copy(ckpt / name, run / name)
    spec = json.loads((ckpt / "normalize.json").read_text())
    spec["datasets"] = [{"dataset_id": "step_own", "ctrl_space": "joint", "ctrl_type": "abs"}]
    spec["state"] = {"step_own": "minmax"}
    spec["action"] = {"step_own": "zscore"}
    (step / "normalize.json").write_text(json.dumps(spec))
    shutil.copy(ckpt / STATS, step / "step_own_stats_joint_abs.pkl")
    shifted = pickle.loads((ckpt / STATS).read_bytes())
    shifted["state"]["mean"] = [m + 5.0 for m in shifted["state"]["mean"]]
    (step / STATS).write_bytes(pickle.dumps(shifted))
    return step


def test_normalize_json_is_found_in_the_parent_folder_first(ckpt: Path, tmp_path: Path) -> None:
    step = _run_with_two_normalize_jsons(ckpt, tmp_path)
    norm = load_policy(step, CPU).norm
    assert (norm.dataset_id, norm.state.kind) == ("sim_transfer_cube_scripted", "zscore")
    parent_mean = pickle.loads((step.parent / STATS).read_bytes())["state"]["mean"]
    np.testing.assert_allclose(norm.state.offset, parent_mean)  # run/'s stats, not the step's


def test_the_folders_own_normalize_json_when_the_parent_has_none(ckpt: Path,
                                                                 tmp_path: Path) -> None:
    step = _run_with_two_normalize_jsons(ckpt, tmp_path)
    (step.parent / "normalize.json").unlink()
    norm = load_policy(step, CPU).norm
    assert (norm.dataset_id, norm.state.kind) == ("step_own", "minmax")


def test_missing_normalize_json_says_where_it_looked(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    (folder / "normalize.json").unlink()
    with pytest.raises(FileNotFoundError, match="No normalize.json found") as exc:
        load_policy(folder, CPU)
    assert str(folder.resolve()) in str(exc.value) and str(tmp_path.resolve()) in str(exc.value)


def _two_datasets(folder: Path) -> None:
    spec = json.loads((folder / "normalize.json").read_text())
    spec["datasets"].append({"dataset_id": "real_kitchen", "ctrl_space": "ee",
                             "ctrl_type": "delta", "state_norm_mask": [True] * 13 + [False]})
    spec["state"]["real_kitchen"] = "minmax"
    spec["action"]["real_kitchen"] = "percentile"
    (folder / "normalize.json").write_text(json.dumps(spec))
    shutil.copy(folder / "sim_transfer_cube_scripted_stats_joint_abs.pkl",
                folder / "real_kitchen_stats_ee_delta.pkl")


def test_dataset_id_selects_entry_and_ctrl_convention(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    _two_datasets(folder)
    policy = load_policy(folder, LoadOptions(device="cpu", dataset_id="real_kitchen"))
    assert (policy.spec.ctrl_space, policy.spec.ctrl_type) == ("ee", "delta")
    assert policy.norm.state.kind == "minmax" and not policy.norm.state.mask[13]
    with InferenceEngine(policy, warmup=False) as engine:
        out = engine.submit(observation()).result(30)
    assert (out.spec.ctrl_space, out.spec.ctrl_type) == ("ee", "delta")
    assert load_policy(folder, CPU).spec.ctrl_space == "joint"  # '' = the first dataset


def test_unknown_dataset_id_lists_the_available_ones(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    _two_datasets(folder)
    with pytest.raises(CheckpointError, match="unknown --dataset_id 'nope'.*"
                                              "sim_transfer_cube_scripted, real_kitchen"):
        load_policy(folder, LoadOptions(device="cpu", dataset_id="nope"))


def test_missing_stats_file(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    (folder / "sim_transfer_cube_scripted_stats_joint_abs.pkl").unlink()
    with pytest.raises(FileNotFoundError,
                       match="sim_transfer_cube_scripted_stats_joint_abs.pkl not found"):
        load_policy(folder, CPU)


class _Gadget:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_stats_pickle_is_read_with_the_restricted_unpickler(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    (folder / "sim_transfer_cube_scripted_stats_joint_abs.pkl").write_bytes(
        pickle.dumps({"state": _Gadget()}))
    with pytest.raises(CheckpointError, match="refused global posix.system") as exc:
        load_policy(folder, CPU)
    assert isinstance(exc.value.__cause__, UnsafePickleError)


@pytest.mark.parametrize(("metadata", "message"), [
    (None, "has no policy_metadata.json"),
    ({"policy_module": "policy.act"}, "has no 'policy_name'"),
    ({"policy_name": "diffusion"}, "unknown policy type 'diffusion'.*can load: act"),
    ({"policy_name": "../../os"}, "unknown policy type '../../os'"),
])
def test_missing_or_unknown_policy_type(ckpt: Path, tmp_path: Path, metadata, message) -> None:
    folder = _copy(ckpt, tmp_path)
    if metadata is None:
        (folder / "policy_metadata.json").unlink()
    else:
        (folder / "policy_metadata.json").write_text(json.dumps(metadata))
    with pytest.raises((CheckpointError, PolicyLoadError), match=message):
        load_policy(folder, CPU)


def test_weights_that_do_not_fit_the_config_are_named(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_dim"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsMismatchError, match=r"wrong shapes: .*action_head.weight \(14, 32\) "
                                                    r"\(config expects \(14, 64\)\)"):
        load_policy(folder, CPU)


def test_missing_and_unexpected_tensors_are_named(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["model.action_head.bias"]
    tensors["model.mystery.weight"] = torch.zeros(2)
    tensors["model.transformer.decoder.layers.5.norm1.weight"] = torch.zeros(32)  # dec_layers=2
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(WeightsMismatchError) as exc:
        load_policy(folder, CPU)
    text = str(exc.value)
    assert "missing tensors: action_head.bias" in text
    assert "mystery.weight" in text and "transformer.decoder.layers.5.norm1.weight" in text


def test_unused_decoder_layers_may_be_absent(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    pruned = {k: v for k, v in tensors.items() if ".decoder.layers.1." not in k}
    assert len(pruned) < len(tensors)
    save_file(pruned, str(folder / "model.safetensors"))
    obs = as_batch(observation())[0]
    np.testing.assert_array_equal(load_policy(folder, CPU).predict(obs),
                                  load_policy(ckpt, CPU).predict(obs))


def test_chunk_size_rules(ckpt: Path, tmp_path: Path) -> None:
    policy = load_policy(ckpt, CPU)
    assert resolve_chunk_size(policy, 0) == 10 and resolve_chunk_size(policy, 4) == 4
    with pytest.raises(ValueError, match="--chunk_size 11 is more than the 10 actions"):
        resolve_chunk_size(policy, 11)
    folder = _copy(ckpt, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["chunk_size"] = 6  # the original silently let config.json override the CLI
    (folder / "config.json").write_text(json.dumps(config))
    policy = load_policy(folder, CPU)
    assert resolve_chunk_size(policy, 0) == 6 and resolve_chunk_size(policy, 8) == 8


def test_cuda_without_a_gpu_warns_and_uses_the_cpu(ckpt: Path, caplog) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    caplog.set_level(logging.WARNING)
    policy = load_policy(ckpt, LoadOptions(device="cuda"))
    assert policy.device.type == "cpu"
    assert "--device cuda requested but CUDA is not available; running on the CPU" in caplog.text
    with pytest.raises(ValueError, match="--device must be cpu, cuda or cuda:N"):
        load_policy(ckpt, LoadOptions(device="gpu0"))


def test_invalid_config_json_is_explained(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path)
    (folder / "config.json").write_text(json.dumps({**ACTConfig().to_dict(), "nheads": 3,
                                                    "backbone": "resnet50"}))
    with pytest.raises(ValueError, match="nheads 3.*backbone 'resnet50' is not supported"):
        load_policy(folder, CPU)
