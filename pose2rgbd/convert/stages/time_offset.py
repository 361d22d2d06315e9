"""Algorithm 1 as a stage of the conversion pipeline: a recording's streams -> the pose of every kept frame.

1. the GPS fixes are cleaned (NO_FIX, NaN, impossible jumps dropped and counted) and put in local ENU about the
   datum (the first fix kept by the consensus gate, or given); GPS speed is reported, or the local least-squares
   slope of the ENU track;
2. the time offset ``d`` (a GPS fix stamped ``t`` was measured at camera time ``t - d``) from
   :func:`pose2rgbd.sync.correlate_signals` of the optical-flow magnitude against the GPS speed, or the user's
   value; a ``weak`` verdict uses the user's ``time_offset_s`` or 0 and says so;
3. frames outside the corrected GPS coverage (or in GPS gaps) are dropped: the maximal intersection;
4. ``T_world_cam`` (optical frame, ENU map) from the interpolated positions, the orientation source and the mount.

The sources (:mod:`pose2rgbd.convert.sources.bag`, :mod:`pose2rgbd.convert.sources.video`) read the
:class:`Streams`; :func:`plan_poses` makes the :class:`PosePlan` they write.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.config import to_dict
from pose2rgbd.convert.config import ConvertConfig, GpsSettings
from pose2rgbd.convert.stages.orientation import (
    ODOM_ENU_NOTE,
    OrientationTrack,
    align_yaw_to_course,
    course_orientation,
)
from pose2rgbd.errors import SyncError
from pose2rgbd.geometry import Datum, PinholeCamera, make_T
from pose2rgbd.sync.estimator import SyncResult, correlate_signals, speed_from_positions

if TYPE_CHECKING:
    from pose2rgbd.convert.gps_logs import GpsTrack

log = logging.getLogger(__name__)


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
    orientation: OrientationTrack | None = None  # the source's own (IMU, odometry, TF, attitude log), if any
    attitude_follows_gps: bool = False
    has_depth: bool = False
    input_kind: str = ""
    input_path: str = ""
    frames_unreadable: int = 0
    frames_lost: dict[str, int] = field(default_factory=dict)  # not in frame_t, by reason (e.g. a truncated video)
    extra_assumptions: list[str] = field(default_factory=list)
    topics: dict[str, str | None] | None = None  # a bag's topic choice, for the report
    source_cameras: list[dict[str, object]] = field(default_factory=list)  # a lens undistorted on reading
    lens: dict[str, object] | None = None  # how that lens was calibrated (the report's summary.json "lens")
    camera_frame: str = ""  # the images' frame id (a bag's header.frame_id; "" none: the dataset's default)
    # the GPS receiver's own statement of its error (a bag's NavSatFix covariance: sync.gps.reported_pose_error),
    # the manifest's pose_error; {} where the GPS states none
    pose_error: dict[str, object] = field(default_factory=dict)


@dataclass
class PosePlan:
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
    orientation_tf_frame: str = ""  # the frame of a TF / odometry track taken as it is (OrientationTrack.tf_frame)


# Orientation sources whose stamps are on the camera clock (an attitude log shares the GPS clock, whose offset
# is what is being estimated; the GPS course is derived from the fixes themselves).
_CAMERA_CLOCK_SOURCES = ("imu", "odom", "tf")


def _turning_frames(s: Streams, cfg: ConvertConfig) -> tuple[np.ndarray, str]:
    """Frames whose flow was measured while the camera turned faster than ``cfg.sync.max_rotation_dps``.

    Rotation moves every pixel whatever the speed (a 30 deg/s turn in place gives more flow than a 10 m/s
    cruise at 50 m), so those samples are left out of the correlation (they stay in the dataset). Needs an
    orientation on the camera clock; returns ``(mask over frames, note for the report)``.
    """
    none = np.zeros(s.frame_t.size, bool)
    lim = cfg.sync.max_rotation_dps
    track = s.orientation
    if lim <= 0 or track is None or cfg.orientation in ("course", "attitude"):
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


def gps_in_enu(track: GpsTrack, cfg: GpsSettings) -> tuple[GpsTrack, Datum, np.ndarray]:
    """``(kept fixes, datum, their ENU positions (N, 3))``: the fixes the consensus gate keeps (the dropped ones
    counted in a warning), about the configured datum or the first kept fix (a bad first fix cannot become the
    origin)."""
    from pose2rgbd.convert.gps_logs import describe_dropped, gate_fixes

    kept = gate_fixes(track, max_speed_mps=cfg.max_speed_mps, tolerance_m=cfg.jump_tolerance_m)
    if line := describe_dropped(kept.dropped, len(track)):
        log.warning("%s: %s", track.source, line)
    datum = cfg.datum_obj() or Datum(float(kept.lat[0]), float(kept.lon[0]), float(kept.alt[0]))
    return kept, datum, datum.to_enu(kept.lat, kept.lon, kept.alt).reshape(-1, 3)


def plan_poses(s: Streams, cfg: ConvertConfig) -> PosePlan:
    from pose2rgbd.convert.gps_logs import GpsTrack

    if s.frame_t.size == 0:
        raise SyncError(f"{s.input_path}: no readable frames")
    alt = cfg.gps.altitudes(s.alt)
    track = GpsTrack(s.gps_t, s.lat, s.lon, alt, s.gps_speed, s.gps_status, s.gps_source)
    kept, datum, enu = gps_in_enu(track, cfg)
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
            n = s.frame_t.size
            raise SyncError(
                f"{s.input_path}: {n} frame{'' if n == 1 else 's'}, {int(good.sum())} with an optical-flow value: "
                "too few to estimate the camera-GPS time offset (at least 3 needed); give the offset instead: "
                "--time-offset S --no-estimate (S in seconds; 0 where the camera's and the GPS's clocks agree)"
            )
        from pose2rgbd.sync.flow import flow_times

        tflow = flow_times(s.frame_t, cfg.sync.flow.frame_step)
        turning, rot_note = _turning_frames(s, cfg)
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
    if cfg.orientation != "course" and (o := s.orientation) is not None:
        if o.source == "attitude" and s.attitude_follows_gps:
            o = OrientationTrack(o.t_s - offset, o.R, o.source, o.assumption)
        if o.source == "odom" and not cfg.align_odom_yaw:
            o = OrientationTrack(o.t_s, o.R, o.source, o.assumption + ODOM_ENU_NOTE, tf_frame=o.tf_frame)
        elif o.source in ("odom", "tf") and cfg.align_odom_yaw:  # tf: its assumption already names the frame
            fast = speed >= cfg.min_course_speed_mps
            yaw0 = align_yaw_to_course(o, course, fast)
            Rz = Rotation.from_euler("z", yaw0).as_matrix()
            what = "odometry yaw" if o.source == "odom" else "then its yaw (only its z axis taken as up)"
            o = OrientationTrack(o.t_s, Rz @ o.R, o.source,
                                 f"{o.assumption}; {what} aligned to the GPS course "
                                 f"({math.degrees(yaw0):+.1f} deg)")  # fmt: skip
        orient = o
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
    assumptions.append(
        "GPS antenna position = the base frame's origin (the antenna's own offset from it, e.g. a "
        "/tf_static base_link -> gps_link, is not applied); the camera is placed from it by the mount"
    )
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
                   "dropped": frame_drops, "span_s": [float(np.nanmin(ft)), float(np.nanmax(ft))]},
        "fixes": {"total": len(track), "kept": len(kept), "dropped": kept.dropped,
                  "span_s": [float(gps_t_corr[0]), float(gps_t_corr[-1])]},
        "datum": {"lat_deg": datum.lat_deg, "lon_deg": datum.lon_deg, "alt_m": datum.alt_m},
        "orientation_source": orient.source,
        "assumptions": assumptions,
        "depth": "metric (ground-truth depth topic)" if s.has_depth else "none",
        **({"topics": s.topics} if s.topics is not None else {}),
        "config": to_dict(cfg),
    }  # fmt: skip
    return PosePlan(keep, T_wc, lla, datum, sync, summary, enu, gps_t_corr, speed, dropped_enu, flow_masked,
                    orient.tf_frame)  # fmt: skip
