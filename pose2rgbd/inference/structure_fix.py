"""The structure localizer's answer for one image (:class:`Fix`): a pose with its covariance and confidence, or none
and why; what the calibration (:mod:`pose2rgbd.inference.structure_calibration`) turns into what is published."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Fix:
    """The answer for one image: a pose with covariance, or none and why."""

    ok: bool
    reason: str  # "" with a fix
    T_world_cam: np.ndarray  # (4, 4); NaN without a fix
    covariance: np.ndarray  # (6, 6) world position (m) + rotation about world axes (rad); NaN without a fix
    confidence: float
    inliers: int = 0
    correspondences: int = 0
    keyframes: list[int] = field(default_factory=list)  # map rows of the matched keyframes
    prior: str = ""  # which prior gave the candidates ("" none)
    seconds: float = 0.0
    spread: float = math.nan  # share of the image the inliers' bounding box covers
    information: np.ndarray | None = None  # the raw information covariance (before the calibration)
    flag: str = ""  # why the calibration's gate puts the fix out of distribution ("" it does not)
    position_ratio: float = math.nan  # distance to the nearest keyframe over the map's spacing (position)
    pose_ratio: float = math.nan  # ... in the pose distance (position + rotation)
    confidence_bound_m: float = 0.0  # > 0: confidence is P(position error < this)
    scale: float = 1.0  # the query was scaled by this before matching (fit_to_map)
    hypothesis: np.ndarray | None = None  # no fix: the rejected pose RANSAC found (4, 4), where it found one
    quat_xyzw: np.ndarray | None = None  # a finished fix: its orientation as a canonical quaternion (x, y, z, w)
    support: tuple[np.ndarray, np.ndarray] | None = None  # the inliers' world points (n, 3) and pixels (n, 2)
    focal_scale: float = math.nan  # the focal lengths' factor the inliers fit best (focal_check; NaN: not checked)

    def out_of_distribution(self, threshold: float | None) -> bool:
        """Flagged by the calibration's gate, or a confidence below ``threshold`` (a calibration file's, or the
        node's; ``None``: none) -- the rule of the localize node and of ``localize images``."""
        return bool(self.flag) or (threshold is not None and self.confidence < threshold)
