"""Sensor messages to numpy: every encoding, padding, byte order, and the clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image, JointState, PointCloud2, PointField

from policy_server_ros.ros_conversions import (
    ConversionError,
    JointOrder,
    compressed_to_chw,
    depth_to_meters,
    image_to_chw,
    pointcloud_xyz,
    pose_to_vector,
)

RNG = np.random.default_rng(0)
PICTURE = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # (H, W, RGB)


def _image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).view(np.uint8)
    if pad:
        row = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=row.shape[1],
                 is_bigendian=bigendian, data=row.tobytes())


@pytest.mark.parametrize("pad", [0, 3])
def test_rgb_and_bgr_of_the_same_picture_give_the_same_array(pad: int) -> None:
    rgb = image_to_chw(_image(PICTURE, "rgb8", pad))
    bgr = image_to_chw(_image(PICTURE[..., ::-1].copy(), "bgr8", pad))
    assert rgb.shape == (3, 5, 7) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, PICTURE.transpose(2, 0, 1))
    np.testing.assert_array_equal(bgr, rgb)


def test_four_channel_and_mono_encodings() -> None:
    alpha = np.full((5, 7, 1), 9, np.uint8)
    rgba = image_to_chw(_image(np.concatenate([PICTURE, alpha], 2), "rgba8", pad=2))
    bgra = image_to_chw(_image(np.concatenate([PICTURE[..., ::-1], alpha], 2), "bgra8"))
    np.testing.assert_array_equal(rgba, PICTURE.transpose(2, 0, 1))
    np.testing.assert_array_equal(bgra, rgba)
    mono = image_to_chw(_image(PICTURE[..., :1].copy(), "mono8"))
    assert mono.shape == (3, 5, 7) and (mono == PICTURE[..., 0]).all()


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
def test_16_bit_depth_in_millimeters(encoding: str, bigendian: bool) -> None:
    mm = RNG.integers(0, 5000, (4, 6)).astype(np.dtype(">u2" if bigendian else "<u2"))
    meters = depth_to_meters(_image(mm[..., None], encoding, pad=4, bigendian=bigendian))
    assert meters.dtype == np.float32
    np.testing.assert_allclose(meters, mm.astype(np.float32) / 1000, rtol=1e-6)


def test_32fc1_depth_in_meters() -> None:
    m = RNG.random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(depth_to_meters(_image(m[..., None], "32FC1")), m)


@pytest.mark.parametrize(("msg", "message"), [
    (Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), "must be one of rgb8"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(5)), "needs 12"),
    (Image(height=2, width=2, encoding="rgb8", step=4, data=bytes(8)), "step 4 is smaller"),
    (Image(height=0, width=2, encoding="rgb8", step=6), "empty image"),
    (Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8)), "depth topic"),
])
def test_bad_images_are_clear_errors(msg: Image, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        image_to_chw(msg)


def test_depth_topic_refuses_color() -> None:
    with pytest.raises(ConversionError, match="depth image must be one of"):
        depth_to_meters(_image(PICTURE, "rgb8"))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_images(fmt: str) -> None:
    buffer = io.BytesIO()
    PILImage.fromarray(PICTURE).save(buffer, format=fmt.upper(), quality=100)
    chw = compressed_to_chw(CompressedImage(format=f"rgb8; {fmt} compressed rgb8",
                                            data=buffer.getvalue()))
    assert chw.shape == (3, 5, 7)
    if fmt == "png":  # lossless
        np.testing.assert_array_equal(chw, PICTURE.transpose(2, 0, 1))


def test_corrupt_or_unknown_compressed_images() -> None:
    with pytest.raises(ConversionError, match="cannot decode"):
        compressed_to_chw(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))
    with pytest.raises(ConversionError, match="not jpeg or png"):
        compressed_to_chw(CompressedImage(format="tiff", data=b"x"))


def test_joint_state_is_reordered_by_name() -> None:
    order = JointOrder(["b", "c", "a"])
    msg = JointState(name=["a", "b", "c", "extra"], position=[1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(order.positions(msg), [2.0, 3.0, 1.0])
    assert order.positions(msg).dtype == np.float32
    with pytest.raises(ConversionError, match=r"lacks joints \['c'\]"):
        order.positions(JointState(name=["a", "b"], position=[1.0, 2.0]))
    with pytest.raises(ConversionError, match="3 names but 2 positions"):
        JointOrder([]).positions(JointState(name=["a", "b", "c"], position=[1.0, 2.0]))


def test_pose_and_point_cloud() -> None:
    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.z, pose.pose.orientation.w = 1.0, 3.0, 1.0
    np.testing.assert_array_equal(pose_to_vector(pose), [1, 0, 3, 0, 0, 0, 1])
    points = RNG.random((6, 4), dtype=np.float32)  # x, y, z, intensity
    cloud = PointCloud2(height=1, width=6, point_step=16, row_step=96, data=points.tobytes(),
                        fields=[PointField(name=n, offset=4 * i, datatype=7, count=1)
                                for i, n in enumerate(["x", "y", "z", "intensity"])])
    np.testing.assert_array_equal(pointcloud_xyz(cloud), points[:, :3])
    cloud.fields = cloud.fields[1:]
    with pytest.raises(ConversionError, match="needs float32 fields x, y, z"):
        pointcloud_xyz(cloud)
