"""Rosbag / video + GPS -> format-v1 dataset, with Algorithm 1 time synchronization (docs/convert.md).

Pipeline (both inputs):

1. pass 1 reads frame stamps and the per-frame optical-flow magnitude (:mod:`pose2rgbd.sync.flow`), the GPS
   fixes (cleaned: NO_FIX, NaN, impossible jumps dropped and counted) and an orientation source;
2. GPS -> local ENU about the datum (the first fix kept by the consensus gate, or given); GPS speed
   (reported, or a local least-squares slope of the ENU track);
3. the time offset ``d`` (GPS stamp ``t`` was measured at camera time ``t - d``) from
   :func:`pose2rgbd.sync.correlate_signals`, or the user's value; a ``weak`` verdict uses the user's
   ``time_offset_s`` or 0 and says so;
4. frames outside the corrected GPS coverage (or in GPS gaps) are dropped: the maximal intersection;
5. pass 2 writes the kept frames with ``T_world_cam`` (optical frame, ENU map) through an atomic
   :class:`~pose2rgbd.dataset.DatasetWriter`, plus ``report/`` (plots and ``summary.json``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from pose2rgbd.config import (
    DATUM_HELP,
    SIZE_HELP,
    help_field,
    parse_size,
    to_dict,
)
from pose2rgbd.errors import BagError, ConfigError, SyncError
from pose2rgbd.geometry import Datum, PinholeCamera, make_T
from pose2rgbd.geometry.geodesy import datum_from_text
from pose2rgbd.geometry.mount import CameraMount
from pose2rgbd.sync.estimator import (
    SyncConfig,
    SyncResult,
    correlate_signals,
    speed_from_positions,
    velocity_from_positions,
)
from pose2rgbd.sync.flow import FlowMagnitude
from pose2rgbd.sync.gps import GpsConfig, check_gate

log = logging.getLogger(__name__)

ORIENTATION_SOURCES = ("auto", "imu", "odom", "tf", "attitude", "course")


@dataclass
class ConvertTopics:
    """Bag topics (the same keys as the record node's ``topics``); empty: found by message type."""

    image: str = help_field("", "camera images (Image or CompressedImage); empty = by type")
    camera_info: str = help_field("", "CameraInfo; empty = by type")
    gps: str = help_field("", "NavSatFix; empty = by type")
    odom: str = help_field("", "Odometry; empty = by type (optional)")
    imu: str = help_field("", "Imu; empty = by type (optional)")
    depth: str = help_field("/ground_truth/depth", "32FC1 depth included as metric depth if present")


@dataclass
class ConvertOutput:
    """The dataset written (the same keys as the record node's ``output``)."""

    name: str = help_field("", "dataset name in its manifest (default: the input file stem)")
    rgb_encoding: str = help_field("png", "image files: 'png' or 'jpg'")
    keep_repeats: bool = help_field(
        False, "keep frames whose pixels are identical to the previous frame's (a repeating camera stream); "
        "default: drop them, counted in the report"
    )  # fmt: skip


# keys of older versions, refused with the key to write instead (pose2rgbd.config.from_dict reads this)
CONVERT_RENAMED_KEYS = {
    "image_topic": "topics.image",
    "info_topic": "topics.camera_info",
    "gps_topic": "topics.gps",
    "odom_topic": "topics.odom",
    "imu_topic": "topics.imu",
    "depth_topic": "topics.depth",
    "rgb_encoding": "output.rgb_encoding",
    "name": "output.name",
}


@dataclass
class ConvertConfig:
    """Bag / video + GPS -> dataset conversion."""

    size: str = help_field("", SIZE_HELP)
    time_offset_s: float | None = help_field(
        None, "GPS time offset d in s (fix stamped t was measured at camera time t - d); used when "
        "estimate_offset is false, and as the fallback when the estimate is too weak (else 0)"
    )  # fmt: skip
    estimate_offset: bool = help_field(True, "estimate the offset from flow vs GPS speed (Algorithm 1)")
    datum: str = help_field("", DATUM_HELP)
    max_speed_mps: float = help_field(
        60.0, "fixes implying a faster jump from the last kept fix are dropped (judged from a consensus anchor)"
    )
    gps: GpsConfig = field(default_factory=GpsConfig, metadata={"help": "GPS altitude (as the record node's)"})
    jump_tolerance_m: float = help_field(10.0, "GPS noise allowance (m) subtracted from a jump before the speed test")
    speed_3d: bool = help_field(True, "GPS speed from positions includes the vertical component (climbs)")
    speed_window_s: float = help_field(
        2.0, "window of the local line fit giving GPS speed from positions (s); longer averages more GPS noise "
        "but blurs speed changes and dips the speed in turns (docs/convert.md)"
    )  # fmt: skip
    use_reported_speed: bool = help_field(True, "use the speed column of a GPS log when present")
    orientation: str = help_field(
        "auto", "orientation source: auto (the first present of: bags imu > odom > tf, videos attitude; else "
        "the GPS course), imu, odom, tf (the /tf tree from map/world/earth/odom to the body frame), attitude or course"
    )  # fmt: skip
    mount: CameraMount = field(default_factory=CameraMount, metadata={"help": "camera mount (as the record node's)"})
    align_odom_yaw: bool = help_field(
        False, "rotate the odometry or TF world frame about z so its heading matches the GPS course (for wheel "
        "odometry whose frame starts at yaw 0, or a SLAM map with arbitrary yaw; wrong for vehicles that do not "
        "face their direction of travel)"
    )  # fmt: skip
    min_course_speed_mps: float = help_field(0.7, "below this GPS speed the course (heading) is held")
    hfov_deg: float = help_field(118.0, "assumed horizontal field of view of a video (no CameraInfo)")
    topics: ConvertTopics = field(default_factory=ConvertTopics, metadata={"help": "bag topics"})
    output: ConvertOutput = field(default_factory=ConvertOutput, metadata={"help": "the dataset written"})
    max_frame_gap_s: float = help_field(1.0, "GPS gaps longer than this drop the frames inside them")
    sync: SyncConfig = field(default_factory=SyncConfig, metadata={"help": "time-offset estimator"})

    RENAMED_KEYS: ClassVar[dict[str, str]] = CONVERT_RENAMED_KEYS

    def __post_init__(self) -> None:
        if isinstance(self.sync, dict):
            from pose2rgbd.config import from_dict

            self.sync = from_dict(SyncConfig, self.sync, where="sync")
        if isinstance(self.gps, dict):
            from pose2rgbd.config import from_dict

            self.gps = from_dict(GpsConfig, self.gps, where="gps")
        if self.orientation not in ORIENTATION_SOURCES:
            raise ConfigError(f"orientation must be one of {ORIENTATION_SOURCES}, got {self.orientation!r}")
        check_gate(self.max_speed_mps, self.jump_tolerance_m)  # the GPS gate's own rule (pose2rgbd.sync.gps)
        if self.output.rgb_encoding not in ("png", "jpg"):
            raise ConfigError(f"output.rgb_encoding must be 'png' or 'jpg', got {self.output.rgb_encoding!r}")
        if self.size:
            self.size_wh()
        if self.datum:
            self.datum_obj()

    def size_wh(self) -> tuple[int, int] | None:
        return parse_size(self.size, "size")

    def datum_obj(self) -> Datum | None:
        return datum_from_text(self.datum)


# ----------------------------------------------------------------------------------------------------------
# orientation helpers

_R_ENU_NED = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
_R_FRD_FLU = np.diag([1.0, -1.0, -1.0])


@dataclass
class OrientationTrack:
    """``R_world_body`` at times ``t_s`` (seconds on the camera clock) and how it was obtained."""

    t_s: np.ndarray
    R: np.ndarray  # (N, 3, 3)
    source: str
    assumption: str

    def at(self, t: np.ndarray) -> np.ndarray:
        if self.t_s.size == 1:
            return np.repeat(self.R[:1], len(t), 0)
        tq = np.clip(t, self.t_s[0], self.t_s[-1])
        return Slerp(self.t_s, Rotation.from_matrix(self.R))(tq).as_matrix()

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


# ----------------------------------------------------------------------------------------------------------
# shared assembly


@dataclass
class Streams:
    """Everything pass 1 collected. Times are seconds relative to ``t0_ns`` on the camera clock (GPS: its own)."""

    t0_ns: int
    frame_t: np.ndarray
    flow: np.ndarray
    gps_t: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    gps_speed: np.ndarray  # reported speed or NaN
    gps_status: np.ndarray
    gps_source: str
    camera: PinholeCamera
    T_body_cam: np.ndarray
    mount_source: str
    orientation: Callable[[np.ndarray, np.ndarray], OrientationTrack] | None = None  # (gps_t_corr, enu) -> track
    attitude_follows_gps: bool = False
    has_depth: bool = False
    input_kind: str = ""
    input_path: str = ""
    frames_unreadable: int = 0
    frames_lost: dict[str, int] = field(default_factory=dict)  # not in frame_t, by reason (e.g. a truncated video)
    extra_assumptions: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What pass 2 writes, and the report."""

    keep: np.ndarray  # (N,) bool over frames
    T_world_cam: np.ndarray  # (N, 4, 4) valid where keep
    lla: np.ndarray  # (N, 3)
    datum: Datum
    sync: SyncResult | None
    summary: dict[str, Any]
    enu: np.ndarray
    gps_t_corr: np.ndarray
    gps_speed: np.ndarray
    dropped_fixes_enu: np.ndarray
    flow_masked: np.ndarray  # (N,) bool: flow samples left out of the time-offset estimate (camera turning)


# Orientation sources whose stamps are on the camera clock (an attitude log shares the GPS clock, whose offset
# is what is being estimated; the GPS course is derived from the fixes themselves).
_CAMERA_CLOCK_SOURCES = ("imu", "odom", "tf")


def _turning_frames(s: Streams, cfg: ConvertConfig, gps_t: np.ndarray, enu: np.ndarray) -> tuple[np.ndarray, str]:
    """Frames whose flow was measured while the camera turned faster than ``cfg.sync.max_rotation_dps``.

    Rotation moves every pixel whatever the speed (a 30 deg/s turn in place gives more flow than a 10 m/s
    cruise at 50 m), so those samples are left out of the correlation (they stay in the dataset). Needs an
    orientation on the camera clock; returns ``(mask over frames, note for the report)``.
    """
    none = np.zeros(s.frame_t.size, bool)
    lim = cfg.sync.max_rotation_dps
    if lim <= 0 or s.orientation is None or cfg.orientation in ("course", "attitude"):
        return none, ""
    try:
        track = s.orientation(gps_t, enu)
    except (BagError, SyncError) as e:
        log.warning("no rotation mask for the time-offset estimate (%s)", e)
        return none, ""
    if track.source not in _CAMERA_CLOCK_SOURCES:
        return none, ""
    k = cfg.sync.flow.frame_step
    t_prev = np.full(s.frame_t.size, np.nan)
    t_prev[k:] = s.frame_t[:-k] if k < s.frame_t.size else []
    rate = track.rotation_rate_dps(t_prev, s.frame_t)
    turning = np.isfinite(rate) & (rate > lim)
    note = (f"time offset: {int(turning.sum())} of {s.frame_t.size} flow samples left out, taken while the camera "
            f"turned faster than {lim:g} deg/s ({track.source} orientation)")  # fmt: skip
    return turning, note


def plan_poses(s: Streams, cfg: ConvertConfig) -> Plan:
    from pose2rgbd.convert.logs import GpsTrack, describe_dropped, gate_fixes

    if s.frame_t.size == 0:
        raise SyncError(f"{s.input_path}: no readable frames")
    alt = cfg.gps.altitudes(s.alt)
    track = GpsTrack(s.gps_t, s.lat, s.lon, alt, s.gps_speed, s.gps_status, s.gps_source)
    kept = gate_fixes(track, max_speed_mps=cfg.max_speed_mps, tolerance_m=cfg.jump_tolerance_m)
    if line := describe_dropped(kept.dropped, len(track)):
        log.warning("%s: %s", s.gps_source, line)
    datum = cfg.datum_obj()
    if datum is None:  # the first fix the consensus gate kept (a bad first fix cannot become the origin)
        datum = Datum(float(kept.lat[0]), float(kept.lon[0]), float(kept.alt[0]))
    enu = datum.to_enu(kept.lat, kept.lon, kept.alt).reshape(-1, 3)
    all_enu_ok = np.isfinite(s.lat) & np.isfinite(s.lon) & np.isfinite(alt) & (np.abs(s.lat) <= 90)
    dropped_enu = np.zeros((0, 3))
    if (~np.isin(s.gps_t, kept.t_s) & all_enu_ok).any():
        m = ~np.isin(s.gps_t, kept.t_s) & all_enu_ok & (np.abs(s.lon) <= 180)
        dropped_enu = datum.to_enu(s.lat[m], s.lon[m], alt[m])
    reported = cfg.use_reported_speed and np.isfinite(kept.speed).mean() > 0.9
    if reported:
        ok = np.isfinite(kept.speed)
        speed = np.interp(kept.t_s, kept.t_s[ok], kept.speed[ok])
        speed_note = "GPS speed: the log's speed column"
    else:
        speed = speed_from_positions(kept.t_s, enu, cfg.speed_window_s, horizontal=not cfg.speed_3d)
        speed_note = (f"GPS speed: local line fit over {cfg.speed_window_s} s of ENU positions "
                      f"({'3-D' if cfg.speed_3d else 'horizontal'})")  # fmt: skip
    # --- time offset
    sync: SyncResult | None = None
    user = cfg.time_offset_s
    assumptions_sync: list[str] = []
    flow_masked = np.zeros(s.frame_t.size, bool)
    if cfg.estimate_offset:
        good = np.isfinite(s.flow)
        if good.sum() < 3:
            raise SyncError(f"{s.input_path}: fewer than 3 frames with an optical-flow value; cannot synchronize")
        from pose2rgbd.sync.flow import flow_times

        tflow = flow_times(s.frame_t, cfg.sync.flow.frame_step)
        turning, rot_note = _turning_frames(s, cfg, kept.t_s, enu)
        if rot_note:
            assumptions_sync.append(rot_note)
        sync = correlate_signals(tflow[good], s.flow[good], kept.t_s, speed, cfg.sync, fallback_offset_s=user,
                                 ref_valid=~turning[good])  # fmt: skip
        flow_masked = turning
        offset = sync.offset_s
        if sync.verdict != "ok":
            log.warning(
                "time offset: the signal is too weak to decide (%s); using %s = %+.3f s",
                "; ".join(sync.reasons), "the given --time-offset" if user is not None else "0", offset,
            )  # fmt: skip
        else:
            log.info("time offset: %s", sync.describe())
    else:
        offset = 0.0 if user is None else float(user)
    gps_t_corr = kept.t_s - offset
    # --- positions at frame times, maximal intersection
    ft = s.frame_t
    reasons = np.full(ft.size, "", dtype=object)
    reasons[~np.isfinite(ft)] = "bad stamp"
    outside = (ft < gps_t_corr[0]) | (ft > gps_t_corr[-1])
    reasons[(reasons == "") & outside] = "outside GPS coverage (after the time offset)"
    j = np.clip(np.searchsorted(gps_t_corr, ft), 1, gps_t_corr.size - 1)
    gap = (gps_t_corr[j] - gps_t_corr[j - 1]) > cfg.max_frame_gap_s
    reasons[(reasons == "") & gap] = f"inside a GPS gap > {cfg.max_frame_gap_s} s"
    keep = reasons == ""
    pos = np.stack([np.interp(ft, gps_t_corr, enu[:, k]) for k in range(3)], -1)
    # --- orientation
    course = course_orientation(gps_t_corr, enu, cfg.min_course_speed_mps, cfg.speed_window_s)
    orient = course
    if cfg.orientation != "course" and s.orientation is not None:
        try:
            o = s.orientation(gps_t_corr, enu)
            if o.source == "attitude" and s.attitude_follows_gps:
                o = OrientationTrack(o.t_s - offset, o.R, o.source, o.assumption)
            if o.source == "odom" and not cfg.align_odom_yaw:
                o = OrientationTrack(o.t_s, o.R, o.source, o.assumption + " (its frame assumed ENU-aligned)")
            elif o.source in ("odom", "tf") and cfg.align_odom_yaw:  # tf: its assumption already names the frame
                fast = speed >= cfg.min_course_speed_mps
                yaw0 = align_yaw_to_course(o, course, fast)
                Rz = Rotation.from_euler("z", yaw0).as_matrix()
                what = "odometry yaw" if o.source == "odom" else "then its yaw (only its z axis taken as up)"
                o = OrientationTrack(o.t_s, Rz @ o.R, o.source,
                                     f"{o.assumption}; {what} aligned to the GPS course "
                                     f"({math.degrees(yaw0):+.1f} deg)")  # fmt: skip
            orient = o
        except (BagError, SyncError) as e:
            if cfg.orientation != "auto":
                raise
            log.warning("orientation source unusable (%s); using the GPS course", e)
    if cfg.orientation not in ("auto", "course") and orient.source != cfg.orientation:
        raise SyncError(f"orientation source {cfg.orientation!r} requested but the input has none")
    R_wb = orient.at(ft)
    T_wb = make_T(R_wb, pos)
    T_wc = T_wb @ s.T_body_cam
    lat, lon, alt = datum.from_enu(pos)
    lla = np.stack([lat, lon, alt], -1)
    n_keep = int(keep.sum())
    if n_keep == 0:
        span_f = (float(np.nanmin(ft)), float(np.nanmax(ft)))
        raise SyncError(
            f"{s.input_path}: no frame lies within the GPS coverage: frames {span_f[0]:.2f}..{span_f[1]:.2f} s, "
            f"GPS (offset {offset:+.2f} s applied) {gps_t_corr[0]:.2f}..{gps_t_corr[-1]:.2f} s"
        )
    frame_drops: dict[str, int] = {}
    for r in reasons[~keep]:
        frame_drops[str(r)] = frame_drops.get(str(r), 0) + 1
    if s.frames_unreadable:
        frame_drops["unreadable image"] = s.frames_unreadable
    frame_drops.update(s.frames_lost)
    assumptions = list(s.extra_assumptions)
    assumptions.append(orient.assumption)
    assumptions.append(f"camera mount: {s.mount_source}")
    assumptions.append(speed_note)
    assumptions.extend(assumptions_sync)
    assumptions.append("GPS antenna position = camera position (no lever arm)")
    summary: dict[str, Any] = {
        "input": {"kind": s.input_kind, "path": s.input_path, "gps": s.gps_source},
        "offset_definition": "a GPS fix stamped t was measured at camera time t - offset_s",
        "time_offset": {
            "offset_s": offset,
            "source": "estimated" if sync is not None and sync.ok else (
                "user (--time-offset)" if user is not None else "zero (no usable estimate)"),
            **({"estimator": sync.to_dict()} if sync is not None else {}),
        },
        "frames": {"total": int(ft.size + s.frames_unreadable + sum(s.frames_lost.values())), "kept": n_keep,
                   "dropped": frame_drops},
        "fixes": {"total": len(track), "kept": len(kept), "dropped": kept.dropped},
        "datum": {"lat_deg": datum.lat_deg, "lon_deg": datum.lon_deg, "alt_m": datum.alt_m},
        "orientation_source": orient.source,
        "assumptions": assumptions,
        "depth": "metric (ground-truth depth topic)" if s.has_depth else "none",
        "config": to_dict(cfg),
    }  # fmt: skip
    return Plan(keep, T_wc, lla, datum, sync, summary, enu, gps_t_corr, speed, dropped_enu, flow_masked)


def dump_json(path: Path, obj: Any) -> None:
    def conv(v: Any) -> Any:
        if isinstance(v, (np.floating, float)):
            return None if not np.isfinite(v) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.ndarray):
            return [conv(x) for x in v.tolist()]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    path.write_text(json.dumps(conv(obj), indent=2))


def flow_pass(
    stamps_and_images: Iterator[tuple[float, np.ndarray]],
    cfg: SyncConfig,
    total: int | None,
    progress: bool,
    desc: str,
    camera: PinholeCamera | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1 helper: flow magnitude per frame (NaN for the first). ``camera``: intrinsics of the full-size
    frames (needed by the ``derotated`` statistic)."""
    from pose2rgbd.progress import bar

    fm = FlowMagnitude(cfg.flow, camera)
    ts, vs = [], []
    for t, img in bar(stamps_and_images, total=total, desc=desc, unit="frame", progress=progress):
        ts.append(t)
        vs.append(fm.add_image(t, img))
    return np.asarray(ts, dtype=np.float64), np.asarray(vs, dtype=np.float64)
