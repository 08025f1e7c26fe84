"""Diffusion Policy: the original's checkpoint layout, its seeded outputs, and its parts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from torch.nn import functional as F  # noqa: N812

from benchmark.base import MetaObs
from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.observation import ObservationError, as_batch
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.policies.diffusion_policy.config import DiffusionPolicyConfig
from policy_server_ros.policies.diffusion_policy.ddim import DDIMSampler
from policy_server_ros.policies.diffusion_policy.example import example_config, write_example
from policy_server_ros.policies.diffusion_policy.model import DiffusionPolicyNetwork
from policy_server_ros.policies.diffusion_policy.unet import ConditionalUnet1D
from policy_server_ros.policies.diffusion_policy.vision import SpatialSoftmax
from policy_server_ros.policies.torch_runtime import WeightsMismatchError

DATA = REPO_ROOT / "test" / "data"
GOLDEN = DATA / "golden" / "diffusion_policy"
CODES = {torch.float32: "F32"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small example (one 64x64 camera, seed 0) the golden outputs were recorded on."""
    return write_example(tmp_path_factory.mktemp("dp") / "small", small=True, seed=0)


def _options(**kw) -> LoadOptions:
    return LoadOptions(**{"device": "cpu", "min_std": 0.01, **kw})


def _cases(path: Path) -> dict[str, MetaObs]:
    data = np.load(path)
    return {case: MetaObs(state=data[f"{case}/state"], image=data[f"{case}/image"])
            for case in ("single", "batch")}


@pytest.mark.parametrize(("recording", "options"), [
    ("original_outputs_seed7_steps10.npz", {"seed": 7}),
    ("original_outputs_seed3_steps4_ema.npz", {"seed": 3, "num_inference_steps": 4,
                                               "use_ema": True})])
def test_seeded_outputs_equal_the_originals(ckpt: Path, recording: str, options: dict) -> None:
    # Recorded with ILStudio's own MetaPolicy.inference after torch.manual_seed(seed), on this
    # checkpoint (scripts/ilstudio_equivalence/make_test_data.sh).
    policy = load_policy(ckpt, _options(**options))
    expected = np.load(GOLDEN / recording)
    for case, obs in _cases(GOLDEN / "inputs.npz").items():
        actions = policy.predict(as_batch(obs)[0])
        assert actions.shape == expected[case].shape == (obs.state.shape[0], 16, 14)
        np.testing.assert_allclose(actions, expected[case], atol=1e-4, rtol=0)


def _listing(state: dict[str, torch.Tensor] | list[torch.Tensor]) -> list[str]:
    items = state.items() if isinstance(state, dict) else \
        ((f"shadow_params.{i}", t) for i, t in enumerate(state))
    return [f"{k}\t{','.join(map(str, t.shape))}\t{CODES[t.dtype]}" for k, t in items]


def test_network_has_the_originals_tensors_in_the_originals_order() -> None:
    model = DiffusionPolicyNetwork(example_config())  # one 480x640 camera, ALOHA sizes
    assert _listing(model.state_dict()) == \
        (DATA / "ilstudio_diffusion_policy_keys.tsv").read_text().splitlines()
    # ema_model.bin's shadow_params follow parameters(): same count, shapes and order.
    assert _listing([p for p in model.parameters()]) == \
        (DATA / "ilstudio_diffusion_policy_ema_keys.tsv").read_text().splitlines()
    assert example_config().to_dict() == \
        json.loads((DATA / "ilstudio_diffusion_policy_config.json").read_text())


def test_written_files_hold_that_layout(ckpt: Path) -> None:
    model = DiffusionPolicyNetwork(example_config(small=True))
    weights = torch.load(ckpt / "pytorch_model.bin", weights_only=True)
    assert _listing(weights) == _listing(model.state_dict())
    ema = torch.load(ckpt / "ema_model.bin", weights_only=True)
    assert _listing(ema["shadow_params"]) == _listing(list(model.parameters()))
    assert ema["power"] == 0.75 and ema["decay"] == 0.9999


def test_noise_is_seeded_as_the_original_draws_it(ckpt: Path) -> None:
    seeded = load_policy(ckpt, _options(seed=11, num_inference_steps=1))
    torch.manual_seed(11)
    torch.testing.assert_close(seeded.initial_noise(3), torch.randn((3, 16, 14)))
    obs = as_batch(_cases(GOLDEN / "inputs.npz")["single"])[0]
    first = seeded.predict(obs)
    np.testing.assert_array_equal(seeded.predict(obs), first)
    other = load_policy(ckpt, _options(seed=12, num_inference_steps=1)).predict(obs)
    assert not np.allclose(other, first)
    fresh = load_policy(ckpt, _options(num_inference_steps=1))
    assert not np.allclose(fresh.predict(obs), fresh.predict(obs))


def test_spatial_softmax_is_the_expected_keypoint_position() -> None:
    torch.manual_seed(0)
    pool = SpatialSoftmax(8, 3, 5, num_kp=4)
    features = torch.randn(2, 8, 3, 5)
    logits = F.conv2d(features, pool.nets.weight, pool.nets.bias)  # (2, 4, 3, 5)
    weights = torch.softmax(logits.flatten(2), dim=-1).view(2, 4, 3, 5)
    xs = torch.linspace(-1, 1, 5).view(1, 1, 1, 5)
    ys = torch.linspace(-1, 1, 3).view(1, 1, 3, 1)
    expected = torch.stack([(weights * xs).sum((2, 3)), (weights * ys).sum((2, 3))], dim=-1)
    torch.testing.assert_close(pool(features), expected)


def test_ddim_schedule_and_one_step_recover_the_clean_sample() -> None:
    config = DiffusionPolicyConfig()
    sampler = DDIMSampler(config, 10)
    assert sampler.timesteps.tolist() == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    a90, a80 = (x.item() for x in sampler._alphas[0])
    expected = math.prod(1 - min(1 - alpha_bar((i + 1) / 100) / alpha_bar(i / 100), 0.999)
                         for i in range(91))
    assert a90 == pytest.approx(expected, rel=1e-5) and a80 > a90
    # With the exact noise as the model's answer, the last step (to alpha 1) returns x0.
    clean, eps = torch.rand(2, 16, 3) * 2 - 1, torch.randn(2, 16, 3)
    a0 = sampler._alphas[-1][0]
    noisy = a0.sqrt() * clean + (1 - a0).sqrt() * eps
    torch.testing.assert_close(sampler.step(9, eps, noisy), clean, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="between 1 and the 100 training timesteps"):
        DDIMSampler(config, 101)


def test_unet_keeps_the_horizon_and_uses_step_and_condition() -> None:
    torch.manual_seed(0)
    unet = ConditionalUnet1D(3, 5, diffusion_step_embed_dim=16, down_dims=(16, 32, 64),
                             kernel_size=3).eval()
    sample, cond = torch.randn(2, 8, 3), torch.randn(2, 5)
    with torch.no_grad():
        out = unet(sample, torch.tensor(5), cond)
        assert out.shape == sample.shape
        assert not torch.allclose(out, unet(sample, torch.tensor(50), cond))
        assert not torch.allclose(out, unet(sample, torch.tensor(5), cond + 1))
    with pytest.raises(ValueError, match="prediction_horizon 10 must be a multiple of 4"):
        DiffusionPolicyConfig(prediction_horizon=10)


def test_wrong_images_are_clear_errors(ckpt: Path) -> None:
    policy = load_policy(ckpt, _options(num_inference_steps=1))
    state = np.zeros(14)
    with pytest.raises(ObservationError, match=r"trained sizes \(primary 64x64\).*64, 80"):
        policy.predict(as_batch(MetaObs(state=state,
                                        image=np.zeros((1, 3, 64, 80), np.uint8)))[0])
    with pytest.raises(ObservationError, match="must be uint8"):
        policy.predict(as_batch(MetaObs(state=state, image=np.zeros((1, 3, 64, 64))))[0])


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


def test_checkpoint_errors_are_one_line(ckpt: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(ckpt, tmp_path / "c", ignore=shutil.ignore_patterns("*.bin")))
    marker = tmp_path / "marker"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(marker)},
               folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        load_policy(folder, _options())
    assert "\n" not in str(info.value) and "refused" in str(info.value)
    assert not marker.exists()
    (folder / "pytorch_model.bin").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read .*pytorch_model.bin"):
        load_policy(folder, _options())
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="has no pytorch_model.bin"):
        load_policy(folder, _options())
    shutil.copy(ckpt / "pytorch_model.bin", folder)
    with pytest.raises(CheckpointError, match="has no ema_model.bin"):
        load_policy(folder, _options(use_ema=True))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "feature_dimension": 32}))
    with pytest.raises(WeightsMismatchError, match="wrong shapes: .*cond_encoder"):
        load_policy(folder, _options())
