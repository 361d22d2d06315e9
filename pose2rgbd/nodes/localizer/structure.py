"""The priors of the structure localizer in the localize node (:class:`Priors`, a part the
:class:`~pose2rgbd.nodes.localizer.LocalizerNode` holds): the freshest GPS and odometry positions, each a prior of
the images within ``prior_max_age_s`` of it (odometry first). The previous fix is the localizer's own prior."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pose2rgbd import messages as M
from pose2rgbd.inference.structure import Prior


class Priors:
    """The freshest GPS position (in the map's world, with its search radius) and odometry position, by stamp."""

    def __init__(self) -> None:
        self.gps: tuple[int, np.ndarray, float] | None = None  # stamp, map position, search radius
        self.odometry: tuple[int, np.ndarray] | None = None  # stamp, world position

    def at(self, stamp: int, max_age_s: float) -> Prior | None:
        """The freshest odometry or GPS position within ``max_age_s`` of ``stamp`` (odometry first)."""
        age = int(max_age_s * 1e9)
        if self.odometry is not None and abs(stamp - self.odometry[0]) <= age:
            return Prior(self.odometry[1], None, 0.0, "odometry")
        if self.gps is not None and abs(stamp - self.gps[0]) <= age:
            return Prior(self.gps[1], None, self.gps[2], "gps")
        return None

    def add_gps(self, msg: Any, datum: Any, prior_radius_m: float, now_ns: int) -> None:
        """A NavSatFix: its position in the map's world frame (``datum.to_world``) becomes the GPS prior, searched
        within ``prior_radius_m`` or three standard deviations of the fix; a fix with a problem (no fix, NaN) is not."""
        fix = M.read_navsatfix(msg)
        if fix.problem() is not None:
            return
        enu = datum.to_world(*fix.lla)
        sigma = math.sqrt(max(fix.covariance[0], fix.covariance[4], 0.0)) if fix.covariance_type > 0 else 0.0
        radius = max(prior_radius_m, 3.0 * sigma)
        self.gps = (M.stamp_to_ns(msg.header.stamp) or now_ns, np.asarray(enu, np.float64).reshape(3), radius)

    def add_odometry(self, msg: Any, now_ns: int) -> None:
        """An Odometry in the world frame: its position becomes the odometry prior."""
        p = msg.pose.pose.position
        self.odometry = (M.stamp_to_ns(msg.header.stamp) or now_ns, np.array([p.x, p.y, p.z], np.float64))
