"""Actions to ROS messages: the one place that builds ActionChunk, JointTrajectory and the
per-step commands."""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
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
                     frame_id: str, period_s: float, time_offset_s: float = 0.0
                     ) -> JointTrajectory:
    """(T, A) absolute joint targets -> JointTrajectory; point i at offset + i * period from
    the stamp (a zero stamp means "from when the controller receives it")."""
    msg = JointTrajectory()
    msg.header.stamp = stamp_msg(stamp_ns)
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    rows = np.ascontiguousarray(actions, np.float64)
    msg.points = [JointTrajectoryPoint(positions=array.array("d", row.tobytes()),
                                       time_from_start=duration_msg(time_offset_s + i * period_s))
                  for i, row in enumerate(rows)]
    return msg


def trajectory_stamp_ns(mode: str, observation_ns: int, now_ns: int) -> int:
    """The JointTrajectory's header stamp for `trajectory_stamp` = mode."""
    return {"observation": observation_ns, "now": now_ns, "zero": 0}[mode]


def overdue_s(msg: JointTrajectory, now_ns: int) -> float:
    """How long before `now_ns` the trajectory ended (its stamp plus the last point's
    time_from_start); 0 when it has not ended or has a zero stamp ("start on receipt"). A
    joint_trajectory_controller rejects a trajectory that is overdue."""
    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    if stamp == 0 or not msg.points:
        return 0.0
    last = msg.points[-1].time_from_start
    return max(0.0, (now_ns - stamp - last.sec * 1_000_000_000 - last.nanosec) / 1e9)


def chunk_to_array(msg: ActionChunk) -> np.ndarray:
    """An ActionChunk's actions as (num_steps, action_dim) float32 (a view, no copy)."""
    return np.frombuffer(msg.actions, np.float32).reshape(msg.num_steps, msg.action_dim)


COMMAND_TYPES: dict[str, type] = {"float64_array": Float64MultiArray, "joint_state": JointState,
                                  "joint_trajectory": JointTrajectory}


def command_message(command_type: str, action: np.ndarray, joint_names: Sequence[str],
                    stamp_ns: int, *, frame_id: str, period_s: float
                    ) -> Float64MultiArray | JointState | JointTrajectory:
    """One control step's (A,) action as `command_type` (a COMMAND_TYPES key): a bare array
    (forward_command_controller), JointState positions stamped with the control time, or a
    one-point JointTrajectory reached `period_s` after the controller receives it."""
    values = array.array("d", np.ascontiguousarray(action, np.float64).tobytes())
    if command_type == "float64_array":
        return Float64MultiArray(data=values)
    if command_type == "joint_state":
        msg = JointState(name=list(joint_names), position=values)
        msg.header.stamp = stamp_msg(stamp_ns)
        msg.header.frame_id = frame_id
        return msg
    msg = JointTrajectory(joint_names=list(joint_names))  # stamp zero: start on receipt
    msg.header.frame_id = frame_id
    msg.points = [JointTrajectoryPoint(positions=values, time_from_start=duration_msg(period_s))]
    return msg
