"""Closed-loop evaluation: the simulated ALOHA driven by the served policy, episode by episode.

`via="ros"`: the simulator is a ROS 2 robot (SimRobotNode, in this process) and the policy_server
node runs in a child process on sim time with its command stream on: sensors -> node -> policy
-> chunk scheduler -> commands -> simulator. `via="socket"`: the same episodes through the socket
bridge (`start_policy_server` child process) with the client-side scheduler; no ROS between the
simulator and the policy.

Per episode: the task's reward each step; success = the reward reached its maximum (4: the cube
held by the left gripper, off the table); an episode ends at success or after `max_steps`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_server_ros.chunk_scheduler import SchedulerConfig
from policy_server_ros.sim.episodes import CONTROL_PERIOD, EPISODE_STEPS
from socket_bridge.client import PolicyClient
from socket_bridge.scheduled_client import ScheduledPolicyClient

log = logging.getLogger("policy_server_ros.sim")


class EvalError(RuntimeError):
    """The evaluation cannot run as asked; the message says what to change."""


@dataclass
class EvalConfig:
    model: str
    seeds: list[int]
    via: str = "ros"  # ros | socket
    out: Path = Path("results/sim_eval")
    max_steps: int = EPISODE_STEPS
    image_hw: tuple[int, int] | None = None  # None: a camera only when the policy takes one
    real_time_factor: float = 1.0  # 0 = as fast as the loop goes
    execution_mode: str = "ensemble"
    inference_rate: float = 0.0  # Hz of sim time; 0 = on every observation
    video: bool = True
    video_episode: int = 0  # index into seeds
    video_hw: tuple[int, int] = (240, 320)  # frames rendered for the video when no camera is
    domain_id: int | None = None
    node_params: dict[str, Any] = field(default_factory=dict)  # extra -p for the node
    on_episode: Callable[[dict], None] | None = None


@dataclass
class Policy:
    """What the evaluation needs to know about the model before serving it."""

    path: str
    family: str
    state_inputs: list[str]  # subset of joints, object
    cameras: int
    replay_demos: Any = None  # Demos when the model is a demonstrations file (replay per seed)


def inspect_policy(model: str) -> Policy:
    """Which inputs the policy takes: its state size decides joints (14) or joints + cube pose
    (21); anything else cannot run on this simulator (one-line error)."""
    from policy_server_ros.checkpoint import CheckpointError, read_checkpoint  # noqa: PLC0415
    from policy_server_ros.sim.demos import load_demos  # noqa: PLC0415

    if model.endswith(".npz"):
        return Policy(model, "replay", [], 0, replay_demos=load_demos(model))
    try:
        checkpoint = read_checkpoint(model)
    except (CheckpointError, OSError) as exc:
        raise EvalError(f"cannot serve {model}: {exc}") from None
    family = str(checkpoint.metadata.get("policy_name", ""))
    config = checkpoint.config
    if family == "replay":
        return Policy(model, family, [], 0)
    state_dim = config.get("state_dim")
    by_dim = {14: ["joints"], 21: ["joints", "object"]}
    if state_dim not in by_dim:
        raise EvalError(f"{model}: the policy's state has {state_dim} dimensions, but the "
                        f"simulator gives 14 (joint positions) or 21 (joint positions + cube "
                        f"pose)")
    cameras = len(config.get("camera_names") or []) if family == "act" else \
        int(bool(config.get("use_camera")))
    return Policy(model, family, by_dim[state_dim], cameras)


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    max_reward: float
    episode_return: float
    steps: int
    steps_to_success: int | None
    wall_s: float
    sim_s: float
    commands: int
    latency_ms: list[float] = field(default_factory=list, repr=False)
    rewards: list[float] = field(default_factory=list, repr=False)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


class Pacer:
    """Steps at `real_time_factor` x real time (0: no waiting)."""

    def __init__(self, real_time_factor: float) -> None:
        self.period = CONTROL_PERIOD / real_time_factor if real_time_factor > 0 else 0.0
        self.next = time.perf_counter()

    def wait(self) -> None:
        if self.period <= 0:
            return
        self.next += self.period
        delay = self.next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            self.next = time.perf_counter()  # late (rendering, load): do not try to catch up


class VideoRecorder:
    """Frames of one episode (the policy's camera, or a small render of it), written as MP4."""

    def __init__(self, sim: Any, hw: tuple[int, int] = (240, 320), every: int = 4) -> None:
        self.sim, self.hw, self.every = sim, hw, every
        self.frames: list[np.ndarray] = []

    def add(self, step: int, image: np.ndarray | None) -> None:
        if step % self.every:
            return
        if image is None:
            image = self.sim.physics.render(height=self.hw[0], width=self.hw[1],
                                            camera_id=self.sim.camera)
        self.frames.append(image)

    def write(self, path: Path) -> Path | None:
        if not self.frames:
            return None
        import imageio.v2 as imageio  # noqa: PLC0415 - the [sim] extra

        fps = round(1 / (CONTROL_PERIOD * self.every))
        try:
            imageio.mimwrite(path, self.frames, fps=fps, macro_block_size=1)
        except (ValueError, RuntimeError, OSError):  # no ffmpeg: a GIF instead
            path = path.with_suffix(".gif")
            imageio.mimwrite(path, self.frames[::2], duration=2 * self.every * CONTROL_PERIOD)
        return path


# --- the socket path -------------------------------------------------------------------------

def run_socket_episode(client: Any, sim: Any, seed: int, *, config: EvalConfig,
                       policy: Policy, video: VideoRecorder | None) -> EpisodeResult:
    """One episode with the client-side scheduler: each control step sends the observation
    (when the scheduler asks for a chunk) and applies the command it returns."""
    from socket_bridge.wire_types import MetaObs  # noqa: PLC0415

    sim.reset(seed)
    client.reset()
    hold = sim.joint_positions()
    rewards: list[float] = []
    latency: list[float] = []
    commands = 0
    steps_to_success = None
    pacer = Pacer(config.real_time_factor)
    started = time.perf_counter()
    for step in range(config.max_steps):
        image = sim.render() if sim.height > 0 else None
        parts = [sim.joint_positions()]
        if "object" in policy.state_inputs:
            parts.append(sim.cube_pose())
        obs = MetaObs(state=np.concatenate(parts).astype(np.float32), timestep=step,
                      image=None if image is None else image.transpose(2, 0, 1)[None])
        queries = client.queries
        t0 = time.perf_counter_ns()
        action = client.step(obs)
        if client.queries != queries:
            latency.append((time.perf_counter_ns() - t0) / 1e6)
        if video is not None:
            video.add(step, image)
        if action is not None:
            commands += 1
        pacer.wait()
        rewards.append(sim.step(hold if action is None else action))
        if sim.success:
            steps_to_success = step + 1
            break
    wall = time.perf_counter() - started
    return EpisodeResult(seed, sim.success, sim.max_reward, float(sum(rewards)), len(rewards),
                         steps_to_success, wall, len(rewards) * CONTROL_PERIOD, commands,
                         latency, rewards)


def socket_client(port: int, mode: str) -> ScheduledPolicyClient:
    """The node's chunk scheduler on the client side (ScheduledPolicyClient around a
    PolicyClient), with inline requests: the simulator waits for each reply, and time is
    counted in control steps."""
    client = PolicyClient("127.0.0.1", port, connect_timeout=10, read_timeout=60)
    return ScheduledPolicyClient(client, SchedulerConfig(mode=mode, period_s=CONTROL_PERIOD))


# --- the whole evaluation --------------------------------------------------------------------

def evaluate(config: EvalConfig) -> dict:
    """Run the episodes; write report.json, episodes.png and a video to config.out."""
    from policy_server_ros.sim.demos import write_replay_policy  # noqa: PLC0415
    from policy_server_ros.sim.transfer_cube import TransferCubeSim  # noqa: PLC0415

    policy = inspect_policy(config.model)
    if policy.replay_demos is not None:
        for seed in config.seeds:
            policy.replay_demos.index(seed)  # every seed has a demonstration, or stop now
    if config.via not in ("ros", "socket"):
        raise EvalError(f"--via must be ros or socket, got {config.via!r}")
    hw = config.image_hw if config.image_hw is not None else \
        ((480, 640) if policy.cameras else (0, 0))
    if policy.cameras and hw[0] <= 0:
        raise EvalError(f"{config.model} takes a camera: give --image-size HxW")
    config.out.mkdir(parents=True, exist_ok=True)
    sim = TransferCubeSim(*hw)
    results: list[EpisodeResult] = []
    video_path = None
    loop = None
    if config.via == "ros":
        from policy_server_ros.sim.ros_loop import RosLoop  # noqa: PLC0415 - rclpy only here

        loop = RosLoop(config, policy, sim)
    server = client = None
    started = time.perf_counter()
    try:
        if loop is not None and policy.replay_demos is None:
            loop.start_node(None, config.out / "policy_server.log")
        for index, seed in enumerate(config.seeds):
            recorder = VideoRecorder(sim, config.video_hw) \
                if config.video and index == config.video_episode else None
            replay = write_replay_policy(policy.replay_demos, seed,
                                         config.out / "replay" / f"seed_{seed}") \
                if policy.replay_demos is not None else None
            if loop is not None:
                if replay is not None:  # the replay policy of this seed: one node per episode
                    loop.start_node(replay, config.out / "policy_server.log")
                result = loop.run_episode(seed, recorder)
            else:
                if server is None or replay is not None:
                    server, client = _start_socket(config, policy, replay, server, client)
                result = run_socket_episode(client, sim, seed, config=config, policy=policy,
                                            video=recorder)
            results.append(result)
            if recorder is not None:
                video_path = recorder.write(config.out / f"episode_seed{seed}.mp4")
            if config.on_episode is not None:
                config.on_episode({k: v for k, v in asdict(result).items()
                                   if k not in ("latency_ms", "rewards")})
    finally:
        if loop is not None:
            loop.close()
        _close_socket(client, server)
    return write_report(config, policy, results, total_s=time.perf_counter() - started,
                        video=video_path, image_hw=(sim.height, sim.width))


def _start_socket(config: EvalConfig, policy: Policy, replay: Path | None, server: Any,
                  client: Any) -> tuple[Any, Any]:
    from policy_server_ros.sim.processes import PolicyProcess, child_env  # noqa: PLC0415

    _close_socket(client, server)
    server = PolicyProcess.socket_server(str(replay or policy.path), 0,
                                         config.out / "policy_server.log",
                                         child_env(None, False), [])
    server.wait_ready()
    return server, socket_client(server.socket_port(), config.execution_mode)


def _close_socket(client: Any, server: Any) -> None:
    if client is not None:
        client.close()  # the scheduler's worker; then the connection it does not own
        client.client.disconnect()
    if server is not None:
        server.stop()


def write_report(config: EvalConfig, policy: Policy, results: list[EpisodeResult], *,
                 total_s: float, video: Path | None, image_hw: tuple[int, int]) -> dict:
    latency = [x for r in results for x in r.latency_ms]
    steps = sum(r.steps for r in results)
    wall = sum(r.wall_s for r in results)
    successes = [r for r in results if r.success]
    report = {
        "model": config.model, "family": policy.family, "via": config.via,
        "execution_mode": config.execution_mode, "seeds": config.seeds,
        "episodes": len(results),
        "success_rate": len(successes) / len(results) if results else 0.0,
        "successes": len(successes),
        "mean_return": float(np.mean([r.episode_return for r in results])) if results else 0.0,
        "mean_steps_to_success": float(np.mean([r.steps_to_success for r in successes]))
        if successes else None,
        "inference_latency_ms": _percentiles(latency),
        "loop_rate_hz": steps / wall if wall else None,
        "real_time_factor": steps * CONTROL_PERIOD / wall if wall else None,
        "command_rate_hz_sim": sum(r.commands for r in results) / (steps * CONTROL_PERIOD)
        if steps else None,
        "image_size": list(image_hw) if policy.cameras else None,
        "camera_rendered": policy.cameras > 0,
        "target_real_time_factor": config.real_time_factor,
        "total_wall_s": total_s,
        "video": str(video) if video else None,
        "episodes_detail": [{k: v for k, v in asdict(r).items() if k != "latency_ms"}
                            for r in results],
    }
    (config.out / "report.json").write_text(json.dumps(report, indent=2))
    _plot(results, config.out / "episodes.png", report)
    return report


def _plot(results: list[EpisodeResult], path: Path, report: dict) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        ax1.plot(np.arange(len(r.rewards)) * CONTROL_PERIOD, r.rewards,
                 color="tab:green" if r.success else "tab:red", alpha=0.5)
    ax1.set(xlabel="sim time (s)", ylabel="reward", title="reward per episode (green: success)")
    ax2.bar(np.arange(len(results)), [r.max_reward for r in results],
            color=["tab:green" if r.success else "tab:red" for r in results],
            tick_label=[str(r.seed) for r in results])
    ax2.set(xlabel="seed", ylabel="max reward",
            title=f"success {report['successes']}/{report['episodes']} via {report['via']}")
    ax2.tick_params(axis="x", labelrotation=90, labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
