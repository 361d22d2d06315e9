"""The render node's check of the robot's place against the model's, by GPS (:class:`PlaceCheck`, a part the
:class:`~pose2rgbd.nodes.renderer.Renderer` holds; its settings :class:`RendererGps`, ``gps.*`` of the node).

Every map frame starts near (0, 0, 0): the TF poses of a robot in another city fall inside the model's box, and its
renders would be published as in bounds, with the depth of the wrong place. A GPS fix tells the places apart: with a
model whose world frame has a GPS datum (:func:`pose2rgbd.models.coverage.model_datum`: the place map's, else the
training dataset's that ``train`` stores in the checkpoint) and a ``sensor_msgs/NavSatFix`` on ``topics.gps`` of a
valid status, the fix and the model's coverage positions (the keyframes it warps, else its training cameras) are put
in one frame through the datum -- the positions, in the model's world, placed on the Earth by the inverse of
:meth:`~pose2rgbd.geometry.geodesy.Datum.to_world` -- and the horizontal (great-circle) distance from the fix to the
nearest of them is measured (right at any distance, where a flat ENU plane would shorten 1,870 km by 30 km). Beyond
``gps.max_distance_m`` + :data:`GPS_SIGMAS` x the fix's horizontal standard deviation (its ``position_covariance``, 0
where unknown), every render is flagged out of bounds while that fix is the latest usable one and at most
``gps.max_age_s`` old (node clock: the time it was received, so a receiver's own clock does not matter). One warning
as it starts (the distance, the datum, what to do), one info line as a fix back inside or its age clears it.

Unchanged behaviour: no fix, a fix without a valid status (NO_FIX, NaN, or lat/lon exactly 0,0: a receiver's cold
start, which the GPS gate drops too; the latest usable one still counts), a model without a datum (said once, at info
level, when fixes arrive) or without coverage positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.config import ranged_field
from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.sync.gps import horizontal_distance_m, null_island

# the fix's horizontal standard deviations added to gps.max_distance_m: a fix that far off is rare (0.3 % for a normal
# error per axis), so a robot within the place is not flagged for its GPS's error
GPS_SIGMAS = 3.0


class Log(Protocol):
    """What the check logs through: a ``logging`` logger or an rclpy one (pre-formatted strings only)."""

    def info(self, msg: str) -> object: ...

    def warning(self, msg: str) -> object: ...


@dataclass
class RendererGps:
    """The check of the robot's place against the model's by its GPS fixes on ``topics.gps`` (docs/ros.md,
    "Wrong place")."""

    max_distance_m: float = ranged_field(
        200.0,
        "a fix (on topics.gps, valid status) farther than this plus 3 x its horizontal std, horizontally, from every "
        "keyframe / training camera of the model flags every render out of bounds while it is the latest fix (needs "
        "a model with a GPS datum: its place map's or its training dataset's)",
        1.0,
        1e8,
    )
    max_age_s: float = ranged_field(
        10.0, "a fix received longer ago than this (node clock) no longer flags renders", 0.1, 86400.0
    )


@dataclass(frozen=True)
class FarFix:
    """The latest usable fix, where it lies beyond the model's place."""

    received_ns: int  # node clock
    distance_m: float  # horizontal, to the nearest coverage position
    threshold_m: float  # max_distance_m + GPS_SIGMAS x sigma_m
    sigma_m: float  # the fix's horizontal standard deviation (0: unknown)

    def beyond(self, cfg: RendererGps) -> str:
        """``201 m: gps.max_distance_m 200 + 3 x the fix's horizontal std 0.3 m``: the distance it lies beyond."""
        sigma = f" + {GPS_SIGMAS:g} x the fix's horizontal std {self.sigma_m:.1f} m" if self.sigma_m > 0 else ""
        return f"{self.threshold_m:.0f} m: gps.max_distance_m {cfg.max_distance_m:g}{sigma}"


def distance_text(m: float) -> str:
    """``1,870 km``, ``12.3 km``, ``350 m``."""
    if m >= 100e3:
        return f"{m / 1e3:,.0f} km"
    return f"{m / 1e3:.1f} km" if m >= 1e3 else f"{m:.0f} m"


class PlaceCheck:
    """Whether the robot's GPS puts it within the model's place (see the module docstring).

    ``datum``: the model's (None: nothing is checked); ``positions``: ``(N, 3)`` its keyframes' / training cameras'
    positions in its world frame (None or empty: nothing is checked); ``what``: their name (``keyframe``, ``training
    camera``); ``topic``: the fixes' topic, for the messages."""

    def __init__(self, datum: Datum | None, positions: np.ndarray | None, *, what: str, topic: str, log: Log) -> None:
        self.datum = datum
        p = None if positions is None else np.asarray(positions, np.float64).reshape(-1, 3)
        self.positions = p if p is not None and len(p) else None
        self.what, self.topic, self.log = what, topic, log
        self._latlon: tuple[np.ndarray, np.ndarray] | None = None  # the positions' latitude and longitude (degrees)
        if datum is not None and self.positions is not None:
            T = datum.T_world_enu  # world -> ENU (the inverse of Datum.to_world's move), ENU -> the Earth
            lat, lon, _ = datum.from_enu((self.positions - T[:3, 3]) @ T[:3, :3])
            self._latlon = (np.asarray(lat, np.float64), np.asarray(lon, np.float64))
        self.far: FarFix | None = None
        self._said_unchecked = False

    @property
    def active(self) -> bool:
        """Whether fixes are checked: the model has a datum and coverage positions."""
        return self.datum is not None and self.positions is not None

    def distance_m(self, lat_deg: float, lon_deg: float) -> float:
        """The horizontal (great-circle) distance from a point on the Earth to the nearest coverage position
        (metres)."""
        assert self._latlon is not None
        return float(horizontal_distance_m(lat_deg, lon_deg, *self._latlon).min())

    def on_fix(self, msg: object, now_ns: int, cfg: RendererGps) -> bool:
        """A NavSatFix arrived: place it and update the flag (warned / cleared as it changes). Returns whether the fix
        was checked (a model with a datum, a fix of a valid status)."""
        if not self.active:
            if not self._said_unchecked:
                self._said_unchecked = True
                why = (
                    "the model has no GPS datum (a checkpoint of an older pose2rgbd, or of a dataset without GPS; a "
                    "hybrid's place map gives its own)"
                    if self.datum is None
                    else "the checkpoint carries no keyframes or training cameras to measure the distance to"
                )
                self.log.info(
                    f"GPS fixes arrive on '{self.topic}', but {why}: renders are not checked against the robot's place"
                )
            return False
        fix = M.read_navsatfix(msg)
        if fix.problem() is not None or bool(null_island(fix.lla[0], fix.lla[1])):
            return False  # NO_FIX, NaN, a receiver's cold start at 0,0 (as the GPS gate drops it): no place
        dist = self.distance_m(float(fix.lla[0]), float(fix.lla[1]))
        var = max(float(fix.covariance[0]), float(fix.covariance[4])) if fix.covariance_type > 0 else 0.0
        sigma = math.sqrt(var) if math.isfinite(var) and var > 0 else 0.0  # a NaN covariance must not disable it
        threshold = cfg.max_distance_m + GPS_SIGMAS * sigma
        was = bool(self.flag(now_ns, cfg))
        if dist > threshold:
            self.far = FarFix(now_ns, dist, threshold, sigma)
            if not was:
                self.log.warning(self._far_text(self.far, cfg))
        else:
            self.far = None
            if was:
                self.log.info(
                    f"GPS fix on '{self.topic}' back within {threshold:.0f} m of the model's place "
                    f"({distance_text(dist)} from its nearest {self.what}): renders are no longer flagged for the GPS"
                )
        return True

    def flag(self, now_ns: int, cfg: RendererGps) -> str:
        """Why a render now is out of bounds for the GPS ("" when it is not): the latest usable fix lies beyond the
        model's place and is at most ``max_age_s`` old."""
        far = self.far
        if far is None:
            return ""
        age_s = (now_ns - far.received_ns) * 1e-9
        if age_s > cfg.max_age_s or age_s < 0:  # stale, or the clock went back (a bag replayed again): not the latest
            self.far = None
            since = (
                f"for {age_s:.1f} s (gps.max_age_s {cfg.max_age_s:g})"
                if age_s >= 0
                else f"since the node's clock went back {-age_s:.1f} s"
            )
            self.log.info(
                f"no usable GPS fix on '{self.topic}' {since}: the last one was {distance_text(far.distance_m)} from "
                "the model's place; renders are no longer flagged for the GPS"
            )
            return ""
        return (
            f"GPS fix is {distance_text(far.distance_m)} from the model's place (its nearest {self.what}), beyond "
            f"{far.beyond(cfg)}: every render is out of bounds, the model may not be of this place"
        )

    def _far_text(self, far: FarFix, cfg: RendererGps) -> str:
        assert self.datum is not None
        d = self.datum
        return (
            f"this bag / robot is {distance_text(far.distance_m)} from the model's place by its GPS fix on "
            f"'{self.topic}' (from the nearest of the model's {self.what}s; the model's datum {d.lat_deg:.6f}, "
            f"{d.lon_deg:.6f}; beyond {far.beyond(cfg)}): "
            "renders are flagged out of bounds (RGBD out_of_bounds, no valid point in depth/points and the mask) while "
            f"the latest fix, at most gps.max_age_s {cfg.max_age_s:g} s old, is that far. Check that the model "
            "(engine.checkpoint) matches the place: every map frame starts near (0, 0, 0), so the poses of another "
            "place fall inside the model's bounds and would render the depth of the wrong place (a robot of this "
            "place away from the model's route: raise gps.max_distance_m)"
        )


__all__ = ["GPS_SIGMAS", "FarFix", "Log", "PlaceCheck", "RendererGps", "distance_text"]
