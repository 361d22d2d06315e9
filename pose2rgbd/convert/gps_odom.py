"""GPS against wheel odometry in a camera-less bag (``pose2rgbd convert gps-odom``): the time offset of
Algorithm 1 with the odometry speed as the reference clock, and a report; no dataset is written."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.atomic import make_temp_dir, swap_in
from pose2rgbd.convert.config import GpsOdomConfig
from pose2rgbd.convert.pipeline import dump_json
from pose2rgbd.convert.sources.bag_orientation import stamp_ns
from pose2rgbd.errors import SyncError
from pose2rgbd.messages import read_navsatfix
from pose2rgbd.output_guard import GPS_ODOM_REPORT, OutputError, check_replaced_whole
from pose2rgbd.sync.estimator import SyncResult, correlate_signals, speed_from_positions

log = logging.getLogger(__name__)


@dataclass
class GpsOdomAlignment:
    result: SyncResult
    odom_t: np.ndarray
    odom_speed: np.ndarray
    gps_t: np.ndarray
    gps_speed: np.ndarray
    enu: np.ndarray
    summary: dict[str, Any]


def check_report_dir(report_dir: str | Path, bag: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse, before the bag is read, a report folder that would destroy something: one that is, holds or lies
    inside the bag, a folder of other files, a dataset's own report, the folder the command runs in, or an earlier
    report without ``overwrite`` (an empty folder is taken as it is). Returns the path made absolute."""
    rd = Path(os.path.abspath(Path(report_dir).expanduser()))
    if (rd.parent / "manifest.yaml").is_file():
        raise OutputError(
            f"{report_dir} lies in the dataset {rd.parent} (its manifest.yaml): a dataset's report/ is its "
            "conversion's, which this report would replace or sit beside; choose a folder outside the dataset "
            "(nothing was written)"
        )
    return check_replaced_whole(rd, GPS_ODOM_REPORT, inputs=[bag], overwrite=overwrite, holds="an earlier report")


def align_gps_to_odometry(
    path: str | Path,
    cfg: GpsOdomConfig | None = None,
    *,
    report_dir: str | Path | None = None,
    overwrite: bool = False,
) -> GpsOdomAlignment:
    """Estimate the GPS time offset against wheel-odometry speed (same core as the flow estimator).

    The odometry (``|twist.linear|``) is the reference clock. GPS speed comes from the ENU track. If
    ``report_dir`` is given, writes ``sync.png``, ``track.png`` and ``summary.json`` there, all together (a folder
    put in place whole; an earlier report is replaced only with ``overwrite``, checked before the bag is read:
    :func:`check_report_dir`).
    """
    from pose2rgbd.bags import open_bag
    from pose2rgbd.convert.gps_logs import GpsTrack
    from pose2rgbd.convert.report import plot_sync, plot_track
    from pose2rgbd.convert.stages.time_offset import gps_in_enu

    cfg = cfg or GpsOdomConfig()
    if report_dir is not None:
        report_dir = check_report_dir(report_dir, path, overwrite=overwrite)
    with open_bag(path) as bag:
        gps_topic = bag.find_topic("sensor_msgs/msg/NavSatFix", cfg.topics.gps or None, "topics.gps")
        odom_topic = bag.find_topic("nav_msgs/msg/Odometry", cfg.topics.odom or None, "topics.odom")
        od = [(stamp_ns(m), np.hypot(m.msg.twist.twist.linear.x, m.msg.twist.twist.linear.y))
              for m in bag.messages([odom_topic])]  # fmt: skip
        gp = [(stamp_ns(m), *(fix := read_navsatfix(m.msg)).lla, fix.status) for m in bag.messages([gps_topic])]
    if len(od) < 3 or len(gp) < 3:
        raise SyncError(f"{path}: too few messages ({len(od)} odometry, {len(gp)} GPS)")
    o = np.asarray(od, dtype=np.float64)
    g = np.asarray(gp, dtype=np.float64)
    t0 = min(o[0, 0], g[0, 0])
    o = o[np.argsort(o[:, 0], kind="stable")]
    g = g[np.argsort(g[:, 0], kind="stable")]
    ot, ov = (o[:, 0] - t0) / 1e9, o[:, 1]
    keep = np.concatenate([[True], np.diff(ot) > 0])
    ot, ov = ot[keep], ov[keep]
    tr = GpsTrack((g[:, 0] - t0) / 1e9, g[:, 1], g[:, 2], cfg.gps.altitudes(g[:, 3]), np.full(len(g), np.nan),
                  g[:, 4].astype(int), f"{path}:{gps_topic}")  # fmt: skip
    kept, datum, enu = gps_in_enu(tr, cfg)
    gs = speed_from_positions(kept.t_s, enu, cfg.speed_window_s)
    res = correlate_signals(ot, ov, kept.t_s, gs, cfg.sync, fallback_offset_s=cfg.time_offset_s)
    summary = {
        "input": str(path), "gps_topic": gps_topic, "odom_topic": odom_topic,
        "offset_definition": "a GPS fix stamped t was measured at odometry time t - offset_s",
        "estimator": res.to_dict(), "fixes": {"total": len(tr), "kept": len(kept), "dropped": kept.dropped},
        "datum": {"lat_deg": datum.lat_deg, "lon_deg": datum.lon_deg, "alt_m": datum.alt_m},
        "track_extent_m": (enu.max(0) - enu.min(0)).tolist(),
    }  # fmt: skip
    if report_dir is not None:
        out = Path(report_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        rd = make_temp_dir(out)
        try:
            name = Path(path).name
            plot_sync(rd / "sync.png", ot, ov, kept.t_s, gs, res, res.offset_s, ref_label="wheel-odometry speed",
                      other_label="GPS speed (from positions)", title=f"GPS vs wheel odometry: {name}")  # fmt: skip
            plot_track(rd / "track.png", enu, kept.t_s, None, np.zeros((0, 3)), title=f"GPS track: {name} (ENU)")
            dump_json(rd / "summary.json", summary)
            swap_in([(rd, out)])  # an earlier report back on any failure or Ctrl-C
        finally:
            shutil.rmtree(rd, ignore_errors=True)
    return GpsOdomAlignment(res, ot, ov, kept.t_s, gs, enu, summary)
