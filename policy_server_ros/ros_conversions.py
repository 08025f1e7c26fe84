"""ROS messages to numpy: the one place that reads sensor messages.

Every function takes a message object (sensor_msgs / geometry_msgs) and returns arrays in the
layout MetaObs wants, without per-pixel Python: raw images are viewed with `np.frombuffer`
(honouring `step` row padding and `is_bigendian`), compressed ones go through Pillow. Anything
that does not fit raises ConversionError with a message naming what is wrong; callers skip that
message and warn. This module imports no rclpy.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# encoding -> (numpy dtype, channels)
_IMAGE_ENCODINGS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4), "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}
_POINTFIELD_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC3")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class ConversionError(ValueError):
    """A message that cannot become part of an observation; the message says why."""


def _pixels(msg: Any) -> np.ndarray:
    """(H, W, C) view of a sensor_msgs/Image's data, in its own dtype and byte order."""
    if msg.encoding not in _IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {msg.encoding!r}; supported: "
                              f"{', '.join(_IMAGE_ENCODINGS)}")
    dtype, channels = _IMAGE_ENCODINGS[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if height == 0 or width == 0:
        raise ConversionError("empty image (0 rows or columns)")
    if step < row_bytes:
        raise ConversionError(f"step {step} is smaller than width {width} x {channels} channel(s)"
                              f" x {dtype.itemsize} bytes")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ConversionError(f"image data has {data.size} bytes, {msg.encoding} {width}x{height}"
                              f" with step {step} needs {step * height}")
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    return rows.view(dtype).reshape(height, width, channels)


def image_to_chw(msg: Any) -> np.ndarray:
    """A color sensor_msgs/Image -> (3, H, W) uint8 RGB. mono8 is repeated to three channels."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ConversionError(f"camera image must be one of {', '.join(COLOR_ENCODINGS)}, got "
                              f"{msg.encoding!r} (depth belongs on a depth topic)")
    pixels = _pixels(msg)
    if msg.encoding in ("bgr8", "bgra8"):
        pixels = pixels[..., 2::-1]
    elif msg.encoding == "mono8":
        pixels = np.broadcast_to(pixels, (*pixels.shape[:2], 3))
    else:
        pixels = pixels[..., :3]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def depth_to_meters(msg: Any) -> np.ndarray:
    """A depth sensor_msgs/Image -> (H, W) float32 meters (16UC1/mono16 are millimeters, as
    REP 118 says; 32FC1 is meters already)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ConversionError(f"depth image must be one of {', '.join(DEPTH_ENCODINGS)}, got "
                              f"{msg.encoding!r}")
    pixels = _pixels(msg)[..., 0]
    if msg.encoding == "32FC1":
        return pixels.astype(np.float32)
    return pixels.astype(np.float32) * np.float32(0.001)


def compressed_to_chw(msg: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg or png) -> (3, H, W) uint8 RGB."""
    fmt = msg.format.lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise ConversionError(f"compressed image format {msg.format!r} is not jpeg or png")
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConversionError(f"cannot decode {msg.format!r} image: {exc}") from exc
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def stamp_ns(msg: Any) -> int:
    """header.stamp of a stamped message (rclpy or rosbags), in nanoseconds."""
    stamp = msg.header.stamp
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class JointOrder:
    """Reorders JointState positions into a fixed `joint_names` order (cached per name list)."""

    def __init__(self, joint_names: Sequence[str]) -> None:
        self.joint_names = list(joint_names)
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def positions(self, msg: Any) -> np.ndarray:
        names = tuple(msg.name)
        index = self._cache.get(names)
        if index is None:
            if not self.joint_names:  # no order configured: take the message's
                index = np.arange(len(names))
            else:
                lookup = {name: i for i, name in enumerate(names)}
                missing = [n for n in self.joint_names if n not in lookup]
                if missing:
                    raise ConversionError(f"joint state lacks joints {missing} (has "
                                          f"{list(names)}); check the joint_names parameter")
                index = np.array([lookup[n] for n in self.joint_names])
            if len(self._cache) < 64:
                self._cache[names] = index
        position = np.asarray(msg.position, dtype=np.float64)
        if position.size != len(names):
            raise ConversionError(f"joint state has {len(names)} names but {position.size} "
                                  f"positions")
        return position[index].astype(np.float32)


def pose_to_vector(msg: Any) -> np.ndarray:
    """geometry_msgs/PoseStamped (or Pose) -> (7,) float32: x, y, z, qx, qy, qz, qw."""
    pose = getattr(msg, "pose", msg)
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float32)


def pointcloud_xyz(msg: Any) -> np.ndarray:
    """sensor_msgs/PointCloud2 with float32 x, y, z fields -> (n, 3) float32."""
    offsets = {f.name: f for f in msg.fields}
    for axis in "xyz":
        field = offsets.get(axis)
        if field is None or field.datatype != _POINTFIELD_FLOAT32:
            raise ConversionError(f"point cloud needs float32 fields x, y, z; has "
                                  f"{[(f.name, f.datatype) for f in msg.fields]}")
    count = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < count * step:
        raise ConversionError(f"point cloud data has {data.size} bytes, {count} points of "
                              f"{step} need {count * step}")
    dtype = np.dtype({"names": list("xyz"), "formats": [">f4" if msg.is_bigendian else "<f4"] * 3,
                      "offsets": [offsets[a].offset for a in "xyz"], "itemsize": step})
    points = data[: count * step].view(dtype)
    return np.stack([points[a] for a in "xyz"], axis=1).astype(np.float32)
