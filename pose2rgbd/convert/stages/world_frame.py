"""The world frame a bag's dataset is written in: the robot's own TF frame where the bag has one, else the GPS's ENU
frame about the datum.

The time-offset stage makes every pose in a local ENU frame about the datum (the first fix, or ``--datum``). A robot
looks its camera up in its own ``map`` (REP-105), which is ENU about the datum only when something made it so: a
SLAM map starts where the robot did, facing where it faced; robot_localization's ``map`` is turned and shifted
against UTM. A dataset in the ENU frame, named ``map``, then puts every pose the render node looks up tens of metres
and degrees away from the training cameras. So where the bag's ``/tf`` links a world frame to the robot's body, the
conversion fits ``T_world_enu`` -- a turn about up and a shift, the two frames taken as z-up (REP-103 / REP-105) --
from the body's positions in both frames at the kept frames, writes the poses in that frame and keeps the transform
with the datum (:attr:`pose2rgbd.geometry.Datum.world_from_enu`), so a GPS fix still finds its place
(:meth:`~pose2rgbd.geometry.Datum.to_world`).

Only the frame moves: the poses written are the GPS's (time-synchronized, oriented as the conversion chose) in the
robot's frame, not the robot's TF poses; the fit's residual says how far the two tracks differ (a SLAM map that
bends, GPS multipath). A fit that cannot see the turn (the robot did not move far enough for the GPS's noise) keeps
the ENU frame under ``auto`` and is an error when a frame was named.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

AUTO_TF_WORLDS = ("map", "world")  # what `auto` looks for in /tf, in order (odom drifts; earth is ECEF)
ENU_NAME = "map"  # the name the ENU frame is written under (REP-105's map when the datum is the map's origin)
ENU_OTHER_NAME = "enu"  # its name where the bag's TF has a robot frame the fit could not reach (not that frame)
MIN_FRAMES = 10
MIN_SPREAD_M = 2.0  # RMS horizontal distance of the body from its mean: less, and the GPS's noise turns the fit
MAX_YAW_SIGMA_DEG = 2.0  # the fit's turn uncertain by more than this (residuals' correlation counted): not used
OUTLIER_K, OUTLIER_MIN_M = 4.0, 1.0  # frames farther off than both from the first fit are left out of the second
YAW_NOTICE_DEG = 2.0  # a turn above this makes an orientation source's frame matter (ENU or the robot's)
WARN_RMS_M = 3.0  # a horizontal residual above this is worth a warning (the robot's frame and the GPS disagree)


@dataclass
class WorldFit:
    """``T_world_enu`` of the TF frame ``frame``, fitted on ``frames`` body positions (``chain``: the TF path)."""

    frame: str
    chain: str
    T_world_enu: np.ndarray
    frames: int
    spread_m: float
    rms_horizontal_m: float
    rms_vertical_m: float
    max_m: float
    yaw_sigma_deg: float
    p_enu: np.ndarray  # (N, 3) the body's GPS positions fitted (ENU about the datum)
    p_world: np.ndarray  # (N, 3) the same frames' body positions in TF
    residuals: np.ndarray  # (N, 3) p_world minus the GPS positions moved by the fit

    @property
    def yaw_deg(self) -> float:
        return math.degrees(math.atan2(self.T_world_enu[1, 0], self.T_world_enu[0, 0]))

    def to_dict(self) -> dict[str, object]:
        t = self.T_world_enu[:3, 3]
        return {
            "frame": self.frame, "kind": "tf", "tf": self.chain, "frames": self.frames,
            "yaw_deg": round(self.yaw_deg, 4), "translation_m": [round(float(v), 4) for v in t],
            "spread_m": round(self.spread_m, 3), "rms_horizontal_m": round(self.rms_horizontal_m, 3),
            "rms_vertical_m": round(self.rms_vertical_m, 3), "max_m": round(self.max_m, 3),
            "yaw_sigma_deg": round(self.yaw_sigma_deg, 4),
        }  # fmt: skip

    def assumption(self) -> str:
        t = self.T_world_enu[:3, 3]
        return (
            f"world frame: the bag's TF frame '{self.frame}' ({self.chain}); the GPS's ENU poses turned "
            f"{self.yaw_deg:+.2f} deg about up and shifted by ({t[0]:.2f}, {t[1]:.2f}, {t[2]:.2f}) m into it, fitted "
            f"on {self.frames} frames' body positions (RMS {self.rms_horizontal_m:.2f} m horizontal, "
            f"{self.rms_vertical_m:.2f} m vertical; both frames taken as z-up)"
        )


def fit_yaw_shift(p_enu: np.ndarray, p_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(T_world_enu, residuals (N, 3), yaw sigma in rad)``: the turn about z and the shift that carry the ``(N, 3)``
    points ``p_enu`` nearest ``p_world`` in least squares (closed form: the turn from the centred horizontal
    coordinates' cross and dot sums; the shift from the means). The sigma is the turn's standard error from the
    horizontal residual and the points' spread. Written here rather than taken from a library: the 4-DoF case (SciPy's
    ``Rotation.align_vectors`` and the Umeyama fits turn about every axis, which GPS altitude noise would tilt)."""
    a, b = np.asarray(p_enu, np.float64), np.asarray(p_world, np.float64)
    ca, cb = a.mean(0), b.mean(0)
    da, db = a[:, :2] - ca[:2], b[:, :2] - cb[:2]
    yaw = math.atan2(float(np.sum(da[:, 0] * db[:, 1] - da[:, 1] * db[:, 0])), float(np.sum(da * db)))
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = cb - T[:3, :3] @ ca
    res = b - (a @ T[:3, :3].T + T[:3, 3])
    spread2 = float(np.sum(da**2))
    dof = max(2 * len(a) - 3, 1)  # 2N horizontal residual components, 3 horizontal parameters (the turn, the shift)
    sigma_h = math.sqrt(float(np.sum(res[:, :2] ** 2)) / dof)
    return T, res, (sigma_h / math.sqrt(spread2) if spread2 > 0 else math.inf)


def fit_world(frame: str, chain: str, p_enu: np.ndarray, p_world: np.ndarray) -> tuple[WorldFit | None, str]:
    """The fit of :func:`fit_yaw_shift` (again without the frames far off the first fit, and with the turn's standard
    error widened for residuals correlated in time), or ``(None, why)`` where it cannot see the turn (too few frames,
    too little horizontal motion, or a turn uncertain by more than :data:`MAX_YAW_SIGMA_DEG`)."""
    n = len(p_enu)
    if n < MIN_FRAMES:
        return None, f"{n} kept frames have a pose in TF '{frame}' (at least {MIN_FRAMES} needed)"
    spread = float(np.sqrt(np.mean(np.sum((p_enu[:, :2] - p_enu[:, :2].mean(0)) ** 2, axis=1))))
    if spread < MIN_SPREAD_M:
        return None, (f"the robot moved {spread:.2f} m RMS horizontally, under {MIN_SPREAD_M} m: the turn between "
                      f"TF '{frame}' and the GPS's ENU frame cannot be fitted")  # fmt: skip
    T, res, sigma = fit_yaw_shift(p_enu, p_world)
    h = np.hypot(res[:, 0], res[:, 1])
    # one pass without the frames far off the rest (a GPS multipath jump, a map's loop closure); the fit and its
    # residuals are then those of the frames kept, the figures and the numbers of all of them
    far = h > max(OUTLIER_K * float(np.median(h)), OUTLIER_MIN_M)
    fitted = np.ones(n, bool)  # the frames the sigma came from: their residuals say how correlated its errors are
    if far.any() and (~far).sum() >= max(MIN_FRAMES, len(h) // 2):
        fitted = ~far
        T, _, sigma = fit_yaw_shift(p_enu[fitted], p_world[fitted])
        res = p_world - (p_enu @ T[:3, :3].T + T[:3, 3])
        h = np.hypot(res[:, 0], res[:, 1])
    sigma *= _correlation_inflation(res[fitted, :2])
    fit = WorldFit(
        frame, chain, T, n, spread, float(np.sqrt(np.mean(h**2))), float(np.sqrt(np.mean(res[:, 2] ** 2))),
        float(np.linalg.norm(res, axis=1).max()), math.degrees(sigma), p_enu, p_world, res,
    )  # fmt: skip
    if fit.yaw_sigma_deg > MAX_YAW_SIGMA_DEG:
        return None, (f"the turn between TF '{frame}' and the GPS's ENU frame is uncertain by "
                      f"{fit.yaw_sigma_deg:.1f} deg (RMS residual {fit.rms_horizontal_m:.2f} m over a spread of "
                      f"{spread:.1f} m; at most {MAX_YAW_SIGMA_DEG} deg)")  # fmt: skip
    return fit, ""


def _correlation_inflation(res: np.ndarray) -> float:
    """How much a standard error from ``(N, 2)`` residuals in time order understates the truth when they are
    correlated from one frame to the next (GPS noise drifts, a map bends): ``sqrt(N / N_eff)`` with ``N_eff = N (1 -
    rho) / (1 + rho)`` of their lag-1 autocorrelation ``rho`` (an AR(1) model; 1 where they are independent)."""
    r = res - res.mean(0)
    den = float(np.sum(r[:-1] * r[:-1]))
    if len(r) < 3 or den <= 0:
        return 1.0
    rho = min(max(float(np.sum(r[1:] * r[:-1])) / den, 0.0), 0.99)
    return math.sqrt((1 + rho) / (1 - rho))


def poses_in_world(
    T_enu_cam: np.ndarray, T_body_cam: np.ndarray, T_world_enu: np.ndarray, R_world_track: np.ndarray | None = None
) -> np.ndarray:
    """The ``(N, 4, 4)`` camera poses in the world: the body (the GPS's position, placed by the time-offset stage)
    moved by ``T_world_enu`` and the camera hung from it by the mount ``T_body_cam``. The body's rotation (as the
    orientation source gave it, in the source's own frame) is turned into the world by ``T_world_enu`` -- a source
    in ENU -- or, with ``R_world_track`` (``(N, 3, 3)`` or ``(3, 3)``), by the rotation of the source's frame in the
    world at each frame (a TF track of the world frame itself: the identity; odometry whose frame TF places in the
    world: that link)."""
    T_enu_body = np.asarray(T_enu_cam, np.float64) @ np.linalg.inv(T_body_cam)
    T_world_body = np.asarray(T_world_enu, np.float64) @ T_enu_body
    if R_world_track is not None:
        T_world_body[:, :3, :3] = np.asarray(R_world_track, np.float64) @ T_enu_body[:, :3, :3]
    out: np.ndarray = T_world_body @ T_body_cam
    return out


def world_warning(fit: WorldFit) -> str | None:
    """A warning where the robot's frame and the GPS disagree by more than :data:`WARN_RMS_M` after the fit."""
    if fit.rms_horizontal_m <= WARN_RMS_M:
        return None
    return (
        f"the robot's TF frame '{fit.frame}' and the GPS track differ by {fit.rms_horizontal_m:.1f} m RMS "
        f"(up to {fit.max_m:.1f} m) after the best turn and shift: a map that drifts or bends, or GPS multipath; the "
        f"poses written are the GPS's, so renders at poses from TF may sit that far from where the camera was. "
        "--world-frame enu keeps the GPS's ENU frame"
    )
