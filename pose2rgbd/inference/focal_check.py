"""Whether the queries' camera fits their matches: the focal length the structure localizer was given
(``--camera``, the node's ``camera`` parameter or CameraInfo, a photo's EXIF, or the map's camera scaled to the image)
against the one the fix's inliers fit.

A wrong focal length does not stop a fix: the absolute pose absorbs it by moving the camera along its axis, the
reprojection residuals stay small, and so does the covariance computed from them. On the GoPro hero7 clip's map
(65 held-out frames, 424x240, true fx 127.4 px) a query camera of fx 180 px fixed all 65 images 1.3 m off at the
median where the true camera gives 0.027 m, with sigmas of centimetres to decimetres; 140.1 px (+10 %) put them 0.34 m
off, 133.8 px (+5 %) 0.18 m and 130.6 px (+2.5 %) 0.10 m, each with sigmas several times too small.

:func:`focal_scale` refines the fix's pose and a common factor of the focal lengths on its inliers (SciPy's
``least_squares``, Huber loss; the Jacobian gives the factor's standard deviation). On the same frames it was 1.004 at
the median with the true camera (5-95 %: 0.992-1.016; karma's held-out frames 1.005, 0.986-1.034), 0.967 at +5 %,
0.931 at +10 % and 0.768 at +41 %: it points the right way and most of the way (the inliers were chosen with the
wrong camera). One fix's factor scatters by a few percent, and the median of 25 fixes of a correct camera reached
1.028 (the hero7 map of a route split, its held-out block's frames), so a focal length a few percent off is not told
from a right one (``focal_tolerance`` 0.05; +5 % measures 0.966). One fix's scatter is why :class:`FocalCheck`
judges the camera on the median of the last fixes (``WINDOW``, at least ``MIN_FIXES``) where that median is
significant (photos through a long lens fit the factor to 5-20 % each), and one fix alone only when it is far off
(``GROSS``, and many standard deviations). A camera judged wrong flags every fix made with it (out of distribution:
its covariance is inflated like any flagged fix's) and is named once in a warning with the focal length the matches
fit.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

WINDOW = 25  # the camera is judged on the median of this many of the last fixes' factors
MIN_FIXES = 5  # ... once there are at least this many
# One fix's factor scatters about 3 times its Jacobian standard deviation: with the true camera |factor - 1| over
# it had a median of 1.7-2.0 (hero7's, karma's and a route-split map's held-out frames) where a normal gives 0.67.
SIGMA_SCALE = 3.0
SIGNIFICANCE = 3.0  # the window's median must lie this many of its standard errors from 1
GROSS = 0.15  # one fix alone: a factor this far from 1 (and GROSS_SIGMAS scaled standard deviations) is a wrong camera
GROSS_SIGMAS = 5.0


@dataclass(frozen=True)
class FocalEstimate:
    """The factor by which the focal lengths fit a fix's inliers best (1: as given) and its standard deviation."""

    scale: float
    sigma: float


def focal_scale(T_world_cam: np.ndarray, X: np.ndarray, x: np.ndarray, K: np.ndarray) -> FocalEstimate:
    """Refine the pose ``T_world_cam`` (4, 4) and one factor of both focal lengths of ``K`` (3, 3) on world points
    ``X`` (n, 3) seen at pixels ``x`` (n, 2) (the fix's inliers, pinhole pixels of ``K``). Huber loss at 2 px; the
    standard deviation from ``s^2 (J^T J)^-1`` with the residuals' ``s`` (at least 0.5 px). A degenerate problem
    (fewer than 7 points, a failed solve) gives NaN."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    X = np.asarray(X, np.float64).reshape(-1, 3)
    x = np.asarray(x, np.float64).reshape(-1, 2)
    if len(X) < 7:
        return FocalEstimate(math.nan, math.nan)
    R0, c0 = np.asarray(T_world_cam, np.float64)[:3, :3], np.asarray(T_world_cam, np.float64)[:3, 3]
    f = np.array([K[0, 0], K[1, 1]], np.float64)
    pp = np.array([K[0, 2], K[1, 2]], np.float64)

    def residuals(p: np.ndarray) -> np.ndarray:
        R = Rotation.from_rotvec(p[3:6]).as_matrix() @ R0
        q = (X - (c0 + p[:3])) @ R  # world -> camera: R^T (X - c)
        z = np.where(np.abs(q[:, 2:3]) < 1e-9, 1e-9, q[:, 2:3])
        r: np.ndarray = (q[:, :2] / z * f * math.exp(p[6]) + pp - x).reshape(-1)
        return r

    try:
        sol = least_squares(residuals, np.zeros(7), loss="huber", f_scale=2.0, x_scale=[1e-2] * 3 + [1e-3] * 3 + [1e-2])
    except (ValueError, np.linalg.LinAlgError):
        return FocalEstimate(math.nan, math.nan)
    if not sol.success or not np.all(np.isfinite(sol.x)):
        return FocalEstimate(math.nan, math.nan)
    J = np.asarray(sol.jac)
    s2 = max(float(sol.fun @ sol.fun) / max(len(sol.fun) - 7, 1), 0.25)
    try:
        var = float(s2 * np.linalg.inv(J.T @ J)[6, 6])
    except np.linalg.LinAlgError:
        return FocalEstimate(math.nan, math.nan)
    scale = math.exp(float(sol.x[6]))
    return FocalEstimate(scale, scale * math.sqrt(var) if var >= 0 else math.nan)


CameraKey = tuple[float, ...]  # a camera's intrinsics and size, as the localizer tells one from another
MAX_CAMERAS = 64  # windows kept (the most recently used cameras): photos with their own EXIF camera each have one


class FocalCheck:
    """The run's judgement of the queries' cameras (see the module docstring), one window of fixes per camera (a
    photo's own EXIF camera is judged on its own fixes, not on other cameras'); ``median``, ``scales`` and
    :meth:`verdict` are those of the camera of the last fix. ``tolerance``: a median factor further than this from 1
    is a wrong camera. Not thread-safe: the localizer holds its lock around it."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self._windows: OrderedDict[CameraKey, deque[FocalEstimate]] = OrderedDict()
        self._current: CameraKey | None = None
        self._warned: set[CameraKey] = set()
        self.flagged = 0  # fixes flagged for their camera

    def reset(self) -> None:
        """Forget the fixes of every camera."""
        self._windows.clear()
        self._current, self._warned, self.flagged = None, set(), 0

    @property
    def cameras(self) -> int:
        """How many cameras have windows."""
        return len(self._windows)

    @property
    def estimates(self) -> tuple[FocalEstimate, ...]:
        """The last fixes' estimates of the current camera, oldest first (one snapshot: a node's diagnostics read
        them from another thread)."""
        window = self._windows.get(self._current) if self._current is not None else None
        return tuple(window) if window is not None else ()

    @property
    def scales(self) -> tuple[float, ...]:
        """The last fixes' factors of the current camera, oldest first."""
        return tuple(e.scale for e in self.estimates)

    @property
    def median(self) -> float:
        """The median factor of the current camera's last fixes (NaN without any)."""
        scales = self.scales
        return float(np.median(scales)) if scales else math.nan

    def add(self, est: FocalEstimate, camera: CameraKey = ()) -> str:
        """Take one fix's estimate, made with ``camera``; the reason to flag the fix ("" none): the camera judged
        wrong on its window's median, or by this fix alone where it is far off. A tolerance of 0 judges nothing."""
        if self.tolerance <= 0:
            return ""
        window = self._windows.setdefault(camera, deque(maxlen=WINDOW))
        self._windows.move_to_end(camera)  # the most recent last
        while len(self._windows) > MAX_CAMERAS:
            self._windows.popitem(last=False)
        self._current = camera
        reason = ""
        if math.isfinite(est.scale) and math.isfinite(est.sigma):
            window.append(est)
            off = abs(est.scale - 1.0)
            if off > max(GROSS, self.tolerance) and off > GROSS_SIGMAS * SIGMA_SCALE * est.sigma:
                reason = f"camera focal: this fix's matches fit {est.scale:.2f} x the given focal length"
        reason = self.verdict() or reason
        self.flagged += bool(reason)
        return reason

    def first_verdict(self) -> bool:
        """Whether the current camera is judged wrong for the first time (the localizer warns once per camera)."""
        if self._current is None or self._current in self._warned or not self.verdict():
            return False
        self._warned.add(self._current)
        return True

    def verdict(self) -> str:
        """The reason every fix of the current camera is flagged while its window's median factor is off ("" while
        it fits): further from 1 than the tolerance and than ``SIGNIFICANCE`` standard errors of the median, taken
        from the factors' spread (their median absolute deviation) or their own standard deviations
        (``SIGMA_SCALE`` x), whichever is larger -- photos of a far landmark through a long lens fix the factor to no
        better than 5-20 % each."""
        ests = self.estimates
        if self.tolerance <= 0 or len(ests) < MIN_FIXES:
            return ""
        s = np.array([e.scale for e in ests])
        m = float(np.median(s))
        off = abs(m - 1.0)
        if off <= self.tolerance:
            return ""
        sd = np.array([e.sigma for e in ests])
        one = max(1.4826 * float(np.median(np.abs(s - m))), SIGMA_SCALE * float(np.median(sd)))
        if not off > SIGNIFICANCE * 1.2533 * one / math.sqrt(len(s)):  # 1.2533: the median's standard error
            return ""
        return f"camera focal: the last {len(s)} fixes' matches fit {m:.2f} x the given focal length"
