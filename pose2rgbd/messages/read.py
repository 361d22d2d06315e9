"""Read ROS messages into NumPy / geometry types, by duck typing.

Readers only access fields, so they accept rclpy messages and rosbags typestore messages (ROS 1 and ROS 2)
alike; ROS 1 field spellings (``CameraInfo.K``/``P``, ``Time.secs``/``nsecs``) are handled. Poses and
transforms are validated: NaN / inf, a zero or a non-unit quaternion raise :class:`GeometryError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.transforms import T_from_tq

# How far a quaternion's norm may be from 1 before it is refused (float32 round-trips stay far below).
QUAT_NORM_TOLERANCE = 1e-2


# ---------------------------------------------------------------------------------------------- time
def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``/``nanosec``; ROS 1 ``secs``/``nsecs``) -> int ns."""
    sec = getattr(stamp, "sec", None)
    if sec is None:
        sec = stamp.secs
    nsec = getattr(stamp, "nanosec", None)
    if nsec is None:
        nsec = getattr(stamp, "nsec", None)
    if nsec is None:
        nsec = stamp.nsecs
    return int(sec) * 1_000_000_000 + int(nsec)


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` as int ns."""
    return stamp_to_ns(msg.header.stamp)


# ---------------------------------------------------------------------------------------------- poses
def _checked_tq(t: np.ndarray, q: np.ndarray, what: str) -> np.ndarray:
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise GeometryError(f"{what} contains NaN or inf")
    n = float(np.linalg.norm(q))
    if n < 1e-6:
        raise GeometryError(f"{what} orientation is a zero quaternion")
    if abs(n - 1.0) > QUAT_NORM_TOLERANCE:
        raise GeometryError(f"{what} orientation is not a unit quaternion (norm {n:.3f})")
    return T_from_tq(t, q / n)


def pose_to_matrix(pose: Any) -> np.ndarray:
    """``geometry_msgs/Pose`` (or ``PoseStamped``, ``PoseWithCovariance[Stamped]``, ``Odometry``) -> 4x4.

    Raises GeometryError for NaN / inf, a zero or a non-unit quaternion, or a message without a pose.
    """
    p = pose
    while not hasattr(p, "position"):
        if not hasattr(p, "pose"):
            raise GeometryError(f"{type(pose).__name__} has no pose")
        p = p.pose
    t = np.array([p.position.x, p.position.y, p.position.z], dtype=np.float64)
    o = p.orientation
    return _checked_tq(t, np.array([o.x, o.y, o.z, o.w], dtype=np.float64), "pose")


def transform_to_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` (or ``TransformStamped``) -> 4x4 ``T_parent_child``; validated as
    :func:`pose_to_matrix`."""
    tf = getattr(transform, "transform", transform)
    tr, r = tf.translation, tf.rotation
    t = np.array([tr.x, tr.y, tr.z], dtype=np.float64)
    return _checked_tq(t, np.array([r.x, r.y, r.z, r.w], dtype=np.float64), "transform")


# ---------------------------------------------------------------------------------------------- sensors
def _field(msg: Any, *names: str) -> Any:
    for n in names:
        v = getattr(msg, n, None)
        if v is not None:
            return v
    raise GeometryError(f"{type(msg).__name__} has none of the fields {names}")


def camera_from_info(msg: Any) -> PinholeCamera:
    """``sensor_msgs/CameraInfo`` -> :class:`PinholeCamera` of the images as they arrive (distortion ignored).

    The projection matrix P is used when set (it holds the intrinsics of the rectified image, the one a
    pipeline sees), else K; ROS 1 spellings ``K``/``P`` are read too. With ``binning_x``/``binning_y`` > 1
    the images are binned: ``width``/``height`` and the matrices describe the full sensor, so the camera is
    scaled to ``width // binning_x`` x ``height // binning_y``. Raises GeometryError for an uncalibrated
    CameraInfo (neither P nor K set).
    """
    k = np.asarray(_field(msg, "k", "K"), dtype=np.float64).reshape(-1)
    p = np.asarray(_field(msg, "p", "P"), dtype=np.float64).reshape(-1)
    if p.size == 12 and np.all(np.isfinite(p)) and p[0] > 0 and p[5] > 0:
        fx, fy, cx, cy = p[0], p[5], p[2], p[6]
    elif k.size == 9 and np.all(np.isfinite(k)) and k[0] > 0 and k[4] > 0:
        fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    else:
        raise GeometryError("CameraInfo has neither a valid P nor a valid K (uncalibrated camera?)")
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise GeometryError(f"CameraInfo has no image size ({w}x{h})")
    bx = int(getattr(msg, "binning_x", 0) or 1)
    by = int(getattr(msg, "binning_y", 0) or 1)
    cam = PinholeCamera(w, h, float(fx), float(fy), float(cx), float(cy))
    if bx > 1 or by > 1:
        cam = cam.scaled(w // bx, h // by)
    return cam


def navsatfix_to_array(msg: Any) -> np.ndarray:
    """``NavSatFix`` -> ``[lat_deg, lon_deg, alt_m]``."""
    return np.array([msg.latitude, msg.longitude, msg.altitude], dtype=np.float64)
