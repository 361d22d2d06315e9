"""Is a GPS log given beside a video the video's own? Checked against the GPS the video carries (a GoPro's GPMF).

A log of another flight -- the same field another day, the drone's log of the previous battery, another clip's
export -- converts without an error otherwise: Algorithm 1 finds no time offset ("signal too weak", offset 0) and
every frame gets a pose of the other flight. Where the video has its own GPS, two things tell:

* **place**: the video's own fixes lie near the log's track (each own fix is matched to the log's nearest fix, so
  a log of a longer flight that contains the clip matches; the median distance is judged, so a few of the camera's
  poor fixes do not decide);
* **time**, where both clocks are absolute (a GPX log; the GoPro's GPS time): the log's span must reach the
  video's. Such a GPX log is also placed on the video clock by that GPS time, where no ``--video-start-utc`` was
  given (without it the log's first point would be taken for the first frame, minutes off for a log started
  before the camera).
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
from scipy.spatial import cKDTree

from pose2rgbd.convert.gps_logs import GpsTrack

# The median distance (m) of the video's own fixes from the log's track above which the log is another place's:
# a consumer receiver's error is metres to tens of metres (a GoPro's with a poor sky view, a few tens), so 100 m is
# well clear of two receivers of one flight and below the distance between two take-off spots of one field.
APART_M = 100.0
# The slack (s) on the time spans' overlap: the GPS time of a GoPro and a log's UTC may differ by the leap seconds.
TIME_SLACK_S = 60.0
_EARTH_R = 6_371_000.0


def _fixes(track: GpsTrack) -> np.ndarray:
    """Mask of the usable fixes: a fix status, finite, within range, not lat/lon 0,0."""
    lat, lon = np.asarray(track.lat, np.float64), np.asarray(track.lon, np.float64)
    return np.asarray(
        (np.asarray(track.status) >= 0) & np.isfinite(lat) & np.isfinite(lon) & np.isfinite(track.t_s)
        & (np.abs(lat) <= 90) & (np.abs(lon) <= 180) & ~((lat == 0) & (lon == 0)),
        dtype=bool,
    )  # fmt: skip


def _on_sphere(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``(N, 3)`` points on a sphere of the earth's mean radius (m): their chord is the distance at this scale."""
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return _EARTH_R * np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _utc(s: float) -> str:
    return _dt.datetime.fromtimestamp(s, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _km(m: float) -> str:
    return f"{m / 1000:.1f} km" if m >= 1000 else f"{m:.0f} m"


def apart_m(log: GpsTrack, own: GpsTrack) -> float | None:
    """The median distance (m) of ``own``'s usable fixes from the nearest of ``log``'s; None where either has none."""
    a, b = _fixes(log), _fixes(own)
    if not a.any() or not b.any():
        return None
    d, _ = cKDTree(_on_sphere(log.lat[a], log.lon[a])).query(_on_sphere(own.lat[b], own.lon[b]))
    return float(np.median(d))


def allowed_m(log: GpsTrack) -> float:
    """:data:`APART_M` plus half the log's longer steps between fixes (95th percentile): a log of a fast drone at
    a fix per few seconds has its fixes tens of metres apart, and an own fix between two of them is that far from
    both."""
    a = _fixes(log)
    p = _on_sphere(log.lat[a], log.lon[a])
    step = np.linalg.norm(np.diff(p, axis=0), axis=1) if len(p) > 1 else np.zeros(1)
    return APART_M + 0.5 * float(np.percentile(step, 95))


def log_mismatch(log: GpsTrack, own: GpsTrack, *, log_name: str, video_name: str) -> str | None:
    """Why the GPS log ``log`` is not the video's whose own GPS is ``own``, in words (where the log was recorded,
    where and when the video was), or None where nothing says so (or either has no usable fix): by time
    (:func:`time_mismatch`), else by place."""
    return time_mismatch(log, own, log_name=log_name, video_name=video_name) or place_mismatch(
        log, own, log_name=log_name, video_name=video_name
    )


def time_mismatch(log: GpsTrack, own: GpsTrack, *, log_name: str, video_name: str) -> str | None:
    """Why the log's UTC span does not reach the video's (more than :data:`TIME_SLACK_S` apart), or None: where both
    carry UTC (``GpsTrack.utc0_s``) and have usable fixes. Absolute times: the same before and after a log is placed
    on the video clock."""
    a, b = _fixes(log), _fixes(own)
    if not a.any() or not b.any() or not (np.isfinite(log.utc0_s) and np.isfinite(own.utc0_s)):
        return None
    l0, l1 = log.utc0_s + float(log.t_s[a].min()), log.utc0_s + float(log.t_s[a].max())
    v0, v1 = own.utc0_s + float(own.t_s[b].min()), own.utc0_s + float(own.t_s[b].max())
    if l1 < v0 - TIME_SLACK_S or l0 > v1 + TIME_SLACK_S:
        return (
            f"the GPS log {log_name} was recorded from {_utc(l0)} to {_utc(l1)}, and the video {video_name} from "
            f"{_utc(v0)} to {_utc(v1)} (its own GPS time): the log is of another flight"
        )
    return None


def place_mismatch(log: GpsTrack, own: GpsTrack, *, log_name: str, video_name: str) -> str | None:
    """Why the video's own fixes lie too far from the log's track (:func:`apart_m` beyond :func:`allowed_m`), or
    None (or either has no usable fix)."""
    a, b = _fixes(log), _fixes(own)
    d = apart_m(log, own)
    allowed = allowed_m(log) if d is not None else 0.0
    if d is not None and d > allowed:
        lat, lon = float(np.median(own.lat[b])), float(np.median(own.lon[b]))
        llat, llon = float(np.median(log.lat[a])), float(np.median(log.lon[a]))
        return (
            f"the video {video_name} was recorded {_km(d)} from the track of the GPS log {log_name} (the video's own "
            f"GPS: around {lat:.5f}, {lon:.5f}; the log: around {llat:.5f}, {llon:.5f}; median distance of the "
            f"video's fixes from the log's nearest, more than {allowed:.0f} m): the log is of another place "
            "or flight"
        )
    return None
