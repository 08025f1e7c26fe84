"""The closed-loop simulator: the transfer-cube task in MuJoCo 3.x, the scripted demonstrations,
the object-pose input, and short closed loops through the real chain (the policy_server node on
sim time with its command stream, over Fast DDS; the socket bridge with the client-side
scheduler), with the bad inputs that must stop the evaluation in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_harness import next_domain

from policy_server_ros.inputs import node_params
from policy_server_ros.observation_assembler import AssemblerConfig, ObservationAssembler
from policy_server_ros.sim.demos import DEMOS, DemoError, load_demos, read_seeds
from policy_server_ros.sim.episodes import JOINT_NAMES, cube_start_pose, parse_seeds

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "examples" / "sim_transfer_cube" / "mlp"
HELD_OUT_SEED = 100  # the committed MLP trained on seeds 0-99


def test_cube_start_pose_follows_the_seed_within_the_task_range() -> None:
    poses = np.stack([cube_start_pose(s) for s in range(50)])
    assert np.array_equal(poses, np.stack([cube_start_pose(s) for s in range(50)]))
    assert len({tuple(p) for p in poses}) == 50
    assert (poses[:, 0] >= 0).all() and (poses[:, 0] <= 0.2).all()
    assert (poses[:, 1] >= 0.4).all() and (poses[:, 1] <= 0.6).all()
    assert np.allclose(poses[:, 2:], [0.05, 1, 0, 0, 0])
    assert len(JOINT_NAMES) == 14 and JOINT_NAMES[6] == "left_arm_gripper"


def test_seed_lists_and_seed_files(tmp_path: Path) -> None:
    assert parse_seeds("0-3,7, 9") == [0, 1, 2, 3, 7, 9]
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("100-102\n200\n")
    assert read_seeds(str(seeds)) == [100, 101, 102, 200]
    with pytest.raises(DemoError, match="seeds file .*missing.txt"):
        read_seeds(str(tmp_path / "missing.txt"))
    with pytest.raises(DemoError, match="bad seed list"):
        read_seeds("a-b")


def test_demonstrations_file_is_checked(tmp_path: Path) -> None:
    demos = load_demos()
    assert demos.commands.shape[1:] == (400, 14) and len(demos.seeds) >= 120
    with pytest.raises(DemoError, match="does not exist"):
        load_demos(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DemoError, match="not a demonstrations file"):
        load_demos(tmp_path / "bad.npz")
    with pytest.raises(DemoError, match="no demonstration for seed 99999"):
        demos.index(99999)


def test_object_pose_feeds_state_obj_and_state() -> None:
    params = node_params(camera_topics=[], object_pose_topic="/cube_pose",
                         required_inputs=["joints", "object"], state_inputs=["joints", "object"])
    from policy_server_ros.inputs import assembler_config, input_topics

    assert [(t.name, t.topic) for t in input_topics(params)][-1] == ("object", "/cube_pose")
    a = ObservationAssembler(assembler_config(params))
    joints = np.arange(14, dtype=np.float32)
    pose = np.array([0.1, 0.5, 0.05, 0, 0, 0, 1], np.float32)
    a.add("joints", 1_000, joints)
    a.add("object", 1_000, pose)
    obs = a.assemble(1_000).obs
    assert np.array_equal(obs.state, np.concatenate([joints, pose]))
    assert np.array_equal(obs.state_obj, pose)
    with pytest.raises(ValueError, match="object"):  # a state part must be required
        AssemblerConfig(cameras=0, has_object=True, required=("joints",),
                        state_parts=("joints", "object"))


def test_demonstration_replays_to_success_in_mujoco3() -> None:
    from policy_server_ros.sim.transfer_cube import TransferCubeSim

    demos = load_demos()
    sim = TransferCubeSim(0, 0, rendering=False)
    sim.reset(3)
    for command in demos.commands[demos.index(3)]:
        sim.step(command)
    assert sim.success and sim.max_reward == 4
    sim.reset(3)  # holding the start pose never succeeds
    for _ in range(100):
        sim.step(sim.joint_positions())
    assert sim.max_reward < 4


def _eval(tmp_path: Path, **kwargs: object) -> dict:
    from policy_server_ros.sim.evaluate import EvalConfig, evaluate

    config = EvalConfig(out=tmp_path / "eval", domain_id=next_domain(), **kwargs)
    return evaluate(config)


@pytest.mark.slow
def test_replay_over_ros_succeeds_with_report_plot_and_video(tmp_path: Path) -> None:
    """The scripted demonstration, served by the replay policy: robot node -> policy_server
    (sim time, ensemble execution) -> JointState commands -> robot, to the task's success."""
    report = _eval(tmp_path, model=str(DEMOS), seeds=[0], via="ros", video_hw=(48, 64))
    episode = report["episodes_detail"][0]
    assert report["successes"] == 1, report
    assert episode["commands"] >= episode["steps"] - 5  # one command per control step
    assert 45 <= report["command_rate_hz_sim"] <= 51
    assert report["inference_latency_ms"]["p50"] is not None
    out = tmp_path / "eval"
    assert json.loads((out / "report.json").read_text())["success_rate"] == 1.0
    assert (out / "episodes.png").stat().st_size > 1000
    assert Path(report["video"]).stat().st_size > 1000


@pytest.mark.slow
def test_trained_mlp_over_ros_and_over_the_socket(tmp_path: Path) -> None:
    """The committed MLP (state: joints + cube pose via object_pose_topic) on a seed it was not
    trained on, through the node; then the same seed through the socket bridge."""
    ros = _eval(tmp_path, model=str(MLP), seeds=[HELD_OUT_SEED], via="ros", video=False)
    assert ros["successes"] == 1, ros
    socket = _eval(tmp_path, model=str(MLP), seeds=[HELD_OUT_SEED], via="socket", video=False,
                   real_time_factor=0.0)
    assert socket["successes"] == 1, socket
    assert socket["episodes_detail"][0]["commands"] == socket["episodes_detail"][0]["steps"]


@pytest.mark.slow
def test_camera_policy_runs_the_loop(tmp_path: Path) -> None:
    """An (untrained, small) ACT with the top camera: rendered frames reach the policy and
    commands come back; it is not expected to succeed."""
    from policy_server_ros.example_checkpoint import small_config, write_example_checkpoint

    ckpt = write_example_checkpoint(tmp_path / "act", small_config(cameras=1))
    # At a quarter of real time, so that a loaded machine still gets chunks back in time.
    report = _eval(tmp_path, model=str(ckpt), seeds=[5], via="ros", video=False, max_steps=40,
                   image_hw=(48, 64), real_time_factor=0.25)
    assert report["camera_rendered"]
    assert report["episodes_detail"][0]["steps"] == 40
    assert report["episodes_detail"][0]["commands"] > 10
    assert report["inference_latency_ms"]["p50"] is not None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_server_ros.sim", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=env or dict(os.environ))


def test_bad_inputs_stop_the_evaluation_in_one_line(tmp_path: Path) -> None:
    from policy_server_ros.policies.mlp.example import write_example
    from policy_server_ros.policies.mlp.model import MLPConfig

    wrong = write_example(tmp_path / "mlp10", config=MLPConfig(
        state_dim=10, action_dim=14, num_layers=2, hidden_dim=8, chunk_size=5))
    cases = [
        (("eval", "--model", str(MLP), "--seeds", str(tmp_path / "seeds.txt")),
         "seeds file"),
        (("eval", "--model", str(wrong), "--seeds", "1"),
         "state has 10 dimensions, but the simulator gives 14"),
        (("eval", "--model", str(tmp_path / "nothing"), "--seeds", "1"), "cannot serve"),
    ]
    for args, message in cases:
        result = _cli(*args)
        assert result.returncode == 2, result
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_missing_rendering_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MUJOCO_GL": "osmesa"}  # no libOSMesa here: like a missing libEGL
    env.pop("PYOPENGL_PLATFORM", None)  # set by dm_control when imported in this process
    result = _cli("eval", "--model", str(MLP), "--seeds", "1", "--out", str(tmp_path), env=env)
    assert result.returncode == 2, result
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("policy_server_sim")]
    assert len(lines) == 1 and "libegl1 libegl-mesa0 libgl1-mesa-dri" in lines[0], result.stderr
