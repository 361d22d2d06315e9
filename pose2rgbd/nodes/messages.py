"""Message-level helpers shared by the node logic, independent of the middleware.

Node logic reads messages by duck typing (rclpy messages and rosbags typestore messages share field names)
and *builds* them through a :class:`MessageFactory`: the offline runtime passes one backed by a rosbags
typestore (:class:`pose2rgbd.runtime.factory.TypestoreFactory`), the rclpy runtime one that instantiates the
generated Python classes (``pose2rgbd_ros.factory.RclpyFactory``). Nested messages may be given as dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from pose2rgbd.bags.images import ENCODINGS
from pose2rgbd.bags.images import image_to_numpy as image_to_numpy  # re-exported: one decoder for nodes and bags
from pose2rgbd.bags.messages import stamp_to_ns as stamp_to_ns  # re-exported (also reads ROS 1 secs/nsecs)
from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.rotations import canonical_quat_xyzw, matrix_to_quat_xyzw
from pose2rgbd.geometry.transforms import T_from_tq

CUSTOM_MSGS = ("RGBD", "SyncedFrame")
CUSTOM_SRVS = ("RenderAtPose",)


class MessageFactory(Protocol):
    """Builds ROS messages by type name (``'sensor_msgs/msg/Image'``); missing fields get their defaults."""

    def new(self, msgtype: str, **fields: Any) -> Any: ...


# ---------------------------------------------------------------------------------------------- interfaces
def interface_dir() -> Path:
    """Where the .msg / .srv files are read from: the repository's ``msg/`` + ``srv/`` in a source checkout,
    else the copy shipped as package data (``pose2rgbd/resources``); a test keeps the two identical."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "msg" / "RGBD.msg").is_file() and (repo / "package.xml").is_file():
        return repo
    return Path(__file__).resolve().parents[1] / "resources"


def _strip_comments(text: str) -> str:
    lines = []
    for ln in text.splitlines():
        ln = ln.split("#", 1)[0].rstrip()
        if ln.strip():
            lines.append(ln)
    return "\n".join(lines) + "\n"


def msg_definitions() -> dict[str, str]:
    """``{'pose2rgbd/msg/RGBD': text, ...}`` for registering with a rosbags typestore."""
    base = interface_dir() / "msg"
    return {f"pose2rgbd/msg/{n}": _strip_comments((base / f"{n}.msg").read_text()) for n in CUSTOM_MSGS}


def register_custom_msgs(typestore: Any) -> Any:
    """Register pose2rgbd/msg/* with a rosbags typestore (idempotent); returns the typestore."""
    from pose2rgbd.bags.typestore import register_msg_definitions

    if not all(f"pose2rgbd/msg/{n}" in typestore.fielddefs for n in CUSTOM_MSGS):
        register_msg_definitions(typestore, msg_definitions())
    return typestore


# ---------------------------------------------------------------------------------------------- time
def ns_to_stamp_fields(stamp_ns: int) -> dict[str, int]:
    s, ns = divmod(int(stamp_ns), 1_000_000_000)
    return {"sec": int(s), "nanosec": int(ns)}


def header(f: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    return f.new(
        "std_msgs/msg/Header",
        stamp=f.new("builtin_interfaces/msg/Time", **ns_to_stamp_fields(stamp_ns)),
        frame_id=frame_id,
    )


# ---------------------------------------------------------------------------------------------- poses
def pose_to_matrix(pose: Any) -> np.ndarray:
    """``geometry_msgs/Pose`` -> 4x4. Raises GeometryError for NaN / zero quaternions."""
    p, o = pose.position, pose.orientation
    t = np.array([p.x, p.y, p.z], dtype=np.float64)
    q = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise GeometryError("pose contains NaN or inf")
    n = np.linalg.norm(q)
    if n < 1e-6:
        raise GeometryError("pose orientation is a zero quaternion")
    if abs(n - 1.0) > 1e-2:
        raise GeometryError(f"pose orientation is not a unit quaternion (norm {n:.3f})")
    return T_from_tq(t, q / n)


def transform_to_matrix(tr: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` -> 4x4 (raises GeometryError on NaN / zero quaternion)."""
    t, r = tr.translation, tr.rotation
    tv = np.array([t.x, t.y, t.z], dtype=np.float64)
    q = np.array([r.x, r.y, r.z, r.w], dtype=np.float64)
    if not (np.all(np.isfinite(tv)) and np.all(np.isfinite(q))) or np.linalg.norm(q) < 1e-6:
        raise GeometryError("transform contains NaN / inf or a zero quaternion")
    return T_from_tq(tv, canonical_quat_xyzw(q))


def pose_msg(f: MessageFactory, T: np.ndarray) -> Any:
    q = matrix_to_quat_xyzw(np.asarray(T)[:3, :3])
    t = np.asarray(T)[:3, 3]
    return f.new(
        "geometry_msgs/msg/Pose",
        position=f.new("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=f.new("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def pose_stamped(f: MessageFactory, T: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    return f.new("geometry_msgs/msg/PoseStamped", header=header(f, stamp_ns, frame_id), pose=pose_msg(f, T))


# ---------------------------------------------------------------------------------------------- images
def image_msg(f: MessageFactory, array: np.ndarray | None, encoding: str, hdr: Any) -> Any:
    """numpy -> ``sensor_msgs/Image`` (little endian). ``None`` gives an empty 0x0 image."""
    if array is None:
        return f.new("sensor_msgs/msg/Image", header=hdr, encoding=encoding, data=np.zeros(0, np.uint8))
    dtype, ch = ENCODINGS[encoding]
    a = np.ascontiguousarray(np.asarray(array, dtype=dtype))
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] != ch:
        raise GeometryError(f"image with {a.shape[2]} channels cannot be {encoding}")
    h, w = a.shape[:2]
    return f.new(
        "sensor_msgs/msg/Image",
        header=hdr,
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * ch * a.dtype.itemsize,
        data=np.frombuffer(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes(), dtype=np.uint8),
    )


def camera_info_msg(f: MessageFactory, camera: PinholeCamera, hdr: Any) -> Any:
    """Ideal pinhole ``sensor_msgs/CameraInfo`` (plumb_bob, zero distortion, R = I, P = [K | 0])."""
    K = camera.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    return f.new(
        "sensor_msgs/msg/CameraInfo",
        header=hdr,
        height=camera.height,
        width=camera.width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.ravel(),
        r=np.eye(3).ravel(),
        p=P.ravel(),
    )


def camera_from_info(msg: Any) -> PinholeCamera:
    """``sensor_msgs/CameraInfo`` -> PinholeCamera (distortion ignored; K used)."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    return PinholeCamera(
        int(msg.width), int(msg.height), float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])
    )


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------- diagnostics
def diagnostic_array(
    f: MessageFactory, stamp_ns: int, name: str, level: int, message: str, values: dict[str, Any], hardware_id: str = ""
) -> Any:
    """``diagnostic_msgs/DiagnosticArray`` with one status (level: 0 OK, 1 WARN, 2 ERROR, 3 STALE)."""
    kvs = [f.new("diagnostic_msgs/msg/KeyValue", key=str(k), value=str(v)) for k, v in values.items()]
    status = f.new(
        "diagnostic_msgs/msg/DiagnosticStatus",
        level=bytes([level]) if _level_is_bytes(f) else int(level),
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=kvs,
    )
    return f.new("diagnostic_msgs/msg/DiagnosticArray", header=header(f, stamp_ns, ""), status=[status])


def _level_is_bytes(f: MessageFactory) -> bool:
    # rclpy maps the ``byte`` type to a length-1 ``bytes``; rosbags to an int.
    return bool(getattr(f, "byte_as_bytes", False))
