"""Read ROS messages into NumPy / geometry types, by duck typing.

Readers only access fields, so they accept rclpy messages and rosbags typestore messages (ROS 1 and ROS 2)
alike; ROS 1 field spellings (``CameraInfo.K``/``P``, ``Time.secs``/``nsecs``) are handled. Poses and
transforms are validated: NaN / inf, a zero or a non-unit quaternion raise :class:`GeometryError`. Streams of
samples (IMU / odometry orientations, GPS fixes) are read without raising: :func:`orientation_xyzw` returns None
for an orientation breaking the same rule (:func:`quat_problem`), :class:`FixReading` says why a fix is unusable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.rotations import quat_problem
from pose2rgbd.geometry.transforms import T_from_tq


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
def _pose_of(msg: Any) -> Any:
    """The innermost object with ``position`` and ``orientation`` (Pose, PoseStamped, Odometry, ...)."""
    p = msg
    while not hasattr(p, "position"):
        if not hasattr(p, "pose"):
            raise GeometryError(f"{type(msg).__name__} has no pose")
        p = p.pose
    return p


def _checked_tq(t: np.ndarray, q: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not np.all(np.isfinite(t)):
        raise GeometryError(f"{what} position contains NaN or inf")
    problem = quat_problem(q)
    if problem is not None:
        raise GeometryError(f"{what} orientation {problem}")
    return t, q / np.linalg.norm(q)


def pose_tq(pose: Any) -> tuple[np.ndarray, np.ndarray]:
    """``geometry_msgs/Pose`` (or ``PoseStamped``, ``PoseWithCovariance[Stamped]``, ``Odometry``) ->
    ``(t (3,), unit q_xyzw (4,))``. Raises GeometryError for a NaN / inf position or an orientation that
    breaks :func:`quat_problem`'s rule, or a message without a pose."""
    p = _pose_of(pose)
    t = np.array([p.position.x, p.position.y, p.position.z], dtype=np.float64)
    o = p.orientation
    return _checked_tq(t, np.array([o.x, o.y, o.z, o.w], dtype=np.float64), "pose")


def pose_to_matrix(pose: Any) -> np.ndarray:
    """:func:`pose_tq` as a 4x4 matrix; raises GeometryError as it does."""
    return T_from_tq(*pose_tq(pose))


def transform_to_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` (or ``TransformStamped``) -> 4x4 ``T_parent_child``; validated as
    :func:`pose_to_matrix`."""
    tf = getattr(transform, "transform", transform)
    tr, r = tf.translation, tf.rotation
    t = np.array([tr.x, tr.y, tr.z], dtype=np.float64)
    return T_from_tq(*_checked_tq(t, np.array([r.x, r.y, r.z, r.w], dtype=np.float64), "transform"))


def orientation_xyzw(msg: Any) -> np.ndarray | None:
    """The unit orientation quaternion of a ``sensor_msgs/Imu`` (``orientation``) or of anything with a pose
    (``Odometry``, ``PoseStamped``, ...), or **None** when it breaks :func:`quat_problem`'s rule (NaN / inf,
    zero, norm off 1). A stream reader drops those samples and goes on (a few bad IMU samples do not spoil a
    recording); a single pose that must be right uses :func:`pose_tq` / :func:`pose_to_matrix`, which raise.
    An Imu whose ``orientation_covariance[0]`` is -1 ("no orientation estimate", REP-145) also gives None."""
    o = getattr(msg, "orientation", None)
    if o is None:
        o = _pose_of(msg).orientation
    else:
        cov = getattr(msg, "orientation_covariance", None)
        if cov is not None and len(cov) > 0 and float(cov[0]) == -1.0:
            return None
    q = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    if quat_problem(q) is not None:
        return None
    return q / np.linalg.norm(q)


# ---------------------------------------------------------------------------------------------- sensors
def first_field(msg: Any, *names: str) -> Any:
    """The first of ``names`` that ``msg`` has (not None): a field by its ROS 2 and its ROS 1 spelling (``k``, ``K``);
    GeometryError where it has none."""
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
    k = np.asarray(first_field(msg, "k", "K"), dtype=np.float64).reshape(-1)
    p = np.asarray(first_field(msg, "p", "P"), dtype=np.float64).reshape(-1)
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


# NavSatStatus.status values (sensor_msgs, ROS 1 and ROS 2 alike)
FIX_STATUS_NAMES = {-1: "NO_FIX", 0: "FIX", 1: "SBAS_FIX", 2: "GBAS_FIX"}


@dataclass(frozen=True)
class FixReading:
    """One ``sensor_msgs/NavSatFix``: ``lla`` = ``[lat_deg, lon_deg, alt_m]`` (may hold NaN: see
    :meth:`problem`), the status fields and the position covariance (row-major 3x3 as 9 numbers, ENU m^2)."""

    lla: np.ndarray
    status: int
    service: int
    covariance: np.ndarray
    covariance_type: int

    def problem(self, min_status: int = 0) -> str | None:
        """None for a usable fix, else why not: status below ``min_status`` (default 0: NO_FIX = -1 is not
        usable), NaN / inf coordinates, or a latitude / longitude out of range."""
        if self.status < min_status:
            name = FIX_STATUS_NAMES.get(self.status, str(self.status))
            return f"status {name} ({self.status}) is below {min_status}"
        if not np.all(np.isfinite(self.lla)):
            return "NaN or inf coordinates"
        if abs(self.lla[0]) > 90 or abs(self.lla[1]) > 180:
            return f"latitude / longitude out of range ({self.lla[0]}, {self.lla[1]})"
        return None


def read_navsatfix(msg: Any) -> FixReading:
    """``sensor_msgs/NavSatFix`` (same fields in ROS 1 and ROS 2) -> :class:`FixReading`; never raises for bad
    values (check :meth:`FixReading.problem`). A message without ``status`` counts as FIX (0)."""
    st = getattr(msg, "status", None)
    cov = np.asarray(getattr(msg, "position_covariance", np.zeros(9)), dtype=np.float64).reshape(-1)
    if cov.size != 9:
        cov = np.zeros(9)
    return FixReading(
        lla=np.array([msg.latitude, msg.longitude, msg.altitude], dtype=np.float64),
        status=int(getattr(st, "status", 0)) if st is not None else 0,
        service=int(getattr(st, "service", 0)) if st is not None else 0,
        covariance=cov,
        covariance_type=int(getattr(msg, "position_covariance_type", 0)),
    )


# ---------------------------------------------------------------------------------------------- point clouds
# sensor_msgs/PointField datatype -> numpy type
_POINTFIELD_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def point_cloud2_fields(msg: Any) -> dict[str, np.ndarray]:
    """``sensor_msgs/PointCloud2`` -> ``{field name: (height, width) array}`` in native byte order (a field with
    ``count > 1`` gets a trailing axis). Honours ``point_step``, ``row_step`` and ``is_bigendian``; a packed
    ``rgb`` float stays a float (``.view(np.uint32)`` gives ``0x00RRGGBB``)."""
    h, w = int(msg.height), int(msg.width)
    step, row = int(msg.point_step), int(msg.row_step)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for fd in msg.fields:
        kind = _POINTFIELD_TYPES.get(int(fd.datatype))
        if kind is None:
            raise GeometryError(f"PointCloud2 field {fd.name!r}: unknown datatype {fd.datatype}")
        n = max(1, int(fd.count))
        names.append(str(fd.name))
        formats.append((order + kind, (n,)) if n > 1 else order + kind)
        offsets.append(int(fd.offset))
    if row < w * step:
        raise GeometryError(f"PointCloud2 {w}x{h}: row_step {row} < width x point_step {w * step}")
    data = msg.data
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(memoryview(data), dtype=np.uint8)
    buf = np.ascontiguousarray(buf).reshape(-1).view(np.uint8)
    if buf.size < row * h:
        raise GeometryError(f"PointCloud2 {w}x{h}: data has {buf.size} bytes, expected {row * h}")
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    rows = buf[: row * h].reshape(h, row)[:, : w * step]
    pts = np.ascontiguousarray(rows).view(dt).reshape(h, w)
    return {n: pts[n].astype(pts[n].dtype.newbyteorder("="), copy=True) for n in names}
