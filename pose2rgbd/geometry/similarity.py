"""Similarity transforms (Sim(3)) between point sets: the closed-form least-squares fit (Umeyama 1991), weighted,
and a robust fit for trajectories with outliers (RANSAC over minimal samples, then iteratively re-weighted least
squares), with the residual statistics and a bootstrap uncertainty of the scale.

The use: camera centres of a structure-from-motion reconstruction (arbitrary frame and scale) against the GPS
positions of the same frames (ENU metres), so that every SfM pose becomes metric. GPS fixes jump (multipath,
a bad fix after a turn), so a plain least-squares fit is pulled by a few wrong fixes; RANSAC finds the consensus
and the re-weighting uses every fix by how well it agrees.

Written here, not taken from a library: the weighted Umeyama fit is a few lines of SVD, and the libraries that
have RANSAC Sim(3) (open3d, evo) are large and not dependencies; ``skimage.measure.ransac`` has no weighted
refit or bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError


def umeyama(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s, R, t)`` minimizing ``sum_i w_i |dst_i - (s R src_i + t)|^2`` (Umeyama 1991, weighted)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / max(float(w.sum()), 1e-300)
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = float(w @ (xs**2).sum(1))
    s = float(np.trace(np.diag(D) @ S) / var_s) if var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def apply_sim3(s: float, R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``s R p + t`` for each row of ``points`` (N, 3)."""
    out: np.ndarray = s * np.asarray(points, np.float64) @ np.asarray(R).T + np.asarray(t)
    return out


@dataclass
class Sim3Fit:
    """A robust Sim(3) ``dst ~ s R src + t``: ``inliers`` (N,) bool; residuals (metres of ``dst``) ``rms`` over
    the inliers and ``median`` over all points; ``scale_sigma`` (bootstrap std of ``s``) and ``scale_ci`` (its
    2.5 / 97.5 percentiles); ``weights`` (N,) the weights of the final fit (the inlier mask)."""

    s: float
    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray = field(repr=False)
    residuals: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    rms: float
    median: float
    scale_sigma: float
    scale_ci: tuple[float, float]
    threshold: float

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum())

    def apply(self, points: np.ndarray) -> np.ndarray:
        return apply_sim3(self.s, self.R, self.t, points)

    def summary(self) -> dict[str, Any]:
        return {
            "scale": self.s,
            "scale_sigma": self.scale_sigma,
            "scale_rel_sigma": self.scale_sigma / self.s if self.s > 0 else float("nan"),
            "scale_ci95": [float(self.scale_ci[0]), float(self.scale_ci[1])],
            "residual_rms_m": self.rms,
            "residual_median_m": self.median,
            "points": len(self.inliers),
            "inliers": self.n_inliers,
            "threshold_m": self.threshold,
        }


def _residuals(s: float, R: np.ndarray, t: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    r: np.ndarray = np.linalg.norm(apply_sim3(s, R, t, src) - dst, axis=1)
    return r


def _well_spread(p: np.ndarray) -> bool:
    """Three points that span a triangle (not nearly collinear), so the rotation is determined."""
    a, b = p[1] - p[0], p[2] - p[0]
    return float(np.linalg.norm(np.cross(a, b))) > 1e-6 * max(float(np.dot(a, a) + np.dot(b, b)), 1e-300)


def robust_sim3(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    threshold: float = 5.0,
    iterations: int = 500,
    irls_iterations: int = 10,
    bootstrap: int = 300,
    block: int = 0,
    seed: int = 0,
) -> Sim3Fit:
    """Robust ``dst ~ s R src + t`` (see the module docstring).

    RANSAC: ``iterations`` minimal samples of 3 points, each scored by the count of points within ``threshold``
    (units of ``dst``: metres for GPS); the best consensus is refitted (Umeyama), then ``irls_iterations`` of
    re-weighting with Cauchy weights ``1 / (1 + (r / c)^2)`` (``c`` = ``threshold`` / 2), so a fix that agrees
    counts fully and an outlier counts almost nothing. Inliers: residual below ``threshold`` after that; the
    result is the least-squares fit over the inliers (``weights``: 1 for an inlier, 0 otherwise).

    Scale uncertainty: a moving-block bootstrap over the points in their order (``block`` points per block; 0:
    ``sqrt(N)``), each resample refitted with the final weights: blocks keep the time correlation of GPS errors,
    which a point-by-point bootstrap would hide."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n = len(src)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ConfigError(f"sim3: need two (N, 3) point sets of one shape, got {src.shape} and {dst.shape}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ConfigError("sim3: the points contain NaN / inf; give only the frames that have both positions")
    if n < 3:
        raise ConfigError(f"sim3: need at least 3 point pairs, got {n}")
    if not threshold > 0:
        raise ConfigError(f"sim3: threshold must be > 0, got {threshold}")
    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    best_score = (-1, np.inf)
    for _ in range(iterations):
        k = rng.choice(n, 3, replace=False)
        if not (_well_spread(src[k]) and _well_spread(dst[k])):
            continue
        s, R, t = umeyama(src[k], dst[k])
        if not s > 0:
            continue
        r = _residuals(s, R, t, src, dst)
        inl = r < threshold
        score = (int(inl.sum()), float(np.sum(np.minimum(r, threshold))))
        if score[0] > best_score[0] or (score[0] == best_score[0] and score[1] < best_score[1]):
            best, best_score = inl, score
    if best is None or best.sum() < 3:
        best = np.ones(n, bool)  # degenerate (collinear) data: least squares over all, the re-weighting decides
    s, R, t = umeyama(src[best], dst[best])
    c = threshold / 2.0
    w = best.astype(np.float64)
    for _ in range(irls_iterations):
        r = _residuals(s, R, t, src, dst)
        w = 1.0 / (1.0 + (r / c) ** 2)
        s, R, t = umeyama(src, dst, w)
    r = _residuals(s, R, t, src, dst)
    inl = r < threshold
    if inl.sum() < 3:
        inl = np.isin(np.arange(n), np.argsort(r)[:3])
    # the final estimate: least squares over the inliers (unbiased for Gaussian GPS noise, where the Cauchy
    # weights would still let the outliers pull a little)
    w = inl.astype(np.float64)
    s, R, t = umeyama(src, dst, w)
    r = _residuals(s, R, t, src, dst)
    b = block or max(1, round(np.sqrt(n)))
    b = min(b, n)
    n_blocks = int(np.ceil(n / b))
    scales = np.empty(bootstrap)
    for j in range(bootstrap):
        starts = rng.integers(0, n - b + 1, n_blocks)
        idx = (starts[:, None] + np.arange(b)[None]).ravel()[:n]
        wj = w[idx]
        scales[j] = umeyama(src[idx], dst[idx], wj)[0] if wj.sum() >= 3 else s
    lo, hi = np.percentile(scales, [2.5, 97.5])
    return Sim3Fit(
        s=float(s), R=R, t=t, inliers=inl, residuals=r, weights=w,
        rms=float(np.sqrt(np.mean(r[inl] ** 2))), median=float(np.median(r)),
        scale_sigma=float(np.std(scales)), scale_ci=(float(lo), float(hi)), threshold=float(threshold),
    )  # fmt: skip


@dataclass
class TrackTurn:
    """The turn about a nearly straight track that levels its cameras (:func:`level_about_track`): ``R`` (3, 3)
    the rotation about ``axis`` through ``centre`` by ``degrees``; ``roll_before`` / ``roll_after`` the cameras' RMS
    image-x tilt from level (degrees); ``rms_before`` / ``rms_after`` the GPS residual RMS (metres); ``applied``
    whether it passed (else ``why`` says why not)."""

    R: np.ndarray
    axis: np.ndarray
    centre: np.ndarray
    degrees: float
    roll_before: float
    roll_after: float
    rms_before: float
    rms_after: float
    applied: bool
    why: str = ""

    def apply(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``T_world_cam`` (N, 4, 4) turned (a copy): rotations and camera centres about the track."""
        T = np.array(T_world_cam, np.float64, copy=True)
        T[:, :3, :3] = self.R @ T[:, :3, :3]
        T[:, :3, 3] = (T[:, :3, 3] - self.centre) @ self.R.T + self.centre
        return T

    def summary(self) -> dict[str, object]:
        return {
            "turn_deg": round(self.degrees, 2),
            "roll_rms_deg": [round(self.roll_before, 2), round(self.roll_after, 2)],
            "gps_rms_m": [round(self.rms_before, 3), round(self.rms_after, 3)],
            "applied": self.applied,
            **({"why": self.why} if self.why else {}),
        }


def level_about_track(
    T_world_cam: np.ndarray,
    gps: np.ndarray,
    *,
    up: np.ndarray | None = None,
    max_spread: float = 0.15,
    max_rms_increase_m: float = 0.5,
) -> TrackTurn | None:
    """The turn about the GPS track's axis that levels the cameras, for poses aligned to GPS (ENU) along a nearly
    straight track; ``None`` for a track that is not one.

    GPS positions along a line fix a similarity up to a turn about that line: the fit takes whatever turn the fixes'
    sideways noise suggests (a walk along a building came out turned 107 deg, its image x pointing down). Cameras are
    carried, flown and mounted upright: their image x axes level, their image y and view pointing down on the whole.
    So the turn about the axis (the track's principal direction through its centroid) is the one that makes the
    image x axes most level (least squares over a 0.5 deg scan refined to 0.01 deg), of the two such turns the one
    whose cameras look and face down. It is ``applied`` when the GPS residual RMS it leaves is at most
    ``max_rms_increase_m`` above the fit's (GPS sees no difference); else GPS does see the turn and the fit stands.
    A track is nearly straight when its sideways spread (second singular value) is below ``max_spread`` of its
    length's (first). ``None`` too where the cameras cannot tell the turn: their image x axes along the track (a
    side-looking camera, or a nadir one with image x along the flight line), whose tilt the turn does not change."""
    T = np.asarray(T_world_cam, np.float64)
    G = np.asarray(gps, np.float64)
    u = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, np.float64)
    if len(T) < 3 or G.shape != (len(T), 3):
        raise ConfigError(f"level_about_track: {len(T)} poses and GPS of shape {G.shape}")
    centre = G.mean(0)
    _, s, vt = np.linalg.svd(G - centre, full_matrices=False)
    if not s[0] > 0 or s[1] > max_spread * s[0]:
        return None
    a = vt[0]
    x = T[:, :3, 0]
    down = T[:, :3, 1] + T[:, :3, 2]

    def tilt(th: np.ndarray, v: np.ndarray) -> np.ndarray:  # (angles, N): u . (rotation of v about a by th)
        c, sn = np.cos(th)[:, None], np.sin(th)[:, None]
        out: np.ndarray = c * (v @ u) + sn * (np.cross(a, v) @ u) + (1 - c) * (v @ a)[None] * float(a @ u)
        return out

    def costs(th: np.ndarray) -> np.ndarray:
        cost: np.ndarray = (tilt(th, x) ** 2).mean(1)
        return np.where(tilt(th, down).sum(1) < 0, cost, np.inf)  # looking and facing down on the whole

    scan = np.radians(np.arange(-180.0, 180.0, 0.5))
    cost = costs(scan)
    if not np.isfinite(cost).any() or float(np.ptp(cost[np.isfinite(cost)])) < 0.01:
        return None  # the image x axes run along the track (or never look down): their roll does not tell the turn
    th = float(scan[int(np.argmin(cost))])
    fine = th + np.radians(np.arange(-0.5, 0.5, 0.01))
    th = float(fine[int(np.argmin(costs(fine)))])
    R = np.asarray(Rotation.from_rotvec(th * a).as_matrix())

    def roll(v: np.ndarray) -> float:  # RMS tilt of image x axes from level (degrees)
        return float(np.degrees(np.sqrt(np.mean(np.arcsin(np.clip(v @ u, -1, 1)) ** 2))))

    def rms(C: np.ndarray) -> float:  # GPS residual RMS (metres)
        return float(np.sqrt(np.mean(np.sum((C - G) ** 2, 1))))

    C_after = (T[:, :3, 3] - centre) @ R.T + centre
    turn = TrackTurn(R, a, centre, float(np.degrees(th)), roll(x), roll(x @ R.T), rms(T[:, :3, 3]), rms(C_after),
                     applied=True)  # fmt: skip
    if turn.rms_after > turn.rms_before + max_rms_increase_m:
        turn.applied = False
        turn.why = (f"the turn would take the GPS residual RMS from {turn.rms_before:.2f} to {turn.rms_after:.2f} m "
                    f"(more than {max_rms_increase_m} m): GPS fixes it")  # fmt: skip
    return turn
