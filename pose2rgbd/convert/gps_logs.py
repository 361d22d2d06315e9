"""GPS and attitude logs beside a video: readers, and the fix cleaning shared with the bag converter.

Formats (``gps_format``):

* ``csv`` (documented, also written by the simulator): header ``time_s,lat,lon,alt,speed_mps,fix``;
  ``time_s`` = seconds on the video clock (0 = first frame); ``speed_mps`` optional/empty; ``fix`` 1/0.
* ``gpx``: ``<trkpt lat= lon=><ele/><time/></trkpt>``; times are UTC, mapped to the video clock with
  ``video_start_utc`` (ISO 8601) or, without it, by taking the first track point as video time 0 (beside a GoPro
  clip, by the camera's own GPS time: :mod:`pose2rgbd.convert.gps_match`).
* ``gopro-gps5``: the GoPro GPS5 CSV (``video_time_s, gps_fix, lat_deg, lon_deg, alt_m, speed2d_mps``...).
* ``karma``: the drone ``GLOBAL_POSITION_INT``-like CSV (``time_s`` boot clock, ``video_payload_pts_s``,
  ``idx_in_payload``, ``n_in_payload``, ``lat_deg, lon_deg, alt_msl_m, vx_north_mps, vy_east_mps``): the
  boot clock is mapped to the video clock by the median offset to the payload times.

* ``gopro-mp4``: the GPS inside a GoPro MP4's telemetry track (GPMF: GPS5, GPS9 or the Karma drone's GPRI),
  timed on the video clock (:mod:`pose2rgbd.convert.gopro`); the video file itself is the "log".
* ``auto`` (the default): the format is detected from the file (:func:`detect_gps_format`): an MP4/MOV
  container is ``gopro-mp4``, XML with ``<gpx`` is ``gpx``, and a CSV is matched by its header columns.

Attitude logs: ``time_s,roll,pitch,yaw`` (degrees with ``attitude_degrees``), or the karma ATTITUDE CSV
(``time_s`` boot clock, ``roll_rad, pitch_rad, yaw_rad``; aircraft NED/FRD convention).
"""

from __future__ import annotations

import csv
import datetime as _dt
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose2rgbd.errors import SyncError


@dataclass
class GpsTrack:
    """Fixes on their own clock: ``t_s`` seconds (float64), degrees, metres; ``speed`` NaN where absent;
    ``status`` >= 0 a fix, -1 no fix (NavSatStatus.STATUS_NO_FIX); ``utc0_s`` the UTC (UNIX seconds) of ``t_s`` 0
    where the log's times are absolute (a GPX, the GPS inside a GoPro MP4), NaN where they are not."""

    t_s: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    speed: np.ndarray
    status: np.ndarray
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    utc0_s: float = float("nan")

    def __len__(self) -> int:
        return int(self.t_s.size)

    def subset(self, keep: np.ndarray) -> GpsTrack:
        return GpsTrack(
            self.t_s[keep], self.lat[keep], self.lon[keep], self.alt[keep], self.speed[keep], self.status[keep],
            self.source, dict(self.dropped), self.utc0_s,
        )  # fmt: skip

    def rebased(self, utc0_s: float) -> GpsTrack:
        """The same fixes with ``t_s`` 0 at the UTC ``utc0_s`` (a log with absolute times only)."""
        if not np.isfinite(self.utc0_s):
            raise ValueError(f"{self.source}: the log's times are not absolute (no UTC) and cannot be rebased")
        return GpsTrack(
            self.t_s + (self.utc0_s - utc0_s), self.lat, self.lon, self.alt, self.speed, self.status, self.source,
            dict(self.dropped), utc0_s,
        )  # fmt: skip


@dataclass
class AttitudeLog:
    """``t_s`` seconds (float64) and ``rpy`` (N, 3) radians; ``frame`` 'ned' (aircraft FRD) or 'enu' (FLU)."""

    t_s: np.ndarray
    rpy: np.ndarray
    frame: str = "ned"


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise SyncError(f"{path}: log file not found")
    try:
        with open(path, newline="") as f:
            rd = csv.DictReader(f)
            rows = list(rd)
            header = list(rd.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SyncError(f"{path}: cannot read as CSV: {e}") from e
    return header, rows


def _need(path: Path, header: list[str], cols: list[str], fmt: str) -> None:
    missing = [c for c in cols if c not in header]
    if missing:
        raise SyncError(
            f"{path}: columns {missing} missing for --gps-format {fmt}; the header is {header}. "
            f"Supported formats: {', '.join(GPS_FORMATS)} (see docs/convert.md)"
        )


def _col(rows: list[dict[str, str]], name: str) -> np.ndarray:
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        v = (r.get(name) or "").strip()
        try:
            out[i] = float(v) if v else np.nan
        except ValueError:
            out[i] = np.nan
    return out


def _karma_video_time(rows: list[dict[str, str]]) -> np.ndarray:
    """Boot-clock time mapped onto the video clock (median offset to evenly spaced payload times)."""
    tb = _col(rows, "time_s")
    even = _col(rows, "video_payload_pts_s") + _col(rows, "payload_dur_s") * _col(rows, "idx_in_payload") / _col(
        rows, "n_in_payload"
    )
    ok = np.isfinite(tb) & np.isfinite(even)
    if not ok.any():
        raise SyncError("karma log: no row with both time_s and payload timing")
    return tb - float(np.median(tb[ok] - even[ok]))


def _parse_utc(s: str) -> float:
    s = s.strip().replace("Z", "+00:00")
    t = _dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _read_csv_rows(p: Path) -> tuple[list[str], list[dict[str, str]]]:
    header, rows = _read_rows(p)
    if not rows:
        raise SyncError(f"{p}: no GPS rows (header {header})")
    return header, rows


def _read_csv(p: Path, video_start_utc: str | None) -> GpsTrack:
    header, rows = _read_csv_rows(p)
    _need(p, header, ["time_s", "lat", "lon", "alt"], "csv")
    t = _col(rows, "time_s")
    speed = _col(rows, "speed_mps") if "speed_mps" in header else np.full(len(rows), np.nan)
    fix = _col(rows, "fix") if "fix" in header else np.ones(len(rows))
    status = np.where(fix > 0, 0, -1)
    return GpsTrack(t, _col(rows, "lat"), _col(rows, "lon"), _col(rows, "alt"), speed, status, str(p))


def _read_gopro_gps5(p: Path, video_start_utc: str | None) -> GpsTrack:
    header, rows = _read_csv_rows(p)
    _need(p, header, ["video_time_s", "lat_deg", "lon_deg", "alt_m"], "gopro-gps5")
    fix = _col(rows, "gps_fix") if "gps_fix" in header else np.full(len(rows), 3.0)
    speed = _col(rows, "speed2d_mps") if "speed2d_mps" in header else np.full(len(rows), np.nan)
    status = np.where(fix >= 2, 0, -1)  # GPS5 fix: 0 none, 2 2D, 3 3D
    return GpsTrack(
        _col(rows, "video_time_s"), _col(rows, "lat_deg"), _col(rows, "lon_deg"), _col(rows, "alt_m"),
        speed, status, str(p),
    )  # fmt: skip


def _read_karma(p: Path, video_start_utc: str | None) -> GpsTrack:
    header, rows = _read_csv_rows(p)
    _need(p, header, ["time_s", "video_payload_pts_s", "payload_dur_s", "idx_in_payload", "n_in_payload",
                      "lat_deg", "lon_deg"], "karma")  # fmt: skip
    alt = _col(rows, "alt_msl_m") if "alt_msl_m" in header else _col(rows, "alt_m")
    if "vx_north_mps" in header:
        speed = np.hypot(_col(rows, "vx_north_mps"), _col(rows, "vy_east_mps"))
    elif "speed_mps" in header:
        speed = _col(rows, "speed_mps")
    else:
        speed = np.full(len(rows), np.nan)
    status = np.zeros(len(rows), int)
    if "fix_type" in header:
        status = np.where(_col(rows, "fix_type") >= 2, 0, -1)
    return GpsTrack(_karma_video_time(rows), _col(rows, "lat_deg"), _col(rows, "lon_deg"), alt, speed, status, str(p))


def read_gps_log(path: str | Path, fmt: str = "auto", *, video_start_utc: str | None = None) -> GpsTrack:
    """Read a GPS log (see the module docstring for formats); times in seconds on the video clock.

    The format is looked up in :data:`GPS_READERS`; a new log format is one reader function plus one entry
    there (and, for a CSV, its header columns in :data:`CSV_SIGNATURES`). ``auto`` detects it from the file.
    """
    if fmt == "auto":
        fmt = detect_gps_format(path)
    reader = GPS_READERS.get(fmt)
    if reader is None:
        raise SyncError(f"unknown GPS format {fmt!r}; choose one of auto, {', '.join(GPS_READERS)}")
    return reader(Path(path), video_start_utc)


# CSV format -> the header columns that identify it (all must be present). A header matching more than one
# format is ambiguous and needs --gps-format.
CSV_SIGNATURES: dict[str, tuple[str, ...]] = {
    "csv": ("time_s", "lat", "lon", "alt"),
    "gopro-gps5": ("video_time_s", "lat_deg", "lon_deg", "alt_m"),
    "karma": ("time_s", "video_payload_pts_s", "payload_dur_s", "idx_in_payload", "n_in_payload", "lat_deg",
              "lon_deg"),
}  # fmt: skip


def detect_gps_format(path: str | Path) -> str:
    """The GPS log format of ``path`` from its content: an ISO base-media container (``ftyp`` box: MP4/MOV)
    is ``gopro-mp4``; XML whose first element is ``<gpx`` is ``gpx``; a CSV is matched against
    :data:`CSV_SIGNATURES` by its header. No match or more than one is a :class:`SyncError` naming the
    candidates and ``--gps-format``."""
    p = Path(path)
    if not p.is_file():
        raise SyncError(f"{p}: log file not found")
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise SyncError(f"{p}: cannot read: {e}") from e
    if head[4:8] == b"ftyp":
        return "gopro-mp4"
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if text.startswith("<"):
        if "<gpx" in text:
            return "gpx"
        raise SyncError(f"{p}: an XML file without a <gpx> element; not a GPS log this tool reads "
                        f"(formats: {', '.join(GPS_FORMATS)}; docs/convert.md)")  # fmt: skip
    header, _ = _read_rows(p)
    cols = {c.strip() for c in header}
    found = [name for name, need in CSV_SIGNATURES.items() if set(need) <= cols]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SyncError(
            f"{p}: the GPS log format could not be detected from its header {header}. Known CSV headers: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in CSV_SIGNATURES.items())
            + f". Rename the columns or give --gps-format ({', '.join(GPS_FORMATS)}; docs/convert.md)"
        )
    raise SyncError(
        f"{p}: the header {header} fits several GPS log formats ({', '.join(found)}); choose one with "
        f"--gps-format {' or --gps-format '.join(found)}"
    )


def _read_gpx(p: Path, video_start_utc: str | None) -> GpsTrack:
    if not p.is_file():
        raise SyncError(f"{p}: log file not found")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        raise SyncError(f"{p}: not valid GPX/XML: {e}") from e
    rows = []
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] != "trkpt":
            continue
        ele = tm = None
        for ch in el:
            tag = ch.tag.rsplit("}", 1)[-1]
            if tag == "ele":
                ele = ch.text
            elif tag == "time":
                tm = ch.text
        if tm is None:
            raise SyncError(f"{p}: a trkpt has no <time>; GPX without times cannot be synchronized")
        try:
            rows.append((_parse_utc(tm), float(el.get("lat", "nan")), float(el.get("lon", "nan")),
                         float(ele) if ele else 0.0))  # fmt: skip
        except ValueError as e:
            raise SyncError(f"{p}: bad trkpt: {e}") from e
    if not rows:
        raise SyncError(f"{p}: no <trkpt> elements")
    a = np.asarray(rows)
    t0 = _parse_utc(video_start_utc) if video_start_utc else a[0, 0]
    n = len(a)
    return GpsTrack(a[:, 0] - t0, a[:, 1], a[:, 2], a[:, 3], np.full(n, np.nan), np.zeros(n, int), str(p), utc0_s=t0)


def _read_gopro_mp4(p: Path, video_start_utc: str | None) -> GpsTrack:
    """The GPS of a GoPro MP4 (GPMF), timed on the video clock (``video_start_utc`` is not needed). Speed is the
    2D (ground) speed; a fix below 2D is no fix."""
    from pose2rgbd.convert.gopro import read_gpmf_gps  # py_gpmf_parser loads only when a GoPro file is read

    g = read_gpmf_gps(p)
    fix = np.where(np.isfinite(g.fix), g.fix, 3.0)
    status = np.where(fix >= 2, 0, -1)
    timed = np.isfinite(g.utc_s) & np.isfinite(g.t_s) & (status >= 0)
    utc0 = float(np.median(g.utc_s[timed] - g.t_s[timed])) if timed.any() else float("nan")
    return GpsTrack(g.t_s, g.lat, g.lon, g.alt, g.speed2d, status, f"{p} (GPMF {g.stream})", utc0_s=utc0)


# format name -> reader(path, video_start_utc) -> GpsTrack: the table of GPS log formats (``gps_format``).
GPS_READERS: dict[str, Callable[[Path, str | None], GpsTrack]] = {
    "csv": _read_csv,
    "gpx": _read_gpx,
    "gopro-gps5": _read_gopro_gps5,
    "karma": _read_karma,
    "gopro-mp4": _read_gopro_mp4,
}
GPS_FORMATS = tuple(GPS_READERS)


def read_attitude_log(path: str | Path, *, degrees: bool = False, frame: str = "ned") -> AttitudeLog:
    """``time_s,roll,pitch,yaw`` CSV or the karma ATTITUDE CSV (recognised by its columns)."""
    p = Path(path)
    header, rows = _read_rows(p)
    if not rows:
        raise SyncError(f"{p}: no attitude rows")
    if {"roll_rad", "pitch_rad", "yaw_rad", "video_payload_pts_s"} <= set(header):
        t = _karma_video_time(rows)
        rpy = np.stack([_col(rows, "roll_rad"), _col(rows, "pitch_rad"), _col(rows, "yaw_rad")], -1)
        frame = "ned"
    else:
        _need(p, header, ["time_s", "roll", "pitch", "yaw"], "attitude")
        t = _col(rows, "time_s")
        rpy = np.stack([_col(rows, "roll"), _col(rows, "pitch"), _col(rows, "yaw")], -1)
        if degrees:
            rpy = np.deg2rad(rpy)
    ok = np.isfinite(t) & np.isfinite(rpy).all(1)
    t, rpy = t[ok], rpy[ok]
    order = np.argsort(t, kind="stable")
    t, rpy = t[order], rpy[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    if keep.sum() < 1:
        raise SyncError(f"{p}: no valid attitude samples")
    return AttitudeLog(t[keep], rpy[keep], frame)


def describe_dropped(dropped: dict[str, int], total: int) -> str:
    """``"12 of 451 GPS fixes dropped: 10 lat/lon exactly 0,0 ..., 2 jump ..."`` (empty when none was)."""
    n = sum(dropped.values())
    if not n:
        return ""
    return f"{n} of {total} GPS fixes dropped: " + ", ".join(f"{v} {k}" for k, v in dropped.items())


def gate_fixes(track: GpsTrack, *, max_speed_mps: float, tolerance_m: float = 10.0) -> GpsTrack:
    """Drop fixes with NO_FIX status, NaN fields, lat/lon 0,0, out-of-range values, repeated stamps or
    impossible jumps; the kept track with ``dropped`` counts per reason.

    Jumps are judged from a consensus anchor, not the first fix (:func:`pose2rgbd.sync.gps.consensus_keep`):
    a fix whose horizontal distance from the last kept fix (walking away from the anchor) implies more than
    ``max_speed_mps`` after ``tolerance_m`` of noise is dropped.
    """
    from pose2rgbd.sync.gps import REASON_NAN_ALT, REASON_NULL_ISLAND, consensus_keep, null_island

    n = len(track)
    if n == 0:
        raise SyncError(f"{track.source}: the GPS log is empty")
    dropped: dict[str, int] = {}
    ok = np.ones(n, bool)

    def drop(mask: np.ndarray, why: str) -> None:
        m = mask & ok
        if m.any():
            dropped[why] = dropped.get(why, 0) + int(m.sum())
            ok[m] = False

    drop(track.status < 0, "no fix (status -1)")
    drop(~(np.isfinite(track.lat) & np.isfinite(track.lon) & np.isfinite(track.t_s)), "NaN field")
    drop(~np.isfinite(track.alt), REASON_NAN_ALT)
    drop((np.abs(track.lat) > 90) | (np.abs(track.lon) > 180), "latitude/longitude out of range")
    drop(null_island(track.lat, track.lon), REASON_NULL_ISLAND)
    idx = np.flatnonzero(ok)
    back = np.flatnonzero(np.diff(track.t_s[idx]) < 0)
    if back.size:
        i = int(idx[back[0] + 1])
        raise SyncError(
            f"{track.source}: GPS stamps go backwards at fix {i} ({track.t_s[i - 1]:.3f} s -> {track.t_s[i]:.3f} s); "
            "sort the log by time first"
        )
    if idx.size == 0:
        raise SyncError(
            f"{track.source}: no valid GPS fix among {n} ({', '.join(f'{v} {k}' for k, v in dropped.items())})"
        )
    keep, jumps = consensus_keep(
        track.t_s, track.lat, track.lon, ok, max_speed_mps=max_speed_mps, tolerance_m=tolerance_m
    )
    for k, v in jumps.items():
        dropped[k] = dropped.get(k, 0) + v
    out = track.subset(keep)
    out.dropped = dropped
    if len(out) < 2:
        raise SyncError(f"{track.source}: fewer than two valid GPS fixes left ({len(out)} of {n}; dropped: {dropped})")
    return out


def clean_fixes(
    track: GpsTrack,
    to_enu: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    *,
    max_speed_mps: float,
    tolerance_m: float = 10.0,
) -> tuple[GpsTrack, np.ndarray]:
    """:func:`gate_fixes`, and the kept fixes' ENU points from ``to_enu(lat, lon, alt) -> (N, 3)``."""
    out = gate_fixes(track, max_speed_mps=max_speed_mps, tolerance_m=tolerance_m)
    return out, np.asarray(to_enu(out.lat, out.lon, out.alt)).reshape(-1, 3)
