"""Orientation of the body over time, from whichever source a recording has (the time-offset stage's input):
an IMU, odometry or TF track read by a source, an attitude log, or the GPS course."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from pose2rgbd.sync.estimator import velocity_from_positions

# every OrientationTrack.assumption starts with it: the conversion's assumptions list names the orientation by it
ORIENTATION_PREFIX = "orientation from "
# what an odometry track's assumption adds when its frame is taken as ENU (a conversion into a TF frame may replace it)
ODOM_ENU_NOTE = " (its frame assumed ENU-aligned)"

_R_ENU_NED = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
_R_FRD_FLU = np.diag([1.0, -1.0, -1.0])


@dataclass
class OrientationTrack:
    """``R_world_body`` at times ``t_s`` (seconds on the camera clock) and how it was obtained. ``tf_frame``: the TF
    frame the rotations are in, for a TF or odometry track taken as it is, not aligned to the GPS course ("": ENU,
    or unknown)."""

    t_s: np.ndarray
    R: np.ndarray  # (N, 3, 3)
    source: str
    assumption: str
    tf_frame: str = ""

    def at(self, t: np.ndarray) -> np.ndarray:
        if self.t_s.size == 1:
            return np.repeat(self.R[:1], len(t), 0)
        tq = np.clip(t, self.t_s[0], self.t_s[-1])
        R: np.ndarray = Slerp(self.t_s, Rotation.from_matrix(self.R))(tq).as_matrix()
        return R

    def rotation_rate_dps(self, t_a: np.ndarray, t_b: np.ndarray) -> np.ndarray:
        """Mean turn rate (deg/s) of the body between ``t_a`` and ``t_b``: the angle of ``R(t_a)^T R(t_b)``
        over the time. A fixed camera mount turns with the body by the same angle. NaN outside the track
        (plus one sample period) or for ``t_b <= t_a``."""
        t_a, t_b = np.asarray(t_a, dtype=np.float64), np.asarray(t_b, dtype=np.float64)
        out = np.full(t_a.shape, np.nan)
        if self.t_s.size < 2:
            return out
        pad = float(np.median(np.diff(self.t_s)))
        ok = (t_b > t_a) & (t_a >= self.t_s[0] - pad) & (t_b <= self.t_s[-1] + pad)
        if ok.any():
            Ra = Rotation.from_matrix(self.at(t_a[ok]))
            Rb = Rotation.from_matrix(self.at(t_b[ok]))
            out[ok] = np.degrees((Ra.inv() * Rb).magnitude()) / (t_b[ok] - t_a[ok])
        return out


def course_orientation(t: np.ndarray, enu: np.ndarray, min_speed: float, window_s: float) -> OrientationTrack:
    """Yaw from the GPS course (ENU velocity direction), roll = pitch = 0; held while slower than ``min_speed``."""
    v = velocity_from_positions(t, enu, window_s)
    sp = np.hypot(v[:, 0], v[:, 1])
    yaw = np.arctan2(v[:, 1], v[:, 0])
    fast = sp >= min_speed
    if fast.any():
        idx = np.flatnonzero(fast)
        hold = idx[np.clip(np.searchsorted(idx, np.arange(t.size), "right") - 1, 0, idx.size - 1)]
        yaw = yaw[hold]
    else:
        yaw = np.zeros(t.size)
    yaw = np.unwrap(yaw)
    R = Rotation.from_euler("z", yaw[:, None]).as_matrix()
    return OrientationTrack(
        t, R, "course",
        "orientation from the GPS course: yaw = direction of travel, roll = pitch = 0 (the camera is assumed "
        "to look along the direction of travel, turned by the configured mount)",
    )  # fmt: skip


def attitude_orientation(t: np.ndarray, rpy: np.ndarray, frame: str) -> OrientationTrack:
    R = Rotation.from_euler("ZYX", rpy[:, ::-1]).as_matrix()  # R = Rz(yaw) Ry(pitch) Rx(roll)
    if frame == "ned":
        R = _R_ENU_NED @ R @ _R_FRD_FLU
    return OrientationTrack(
        t, R, "attitude", f"orientation from the attitude log ({frame}); camera mount as configured"
    )


def align_yaw_to_course(track: OrientationTrack, course: OrientationTrack, speed_ok: np.ndarray) -> float:
    """Yaw offset (rad) that turns ``track`` (odometry frame) into ENU, from the GPS course while moving."""
    if not speed_ok.any():
        return 0.0
    yo = Rotation.from_matrix(track.at(course.t_s[speed_ok])).as_euler("ZYX")[:, 0]
    yc = Rotation.from_matrix(course.R[speed_ok]).as_euler("ZYX")[:, 0]
    d = yc - yo
    return float(np.arctan2(np.sin(d).mean(), np.cos(d).mean()))


def replaced_orientation(assumptions: Sequence[str], written: str, gps_frames: int, frames: int) -> list[str]:
    """The conversion's ``assumptions`` once the poses written are no longer the GPS poses (structure from motion
    aligned to the GPS, or the video's own trajectory; ``written`` says which): the orientation the GPS poses took
    (``orientation from ...``, e.g. the GPS course with roll = pitch = 0) is said to have been replaced, and kept only
    on the ``gps_frames`` of ``frames`` that keep the GPS poses (all of them: nothing replaced, the list as it is).
    The other assumptions are left as they are."""
    out = []
    for a in assumptions:
        if not a.startswith(ORIENTATION_PREFIX) or gps_frames >= frames:
            out.append(a)
            continue
        first = a.removeprefix(ORIENTATION_PREFIX)
        if gps_frames == 0:
            out.append(f"orientation of the poses written: {written}, on all {frames} frames; the orientation from "
                       f"{first} gave only the GPS poses the frames were first converted with, none of which is "
                       "written")  # fmt: skip
        else:
            out.append(f"orientation of the poses written: {written}, on {frames - gps_frames} of {frames} frames; "
                       f"the other {gps_frames} keep the GPS poses (their source has no such pose), whose orientation "
                       f"is from {first}")  # fmt: skip
    return out
