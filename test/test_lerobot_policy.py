"""LeRobot checkpoints (LeRobot >= 0.4 layout): recognised by content, ACT and Diffusion Policy
equal to LeRobot's own inference, the feature mapping, errors, and both transports end to end.

Test data (test/data/lerobot, made by scripts/lerobot_equivalence/make_test_data.sh with
LeRobot 0.4.4): what LeRobot saves for its default ACT and Diffusion on ALOHA's features (all
but the weights, plus the weights' listing), two tiny checkpoints it saved (committed whole), and
LeRobot's outputs on them and on the small examples this project writes.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PYTHON, REPO_ROOT, ServerProcess
from policy_server_ros.msg import ActionChunk
from ros_harness import SyntheticRobot, joint_state, next_domain, rgb_image, start_node
from safetensors.torch import save_file

from benchmark.base import MetaObs
from policy_server_ros import example_checkpoint
from policy_server_ros.action_messages import chunk_to_array
from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.inputs import state_size
from policy_server_ros.observation import ObservationError, as_batch
from policy_server_ros.policies import LoadOptions, load_policy
from policy_server_ros.policies.lerobot.example import _vae_encoder, example_config
from policy_server_ros.policies.lerobot.layout import read_lerobot_checkpoint
from policy_server_ros.policies.lerobot.normalization import FeatureNorm
from socket_bridge.client import PolicyClient

DATA = REPO_ROOT / "test" / "data" / "lerobot"
IMAGE_HW = (48, 64)
JOINTS = [f"joint{i}" for i in range(14)]


def _cases(path: Path) -> dict[str, MetaObs]:
    data = np.load(path)
    return {case: MetaObs(state=data[f"{case}/state"], image=data.get(f"{case}/image"),
                          state_obj=data.get(f"{case}/state_obj"))
            for case in sorted({k.split("/")[0] for k in data.files})}


def _assert_equals_lerobot(policy, inputs: Path, outputs: Path) -> None:
    expected = np.load(outputs)
    for case, obs in _cases(inputs).items():
        actions = policy.predict(as_batch(obs)[0])
        assert actions.shape == expected[case].shape
        np.testing.assert_allclose(actions, expected[case], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, Path]:
    """The small two-camera examples this project writes (seed 0), one per family."""
    root = tmp_path_factory.mktemp("lerobot")
    for kind in ("act", "diffusion"):
        assert example_checkpoint.main([str(root / kind), "--policy", f"lerobot_{kind}",
                                        "--small", "--cameras", "2"]) == 0
    return {"act": root / "act", "diffusion": root / "diffusion"}


@pytest.mark.parametrize(("folder", "outputs", "seed"), [
    ("env_act", "env_act_outputs.npz", None),
    ("env_diffusion", "env_diffusion_outputs_seed3.npz", 3)])
def test_outputs_equal_lerobots_on_checkpoints_lerobot_saved(folder, outputs, seed) -> None:
    policy = load_policy(DATA / folder, LoadOptions(device="cpu", seed=seed))
    _assert_equals_lerobot(policy, DATA / "env_inputs.npz", DATA / outputs)


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_outputs_equal_lerobots_on_the_example_writers_checkpoints(examples, kind) -> None:
    # LeRobot loaded these folders (written here, without lerobot) and ran its own inference.
    policy = load_policy(examples[kind], LoadOptions(device="cpu", seed=3))
    _assert_equals_lerobot(policy, DATA / "camera_inputs.npz",
                           DATA / f"example_{kind}_outputs_seed3.npz")
    assert policy.camera_names == ("observation.images.top", "observation.images.wrist")
    assert (policy.spec.ctrl_space, policy.spec.ctrl_type) == ("joint", "abs")


def _listing(state: dict[str, torch.Tensor], prefix: str) -> list[str]:
    codes = {torch.float32: "F32"}
    return [f"{prefix}{k}\t{','.join(map(str, t.shape))}\t{codes[t.dtype]}"
            for k, t in sorted(state.items())]


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_networks_have_lerobots_tensor_names_and_shapes(tmp_path, kind) -> None:
    folder = tmp_path / kind
    shutil.copytree(DATA / f"{kind}_aloha", folder)
    save_file({}, str(folder / "model.safetensors"))
    ckpt = read_lerobot_checkpoint(folder)
    with torch.device("meta"):  # shapes only: LeRobot's default U-Net has 263M parameters
        if kind == "act":
            from policy_server_ros.policies.lerobot.act import LeRobotACT

            state = {**LeRobotACT(ckpt).state_dict(), **_vae_encoder(ckpt.config).state_dict()}
        else:
            from policy_server_ros.policies.lerobot.diffusion import (
                DiffusionSizes,
                LeRobotDiffusion,
            )

            state = LeRobotDiffusion(ckpt, DiffusionSizes.from_checkpoint(ckpt)).state_dict()
    prefix = "model." if kind == "act" else "diffusion."
    assert _listing(state, prefix) == (DATA / f"{kind}_aloha" / "keys.tsv").read_text().split(
        "\n")[:len(state)]
    assert len((DATA / f"{kind}_aloha" / "keys.tsv").read_text().strip().splitlines()) == \
        len(state)


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_example_writer_writes_lerobots_files(tmp_path, kind) -> None:
    assert example_config(kind) == json.loads((DATA / f"{kind}_aloha" / "config.json").read_text())
    from policy_server_ros.policies.lerobot.example import _write_processors, example_stats

    config = example_config(kind)
    _write_processors(tmp_path, config, example_stats(
        {**config["input_features"], **config["output_features"]}, 0))
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        assert json.loads((tmp_path / name).read_text()) == \
            json.loads((DATA / f"{kind}_aloha" / name).read_text())


def test_a_training_steps_folder_serves_its_pretrained_model(tmp_path) -> None:
    step = tmp_path / "checkpoints" / "000010"
    shutil.copytree(DATA / "env_act", step / "pretrained_model")
    (step / "training_state").mkdir()
    policy = load_policy(step, LoadOptions(device="cpu"))
    _assert_equals_lerobot(policy, DATA / "env_inputs.npz", DATA / "env_act_outputs.npz")


def test_camera_order_follows_the_feature_names(examples) -> None:
    obs = _cases(DATA / "camera_inputs.npz")["batch"]
    swapped = MetaObs(state=obs.state, image=obs.image[:, ::-1].copy())
    default = load_policy(examples["act"], LoadOptions(device="cpu"))
    names = ("observation.images.wrist", "observation.images.top")
    renamed = load_policy(examples["act"], LoadOptions(device="cpu",
                                                       lerobot_image_features=names))
    assert renamed.camera_names == names
    expected = default.predict(as_batch(obs)[0])
    np.testing.assert_allclose(renamed.predict(as_batch(swapped)[0]), expected, atol=1e-6)
    assert not np.allclose(default.predict(as_batch(swapped)[0]), expected, atol=1e-3)
    with pytest.raises(CheckpointError, match=r"lerobot_image_features \['observation.images."
                       r"top', 'observation.images.front'\] must name each of the checkpoint's "
                       r"image features once"):
        load_policy(examples["act"], LoadOptions(device="cpu", lerobot_image_features=(
            "observation.images.top", "observation.images.front")))


def test_wrong_shapes_name_the_feature_and_both_shapes(examples) -> None:
    policy = load_policy(examples["act"], LoadOptions(device="cpu"))
    obs = _cases(DATA / "camera_inputs.npz")["single"]
    with pytest.raises(ObservationError, match=r"observation.images.top, observation.images."
                       r"wrist \(MetaObs.image\) need shape \(K, C, H, W\) = \(2, 3, 48, 64\), "
                       r"got \(2, 3, 24, 32\)"):
        policy.predict(MetaObs(state=obs.state, image=obs.image[..., ::2, ::2].copy()))
    with pytest.raises(ObservationError, match=r"observation.state \(MetaObs.state\) needs "
                       r"shape \(14,\), got \(7,\)"):
        policy.predict(MetaObs(state=obs.state[:, :7], image=obs.image))
    assert policy.state_feature == ("observation.state", 14)
    assert state_size(["joints"], JOINTS[:7]) == 7 and state_size(["joints", "ee"], JOINTS) == 21
    assert state_size(["joints"], []) is None


def _folder(tmp_path: Path, config: dict, tensors: dict | None = None) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors or {"model.action_head.bias": torch.zeros(2)},
              str(folder / "model.safetensors"))
    return folder


def test_lerobot_0_3_checkpoints_are_refused_with_the_conversion_command() -> None:
    # Saved by LeRobot 0.3.3's ACTPolicy: the statistics are buffers in model.safetensors and
    # there are no processor files. scripts/lerobot_equivalence/legacy_03.sh converts such a
    # folder with the command named here and checks the converted one against 0.3.3's actions.
    folder = DATA / "act_0.3.3_env"
    with pytest.raises(CheckpointError, match=r"act_0.3.3_env is a LeRobot <= 0.3 checkpoint "
                       r"\(normalization buffers such as normalize_inputs.buffer_observation_"
                       r"state.mean inside model.safetensors, no policy_preprocessor"
                       r".json\); convert it with LeRobot >= 0.4: python -m lerobot.processor."
                       r"migrate_policy_normalization --pretrained-path .*act_0.3.3_env, then "
                       r"serve the act_0.3.3_env_migrated folder it writes beside it"):
        load_policy(folder, LoadOptions(device="cpu"))


@pytest.mark.parametrize(("kind", "message"), [
    ("pi0", r"policy type 'pi0' \(a LeRobot policy type\) is not served here; LeRobot "
            r"checkpoints of type act or diffusion are"),
    ("my_policy", r"policy type 'my_policy' \(an unknown type\) is not served here")])
def test_unserved_types_are_named(tmp_path, kind: str, message: str) -> None:
    folder = _folder(tmp_path, {"type": kind, "input_features": {}})
    with pytest.raises(CheckpointError, match=message):
        load_policy(folder, LoadOptions(device="cpu"))


def test_missing_pieces_are_one_line_errors(examples, tmp_path) -> None:
    folder = tmp_path / "act"
    shutil.copytree(examples["act"], folder)
    (folder / "policy_postprocessor.json").unlink()
    with pytest.raises(CheckpointError, match="has no policy_postprocessor.json"):
        load_policy(folder, LoadOptions(device="cpu"))
    shutil.copy(examples["act"] / "policy_postprocessor.json", folder)
    (folder / "policy_preprocessor_step_3_normalizer_processor.safetensors").unlink()
    with pytest.raises(CheckpointError, match="'normalizer_processor' step's state file"):
        load_policy(folder, LoadOptions(device="cpu"))
    shutil.copy(examples["act"] / "policy_preprocessor_step_3_normalizer_processor.safetensors",
                folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "dim_model": 64}))
    with pytest.raises(ValueError, match="does not fit config.json"):
        load_policy(folder, LoadOptions(device="cpu"))


def test_normalization_modes_are_lerobots_formulas() -> None:
    x = torch.tensor([[0.0, 1.0, 5.0]])
    stats = {"mean": np.array([1.0, 1.0, 1.0]), "std": np.array([2.0, 0.5, 0.0]),
             "min": np.array([0.0, 1.0, -1.0]), "max": np.array([2.0, 1.0, 3.0])}

    def norm(mode: str, s=stats) -> FeatureNorm:
        return FeatureNorm("f", mode, s, eps=1e-8, shape=(3,), device=torch.device("cpu"))

    mean_std = norm("MEAN_STD")
    torch.testing.assert_close(mean_std.normalize(x),
                               torch.tensor([[-0.5, 0.0, 4.0 / 1e-8]]))
    torch.testing.assert_close(mean_std.unnormalize(x), torch.tensor([[1.0, 1.5, 1.0]]))
    min_max = norm("MIN_MAX")  # a zero range is replaced by eps, as LeRobot does
    torch.testing.assert_close(min_max.normalize(x), torch.tensor([[-1.0, -1.0, 2.0]]))
    torch.testing.assert_close(min_max.unnormalize(min_max.normalize(x))[:, [0, 2]],
                               x[:, [0, 2]])
    assert norm("IDENTITY").normalize(x) is x
    assert norm("MEAN_STD", None).normalize(x) is x  # no statistics: passed through
    with pytest.raises(CheckpointError, match=r"MIN_MAX normalization of 'f' needs 'min'"):
        norm("MIN_MAX", {"mean": stats["mean"], "std": stats["std"]})


def test_served_over_tcp_with_its_ctrl_flags(examples) -> None:
    obs = _cases(DATA / "camera_inputs.npz")["single"]
    expected = load_policy(examples["act"], LoadOptions(device="cpu")).predict(
        as_batch(obs)[0])[0]
    server = ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "--host",
                            "127.0.0.1", "--port", "0", "-m", str(examples["act"]), "--device",
                            "cpu", "--lerobot_ctrl_type", "delta", "--warmup_image_size", "48x64"])
    try:
        with PolicyClient("127.0.0.1", server.port()) as client:
            reply = client.send_meta_obs(MetaObs(state=obs.state, image=obs.image))
        actions = np.stack([step[0]["action"] for step in reply])
        # n_action_steps (5) of the 10-step chunk, as LeRobot's select_action plays them.
        np.testing.assert_allclose(actions, expected[:5], atol=1e-6)
        assert {(s[0]["ctrl_space"], s[0]["ctrl_type"]) for s in reply} == {("joint", "delta")}
    finally:
        assert server.stop(signal.SIGTERM) == 0
    server.wait_for(r"Loaded LeRobot act from .*cameras \['observation.images.top', "
                    r"'observation.images.wrist'\], state \('observation.state', 14\)")


def test_the_node_serves_it_and_checks_the_state_size(tmp_path) -> None:
    ckpt = tmp_path / "act"
    assert example_checkpoint.main([str(ckpt), "--policy", "lerobot_act", "--small"]) == 0
    node = start_node(next_domain(), {"model_name_or_path": str(ckpt), "device": "cpu",
                                      "joint_names": JOINTS[:7]})
    assert node.proc.wait(60) == 2
    node.wait_for(r"observation.state has shape \(14,\) but state_inputs \['joints'\] with 7 "
                  r"joint_names give \(7,\)")
    domain = next_domain()
    node = start_node(domain, {"model_name_or_path": str(ckpt), "device": "cpu",
                               "joint_names": JOINTS, "socket_bridge_enabled": False,
                               "camera_topics": ["/cam/image_raw"]})
    robot = SyntheticRobot(domain, ["/cam/image_raw"])
    try:
        chunks = robot.listen("/policy_server/action_chunk", ActionChunk)
        node.wait_for("policy_server ready", timeout=90)
        robot.wait_for_subscribers()
        time.sleep(0.5)
        picture = np.random.default_rng(0).integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8)
        robot.run(10, 10.0, lambda i, stamp: ([rgb_image(stamp, picture)],
                                              joint_state(stamp, np.linspace(-1, 1, 14))))
        assert robot.wait_until(lambda: len(chunks) >= 5), "\n".join(node.lines)
        for chunk in chunks:
            assert (chunk.num_steps, chunk.action_dim, chunk.ctrl_space, chunk.ctrl_type) == \
                (5, 14, "joint", "abs")
            assert np.isfinite(chunk_to_array(chunk)).all()
    finally:
        assert node.stop(signal.SIGINT) == 0
        robot.close()
