"""Build ROS messages (rosbags typestore objects) and read ANY duck-typed message (rclpy, rosbags ROS 1 / ROS 2).

Builders take ``ts`` (a typestore, default: the cached Humble one from :func:`get_typestore`); pass the
writer's ``BagWriter.typestore`` when it is a different one. Readers only access fields, so they accept rclpy
messages as well; ROS 1 field spellings (``CameraInfo.K``, ``Time.nsec``/``secs``) are handled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pose2rgbd.bags.typestore import get_typestore
from pose2rgbd.errors import BagError
from pose2rgbd.geometry import PinholeCamera, T_from_tq, tq_from_T

_IDENTITY9 = np.eye(3).ravel()


def _ts(ts: Any) -> Any:
    return ts if ts is not None else get_typestore("humble")


def _new(ts: Any, msgtype: str, **fields: Any) -> Any:
    try:
        return _ts(ts).types[msgtype](**fields)
    except KeyError as e:
        raise BagError(f"message type {msgtype} is not in the typestore") from e


# ---------------------------------------------------------------- time and header
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


def ns_to_stamp(ns: int, ts: Any = None) -> Any:
    """int ns -> ``builtin_interfaces/msg/Time`` (``nanosec`` in [0, 1e9), also for negative times)."""
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return _new(ts, "builtin_interfaces/msg/Time", sec=sec, nanosec=nsec)


def header(stamp_ns: int, frame_id: str, ts: Any = None) -> Any:
    return _new(ts, "std_msgs/msg/Header", stamp=ns_to_stamp(stamp_ns, ts), frame_id=str(frame_id))


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` as int ns."""
    return stamp_to_ns(msg.header.stamp)


# ---------------------------------------------------------------- geometry
def _vec(v: Any) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def _quat_xyzw(q: Any) -> np.ndarray:
    return np.array([q.x, q.y, q.z, q.w], dtype=np.float64)


def transform_to_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` (or ``TransformStamped``) -> 4x4 ``T_parent_child``."""
    tf = getattr(transform, "transform", transform)
    return T_from_tq(_vec(tf.translation), _quat_xyzw(tf.rotation))


def pose_to_matrix(pose: Any) -> np.ndarray:
    """``geometry_msgs/Pose`` (or ``PoseStamped``/``PoseWithCovariance[Stamped]``/``Odometry``) -> 4x4."""
    p = pose
    while not hasattr(p, "position"):
        if not hasattr(p, "pose"):
            raise BagError(f"{type(pose).__name__} has no pose")
        p = p.pose
    return T_from_tq(_vec(p.position), _quat_xyzw(p.orientation))


def _tq(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise BagError(f"expected a 4x4 transform, got shape {T.shape}")
    return tq_from_T(T)


def _quat_msg(q: np.ndarray, ts: Any) -> Any:
    return _new(ts, "geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def _vector3(v: Sequence[float] | np.ndarray, ts: Any) -> Any:
    return _new(ts, "geometry_msgs/msg/Vector3", x=float(v[0]), y=float(v[1]), z=float(v[2]))


def matrix_to_transform(T: np.ndarray, ts: Any = None) -> Any:
    t, q = _tq(T)
    return _new(ts, "geometry_msgs/msg/Transform", translation=_vector3(t, ts), rotation=_quat_msg(q, ts))


def matrix_to_pose(T: np.ndarray, ts: Any = None) -> Any:
    t, q = _tq(T)
    pos = _new(ts, "geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2]))
    return _new(ts, "geometry_msgs/msg/Pose", position=pos, orientation=_quat_msg(q, ts))


def transform_stamped(stamp_ns: int, parent: str, child: str, T: np.ndarray, ts: Any = None) -> Any:
    """``TransformStamped`` with ``T_parent_child`` (header.frame_id = parent, child_frame_id = child)."""
    return _new(
        ts,
        "geometry_msgs/msg/TransformStamped",
        header=header(stamp_ns, parent, ts),
        child_frame_id=str(child),
        transform=matrix_to_transform(T, ts),
    )


def tf_message(transforms: Sequence[Any], ts: Any = None) -> Any:
    return _new(ts, "tf2_msgs/msg/TFMessage", transforms=list(transforms))


def pose_stamped(stamp_ns: int, frame_id: str, T: np.ndarray, ts: Any = None) -> Any:
    return _new(ts, "geometry_msgs/msg/PoseStamped", header=header(stamp_ns, frame_id, ts), pose=matrix_to_pose(T, ts))


def _cov(c: Any, n: int, name: str) -> np.ndarray:
    if c is None:
        return np.zeros(n * n)
    a = np.asarray(c, dtype=np.float64)
    if a.size == n:
        a = np.diag(a)
    if a.size != n * n:
        raise BagError(f"{name}: expected {n}x{n}, {n * n} or {n} (diagonal) values, got shape {a.shape}")
    return a.reshape(-1).copy()


def odometry(
    stamp_ns: int,
    frame_id: str,
    child_frame_id: str,
    T_parent_child: np.ndarray,
    *,
    linear: Sequence[float] = (0.0, 0.0, 0.0),
    angular: Sequence[float] = (0.0, 0.0, 0.0),
    pose_cov: Any = None,
    twist_cov: Any = None,
    ts: Any = None,
) -> Any:
    """``nav_msgs/Odometry``: pose of ``child_frame_id`` in ``frame_id``; twist (body frame) in the child frame."""
    pwc = _new(
        ts,
        "geometry_msgs/msg/PoseWithCovariance",
        pose=matrix_to_pose(T_parent_child, ts),
        covariance=_cov(pose_cov, 6, "pose_cov"),
    )
    twist = _new(ts, "geometry_msgs/msg/Twist", linear=_vector3(linear, ts), angular=_vector3(angular, ts))
    twc = _new(ts, "geometry_msgs/msg/TwistWithCovariance", twist=twist, covariance=_cov(twist_cov, 6, "twist_cov"))
    return _new(
        ts,
        "nav_msgs/msg/Odometry",
        header=header(stamp_ns, frame_id, ts),
        child_frame_id=str(child_frame_id),
        pose=pwc,
        twist=twc,
    )


def navsatfix(
    stamp_ns: int,
    frame_id: str,
    lat: float,
    lon: float,
    alt: float,
    *,
    status: int = 0,
    service: int = 1,
    covariance: Any = None,
    covariance_type: int | None = None,
    ts: Any = None,
) -> Any:
    """``sensor_msgs/NavSatFix``. ``status`` 0 = FIX (-1 no fix, 1 SBAS, 2 GBAS); ``service`` 1 = GPS.

    ``covariance`` (ENU m^2): 3x3, 9 values or 3 (diagonal). ``covariance_type`` defaults to 2
    (DIAGONAL_KNOWN) for a diagonal one, 3 (KNOWN) for a full one and 0 (UNKNOWN) when none is given.
    """
    cov = _cov(covariance, 3, "covariance")
    if covariance_type is None:
        if covariance is None:
            covariance_type = 0
        else:
            m = cov.reshape(3, 3)
            covariance_type = 2 if np.count_nonzero(m - np.diag(np.diag(m))) == 0 else 3
    st = _new(ts, "sensor_msgs/msg/NavSatStatus", status=int(status), service=int(service))
    return _new(
        ts,
        "sensor_msgs/msg/NavSatFix",
        header=header(stamp_ns, frame_id, ts),
        status=st,
        latitude=float(lat),
        longitude=float(lon),
        altitude=float(alt),
        position_covariance=cov,
        position_covariance_type=int(covariance_type),
    )


def imu(
    stamp_ns: int,
    frame_id: str,
    *,
    quat_xyzw: Sequence[float] | None = None,
    angular_velocity: Sequence[float] = (0.0, 0.0, 0.0),
    linear_acceleration: Sequence[float] = (0.0, 0.0, 0.0),
    orientation_cov: Any = None,
    angular_velocity_cov: Any = None,
    linear_acceleration_cov: Any = None,
    ts: Any = None,
) -> Any:
    """``sensor_msgs/Imu``; without ``quat_xyzw`` the orientation is marked unknown (covariance[0] = -1)."""
    if quat_xyzw is None:
        q = np.array([0.0, 0.0, 0.0, 1.0])
        ocov = np.zeros(9)
        ocov[0] = -1.0
    else:
        q = np.asarray(quat_xyzw, dtype=np.float64)
        ocov = _cov(orientation_cov, 3, "orientation_cov")
    return _new(
        ts,
        "sensor_msgs/msg/Imu",
        header=header(stamp_ns, frame_id, ts),
        orientation=_quat_msg(q, ts),
        orientation_covariance=ocov,
        angular_velocity=_vector3(angular_velocity, ts),
        angular_velocity_covariance=_cov(angular_velocity_cov, 3, "angular_velocity_cov"),
        linear_acceleration=_vector3(linear_acceleration, ts),
        linear_acceleration_covariance=_cov(linear_acceleration_cov, 3, "linear_acceleration_cov"),
    )


# ---------------------------------------------------------------- camera info
def camera_info(camera: PinholeCamera, stamp_ns: int, frame_id: str, ts: Any = None) -> Any:
    """``sensor_msgs/CameraInfo`` for an ideal pinhole: plumb_bob with zero D, R = I, P = [K | 0]."""
    K = camera.K
    P = np.hstack([K, np.zeros((3, 1))])
    roi = _new(ts, "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _new(
        ts,
        "sensor_msgs/msg/CameraInfo",
        header=header(stamp_ns, frame_id, ts),
        height=int(camera.height),
        width=int(camera.width),
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.ravel().copy(),
        r=_IDENTITY9.copy(),
        p=P.ravel().copy(),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def _field(msg: Any, *names: str) -> Any:
    for n in names:
        v = getattr(msg, n, None)
        if v is not None:
            return v
    raise BagError(f"{type(msg).__name__} has none of the fields {names}")


def camera_from_info(msg: Any) -> PinholeCamera:
    """``sensor_msgs/CameraInfo`` -> :class:`PinholeCamera` (from P when set, else K; distortion ignored)."""
    k = np.asarray(_field(msg, "k", "K"), dtype=np.float64).reshape(-1)
    p = np.asarray(_field(msg, "p", "P"), dtype=np.float64).reshape(-1)
    if p.size == 12 and p[0] > 0 and p[5] > 0:
        fx, fy, cx, cy = p[0], p[5], p[2], p[6]
    elif k.size == 9 and k[0] > 0 and k[4] > 0:
        fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    else:
        raise BagError("CameraInfo has neither a valid P nor a valid K (uncalibrated camera?)")
    bx = int(getattr(msg, "binning_x", 0) or 1)
    by = int(getattr(msg, "binning_y", 0) or 1)
    cam = PinholeCamera(int(msg.width), int(msg.height), float(fx), float(fy), float(cx), float(cy))
    if bx > 1 or by > 1:  # width/height are the full-resolution size; images arrive binned
        cam = cam.scaled(int(msg.width) // bx, int(msg.height) // by)
    return cam


def navsatfix_to_array(msg: Any) -> np.ndarray:
    """``NavSatFix`` -> ``[lat_deg, lon_deg, alt_m]``."""
    return np.array([msg.latitude, msg.longitude, msg.altitude], dtype=np.float64)
