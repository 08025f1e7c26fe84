"""ILStudio's MLP policy: the original's checkpoint layout, its outputs, and the camera variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from safetensors import safe_open
from torch.nn import functional as F  # noqa: N812

from benchmark.base import MetaObs
from policy_server_ros import example_checkpoint
from policy_server_ros.observation import ObservationError, as_batch
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.policies.mlp.example import write_example
from policy_server_ros.policies.mlp.model import MLPConfig, MLPNetwork

DATA = REPO_ROOT / "test" / "data"
GOLDEN = DATA / "golden" / "mlp"
CPU = LoadOptions(device="cpu")


def _listing(path: Path) -> list[str]:
    with safe_open(str(path), "pt") as f:
        return [f"{k}\t{','.join(map(str, f.get_slice(k).get_shape()))}\t"
                f"{f.get_slice(k).get_dtype()}" for k in sorted(f.keys())]


def _cases(path: Path) -> dict[str, MetaObs]:
    data = np.load(path)
    return {case: MetaObs(state=data[f"{case}/state"], image=data.get(f"{case}/image"))
            for case in sorted({k.split("/")[0] for k in data.files})}


def test_outputs_equal_the_originals_on_a_checkpoint_it_saved() -> None:
    # Recorded with ILStudio's MetaPolicy.inference (scripts/ilstudio_equivalence); the original
    # floors zscore's std at 0.01.
    policy = load_policy(GOLDEN / "checkpoint", LoadOptions(device="cpu", min_std=0.01))
    expected = np.load(GOLDEN / "original_outputs.npz")
    for case, obs in _cases(GOLDEN / "inputs.npz").items():
        actions = policy.predict(as_batch(obs)[0])
        assert actions.shape == expected[case].shape
        np.testing.assert_allclose(actions, expected[case], atol=1e-5, rtol=0)
    assert policy.spec.chunk_size == 4 and policy.spec.ctrl_space == "joint"


def test_example_has_the_originals_tensor_layout_and_config(tmp_path: Path) -> None:
    out = write_example(tmp_path / "mlp")
    reference = (DATA / "ilstudio_mlp_keys.tsv").read_text().splitlines()
    assert _listing(out / "model.safetensors") == reference
    assert json.loads((out / "config.json").read_text()) == \
        json.loads((DATA / "ilstudio_mlp_config.json").read_text())


@pytest.mark.parametrize(("activation", "function"), [
    ("relu", F.relu), ("gelu", F.gelu), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid),
    ("leaky_relu", F.leaky_relu), ("unknown", F.relu)])
def test_network_is_the_originals_layer_list(activation: str, function) -> None:
    config = MLPConfig(state_dim=5, action_dim=3, num_layers=4, hidden_dim=8, chunk_size=2,
                       dropout=0.3, activation=activation)
    torch.manual_seed(0)
    net = MLPNetwork(config).eval()
    # Dropout before every hidden and the output layer shifts the indices, as in the original.
    assert [k for k in net.state_dict() if k.endswith("weight")] == \
        ["mlp.0.weight", "mlp.3.weight", "mlp.6.weight", "mlp.9.weight"]
    x = torch.randn(3, 5)
    p = dict(net.named_parameters())
    h = x
    for i in (0, 3, 6):
        h = function(F.linear(h, p[f"mlp.{i}.weight"], p[f"mlp.{i}.bias"]))
    expected = F.linear(h, p["mlp.9.weight"], p["mlp.9.bias"]).view(3, 2, 3)
    torch.testing.assert_close(net(x), expected)


def test_camera_variant_flattens_images_after_the_state(tmp_path: Path) -> None:
    out = write_example(tmp_path / "cam", small=True, cameras=2, image_hw=(4, 6))
    policy = load_policy(out, CPU)
    rng = np.random.default_rng(0)
    state = rng.normal(size=(2, 14)).astype(np.float32)
    image = rng.integers(0, 256, (2, 2, 3, 4, 6), dtype=np.uint8)
    actions = policy.predict(as_batch(MetaObs(state=state, image=image))[0])
    net = policy.model
    x = torch.cat([torch.from_numpy(policy.norm.state.normalize(state)),
                   torch.from_numpy(image).reshape(2, -1).float() / 255.0], dim=1)
    with torch.no_grad():
        expected = policy.norm.action.denormalize(net.mlp(x).view(2, 10, 14).numpy())
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    # As the original: float images already in [0, 1] are used as they are.
    scaled = policy.predict(as_batch(MetaObs(state=state, image=image / 255.0))[0])
    np.testing.assert_allclose(scaled, actions, atol=1e-5)
    changed = image.copy()
    changed[:, 1] = 255 - changed[:, 1]
    assert not np.allclose(policy.predict(as_batch(MetaObs(state=state, image=changed))[0]),
                           actions)


def test_wrong_inputs_are_clear_errors(tmp_path: Path) -> None:
    policy = load_policy(write_example(tmp_path / "cam", small=True, cameras=1,
                                       image_hw=(4, 6)), CPU)
    with pytest.raises(ObservationError, match=r"K\*C\*H\*W = 72 .*got \(1, 3, 4, 5\)"):
        policy.predict(as_batch(MetaObs(state=np.zeros(14), image=np.zeros((1, 3, 4, 5),
                                                                            np.uint8)))[0])
    with pytest.raises(ObservationError, match="MLP needs MetaObs.state with 14 values"):
        policy.predict(as_batch(MetaObs(state=np.zeros(3), image=np.zeros((1, 3, 4, 6),
                                                                           np.uint8)))[0])


def test_state_only_example_from_the_command_line(tmp_path: Path) -> None:
    assert example_checkpoint.main([str(tmp_path / "m"), "--policy", "mlp", "--small"]) == 0
    policy = load_policy(tmp_path / "m", CPU)
    obs = as_batch(MetaObs(state=np.linspace(-1, 1, 14)))[0]
    actions = policy.predict(obs)
    assert actions.shape == (1, 10, 14) and np.isfinite(actions).all()
    other = as_batch(MetaObs(state=np.linspace(1, -1, 14)))[0]
    assert not np.allclose(policy.predict(other), actions)
