"""Build ROS messages through a :class:`~pose2rgbd.messages.factory.MessageFactory`.

One argument order everywhere: the factory first, then for stamped messages ``stamp_ns`` and ``frame_id``,
then the payload (a 4x4 ``T``, a camera, values), then keyword options. ``default_factory()`` builds rosbags
messages of the Humble typestore; pass ``TypestoreFactory(writer.typestore)`` for another one, or the rclpy
factory in a live node. Image builders are in :mod:`pose2rgbd.messages.images`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.transforms import tq_from_T
from pose2rgbd.messages.factory import MessageFactory


# ---------------------------------------------------------------------------------------------- time
def stamp(f: MessageFactory, stamp_ns: int) -> Any:
    """int ns -> ``builtin_interfaces/msg/Time`` (``nanosec`` in [0, 1e9), also for negative times)."""
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return f.new("builtin_interfaces/msg/Time", sec=int(sec), nanosec=int(nsec))


def header(f: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    return f.new("std_msgs/msg/Header", stamp=stamp(f, stamp_ns), frame_id=str(frame_id))


# ---------------------------------------------------------------------------------------------- geometry
def _tq(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise GeometryError(f"expected a 4x4 transform, got shape {T.shape}")
    return tq_from_T(T)


def _quat(f: MessageFactory, q: np.ndarray | Sequence[float]) -> Any:
    return f.new("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def vector3(f: MessageFactory, v: Sequence[float] | np.ndarray) -> Any:
    return f.new("geometry_msgs/msg/Vector3", x=float(v[0]), y=float(v[1]), z=float(v[2]))


def pose(f: MessageFactory, T: np.ndarray) -> Any:
    """4x4 -> ``geometry_msgs/Pose`` (canonical quaternion, w >= 0)."""
    t, q = _tq(T)
    pos = f.new("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2]))
    return f.new("geometry_msgs/msg/Pose", position=pos, orientation=_quat(f, q))


def transform(f: MessageFactory, T: np.ndarray) -> Any:
    """4x4 ``T_parent_child`` -> ``geometry_msgs/Transform``."""
    t, q = _tq(T)
    return f.new("geometry_msgs/msg/Transform", translation=vector3(f, t), rotation=_quat(f, q))


def pose_stamped(f: MessageFactory, stamp_ns: int, frame_id: str, T: np.ndarray) -> Any:
    """``PoseStamped``: the pose ``T_frame_x`` of something in ``frame_id``."""
    return f.new("geometry_msgs/msg/PoseStamped", header=header(f, stamp_ns, frame_id), pose=pose(f, T))


def transform_stamped(f: MessageFactory, stamp_ns: int, parent: str, child: str, T: np.ndarray) -> Any:
    """``TransformStamped`` with ``T_parent_child`` (header.frame_id = parent, child_frame_id = child)."""
    return f.new(
        "geometry_msgs/msg/TransformStamped",
        header=header(f, stamp_ns, parent),
        child_frame_id=str(child),
        transform=transform(f, T),
    )


def tf_message(f: MessageFactory, transforms: Sequence[Any]) -> Any:
    return f.new("tf2_msgs/msg/TFMessage", transforms=list(transforms))


def _cov(c: Any, n: int, name: str) -> np.ndarray:
    if c is None:
        return np.zeros(n * n)
    a = np.asarray(c, dtype=np.float64)
    if a.size == n:
        a = np.diag(a.reshape(-1))
    if a.size != n * n:
        raise GeometryError(f"{name}: expected {n}x{n}, {n * n} or {n} (diagonal) values, got shape {a.shape}")
    return a.reshape(-1).copy()


def odometry(
    f: MessageFactory,
    stamp_ns: int,
    frame_id: str,
    child_frame_id: str,
    T_parent_child: np.ndarray,
    *,
    linear: Sequence[float] = (0.0, 0.0, 0.0),
    angular: Sequence[float] = (0.0, 0.0, 0.0),
    pose_cov: Any = None,
    twist_cov: Any = None,
    twist: Any = None,
) -> Any:
    """``nav_msgs/Odometry``: pose of ``child_frame_id`` in ``frame_id``; twist (body frame) in the child frame.

    ``pose_cov`` / ``twist_cov``: 6x6, 36 values or 6 (diagonal). ``twist``: a ready
    ``TwistWithCovariance`` message (then ``linear``, ``angular`` and ``twist_cov`` are ignored).
    """
    pwc = f.new(
        "geometry_msgs/msg/PoseWithCovariance", pose=pose(f, T_parent_child), covariance=_cov(pose_cov, 6, "pose_cov")
    )
    if twist is None:
        tw = f.new("geometry_msgs/msg/Twist", linear=vector3(f, linear), angular=vector3(f, angular))
        twist = f.new("geometry_msgs/msg/TwistWithCovariance", twist=tw, covariance=_cov(twist_cov, 6, "twist_cov"))
    return f.new(
        "nav_msgs/msg/Odometry",
        header=header(f, stamp_ns, frame_id),
        child_frame_id=str(child_frame_id),
        pose=pwc,
        twist=twist,
    )


def navsatfix(
    f: MessageFactory,
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
    st = f.new("sensor_msgs/msg/NavSatStatus", status=int(status), service=int(service))
    return f.new(
        "sensor_msgs/msg/NavSatFix",
        header=header(f, stamp_ns, frame_id),
        status=st,
        latitude=float(lat),
        longitude=float(lon),
        altitude=float(alt),
        position_covariance=cov,
        position_covariance_type=int(covariance_type),
    )


def imu(
    f: MessageFactory,
    stamp_ns: int,
    frame_id: str,
    *,
    quat_xyzw: Sequence[float] | None = None,
    angular_velocity: Sequence[float] = (0.0, 0.0, 0.0),
    linear_acceleration: Sequence[float] = (0.0, 0.0, 0.0),
    orientation_cov: Any = None,
    angular_velocity_cov: Any = None,
    linear_acceleration_cov: Any = None,
) -> Any:
    """``sensor_msgs/Imu``; without ``quat_xyzw`` the orientation is marked unknown (covariance[0] = -1)."""
    if quat_xyzw is None:
        q = np.array([0.0, 0.0, 0.0, 1.0])
        ocov = np.zeros(9)
        ocov[0] = -1.0
    else:
        q = np.asarray(quat_xyzw, dtype=np.float64)
        ocov = _cov(orientation_cov, 3, "orientation_cov")
    return f.new(
        "sensor_msgs/msg/Imu",
        header=header(f, stamp_ns, frame_id),
        orientation=_quat(f, q),
        orientation_covariance=ocov,
        angular_velocity=vector3(f, angular_velocity),
        angular_velocity_covariance=_cov(angular_velocity_cov, 3, "angular_velocity_cov"),
        linear_acceleration=vector3(f, linear_acceleration),
        linear_acceleration_covariance=_cov(linear_acceleration_cov, 3, "linear_acceleration_cov"),
    )


# ---------------------------------------------------------------------------------------------- camera
def camera_info(f: MessageFactory, stamp_ns: int, frame_id: str, camera: PinholeCamera) -> Any:
    """``sensor_msgs/CameraInfo`` for an ideal pinhole: plumb_bob with zero D, R = I, P = [K | 0], no binning."""
    K = camera.K
    P = np.hstack([K, np.zeros((3, 1))])
    return f.new(
        "sensor_msgs/msg/CameraInfo",
        header=header(f, stamp_ns, frame_id),
        height=int(camera.height),
        width=int(camera.width),
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.ravel().copy(),
        r=np.eye(3).ravel(),
        p=P.ravel().copy(),
    )


# ---------------------------------------------------------------------------------------------- point clouds
POINTFIELD_FLOAT32 = 7  # sensor_msgs/PointField datatype FLOAT32


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 -> ``(...)`` float32 whose bits are ``0x00RRGGBB``: the packed ``rgb`` field PCL, RViz,
    Nav2 and the PX4 avoidance planner read (a float reinterpretation of the integer, not a conversion)."""
    c = np.asarray(rgb)
    if c.shape[-1:] != (3,) or c.dtype != np.uint8:
        raise GeometryError(f"pack_rgb: expected (..., 3) uint8 colours, got {c.dtype} {c.shape}")
    c32 = c.astype(np.uint32)
    packed = (c32[..., 0] << 16) | (c32[..., 1] << 8) | c32[..., 2]
    return packed.view(np.float32)


def point_cloud2(
    f: MessageFactory, stamp_ns: int, frame_id: str, xyz: np.ndarray, rgb: np.ndarray | None = None
) -> Any:
    """An organized ``sensor_msgs/PointCloud2`` (height x width = the array's rows x columns) of float32 ``x, y,
    z`` (+ a packed float32 ``rgb`` when ``rgb`` ``(H, W, 3)`` uint8 is given), little-endian, no padding.

    ``xyz`` ``(H, W, 3)`` in ``frame_id``; NaN marks a pixel without a point (``is_dense`` is then false, as
    consumers expect of an organized cloud with invalid points). Built in one vectorized copy."""
    p = np.asarray(xyz)
    if p.ndim != 3 or p.shape[2] != 3:
        raise GeometryError(f"point_cloud2: expected organized points (H, W, 3), got shape {p.shape}")
    h, w = p.shape[:2]
    names = ["x", "y", "z"]
    cols = 3
    if rgb is not None:
        if np.asarray(rgb).shape != (h, w, 3):
            raise GeometryError(f"point_cloud2: colours of shape {np.asarray(rgb).shape}, points of {p.shape}")
        names.append("rgb")
        cols = 4
    buf = np.empty((h, w, cols), dtype="<f4")
    buf[..., :3] = p
    if rgb is not None:
        buf[..., 3] = pack_rgb(rgb)
    fields = [
        f.new("sensor_msgs/msg/PointField", name=n, offset=4 * i, datatype=POINTFIELD_FLOAT32, count=1)
        for i, n in enumerate(names)
    ]
    return f.new(
        "sensor_msgs/msg/PointCloud2",
        header=header(f, stamp_ns, frame_id),
        height=int(h),
        width=int(w),
        fields=fields,
        is_bigendian=False,
        point_step=4 * cols,
        row_step=4 * cols * int(w),
        data=buf.reshape(-1).view(np.uint8),
        is_dense=bool(np.isfinite(p).all()),
    )


# ---------------------------------------------------------------------------------------------- diagnostics
def diagnostic_array(
    f: MessageFactory,
    stamp_ns: int,
    name: str,
    level: int,
    message: str,
    values: dict[str, Any],
    hardware_id: str = "",
) -> Any:
    """``diagnostic_msgs/DiagnosticArray`` with one status (level: 0 OK, 1 WARN, 2 ERROR, 3 STALE)."""
    kvs = [f.new("diagnostic_msgs/msg/KeyValue", key=str(k), value=str(v)) for k, v in values.items()]
    status = f.new(
        "diagnostic_msgs/msg/DiagnosticStatus",
        level=bytes([level]) if getattr(f, "byte_as_bytes", False) else int(level),
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=kvs,
    )
    return f.new("diagnostic_msgs/msg/DiagnosticArray", header=header(f, stamp_ns, ""), status=[status])
