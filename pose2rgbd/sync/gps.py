"""GPS fix gating shared by ``convert`` (offline, :func:`consensus_keep`) and the record node (online,
:class:`FixGate`), and the altitude option both read (:class:`GpsConfig`, the ``gps`` section of both configs).

The rule, the same in both: a fix is *consistent* with another when their horizontal distance, less
``tolerance_m`` of noise, could be flown at ``max_speed_mps`` in the time between them. The anchor of a
flight is not its first fix but the fix consistent with the most others among the first fixes (a consensus):
a bad first fix, or a cold start that reports a wrong place, cannot poison the flight. From the anchor the
track is walked forwards and backwards; a fix inconsistent with the last kept one is dropped as a jump.
Fixes at exactly lat/lon 0,0 (a receiver's cold-start placeholder) are dropped before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError

EARTH_RADIUS_M = 6_371_008.8
# how many of the first valid fixes are candidates for the anchor (offline consensus window)
CONSENSUS_WINDOW = 100

REASON_NULL_ISLAND = "lat/lon exactly 0,0 (receiver cold start)"
REASON_JUMP = "jump faster than max_speed_mps"
REASON_STAMP = "stamp not after the previous fix"
REASON_NAN_ALT = "NaN altitude (set gps.altitude: fixed and gps.fixed_altitude_m for a 2-D receiver)"


@dataclass
class GpsConfig:
    """GPS altitude handling (the same ``gps`` section in convert and record)."""

    altitude: str = help_field(
        "fix", "altitude of each pose: 'fix' (the fix's altitude; NaN altitude makes a fix unusable) or 'fixed' "
        "(gps.fixed_altitude_m for every fix: a 2-D receiver or a flight at constant height)"
    )  # fmt: skip
    fixed_altitude_m: float = ranged_field(
        0.0, "altitude (m above the WGS-84 ellipsoid) used when gps.altitude is 'fixed'", -1000.0, 100000.0
    )

    def __post_init__(self) -> None:
        if self.altitude not in ("fix", "fixed"):
            raise ConfigError(f"gps.altitude must be 'fix' or 'fixed', got {self.altitude!r}")
        if not np.isfinite(self.fixed_altitude_m):
            raise ConfigError(f"gps.fixed_altitude_m must be a finite number of metres, got {self.fixed_altitude_m}")

    def altitudes(self, alt: Any) -> np.ndarray:
        """The altitude column to use (``alt`` itself, or the fixed altitude everywhere)."""
        a = np.asarray(alt, dtype=np.float64)
        return np.full_like(a, self.fixed_altitude_m) if self.altitude == "fixed" else a


def horizontal_distance_m(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    """Great-circle distance (haversine, metres) between geodetic points in degrees; broadcasts."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def consistent(dist_m: Any, dt_s: Any, max_speed_mps: float, tolerance_m: float) -> np.ndarray:
    """The jump rule: ``dist - tolerance <= max_speed * |dt|``."""
    return np.asarray(dist_m) - tolerance_m <= max_speed_mps * np.abs(np.asarray(dt_s))


def check_gate(max_speed_mps: float, tolerance_m: float) -> None:
    """The gate's settings must make sense (else every fix would be dropped, or none)."""
    if not (np.isfinite(max_speed_mps) and max_speed_mps > 0):
        raise ConfigError(f"max_speed_mps must be a speed > 0 (m/s), got {max_speed_mps}")
    if not (np.isfinite(tolerance_m) and tolerance_m >= 0):
        raise ConfigError(f"jump_tolerance_m must be >= 0 (m), got {tolerance_m}")


def null_island(lat: Any, lon: Any) -> np.ndarray:
    return (np.abs(np.asarray(lat)) < 1e-9) & (np.abs(np.asarray(lon)) < 1e-9)


def _anchor(t: np.ndarray, lat: np.ndarray, lon: np.ndarray, max_speed: float, tol: float) -> int:
    """Index (into the given arrays) of the fix consistent with the most others (earliest on ties)."""
    d = horizontal_distance_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    ok = consistent(d, t[:, None] - t[None, :], max_speed, tol)
    return int(np.argmax(ok.sum(1)))


def consensus_keep(
    t_s: np.ndarray, lat: np.ndarray, lon: np.ndarray, valid: np.ndarray, *, max_speed_mps: float,
    tolerance_m: float, window: int = CONSENSUS_WINDOW,
) -> tuple[np.ndarray, dict[str, int]]:  # fmt: skip
    """Offline gate over time-sorted fixes: the kept mask (a subset of ``valid``) and drop counts by reason.

    The anchor is the consensus among the first ``window`` valid fixes; from it the track is walked forwards
    and backwards, each fix compared with the last kept one (jumps and repeated stamps dropped)."""
    check_gate(max_speed_mps, tolerance_m)
    keep = np.zeros(t_s.size, bool)
    dropped: dict[str, int] = {}
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return keep, dropped
    head = idx[:window]
    a = int(head[_anchor(t_s[head], lat[head], lon[head], max_speed_mps, tolerance_m)])
    keep[a] = True
    pos = int(np.searchsorted(idx, a))
    for order in (idx[pos + 1 :], idx[:pos][::-1]):
        last = a
        for i in order:
            dt = abs(float(t_s[i] - t_s[last]))
            if dt <= 0:
                dropped[REASON_STAMP] = dropped.get(REASON_STAMP, 0) + 1
                continue
            d = float(horizontal_distance_m(lat[i], lon[i], lat[last], lon[last]))
            if not consistent(d, dt, max_speed_mps, tolerance_m):
                dropped[REASON_JUMP] = dropped.get(REASON_JUMP, 0) + 1
                continue
            keep[i] = True
            last = int(i)
    return keep, dropped


class FixGate:
    """Online gate (the record node): the same rule as :func:`consensus_keep`, on fixes as they arrive.

    Until ``min_consensus`` buffered fixes agree with one of them, fixes are held (at most ``window``; the
    oldest is then dropped as a jump). The agreeing fixes are released in time order; after that each fix is
    compared with the last kept one. If ``min_consensus`` fixes in a row are dropped as jumps but agree with
    each other, the gate re-anchors on them (the earlier anchor was the outlier).
    :meth:`add` returns ``(released, dropped)``: the fixes now accepted as ``(t_s, item)`` and the reasons of
    the fixes dropped by this call (empty when none was)."""

    def __init__(self, max_speed_mps: float, tolerance_m: float, *, min_consensus: int = 3, window: int = 20) -> None:
        check_gate(max_speed_mps, tolerance_m)
        self.max_speed, self.tol = float(max_speed_mps), float(tolerance_m)
        self.min_consensus, self.window = int(min_consensus), int(window)
        self.anchored = False
        self.held: list[tuple[float, float, float, Any]] = []  # before the anchor: (t, lat, lon, item)
        self.rejects: list[tuple[float, float, float, Any]] = []  # consecutive jumps after it
        self.last: tuple[float, float, float] | None = None
        self.reanchors = 0

    def _ok(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
        d = float(horizontal_distance_m(a[1], a[2], b[1], b[2]))
        return bool(consistent(d, a[0] - b[0], self.max_speed, self.tol))

    def add(self, t_s: float, lat: float, lon: float, item: Any) -> tuple[list[tuple[float, Any]], list[str]]:
        if null_island(lat, lon):
            return [], [REASON_NULL_ISLAND]
        new = (float(t_s), float(lat), float(lon), item)
        if not self.anchored:
            if self.held and t_s <= self.held[-1][0]:
                return [], [REASON_STAMP]
            self.held.append(new)
            h = np.array([x[:3] for x in self.held])
            k = _anchor(h[:, 0], h[:, 1], h[:, 2], self.max_speed, self.tol)
            t, la, lo = h[:, 0], h[:, 1], h[:, 2]
            support = consistent(horizontal_distance_m(la[k], lo[k], la, lo), t - t[k], self.max_speed, self.tol)
            if support.sum() < self.min_consensus:
                if len(self.held) > self.window:
                    self.held.pop(0)
                    return [], [REASON_JUMP]
                return [], []
            keep, _ = consensus_keep(t, la, lo, np.ones(len(t), bool), max_speed_mps=self.max_speed,
                                     tolerance_m=self.tol, window=len(t))  # fmt: skip
            out = [(x[0], x[3]) for x, k_ in zip(self.held, keep, strict=True) if k_]
            self.last = tuple(h[np.flatnonzero(keep)[-1]])  # type: ignore[assignment]
            self.anchored = True
            self.held = []
            return out, [REASON_JUMP] * int((~keep).sum())
        assert self.last is not None
        if t_s <= self.last[0]:
            return [], [REASON_STAMP]
        if self._ok(new[:3], self.last):
            self.rejects = []
            self.last = new[:3]
            return [(new[0], item)], []
        if self.rejects and not self._ok(new[:3], self.rejects[-1][:3]):
            self.rejects = []
        self.rejects.append(new)
        if len(self.rejects) >= self.min_consensus:
            out = [(x[0], x[3]) for x in self.rejects]
            self.last = new[:3]
            self.rejects = []
            self.reanchors += 1
            return out, []
        return [], [REASON_JUMP]


def gps_pair_distances(positions: np.ndarray, stamps_ns: np.ndarray, pairs: np.ndarray, window_s: float) -> np.ndarray:
    """GPS-derived distance between the frames of each pair (P, 2): the GPS speed around the first frame (positions
    +- ``window_s`` apart, so the noise of single fixes averages out) times the time between the frames. For the
    velocity (GPS-to-scale) loss."""
    p = np.asarray(positions, dtype=np.float64)
    t = (np.asarray(stamps_ns, dtype=np.int64) - int(stamps_ns[0])) / 1e9
    lo = np.searchsorted(t, t - window_s, side="left")
    hi = np.clip(np.searchsorted(t, t + window_s, side="right") - 1, 0, len(t) - 1)
    dt = t[hi] - t[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        speed = np.where(dt > 0, np.linalg.norm(p[hi] - p[lo], axis=1) / dt, np.nan)
    pairs = np.asarray(pairs, dtype=np.int64)
    return speed[pairs[:, 0]] * np.abs(t[pairs[:, 1]] - t[pairs[:, 0]])


# what a dataset's manifest says of its poses' own error where they are GPS fixes (``pose_error``: the place map
# carries it, and the structure localizer adds it to every fix's covariance)
POSE_ERROR_SOURCE = "the GPS receiver's reported covariance (NavSatFix position_covariance, median of the fixes)"


def reported_pose_error(covariance: np.ndarray, covariance_type: np.ndarray) -> dict[str, object] | None:
    """The GPS receiver's own statement of its position error over a recording: ``{"horizontal_m", "vertical_m",
    "fixes", "source"}``, the square roots of the medians of the fixes' ENU variances (NavSatFix
    ``position_covariance``, m^2, row-major 3x3; horizontal: the mean of east and north) over the fixes whose
    covariance type is known (``position_covariance_type`` > 0) and finite; None where no fix states one.

    The receiver's estimate, not a measurement: a poses-from-GPS dataset is off the true poses by about this much
    (more where the receiver is optimistic), which no check against its own frames can see."""
    cov = np.asarray(covariance, np.float64).reshape(-1, 9)
    known = np.asarray(covariance_type).reshape(-1) > 0
    h = (cov[:, 0] + cov[:, 4]) / 2.0
    v = cov[:, 8]
    ok = known & np.isfinite(h) & np.isfinite(v) & (h > 0) & (v > 0)
    if not ok.any():
        return None
    return {
        "horizontal_m": round(float(np.sqrt(np.median(h[ok]))), 4),
        "vertical_m": round(float(np.sqrt(np.median(v[ok]))), 4),
        "fixes": int(ok.sum()),
        "source": POSE_ERROR_SOURCE,
    }
