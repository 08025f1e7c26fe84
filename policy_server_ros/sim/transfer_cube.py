"""The ALOHA bimanual transfer-cube task in MuJoCo 3.x, without ROS: gym-aloha's scene and
TransferCubeTask (reward 0..4; 4 = the cube held by the left gripper, off the table), stepped
one 20 ms control step at a time, rendering only the camera that is asked for.

gym-aloha's gym environment renders three 480x640 cameras on every step (~180 ms here); the
closed loop needs one camera at most, so this drives the dm_control physics and task directly,
as dm_control's control.Environment.step does (before_step, physics substeps, after_step).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from policy_server_ros.sim.episodes import CONTROL_PERIOD, MAX_REWARD, cube_start_pose


class SimUnavailable(RuntimeError):
    """The simulator cannot start here (missing extra, no EGL); the message says what to do."""


def _import_task() -> tuple:
    """gym-aloha's task module and dm_control's mujoco, with a one-line error when absent or
    when headless rendering cannot start."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dm_control import mujoco  # noqa: PLC0415
        from gym_aloha.constants import ASSETS_DIR  # noqa: PLC0415
        from gym_aloha.tasks import sim  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise SimUnavailable(
            f"the simulator needs the [sim] extra (gym-aloha, mujoco, dm-control): "
            f"pip install '.[sim]' ({exc})") from exc
    except (ImportError, AttributeError, RuntimeError, OSError) as exc:  # no GL platform
        raise SimUnavailable(_no_rendering(exc)) from exc
    return mujoco, ASSETS_DIR, sim


def _no_rendering(exc: BaseException) -> str:
    return (f"headless rendering with MUJOCO_GL={os.environ.get('MUJOCO_GL')} failed "
            f"({type(exc).__name__}: {exc}); MUJOCO_GL=egl needs Debian's libegl1 "
            f"libegl-mesa0 libgl1-mesa-dri, MUJOCO_GL=osmesa needs libosmesa6 (apt-get install)")


@dataclass
class StepResult:
    reward: float
    time_s: float


class TransferCubeSim:
    """One transfer-cube scene. reset(seed) places the cube; step(action) applies a 14-D joint
    command (arm joints in rad, grippers normalized 0 = closed .. 1 = open) for one 20 ms
    control step and returns the task's reward. height/width: the camera image (0: no camera);
    rendering=False skips the check that headless rendering works (no camera, no video)."""

    def __init__(self, height: int = 480, width: int = 640, camera: str = "top",
                 rendering: bool = True) -> None:
        mujoco, assets, self._sim = _import_task()
        self.physics = mujoco.Physics.from_xml_path(
            str(assets / "bimanual_viperx_transfer_cube.xml"))
        self.task = self._sim.TransferCubeTask()
        self.height, self.width, self.camera = height, width, camera
        self.substeps = round(CONTROL_PERIOD / self.physics.timestep())
        self.steps = 0
        self.max_reward = 0.0
        self.seed: int | None = None
        if rendering:  # camera or video; training needs neither
            try:  # the first render opens the GL context: fail here, once, in one line
                self.physics.render(height=8, width=8, camera_id=camera)
            except Exception as exc:
                raise SimUnavailable(_no_rendering(exc)) from exc

    def reset(self, seed: int) -> None:
        """Arms at the start pose, the cube at the seed's pose, time 0."""
        self._sim.BOX_POSE[0] = cube_start_pose(seed)
        with self.physics.reset_context():
            self.task.initialize_episode(self.physics)
        self.steps = 0
        self.max_reward = 0.0
        self.seed = seed

    def step(self, action: np.ndarray) -> float:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (14,) or not np.all(np.isfinite(action)):
            raise ValueError(f"a transfer-cube command is 14 finite numbers, got "
                             f"{action.shape} {action[:3]}...")
        self.task.before_step(action, self.physics)
        self.physics.step(self.substeps)
        self.task.after_step(self.physics)
        self.steps += 1
        reward = float(self.task.get_reward(self.physics))
        self.max_reward = max(self.max_reward, reward)
        return reward

    @property
    def time_s(self) -> float:
        return self.steps * CONTROL_PERIOD

    @property
    def success(self) -> bool:
        return self.max_reward >= MAX_REWARD

    def joint_positions(self) -> np.ndarray:
        """The 14 joint positions in JOINT_NAMES order (grippers normalized)."""
        return self.task.get_qpos(self.physics)

    def joint_velocities(self) -> np.ndarray:
        return self.task.get_qvel(self.physics)

    def cube_pose(self) -> np.ndarray:
        """The cube's pose as ROS orders it: x, y, z, qx, qy, qz, qw (MuJoCo: w first)."""
        pose = self.physics.data.qpos[16:23]
        return np.concatenate([pose[:3], pose[4:7], pose[3:4]])

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 of the configured camera."""
        return self.physics.render(height=self.height, width=self.width, camera_id=self.camera)
