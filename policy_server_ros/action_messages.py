"""Actions to ROS messages: the one place that builds ActionChunk and JointTrajectory."""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from policy_server_ros.msg import ActionChunk
from policy_server_ros.policies.base import ActionSpec


def stamp_msg(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def duration_msg(seconds: float) -> Duration:
    ns = round(seconds * 1e9)
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def action_chunk(actions: np.ndarray, spec: ActionSpec, stamp_ns: int, *, frame_id: str,
                 period_s: float, dim_names: Sequence[str] = ()) -> ActionChunk:
    """(T, A) actions -> ActionChunk stamped with the observation's time."""
    steps, dim = actions.shape
    msg = ActionChunk()
    msg.header.stamp = stamp_msg(stamp_ns)
    msg.header.frame_id = frame_id
    msg.ctrl_space, msg.ctrl_type = spec.ctrl_space, spec.ctrl_type
    msg.gripper_continuous = spec.gripper_continuous
    msg.period = duration_msg(period_s)
    msg.num_steps, msg.action_dim = steps, dim
    # array.array from bytes: assigning an ndarray checks every element (~100x slower).
    msg.actions = array.array("f", np.ascontiguousarray(actions, np.float32).tobytes())
    msg.dim_names = list(dim_names)
    return msg


def joint_trajectory(actions: np.ndarray, joint_names: Sequence[str], stamp_ns: int, *,
                     frame_id: str, period_s: float) -> JointTrajectory:
    """(T, A) absolute joint targets -> JointTrajectory; point i at i * period from the stamp."""
    msg = JointTrajectory()
    msg.header.stamp = stamp_msg(stamp_ns)
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    rows = np.ascontiguousarray(actions, np.float64)
    msg.points = [JointTrajectoryPoint(positions=array.array("d", row.tobytes()),
                                       time_from_start=duration_msg(i * period_s))
                  for i, row in enumerate(rows)]
    return msg


def chunk_to_array(msg: ActionChunk) -> np.ndarray:
    """An ActionChunk's actions as (num_steps, action_dim) float32 (a view, no copy)."""
    return np.frombuffer(msg.actions, np.float32).reshape(msg.num_steps, msg.action_dim)
