"""replay: recorded actions answered by timestep; every bad folder refused clearly."""

from __future__ import annotations

import json
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, REPO_ROOT, ServerProcess

from benchmark.base import MetaObs
from policy_server_ros import example_checkpoint
from policy_server_ros.checkpoint import CheckpointError
from policy_server_ros.engine import InferenceEngine
from policy_server_ros.observation import ObservationError, as_batch
from policy_server_ros.policies import LoadOptions, PolicyLoadError, load_policy
from policy_server_ros.policies.replay.example import example_episode, write_example
from socket_bridge.client import PolicyClient

CPU = LoadOptions(device="cpu")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_example(tmp_path / "replay", small=True)  # 2 episodes of 40 steps, chunk 5


def _ask(policy, timestep, rows: int = 1) -> np.ndarray:
    state = np.zeros((rows, 14)) if rows > 1 else np.zeros(14)
    return policy.predict(as_batch(MetaObs(state=state, timestep=timestep))[0])


def _set(folder: Path, **config) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return folder


def test_answers_the_chunk_starting_at_each_rows_timestep(folder: Path) -> None:
    policy = load_policy(folder, LoadOptions(device="cpu", replay_episode=1))
    recorded = example_episode(1, 40)
    np.testing.assert_array_equal(_ask(policy, 7)[0], recorded[7:12])
    # ILStudio's MetaPolicy sends one timestep per row, shape (B, 1).
    both = _ask(policy, np.array([[0], [20]]), rows=2)
    np.testing.assert_array_equal(both, np.stack([recorded[0:5], recorded[20:25]]))
    np.testing.assert_array_equal(_ask(policy, 3, rows=2), np.stack([recorded[3:8]] * 2))
    assert policy.spec.chunk_size == 5 and policy.spec.ctrl_type == "abs"
    assert policy.action_period == pytest.approx(0.02)
    assert not np.allclose(_ask(load_policy(folder, CPU), 7)[0], recorded[7:12])  # episode 0


@pytest.mark.parametrize(("rule", "ctrl_type", "tail"), [
    ("hold", "abs", "last"), ("", "abs", "last"), ("", "delta", "zero"), ("zero", "abs", "zero"),
    ("loop", "abs", "loop")])
def test_past_the_end(folder: Path, rule: str, ctrl_type: str, tail: str) -> None:
    policy = load_policy(_set(folder, past_end=rule, ctrl_type=ctrl_type), CPU)
    recorded = example_episode(0, 40)
    chunk = _ask(policy, 38)[0]
    np.testing.assert_array_equal(chunk[:2], recorded[38:40])
    expected = {"last": np.stack([recorded[-1]] * 3), "zero": np.zeros((3, 14)),
                "loop": recorded[0:3]}[tail]
    np.testing.assert_array_equal(chunk[2:], expected)
    assert _ask(policy, 1000).shape == (1, 5, 14)


@pytest.mark.parametrize("timestep", [-1, 2.5, "3", [1, 2, 3], None])
def test_a_missing_or_malformed_timestep_is_refused(folder: Path, timestep: object) -> None:
    with pytest.raises(ObservationError, match="timestep"):
        _ask(load_policy(folder, CPU), timestep, rows=2)


def test_concurrent_requests_each_get_their_own_chunk(folder: Path) -> None:
    policy = load_policy(folder, CPU)
    recorded = example_episode(0, 40)
    with InferenceEngine(policy, max_batch=8, max_wait_ms=50) as engine:
        futures = {t: engine.submit(MetaObs(state=np.zeros(14), timestep=t)) for t in range(6)}
        for t, future in futures.items():
            np.testing.assert_array_equal(future.result(10).actions[0], recorded[t:t + 5])


def test_folder_errors_name_the_problem(folder: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no episode_5 .*holds: episode_0, episode_1"):
        load_policy(folder, LoadOptions(device="cpu", replay_episode=5))
    np.savez(folder / "actions.npz", episode_0=np.zeros((4, 3, 2)))
    with pytest.raises(CheckpointError, match=r"numeric \(T, action_dim\) array"):
        load_policy(folder, CPU)
    np.savez(folder / "actions.npz", episode_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="cannot read .*actions.npz"):
        load_policy(folder, CPU)
    (folder / "actions.npz").write_bytes(pickle.dumps({"episode_0": [[1.0]]}))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_policy(folder, CPU)
    (folder / "actions.npz").unlink()
    with pytest.raises(CheckpointError, match="has no actions.npz"):
        load_policy(folder, CPU)
    with pytest.raises(ValueError, match="past_end must be one of"):
        load_policy(_set(folder, past_end="stop"), CPU)


def test_unknown_policy_name_lists_every_supported_family(folder: Path) -> None:
    (folder / "policy_metadata.json").write_text(json.dumps({"policy_name": "pi0"}))
    with pytest.raises(PolicyLoadError) as info:
        load_policy(folder, CPU)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith("this server can load: act, diffusion_policy, mlp, replay")


def test_example_from_the_command_line(tmp_path: Path) -> None:
    assert example_checkpoint.main([str(tmp_path / "r"), "--policy", "replay",
                                    "--episodes", "3"]) == 0
    policy = load_policy(tmp_path / "r", LoadOptions(device="cpu", replay_episode=2))
    np.testing.assert_array_equal(_ask(policy, 0)[0], example_episode(2, 400)[:20])


def test_served_over_tcp_with_the_episode_flag(folder: Path) -> None:
    server = ServerProcess([PYTHON, str(REPO_ROOT / "start_policy_server.py"), "--host",
                            "127.0.0.1", "--port", "0", "-m", str(folder), "--device", "cpu",
                            "--replay_episode", "1"])
    try:
        port = server.port()
        with PolicyClient("127.0.0.1", port) as client:
            reply = client.send_meta_obs(MetaObs(state=np.zeros((1, 14)),
                                                 timestep=np.array([[12]])))
        actions = np.stack([step[0]["action"] for step in reply])
        np.testing.assert_array_equal(actions, example_episode(1, 40)[12:17])
        assert {step[0]["ctrl_type"] for step in reply} == {"abs"}
    finally:
        assert server.stop(signal.SIGTERM) == 0
    server.wait_for(r"Replaying episode 1 of .*40 actions of dimension 14, chunk 5")
