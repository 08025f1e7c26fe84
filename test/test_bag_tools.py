"""policy_server_bag without middleware: the sample bag, restamping, scoring, eval, bad bags."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from act_fixtures import small_checkpoint
from conftest import PYTHON, REPO_ROOT
from PIL import Image as PILImage
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState

from policy_server_ros.bag_tools import metrics
from policy_server_ros.bag_tools.evaluate import evaluate
from policy_server_ros.bag_tools.sample import (
    CAMERA_TOPICS,
    COMMAND_TOPIC,
    JOINT_NAMES,
    JOINT_TOPIC,
    SampleSpec,
    make_sample,
)
from policy_server_ros.bag_tools.storage import (
    BagError,
    new_writer,
    open_bag,
    read_messages,
    restamp,
)
from policy_server_ros.inputs import ParameterError, load_params_file, node_params, resolve_topic
from policy_server_ros.ros_conversions import stamp_ns

SPEC = SampleSpec(seconds=3.0, height=64, width=80)  # 75 camera frames, 150 joint ticks


def bag_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "policy_server_ros.bag_tools", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def sample_bag(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp(request.param) / "sample"
    make_sample(path, SPEC, storage=request.param)
    return path


def _messages(bag: Path, topic: str) -> list[tuple[int, object]]:
    with open_bag(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype))
                for c, t, raw in read_messages(reader, conns)]


def echo_params(**overrides) -> dict:
    return node_params(model_name_or_path="builtin:echo", device="cpu", **overrides)


# --- the sample bag ---------------------------------------------------------------------------

def test_sample_bag_has_consistent_topics_rates_and_stamps(sample_bag: Path) -> None:
    storage_file = next(p for p in sample_bag.iterdir() if p.suffix in (".mcap", ".db3"))
    assert storage_file.suffix == (".mcap" if "mcap" in str(sample_bag.parent) else ".db3")
    with open_bag(sample_bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == {CAMERA_TOPICS[0]: 75, CAMERA_TOPICS[1]: 75, JOINT_TOPIC: 150,
                      "/ee_pose": 150, "/instruction": 1, COMMAND_TOPIC: 150}
    joints = _messages(sample_bag, JOINT_TOPIC)
    stamps = np.array([stamp_ns(m) for _, m in joints])
    assert set(np.diff(stamps)) == {20_000_000}  # 50 Hz
    assert all(t > stamp_ns(m) for t, m in joints)  # received after it was stamped
    assert list(joints[0][1].name) == JOINT_NAMES
    camera = _messages(sample_bag, CAMERA_TOPICS[0])
    camera_stamps = np.array([stamp_ns(m) for _, m in camera])
    assert set(np.diff(camera_stamps)) == {40_000_000}  # 25 Hz, on the joints' ticks
    assert set(camera_stamps) <= set(stamps)
    image = camera[10][1]
    assert (image.encoding, image.height, image.width, image.step) == ("rgb8", 64, 80, 240)
    # The commands are the states (what a robot executing builtin:echo commands).
    commands = _messages(sample_bag, COMMAND_TOPIC)
    np.testing.assert_array_equal([m.position for _, m in commands],
                                  [m.position for _, m in joints])


def test_make_sample_refuses_an_existing_output(tmp_path) -> None:
    (tmp_path / "bag").mkdir()
    result = bag_cli("make-sample", str(tmp_path / "bag"))
    assert result.returncode == 2
    assert "exists; choose a new output path" in result.stderr


# --- restamping in serialized bytes --------------------------------------------------------

def test_restamp_rewrites_only_the_header_stamp() -> None:
    msg = JointState(name=["a", "b"], position=[1.0, 2.0])
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.header.frame_id = "base"
    raw = serialize_message(msg)
    out = deserialize_message(bytes(restamp(raw, 1_700_000_001_000_000_007)), JointState)
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (1_700_000_001, 7)
    assert out.header.frame_id == "base" and list(out.position) == [1.0, 2.0]
    assert list(out.name) == ["a", "b"]
    # Big-endian CDR (encapsulation byte 1 = 0) is patched in its own byte order.
    big = bytearray(raw[:4]) + bytearray(12)
    big[1] = 0
    patched = restamp(big, 5_000_000_006)
    assert patched[4:12] == (5).to_bytes(4, "big") + (6).to_bytes(4, "big")


# --- scoring -----------------------------------------------------------------------------------

def test_commands_are_matched_by_time_within_the_tolerance() -> None:
    command_stamps = np.array([0, 100, 200, 300, 500], np.int64)  # a gap at 400
    index, valid = metrics.match_commands(np.array([0, 190], np.int64), 4, 100, command_stamps,
                                          tolerance_ns=20)
    # chunk 0 wants 0, 100, 200, 300; chunk 1 wants 190, 290, 390 (gap), 490
    np.testing.assert_array_equal(index, [[0, 1, 2, 3], [2, 3, 3, 4]])
    np.testing.assert_array_equal(valid, [[True] * 4, [True, True, False, True]])


def test_horizon_metrics_are_per_dimension_mae_and_rmse_over_valid_steps() -> None:
    errors = np.zeros((2, 3, 2))
    errors[:, :, 0] = [[1.0, -3.0, 100.0], [1.0, 3.0, 5.0]]
    valid = np.array([[True, True, False], [True, True, True]])
    result = metrics.horizon_metrics(errors, valid, [1, 3])
    assert result["1"]["steps_scored"] == 2
    assert result["1"]["mae"] == [1.0, 0.0] and result["1"]["rmse"] == [1.0, 0.0]
    assert result["3"]["steps_scored"] == 5  # the invalid 100.0 is left out
    assert result["3"]["mae"][0] == pytest.approx((1 + 3 + 1 + 3 + 5) / 5)
    assert result["3"]["rmse"][0] == pytest.approx(np.sqrt((1 + 9 + 1 + 9 + 25) / 5))
    assert metrics.resolve_horizons(["1", "10", "full", "500"], 100) == [1, 10, 100]
    with pytest.raises(ValueError, match="not a whole number"):
        metrics.resolve_horizons(["soon"], 100)


# --- eval ----------------------------------------------------------------------------------

def test_eval_of_the_policy_that_produced_the_bag_scores_zero(sample_bag: Path) -> None:
    ev = evaluate(sample_bag, echo_params(), action_topic=COMMAND_TOPIC, progress=False)
    report = ev.report
    assert report["observations_assembled"] == report["observations_evaluated"] == 75
    assert report["inputs"] == {"camera/0": CAMERA_TOPICS[0], "joints": JOINT_TOPIC}
    assert report["dim_names"] == JOINT_NAMES
    assert set(report["horizons"]) == {"1", "10", "100"}
    for horizon in report["horizons"].values():
        assert max(horizon["mae"]) < 1e-5 and max(horizon["rmse"]) < 1e-5
    # Chunk steps past the last command are not scored: chunk k (at 40 ms * k) reaches the
    # last command (2.98 s) with min(100, 150 - 2k) steps.
    expected = sum(min(100, 150 - 2 * k) for k in range(75))
    assert report["horizons"]["100"]["steps_scored"] == expected
    assert report["horizons"]["1"]["steps_scored"] == 75


def _perturbed_copy(bag: Path, out: Path, storage: str) -> None:
    """The bag with commanded action dim 3 offset by 0.05 and dim 5 plus N(0, 0.02) noise."""
    rng = np.random.default_rng(1)
    with open_bag(bag) as reader:
        writer = new_writer(out, storage)
        try:
            conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=reader.typestore)
                     for c in reader.connections}
            for conn, t, raw in read_messages(reader, reader.connections):
                data = raw
                if conn.topic == COMMAND_TOPIC:
                    msg = reader.deserialize(raw, conn.msgtype)
                    msg.position = msg.position.copy()
                    msg.position[3] += 0.05
                    msg.position[5] += rng.normal(0, 0.02)
                    data = reader.typestore.serialize_cdr(msg, conn.msgtype)
                writer.write(conns[conn.id], t, data)
        finally:
            writer.close()


def test_eval_on_a_perturbed_bag_reports_the_perturbation(sample_bag: Path, tmp_path) -> None:
    storage = "mcap" if "mcap" in str(sample_bag.parent) else "sqlite3"
    perturbed = tmp_path / "perturbed"
    _perturbed_copy(sample_bag, perturbed, storage)
    report = evaluate(perturbed, echo_params(), action_topic=COMMAND_TOPIC,
                      progress=False).report
    for horizon in ("1", "10", "100"):
        mae, rmse = report["horizons"][horizon]["mae"], report["horizons"][horizon]["rmse"]
        assert mae[3] == pytest.approx(0.05, abs=1e-5)
        assert rmse[3] == pytest.approx(0.05, abs=1e-5)
        untouched = [d for d in range(14) if d not in (3, 5)]
        assert max(mae[d] for d in untouched) < 1e-5
    full = report["horizons"]["100"]
    assert full["rmse"][5] == pytest.approx(0.02, rel=0.15)
    assert full["mae"][5] == pytest.approx(0.02 * np.sqrt(2 / np.pi), rel=0.15)


def test_eval_cli_with_an_act_checkpoint_writes_report_and_plots(sample_bag: Path,
                                                                 tmp_path) -> None:
    ckpt = small_checkpoint(tmp_path / "ckpt", cameras=2)
    out = tmp_path / "report"
    result = bag_cli("eval", str(sample_bag), "-m", str(ckpt), "--device", "cpu", "--out",
                     str(out), "-p", f"camera_topics:=[{CAMERA_TOPICS[0]}, {CAMERA_TOPICS[1]}]",
                     "--horizons", "1,5,full", "--stride", "3")
    assert result.returncode == 0, result.stderr
    assert "eval: 100%" in result.stderr  # the progress bar
    report = json.loads((out / "report.json").read_text())
    assert report["observations_assembled"] == 75
    assert report["observations_evaluated"] == 25  # every third
    assert report["inputs"] == {"camera/0": CAMERA_TOPICS[0], "camera/1": CAMERA_TOPICS[1],
                                "joints": JOINT_TOPIC}
    assert set(report["horizons"]) == {"1", "5", str(report["chunk_size"])}
    # An untrained model is far from the recorded actions, and the numbers say so.
    assert report["horizons"]["1"]["mae_mean"] > 0.01
    for name in ("actions.png", "error_by_step.png"):
        with PILImage.open(out / name) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 200


def test_eval_reads_the_node_params_file(sample_bag: Path, tmp_path) -> None:
    params = tmp_path / "robot.yaml"
    params.write_text("policy_server:\n  ros__parameters:\n"
                      f"    camera_topics: ['{CAMERA_TOPICS[1]}']\n"
                      "    ee_pose_topic: /ee_pose\n    required_inputs: [cameras, joints, ee]\n"
                      "    sync_slop: 0.01\n")
    loaded = load_params_file(params)
    assert loaded["camera_topics"] == [CAMERA_TOPICS[1]] and loaded["sync_slop"] == 0.01
    report = evaluate(sample_bag, node_params(params, model_name_or_path="builtin:echo",
                                              device="cpu"),
                      action_topic=COMMAND_TOPIC, progress=False).report
    assert report["inputs"] == {"camera/0": CAMERA_TOPICS[1], "joints": JOINT_TOPIC,
                                "ee": "/ee_pose"}
    assert report["observations_evaluated"] == 75


def test_params_file_sections_follow_rcls_node_name_rules(tmp_path) -> None:
    # As rcl reads a params file: `/**` spans any namespace, `*` one level, a bare name is the
    # root namespace; matching sections apply in file order.
    params = tmp_path / "robots.yaml"
    params.write_text("/**:\n  ros__parameters: {sync_slop: 0.01, frame_id: any}\n"
                      "/**/policy_server:\n  ros__parameters: {frame_id: every_ns}\n"
                      "policy_server:\n  ros__parameters: {frame_id: root}\n"
                      "/*/policy_server:\n  ros__parameters: {device: cpu}\n"
                      "/robot2/policy_server:\n  ros__parameters: {frame_id: robot2}\n")
    root = load_params_file(params)
    assert (root["frame_id"], root["sync_slop"], "device" in root) == ("root", 0.01, False)
    robot1 = load_params_file(params, "/robot1/policy_server")
    assert (robot1["frame_id"], robot1["device"]) == ("every_ns", "cpu")
    assert load_params_file(params, "/robot2/policy_server")["frame_id"] == "robot2"
    assert "device" not in load_params_file(params, "/a/b/policy_server")
    with pytest.raises(ParameterError, match="no section for the node /robot1/policy_server"):
        params.write_text("policy_server:\n  ros__parameters: {frame_id: root}\n")
        load_params_file(params, "/robot1/policy_server")


def test_relative_topic_names_resolve_as_the_node_resolves_them() -> None:
    assert resolve_topic("joint_states") == "/joint_states"
    assert resolve_topic("joint_states", "/robot1") == "/robot1/joint_states"
    assert resolve_topic("~/action_chunk", "robot1/") == "/robot1/policy_server/action_chunk"
    assert resolve_topic("/cam/image", "/robot1") == "/cam/image"
    # The node's defaults are relative, so that they follow its namespace; the evaluator reads
    # them as the root namespace's names, which is what a bag recorded there holds.
    defaults = node_params()
    assert defaults["joint_state_topic"] == "joint_states"
    assert resolve_topic(defaults["camera_topics"][0]) == CAMERA_TOPICS[0]


@pytest.mark.parametrize(("override", "message"), [
    ("no_such_param:=1", "unknown parameter 'no_such_param'"),
    ("sync_slop:=fast", "sync_slop must be float"),
    ("camera_qos:=loud", "not one of"),
    ("camera_topics", "not name:=value"),
])
def test_bad_parameters_are_refused_with_the_reason(override: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        node_params(overrides=[override])


def test_eval_names_missing_topics(sample_bag: Path) -> None:
    with pytest.raises(BagError, match=r"lacks required input topics \['/cam_high'\]"):
        evaluate(sample_bag, echo_params(camera_topics=["/cam_high"]),
                 action_topic=COMMAND_TOPIC, progress=False)
    with pytest.raises(BagError, match="action topic /commands is not in bag"):
        evaluate(sample_bag, echo_params(), action_topic="/commands", progress=False)


# --- damaged bags --------------------------------------------------------------------------

def _damaged(sample: Path, tmp_path: Path, how: str) -> Path:
    bag = tmp_path / how
    shutil.copytree(sample, bag)
    storage = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    data = storage.read_bytes()
    if how == "truncated":
        storage.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        storage.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, len(data),
                                                                    dtype=np.uint8)))
    elif how == "no_metadata":
        (bag / "metadata.yaml").unlink()
    return bag


@pytest.mark.parametrize("how", ["truncated", "garbage", "no_metadata"])
@pytest.mark.parametrize("command", ["eval", "replay"])
def test_a_damaged_bag_is_a_clear_error(sample_bag: Path, tmp_path, how: str,
                                        command: str) -> None:
    bag = _damaged(sample_bag, tmp_path, how)
    args = [command, str(bag)] + (["-m", "builtin:echo", "--device", "cpu"]
                                  if command == "eval" else ["--wait-subscribers", "0"])
    result = bag_cli(*args, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"policy_server_bag {command}: error:")
    assert str(bag) in line
    assert ("cannot read bag" in line or "is damaged after" in line)


def test_eval_at_a_fixed_inference_rate_assembles_on_the_ticks(sample_bag: Path) -> None:
    report = evaluate(sample_bag, echo_params(inference_rate=5.0), action_topic=COMMAND_TOPIC,
                      progress=False).report
    # A tick every 200 ms of the 3 s bag, each taking the newest complete set.
    assert 13 <= report["observations_evaluated"] <= 15
    assert report["horizons"]["100"]["mae_mean"] < 1e-5


def test_replay_names_topics_the_bag_lacks(sample_bag: Path) -> None:
    result = bag_cli("replay", str(sample_bag), "--topics", "/nope", "--wait-subscribers", "0")
    assert result.returncode == 2
    assert "topics ['/nope'] are not in the bag; it has: /camera" in result.stderr


def test_a_missing_bag_is_a_clear_error(tmp_path) -> None:
    result = bag_cli("eval", str(tmp_path / "nope"), "-m", "builtin:echo")
    assert result.returncode == 2
    assert f"bag {tmp_path / 'nope'} does not exist" in result.stderr


def test_eval_never_overflows_the_engine_queue_with_a_large_max_batch() -> None:
    # Before: up to 2 x max_batch requests in flight against a queue of 64: with max_batch 100
    # and a policy slower than the bag walk, submit raised EngineBusy out of eval.
    import time

    from benchmark.base import MetaObs
    from policy_server_ros.bag_tools.evaluate import _Walk
    from policy_server_ros.engine import InferenceEngine
    from policy_server_ros.observation_assembler import AssemblerConfig, ObservationAssembler
    from policy_server_ros.policies.base import ActionSpec, Policy

    class Slow(Policy):
        spec = ActionSpec(action_dim=2, chunk_size=1)

        def forward(self, batch: MetaObs) -> np.ndarray:
            time.sleep(0.05)
            return batch.state[:, None, :2]

    engine = InferenceEngine(Slow(), max_batch=100, max_queue=8, warmup=False)
    assembler = ObservationAssembler(AssemblerConfig(cameras=0, required=("joints",)))
    walk = _Walk(None, {}, assembler=assembler, engine=engine, stride=1, max_observations=0,
                 inference_rate=0)
    try:
        for i in range(40):
            assembler.add("joints", (1000 + 20 * i) * 1_000_000, np.full(2, i, np.float32))
            walk._assemble((1000 + 20 * i) * 1_000_000)
        walk.finish()
    finally:
        engine.close()
    assert walk.failures == [] and len(walk.chunks) == 40
    assert [c[0, 0] for c in walk.chunks] == list(range(40))


def test_the_bag_cli_starts_without_importing_torch() -> None:
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = ("import sys, policy_server_ros.bag_tools.cli; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]", out  # torch loads when a policy does, not for --help or replay
