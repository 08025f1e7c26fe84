"""The scripted demonstrations (scripts/sim_demos/generate_demos.py's .npz) and what is made
from them: the replay policy folder of each seed, and the (state, action chunk) pairs the MLP
trains on, recorded by replaying the commands in this package's simulator (MuJoCo 3.x).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policy_server_ros.sim.episodes import CONTROL_PERIOD, parse_seeds

DEMOS = Path(__file__).resolve().parents[2] / "examples" / "sim_transfer_cube" / "demos.npz"


class DemoError(ValueError):
    """A demonstrations or seeds file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Demos:
    seeds: np.ndarray  # (N,) int
    cube_start: np.ndarray  # (N, 7) MuJoCo order (x, y, z, qw, qx, qy, qz)
    commands: np.ndarray  # (N, T, 14) float32

    def index(self, seed: int) -> int:
        where = np.flatnonzero(self.seeds == seed)
        if where.size == 0:
            raise DemoError(f"no demonstration for seed {seed}; the demonstrations have seeds "
                            f"{_ranges(self.seeds)}")
        return int(where[0])


def _ranges(seeds: np.ndarray) -> str:
    s = sorted(int(x) for x in seeds)
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))


def load_demos(path: str | Path = DEMOS) -> Demos:
    """Read a demonstrations .npz (arrays only; pickles are refused)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            demos = Demos(data["seeds"].astype(np.int64), data["cube_start"],
                          data["commands"].astype(np.float32))
    except FileNotFoundError:
        raise DemoError(f"demonstrations file {path} does not exist (make it with "
                        f"scripts/sim_demos/generate_demos.py)") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DemoError(f"{path} is not a demonstrations file (seeds, cube_start, commands): "
                        f"{exc}") from None
    if demos.commands.ndim != 3 or demos.commands.shape[2] != 14:
        raise DemoError(f"{path}: commands must be (episodes, steps, 14), got "
                        f"{demos.commands.shape}")
    return demos


def read_seeds(spec: str) -> list[int]:
    """A seed list ('0-19', '3,5,7') or a file holding one (a path with '/' or ending in .txt)."""
    if "/" in spec or spec.endswith(".txt"):
        path = Path(spec)
        try:
            spec = path.read_text()
        except OSError as exc:
            raise DemoError(f"seeds file {path}: {exc.strerror or exc}") from None
        spec = ",".join(spec.split())
    try:
        return parse_seeds(spec)
    except ValueError as exc:
        raise DemoError(str(exc)) from None


def write_replay_policy(demos: Demos, seed: int, out: Path, chunk_size: int = 20) -> Path:
    """A replay policy folder serving the commands of `seed`'s demonstration as episode_0."""
    commands = demos.commands[demos.index(seed)]
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "actions.npz", episode_0=commands)
    (out / "config.json").write_text(json.dumps({
        "chunk_size": chunk_size, "ctrl_space": "joint", "ctrl_type": "abs",
        "period": CONTROL_PERIOD, "gripper_continuous": False, "past_end": "hold"}, indent=2))
    (out / "policy_metadata.json").write_text(json.dumps(
        {"policy_module": "policy.replay", "policy_name": "replay"}, indent=2))
    return out


def record_states(demos: Demos, seeds: list[int]) -> tuple[list[np.ndarray], list[bool]]:
    """Replay each seed's commands in the simulator (no rendering) and record the state the
    policy sees before each step: 14 joint positions + the cube pose (x, y, z, qx, qy, qz, qw).
    Returns per seed a (T, 21) float32 array, and whether the replay succeeded."""
    from policy_server_ros.sim.transfer_cube import TransferCubeSim  # noqa: PLC0415

    sim = TransferCubeSim(height=0, width=0, rendering=False)
    states, success = [], []
    for seed in seeds:
        commands = demos.commands[demos.index(seed)]
        sim.reset(seed)
        rows = np.empty((len(commands), 21), np.float32)
        for t, command in enumerate(commands):
            rows[t, :14] = sim.joint_positions()
            rows[t, 14:] = sim.cube_pose()
            sim.step(command)
        states.append(rows)
        success.append(sim.success)
    return states, success
