"""`policy_server_bag make-sample`: a small, realistic robot bag for tests, demos and the README.

What a bimanual ALOHA-like robot would record while executing `builtin:echo` (every joint target
is the state plus 0.01 per 20 ms control step): two cameras (`/camera/color/image_raw`, which
the node subscribes to by default, and a wrist camera) at 25 Hz, 14 joint states at 50 Hz, the
end-effector pose at 50 Hz, a language instruction once, and the commanded joint targets at
50 Hz. Stamps lie on the sensors' clock grid (hardware-triggered cameras share the joints'
ticks); log (receive) times add a few milliseconds of transport delay, seeded. Because the
commands are what `builtin:echo` produces from the recorded states, `policy_server_bag eval
--model_name_or_path builtin:echo` scores about zero error on it, and any other policy shows
its error against a known reference.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_server_ros.bag_tools.storage import BagError, new_writer, typestore
from policy_server_ros.policies.builtin import EchoPolicy

CAMERA_TOPICS = ("/camera/color/image_raw", "/camera_wrist/color/image_raw")
JOINT_TOPIC = "/joint_states"
EE_TOPIC = "/ee_pose"
LANGUAGE_TOPIC = "/instruction"
COMMAND_TOPIC = "/joint_commands"
JOINT_NAMES = [f"{side}_{joint}" for side in ("left", "right")
               for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                             "wrist_rotate", "gripper")]


@dataclass(frozen=True)
class SampleSpec:
    seconds: float = 10.0
    camera_hz: float = 25.0
    state_hz: float = 50.0  # = the control rate: builtin:echo's step is one control period
    height: int = 120
    width: int = 160
    start_ns: int = 1_700_000_000 * 1_000_000_000
    instruction: str = "pick up the red cube and hand it to the other arm"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.camera_hz <= 0 or self.state_hz <= 0:
            raise ValueError("seconds and rates must be positive")
        ratio = self.state_hz / self.camera_hz
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"the state rate ({self.state_hz} Hz) must be a whole multiple of "
                             f"the camera rate ({self.camera_hz} Hz): cameras share its ticks")
        if self.height < 16 or self.width < 16:
            raise ValueError("images must be at least 16x16")


def joint_positions(spec: SampleSpec, t_s: np.ndarray) -> np.ndarray:
    """(N, 14) joint positions at times t_s (s from the start): each joint moves 0.01 rad per
    control period, as a robot executing builtin:echo does, centred on zero."""
    velocity = EchoPolicy.STEP * spec.state_hz  # rad/s
    start = -0.5 * velocity * spec.seconds + 0.05 * np.arange(len(JOINT_NAMES))
    return (start[None, :] + velocity * t_s[:, None]).astype(np.float64)


def _scene(spec: SampleSpec, camera: int, joints: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: a gradient table and a red cube whose place follows one arm."""
    h, w = spec.height, spec.width
    rows = np.linspace(60, 180, h, dtype=np.float32)[:, None]
    cols = np.linspace(40, 120, w, dtype=np.float32)[None, :]
    image = np.empty((h, w, 3), np.uint8)
    image[..., 0] = rows * 0.6 + 30 * camera
    image[..., 1] = (rows + cols) * 0.5
    image[..., 2] = cols + 40 * camera
    size = max(4, min(h, w) // 6)
    phase = joints[7 * camera]
    x = int((np.sin(phase) + 1) / 2 * (w - size))
    y = int((np.cos(0.7 * phase) + 1) / 2 * (h - size))
    image[y:y + size, x:x + size] = (200, 30, 30)
    return image


def _ee_pose(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A plausible left-gripper pose (position, quaternion x y z w) from the joints."""
    position = np.array([0.3 + 0.1 * np.cos(joints[0]), 0.1 * np.sin(joints[0]),
                         0.2 + 0.05 * np.sin(joints[1])])
    yaw = joints[5]
    return position, np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)])


def _events(spec: SampleSpec, store: Any) -> Iterator[tuple[int, str, str, Any]]:
    """(log time, topic, type, message) from every stream, merged in log-time order."""
    T = store.types  # noqa: N806 - message classes, named like the ROS types
    rng = np.random.default_rng(spec.seed)

    def header(stamp: int) -> Any:
        sec, nanosec = divmod(int(stamp), 1_000_000_000)
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=sec, nanosec=nanosec), frame_id="base_link")

    ticks = round(spec.seconds * spec.state_hz)
    t_s = np.arange(ticks) / spec.state_hz
    stamps = spec.start_ns + np.round(t_s * 1e9).astype(np.int64)
    joints = joint_positions(spec, t_s)
    per_frame = round(spec.state_hz / spec.camera_hz)
    state_delay = (500_000 + rng.integers(0, 500_000, ticks)).tolist()
    camera_delay = (8_000_000 + rng.integers(0, 4_000_000, (2, ticks))).tolist()

    def language() -> Iterator[tuple[int, str, str, Any]]:
        yield (spec.start_ns, LANGUAGE_TOPIC, "std_msgs/msg/String",
               T["std_msgs/msg/String"](data=spec.instruction))

    def joint_stream(topic: str) -> Iterator[tuple[int, str, str, Any]]:
        for k in range(ticks):
            yield (int(stamps[k]) + state_delay[k], topic, "sensor_msgs/msg/JointState",
                   T["sensor_msgs/msg/JointState"](
                       header=header(stamps[k]), name=list(JOINT_NAMES),
                       position=joints[k].copy(), velocity=np.empty(0), effort=np.empty(0)))

    def ee_stream() -> Iterator[tuple[int, str, str, Any]]:
        for k in range(ticks):
            position, quat = _ee_pose(joints[k])
            pose = T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](*position),
                orientation=T["geometry_msgs/msg/Quaternion"](*quat))
            yield (int(stamps[k]) + state_delay[k], EE_TOPIC, "geometry_msgs/msg/PoseStamped",
                   T["geometry_msgs/msg/PoseStamped"](header=header(stamps[k]), pose=pose))

    def camera_stream(camera: int) -> Iterator[tuple[int, str, str, Any]]:
        for k in range(0, ticks, per_frame):
            pixels = _scene(spec, camera, joints[k])
            yield (int(stamps[k]) + camera_delay[camera][k], CAMERA_TOPICS[camera],
                   "sensor_msgs/msg/Image", T["sensor_msgs/msg/Image"](
                       header=header(stamps[k]), height=spec.height, width=spec.width,
                       encoding="rgb8", is_bigendian=0, step=spec.width * 3,
                       data=pixels.reshape(-1)))

    yield from heapq.merge(language(), joint_stream(JOINT_TOPIC), ee_stream(),
                           camera_stream(0), camera_stream(1), joint_stream(COMMAND_TOPIC),
                           key=lambda event: event[0])


def make_sample(out: Path, spec: SampleSpec | None = None, storage: str = "mcap") -> dict:
    """Write the sample bag to `out` (a new directory); returns messages per topic."""
    spec = spec or SampleSpec()
    store = typestore()
    writer = new_writer(Path(out), storage)
    connections: dict[str, Any] = {}
    counts: dict[str, int] = {}
    try:
        for log_ns, topic, msgtype, msg in _events(spec, store):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], log_ns, store.serialize_cdr(msg, msgtype))
            counts[topic] = counts.get(topic, 0) + 1
    except (OSError, ValueError) as exc:
        raise BagError(f"cannot write sample bag {out}: {exc}") from exc
    finally:
        writer.close()
    return counts
