"""A small synthetic flight over flat ground as a rosbag2, consistent with the analytic stand-in model of
:mod:`pose2rgbd.testing.ground_plane` (tests and benchmarks of the runtimes; the full simulator is
:mod:`pose2rgbd.sim`).

Topics (the simulator's layout): ``/camera/image_raw`` (rgb8, or ``/camera/image_raw/compressed``),
``/camera/camera_info``, ``/gps/fix`` (10 Hz), ``/odom`` (50 Hz, odom -> base_link, odom aligned with map),
``/tf`` map -> base_link (50 Hz), ``/tf_static`` base_link -> camera_optical_frame,
``/ground_truth/pose`` (map -> camera_optical_frame) and ``/ground_truth/depth`` (32FC1) at camera stamps.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.geometry.geodesy import Datum

T0_NS = 1_700_000_000_000_000_000
DATUM = Datum(47.3769, 8.5417, 420.0)
# camera looking straight down from base_link, 10 cm below it
T_BASE_CAM = np.array([[1.0, 0, 0, 0.05], [0, -1.0, 0, 0.0], [0, 0, -1.0, -0.1], [0, 0, 0, 1.0]])


@dataclass
class FlightTruth:
    """What the bag contains, for checks: camera stamps and poses, and the datum of the fixes."""

    camera_stamps_ns: np.ndarray
    T_world_cam: np.ndarray
    datum: Datum


def T_world_base(t_s: np.ndarray | float) -> np.ndarray:
    """Smooth flight: 2 m/s east, a gentle north sway, slowly climbing, slowly yawing."""
    t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    T = np.repeat(np.eye(4)[None], len(t), axis=0)
    T[:, :3, 3] = np.stack([2.0 * t - 3.0, 1.5 * np.sin(0.8 * t), 20.0 + 0.5 * t], axis=-1)
    T[:, :3, :3] = Rotation.from_euler("xyz", np.stack([0.02 * np.sin(t), 0.03 * np.cos(t), 0.15 * t], -1)).as_matrix()
    return T


FIRST_CAMERA_S = 0.05  # the first camera frame's time after the bag's start; then one every 1 / camera_hz


def T_world_cam(t_s: np.ndarray | float) -> np.ndarray:
    """The camera's poses (N, 4, 4) at times ``t_s`` of the flight (:func:`T_world_base` with the camera below it):
    the ground truth of the bag's camera frames."""
    return T_world_base(t_s) @ T_BASE_CAM


def write_flight_bag(
    path: str | Path,
    *,
    duration_s: float = 3.0,
    camera_hz: float = 10.0,
    size: int = 64,
    compressed: bool = False,
    storage: str = "mcap",
    hfov_deg: float = 90.0,
    camera_info_fields: dict[str, Any] | None = None,
    t0_ns: int = T0_NS,
    fix_fault: Callable[[int, float, float, float], tuple[float, float, float]] | None = None,
    zero_stamps: Collection[str] = (),
    bad_static_tf: bool = False,
    bad_tf_every: int = 0,
    frozen_camera: int = 0,
    lost_images: Collection[int] = (),
    unreadable_images: Collection[int] = (),
    T_map_enu: np.ndarray | None = None,
    odom_in_tf: bool = False,
    static_tf: bool = True,
) -> FlightTruth:
    """Write the bag (see module docstring); returns the ground truth.

    ``camera_info_fields`` replace fields of every CameraInfo (e.g. a P that differs from K, binning).
    Faults (for the fault tests): ``t0_ns`` moves the whole flight in time; ``fix_fault(i, lat, lon, alt)`` gives
    the ``(lat, lon, alt)`` written for fix ``i`` (a bad fix, a cold start at 0,0, NaN altitude); the topics in
    ``zero_stamps`` get zero header stamps (their bag log times stay right); ``bad_static_tf`` adds a transform
    with a NaN translation and one with a zero quaternion to /tf_static; with ``bad_tf_every`` n, every n-th /tf
    message gets a NaN translation (odd ones) or a zero quaternion (even ones) instead of its transform; with
    ``frozen_camera`` n, the camera re-sends each image n times (image i carries the pixels of image i - i % n,
    byte for byte, with its own stamp: a driver re-sending its last buffer); the images ``lost_images`` (indices)
    are not in the bag (a transport that lost them: their CameraInfo, pose and depth stay), the images
    ``unreadable_images`` carry half their pixel bytes (undecodable, stamped as the others). ``T_map_enu``: the
    robot's ``map`` (its /tf, /odom and /ground_truth/pose) placed there against the GPS's ENU frame about the datum
    (a SLAM map, say); the truth returned stays in ENU. ``odom_in_tf``: /tf is ``map -> odom`` (the identity)
    ``-> base_link`` (REP-105), so the odometry's frame is in the TF tree. ``static_tf`` False: no /tf_static (a bag
    played from its middle, which does not send it again).
    """
    from pose2rgbd.bags import BagWriter
    from pose2rgbd.messages import (
        camera_info,
        compressed_image,
        default_factory,
        image,
        navsatfix,
        odometry,
        pose_stamped,
        tf_message,
        transform_stamped,
    )
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint, render_ground_plane

    f = default_factory()
    ck = make_ground_plane_checkpoint(size, hfov_deg=hfov_deg)
    cam = ck.camera
    assert cam is not None

    def ns(t: float) -> int:
        return t0_ns + round(t * 1e9)

    def hs(t: float, topic: str) -> int:  # header stamp
        return 0 if topic in zero_stamps else ns(t)

    t_cam = np.arange(FIRST_CAMERA_S, duration_s, 1.0 / camera_hz)
    T_cam = T_world_cam(t_cam)
    out: dict[str, Any] = render_ground_plane(ck, T_cam)
    events: list[tuple[int, int, str, object]] = []  # (stamp, order, topic, msg)
    static = [transform_stamped(f, ns(0.0), "base_link", "camera_optical_frame", T_BASE_CAM)]
    if bad_static_tf:
        nan_t = transform_stamped(f, ns(0.0), "base_link", "gps_link", np.eye(4))
        nan_t.transform.translation.x = float("nan")
        zero_q = transform_stamped(f, ns(0.0), "base_link", "imu_link", np.eye(4))
        zero_q.transform.rotation.w = 0.0
        static += [nan_t, zero_q]
    if static_tf:
        events.append((ns(0.0), 0, "/tf_static", tf_message(f, static)))
    M = np.eye(4) if T_map_enu is None else np.asarray(T_map_enu, np.float64)
    for k, t in enumerate(np.arange(0.0, duration_s + 1e-9, 0.02)):  # 50 Hz
        T = M @ T_world_base(t)[0]
        ts = transform_stamped(f, hs(t, "/tf"), "odom" if odom_in_tf else "map", "base_link", T)
        if bad_tf_every and k % bad_tf_every == bad_tf_every - 1:
            if (k // bad_tf_every) % 2:
                ts.transform.translation.x = float("nan")
            else:
                ts.transform.rotation.x = ts.transform.rotation.y = ts.transform.rotation.z = 0.0
                ts.transform.rotation.w = 0.0
        links = [transform_stamped(f, hs(t, "/tf"), "map", "odom", np.eye(4)), ts] if odom_in_tf else [ts]
        events.append((ns(t), 1, "/tf", tf_message(f, links)))
        events.append((ns(t), 2, "/odom", odometry(f, hs(t, "/odom"), "odom", "base_link", T)))
    for i, t in enumerate(np.arange(0.0, duration_s + 1e-9, 0.1)):  # 10 Hz
        p = T_world_base(t)[0, :3, 3]
        lla = tuple(float(v) for v in DATUM.from_enu(p))
        lat, lon, alt = fix_fault(i, *lla) if fix_fault is not None else lla
        events.append(
            (ns(t), 3, "/gps/fix", navsatfix(f, hs(t, "/gps/fix"), "gps", lat, lon, alt, covariance=[1e-4] * 3))
        )
    image_topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    for i, t in enumerate(t_cam):
        s = ns(t)
        rgb = out["rgb"][i - i % frozen_camera if frozen_camera else i]
        img = (
            compressed_image(f, hs(t, image_topic), "camera_optical_frame", rgb, "png")
            if compressed
            else image(f, hs(t, image_topic), "camera_optical_frame", rgb, "rgb8")
        )
        if i in unreadable_images:
            img.data = img.data[: len(img.data) // 2]
        if i not in lost_images:
            events.append((s, 4, image_topic, img))
        info = camera_info(f, hs(t, "/camera/camera_info"), "camera_optical_frame", cam)
        for name, v in (camera_info_fields or {}).items():
            setattr(info, name, v)
        events.append((s, 5, "/camera/camera_info", info))
        events.append((s, 6, "/ground_truth/pose", pose_stamped(f, s, "map", M @ T_cam[i])))
        events.append((s, 7, "/ground_truth/depth", image(f, s, "camera_optical_frame", out["depth"][i], "32FC1")))
    events.sort(key=lambda e: (e[0], e[1]))
    with BagWriter(path, storage=storage) as w:
        w.add_topic("/tf_static", "tf2_msgs/msg/TFMessage", qos="transient_local")
        for stamp, _, topic, msg in events:
            w.write(topic, stamp, msg)
    return FlightTruth(np.array([ns(t) for t in t_cam], dtype=np.int64), T_cam, DATUM)


def write_image_bag(
    path: str | Path,
    images: list[Any],
    *,
    topic: str = "/camera/image_raw",
    compressed: bool = False,
    frame_id: str = "camera_optical_frame",
    camera_hz: float = 10.0,
    t0_ns: int = T0_NS,
    storage: str = "mcap",
    camera: Any = None,
) -> np.ndarray:
    """A bag of camera images only (the localize node's input): each entry of ``images`` is a uint8 RGB array
    (encoded as rgb8, or jpeg with ``compressed``) or a ready Image / CompressedImage message of the bag's
    typestore (e.g. a deliberately broken one; its stamp is set here). ``camera`` (a PinholeCamera): a CameraInfo
    beside each image on ``<the image topic's namespace>/camera_info``. Returns the image stamps (ns)."""
    from pose2rgbd import messages as M
    from pose2rgbd.bags import BagWriter

    stamps = t0_ns + (np.arange(len(images)) * 1e9 / camera_hz).astype(np.int64)
    mt = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with BagWriter(path, storage=storage) as w:
        w.add_topic(topic, mt, qos="sensor_data")
        info_topic = topic.rsplit("/", 1)[0] + "/camera_info"
        for stamp, img in zip(stamps, images):
            s = int(stamp)
            if isinstance(img, np.ndarray):
                msg = (
                    M.compressed_image(w.factory, s, frame_id, img)
                    if compressed
                    else M.image(w.factory, s, frame_id, img, "rgb8")
                )
            else:
                msg = img
                msg.header = M.header(w.factory, s, frame_id)
            w.write(topic, s, msg)
            if camera is not None:
                w.write(info_topic, s, M.camera_info(w.factory, s, frame_id, camera))
    return stamps
