"""Scripted transfer-cube demonstrations for given seeds, as the ACT paper made them.

An end-effector waypoint policy (approach, grasp, lift, hand over: the waypoints of ACT's
PickAndTransferPolicy) drives the mocap-welded grippers of gym-aloha's end-effector scene; the
joint trajectory it produces, with the gripper joints replaced by the commanded gripper
positions, becomes the joint-space command sequence. That sequence is then replayed in the
joint-controlled scene, and both outcomes are saved.

MuJoCo 3.x's mocap weld does not track the gripper well enough for the scripted policy, while
MuJoCo 2.3.7 + dm_control 1.0.14 (numpy < 2) produces successful demonstrations whose joint
trajectories also succeed when replayed in MuJoCo 3.x. So this script runs in a side venv made by
scripts/sim_demos/setup_gen_venv.sh; the project's simulator (MuJoCo 3.x) replays its output.

    scripts/sim_demos/setup_gen_venv.sh /tmp/gen_venv
    MUJOCO_GL=egl /tmp/gen_venv/bin/python scripts/sim_demos/generate_demos.py \
        --seeds 0-149 --out examples/sim_transfer_cube/demos.npz

Output (numpy.savez_compressed, no pickles): seeds (N,), cube_start (N, 7), commands
(N, 400, 14) float32 (the joint-space commands, grippers normalized 0 = closed .. 1 = open),
gripper_positions (N, 400, 2) float32 (the grippers' measured normalized positions in the
end-effector rollout; its arm joints are the commands), ee_success (N,) and replay_success
(N,) (the task's reward reached 4, in this MuJoCo version).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# The seed -> cube pose rule is the project's; import it without the rest of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from policy_server_ros.sim.episodes import (
    CONTROL_PERIOD,
    EPISODE_STEPS,
    MAX_REWARD,
    cube_start_pose,
    parse_seeds,
)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions (pyquaternion's `a * b`)."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                     w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def axis_angle_quat(axis: list[float], degrees: float) -> np.ndarray:
    half = np.deg2rad(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * np.asarray(axis, float)])


def waypoint_trajectory(waypoints: list[tuple[int, np.ndarray, np.ndarray, float]],
                        steps: int) -> np.ndarray:
    """(steps, 8): xyz, quat, gripper at every step, linear between waypoints (t, xyz, quat,
    gripper), as ACT's BasePolicy.interpolate (quaternions too, unnormalized)."""
    times = np.array([w[0] for w in waypoints], float)
    values = np.array([np.concatenate([w[1], w[2], [w[3]]]) for w in waypoints])
    t = np.arange(steps, dtype=float)
    return np.stack([np.interp(t, times, values[:, k]) for k in range(values.shape[1])], axis=1)


def _at(base: np.ndarray, dx: float, dy: float, dz: float) -> np.ndarray:
    return base + np.array([dx, dy, dz])


def pick_and_transfer(init_left: np.ndarray, init_right: np.ndarray, box_xyz: np.ndarray,
                      steps: int) -> np.ndarray:
    """(steps, 16) mocap actions: ACT's PickAndTransferPolicy waypoints."""
    pick_quat = quat_mul(init_right[3:], axis_angle_quat([0.0, 1.0, 0.0], -60))
    meet_left_quat = axis_angle_quat([1.0, 0.0, 0.0], 90)
    upright = np.array([1.0, 0, 0, 0])
    meet = np.array([0, 0.5, 0.25])
    left = [
        (0, init_left[:3], init_left[3:], 0),  # sleep
        (100, _at(meet, -0.1, 0, -0.02), meet_left_quat, 1),  # approach the meeting point
        (260, _at(meet, 0.02, 0, -0.02), meet_left_quat, 1),  # move to it
        (310, _at(meet, 0.02, 0, -0.02), meet_left_quat, 0),  # close the gripper
        (360, _at(meet, -0.1, 0, -0.02), upright, 0),  # move left
        (400, _at(meet, -0.1, 0, -0.02), upright, 0),  # stay
    ]
    right = [
        (0, init_right[:3], init_right[3:], 0),  # sleep
        (90, _at(box_xyz, 0, 0, 0.08), pick_quat, 1),  # approach the cube
        (130, _at(box_xyz, 0, 0, -0.015), pick_quat, 1),  # go down
        (170, _at(box_xyz, 0, 0, -0.015), pick_quat, 0),  # close the gripper
        (200, _at(meet, 0.05, 0, 0), pick_quat, 0),  # approach the meeting point
        (220, meet, pick_quat, 0),  # move to it
        (310, meet, pick_quat, 1),  # open the gripper
        (360, _at(meet, 0.1, 0, 0), pick_quat, 1),  # move right
        (400, _at(meet, 0.1, 0, 0), pick_quat, 1),  # stay
    ]
    return np.concatenate([waypoint_trajectory(left, steps),
                           waypoint_trajectory(right, steps)], axis=1)


def step(physics, task, action: np.ndarray, substeps: int) -> float:
    """One control step without rendering (dm_control's Environment.step minus observations)."""
    task.before_step(action, physics)
    physics.step(substeps)
    task.after_step(physics)
    return float(task.get_reward(physics))


def demo(seed: int, steps: int) -> dict[str, np.ndarray]:
    from dm_control import mujoco  # noqa: PLC0415 - side venv only
    from gym_aloha.constants import ASSETS_DIR, normalize_puppet_gripper_position  # noqa: PLC0415
    from gym_aloha.tasks import sim  # noqa: PLC0415
    from gym_aloha.tasks.sim_end_effector import TransferCubeEndEffectorTask  # noqa: PLC0415

    cube = cube_start_pose(seed)

    # 1. The scripted policy in end-effector space.
    physics = mujoco.Physics.from_xml_path(
        str(ASSETS_DIR / "bimanual_viperx_end_effector_transfer_cube.xml"))
    task = TransferCubeEndEffectorTask()
    with physics.reset_context():
        task.initialize_robots(physics)
        physics.data.qpos[16:23] = cube  # the box's free joint follows the 16 arm joints
    substeps = round(CONTROL_PERIOD / physics.timestep())
    init_left = np.concatenate([physics.data.mocap_pos[0], physics.data.mocap_quat[0]])
    init_right = np.concatenate([physics.data.mocap_pos[1], physics.data.mocap_quat[1]])
    actions = pick_and_transfer(init_left, init_right, cube[:3], steps)
    # Joint positions before each step, with the grippers' commanded positions (as ACT's
    # record_sim_episodes: the ctrl in force, normalized).
    joints = np.empty((steps + 1, 14))
    commands = np.empty((steps + 1, 14))
    rewards = []
    for t in range(steps + 1):
        qpos = task.get_qpos(physics)
        joints[t] = qpos
        ctrl = physics.data.ctrl
        commands[t] = qpos
        commands[t, 6] = normalize_puppet_gripper_position(ctrl[0])
        commands[t, 13] = normalize_puppet_gripper_position(ctrl[2])
        if t < steps:
            rewards.append(step(physics, task, actions[t], substeps))
    ee_success = max(rewards) == MAX_REWARD
    # As ACT's record_sim_episodes: the command for step t is the rollout's state at step t.
    commands = commands[:steps]

    # 2. Replay the joint commands in the joint-controlled scene.
    physics = mujoco.Physics.from_xml_path(str(ASSETS_DIR / "bimanual_viperx_transfer_cube.xml"))
    task = sim.TransferCubeTask()
    sim.BOX_POSE[0] = cube
    with physics.reset_context():
        task.initialize_episode(physics)
    replay_rewards = [step(physics, task, commands[t], substeps) for t in range(steps)]
    return {"cube_start": cube, "commands": commands.astype(np.float32),
            # The arm joints equal the commands; the grippers' measured positions differ.
            "gripper_positions": joints[:steps, [6, 13]].astype(np.float32),
            "ee_success": np.bool_(ee_success),
            "replay_success": np.bool_(max(replay_rewards) == MAX_REWARD)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", required=True, help="e.g. 0-149 or 3,5,7")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=EPISODE_STEPS)
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    episodes = []
    for seed in seeds:
        started = time.perf_counter()
        episodes.append(demo(seed, args.steps))
        print(f"seed {seed}: scripted {'success' if episodes[-1]['ee_success'] else 'FAIL'}, "
              f"joint replay {'success' if episodes[-1]['replay_success'] else 'FAIL'} "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
    arrays = {key: np.stack([e[key] for e in episodes]) for key in episodes[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, seeds=np.asarray(seeds, np.int64), **arrays)
    ok = int(arrays["replay_success"].sum())
    print(f"wrote {args.out}: {len(seeds)} demonstrations, scripted success "
          f"{int(arrays['ee_success'].sum())}/{len(seeds)}, joint replay success {ok}/{len(seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
