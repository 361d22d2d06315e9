"""The ground of a place: one plane fitted to its keyframes' depth, the lowest large surface under the cameras.

A view rendered far from every keyframe has holes where no keyframe point lands, mostly the near ground: the
keyframes saw that ground from elsewhere, or not at all, and its points do not reach the new view. A hole rule that
looks only at the view's own pixels (the farther surface along the row, :mod:`pose2rgbd.methods.hybrid.hole_depth`)
then gives the ground the depth of the buildings behind it. The ground plane bounds it: a ray that goes down to the
ground cannot see anything beyond it, so a hole's depth is at most where its ray meets the ground
(:meth:`GroundPlane.depth`). Measured on an unseen place of the simulator's sensor-realism mode (docs/results.md,
"The ground under the holes").

:func:`fit_ground_plane` is a RANSAC over the keyframes' points whose hypotheses must be what a ground is, not only
a plane with many points on it: nearly level (its normal within ``max_tilt_deg`` of up), with the cameras above it
and (almost) no point below it. A facade is a large plane with every camera on one side, so the level test is what
keeps it out; a desk is level with the cameras above, so the lowest-surface test keeps it out where the floor was
seen. Up is the world's z where the world is geo-referenced (a local ENU frame: the keyframes' dataset has a
datum) and the cameras stand upright in it (:func:`up_fits_cameras`: a video's world aligned to GPS along a straight
track may be turned about it); else the direction every camera's image x axis is square to (cameras are held,
flown and mounted without roll), which needs the heading to turn (:func:`up_direction`).

Hand-written (numpy) rather than Open3D's ``segment_plane`` because these tests decide between hypotheses inside
the loop (Open3D returns the plane with the most inliers, which is often a wall), and because the same keyframes
must give the same plane every time (a seeded generator) without importing Open3D into the serving path. ``None``
where no plane passes (up unclear, no level plane under the cameras): a place without a ground keeps the hole rule
alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pose2rgbd.placemap.keyframes import Keyframes


@dataclass(frozen=True)
class GroundPlane:
    """The plane ``normal . X + offset = 0`` in the world frame, ``normal`` (unit) pointing to the side the cameras
    are on; ``inliers``: the share of the sampled keyframe points within ``tolerance_m`` of it."""

    normal: np.ndarray  # (3,) float64
    offset: float
    tolerance_m: float
    inliers: float

    def height(self, points: np.ndarray) -> np.ndarray:
        """Signed height of world points ``(..., 3)`` above the plane (metres)."""
        h: np.ndarray = np.asarray(points, np.float64) @ self.normal + self.offset
        return h

    def depth(self, T_world_cam: np.ndarray, rays: np.ndarray) -> np.ndarray:
        """Where each pixel's ray meets the plane, as depth along the optical axis (metres; REP-118),
        ``(B, H, W)`` float32 for poses ``(B, 4, 4)`` and the pixels' rays ``(H, W, 3)`` at optical z = 1
        (:meth:`~pose2rgbd.geometry.camera.PinholeCamera.rays`); +inf
        where the ray does not go down to the plane, and everywhere for a camera not above it."""
        toward, above = self.camera_terms(T_world_cam)
        down = -(np.asarray(rays, np.float32) @ toward.T)  # (H, W, B): descent per metre of z
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where((down > 1e-9) & (above > 0), above / down, np.float32(np.inf))
        return np.ascontiguousarray(z.transpose(2, 0, 1), np.float32)

    def camera_terms(self, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(toward (B, 3), above (B,))`` float32 for poses ``(B, 4, 4)``: the plane's normal in each camera's frame
        and the camera's height above the plane. A pixel's ray ``r`` (optical z = 1) meets the plane at depth
        ``above / -(r . toward)`` where that is positive (:meth:`depth`; a renderer on a GPU computes it there)."""
        T = np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4)
        toward = T[:, :3, :3].transpose(0, 2, 1) @ self.normal
        return toward.astype(np.float32), self.height(T[:, :3, 3]).astype(np.float32)


ENU_UP = np.array([0.0, 0.0, 1.0])  # the up of a geo-referenced world (a local ENU frame, REP-105's map)


def up_direction(T_world_cam: np.ndarray, *, min_turn: float = 0.15, max_spread: float = 0.35) -> np.ndarray | None:
    """The world's up axis from the cameras (REP-103 optical frames): the direction square to every camera's
    image x axis (the smallest right singular vector of the stacked x axes), signed so that the cameras' image y
    (down in the image) and optical z (the view) point down on the whole: a forward camera's image is upright, a
    nadir camera looks down. ``None`` when the x axes do not pin it down: all along one heading (a straight
    flight: the middle singular value below ``min_turn`` of the largest, any direction square to that heading
    fits), rolled freely (the smallest above ``max_spread`` of the middle one), or the cameras look up on the
    whole."""
    R = np.asarray(T_world_cam, np.float64)[:, :3, :3]
    if len(R) < 3:
        return None
    _, s, vt = np.linalg.svd(R[:, :, 0], full_matrices=False)
    if s[1] < min_turn * s[0] or s[2] > max_spread * s[1]:
        return None
    up = np.asarray(vt[2], np.float64)
    downward = float(np.sum((R[:, :, 1] + R[:, :, 2]) @ up))
    if abs(downward) < 0.1 * len(R):
        return None
    return up if downward < 0 else -up


def keyframe_samples(
    keyframes: Keyframes, *, max_keyframes: int = 200, points_per_keyframe: int = 1500
) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N, 3)`` from the depth of up to ``max_keyframes`` keyframes spread evenly over the store,
    each on a regular pixel grid of about ``points_per_keyframe`` (NaN and +inf sky left out), and their depths
    ``(N,)`` (metres along the optical axis of the keyframe that saw them)."""
    n = len(keyframes)
    rows = np.unique(np.linspace(0, n - 1, min(n, max_keyframes)).round().astype(np.int64))
    points, depths = [], []
    for i in rows:
        depth = np.asarray(keyframes.depth(int(i)), np.float32)
        h, w = depth.shape
        cam = keyframes.camera(int(i)).scaled(w, h)  # the depth image may be stored at another size
        step = max(1, int(np.sqrt(h * w / points_per_keyframe)))
        d = depth[step // 2 :: step, step // 2 :: step].astype(np.float64)
        ok = np.isfinite(d) & (d > 0)
        p = cam.rays()[step // 2 :: step, step // 2 :: step][ok] * d[ok, None]
        T = np.asarray(keyframes.T_world_cam[i], np.float64)
        points.append(p @ T[:3, :3].T + T[:3, 3])
        depths.append(d[ok])
    if not points:
        return np.zeros((0, 3)), np.zeros(0)
    return np.concatenate(points), np.concatenate(depths)


def fit_ground_plane(
    points: np.ndarray,
    camera_centres: np.ndarray,
    up: np.ndarray | None,
    *,
    tolerance_m: float,
    max_tilt_deg: float = 30.0,
    min_inliers: float = 0.05,
    max_below: float = 0.02,
    min_cameras_above: float = 0.95,
    hypotheses: int = 600,
    seed: int = 0,
) -> GroundPlane | None:
    """The ground plane of ``points`` (world, metres) under ``camera_centres`` (see the module docstring), or None.

    ``tolerance_m``: the inlier distance (:func:`keyframes_ground`: 2 % of the points' median depth, the scale of
    their noise). A hypothesis (the plane through 3 random points) counts when its normal is within
    ``max_tilt_deg`` of ``up``, at least ``min_cameras_above`` of the cameras are more than a tolerance above it, at
    most ``max_below`` of the points are more than two tolerances below it, and at least ``min_inliers`` of the
    points lie within a tolerance; the one with the most inliers wins and is refined by least squares on its
    inliers, then on those within a third of a tolerance (what stands on the ground has its foot among the
    inliers); a refinement that tips it more than 5 deg or breaks a test is not taken."""
    P = np.asarray(points, np.float64)
    C = np.asarray(camera_centres, np.float64).reshape(-1, 3)
    tol = float(tolerance_m)
    if up is None or len(P) < 50 or len(C) == 0 or not tol > 0:
        return None
    rng = np.random.default_rng(seed)
    tri = P[rng.integers(0, len(P), (hypotheses, 3))]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1)
    keep = norm > 1e-12
    n = n[keep] / norm[keep, None]
    n *= np.where(n @ up < 0, -1.0, 1.0)[:, None]  # up: a ground has the cameras on its upper side
    level = n @ up >= np.cos(np.radians(max_tilt_deg))
    n, origin = n[level], tri[keep][level, 0]
    if len(n) == 0:
        return None
    c = -np.einsum("ij,ij->i", n, origin)
    sample = P[rng.choice(len(P), min(len(P), 20000), replace=False)]

    def judge(normal: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Planes (k,) -> their inlier shares (k,) and whether they pass the tests (k,) bool, from one pass over
        the sample's heights, a block of hypotheses at a time (20,000 x 64 heights)."""
        inliers, below = np.zeros(len(offset)), np.zeros(len(offset))
        for j in range(0, len(offset), 64):
            h = sample @ normal[j : j + 64].T + offset[j : j + 64]
            inliers[j : j + 64] = (np.abs(h) <= tol).mean(0)
            below[j : j + 64] = (h < -2 * tol).mean(0)
        ok: np.ndarray = ((C @ normal.T + offset > tol).mean(0) >= min_cameras_above) & (below <= max_below)
        return inliers, ok

    inliers, ok = judge(n, c)
    score = np.where(ok, inliers, -1.0)
    best = int(np.argmax(score))
    if score[best] < min_inliers:
        return None
    normal, offset = n[best], float(c[best])
    for band in (tol, tol / 3.0):  # least squares on the inliers, then on the nearer ones (the foot of a wall)
        inl = sample[np.abs(sample @ normal + offset) <= band]
        if len(inl) < 3:
            break
        centre = inl.mean(0)  # the normal: the inliers' direction of least spread
        refined = np.linalg.svd(inl - centre, full_matrices=False)[2][2]
        refined = refined if refined @ normal >= 0 else -refined
        off = float(-refined @ centre)
        if refined @ normal < np.cos(np.radians(5.0)) or not judge(refined[None], np.array([off]))[1][0]:
            break  # a refinement that tips the plane or breaks a test is not one
        normal, offset = refined, off
    share = float((np.abs(sample @ normal + offset) <= tol).mean())
    return GroundPlane(np.asarray(normal, np.float64), float(offset), tol, share)


def up_fits_cameras(T_world_cam: np.ndarray, up: np.ndarray, *, max_roll_deg: float = 20.0) -> bool:
    """Whether the cameras stand upright under ``up``: their image x axes level within ``max_roll_deg`` on average
    and their image y and view pointing down on the whole (what :func:`up_direction` assumes of every camera). A
    world aligned to GPS along a straight track can be turned freely about the track (the fit does not see it), so
    a datum's ENU up is checked against the cameras before it is used."""
    R = np.asarray(T_world_cam, np.float64)[:, :3, :3]
    u = np.asarray(up, np.float64)
    level = float(np.mean(np.abs(R[:, :, 0] @ u))) <= np.sin(np.radians(max_roll_deg))
    return level and float(np.sum((R[:, :, 1] + R[:, :, 2]) @ u)) < 0.0


def keyframes_ground(
    keyframes: Keyframes, *, up: np.ndarray | None = None, tolerance: float = 0.02
) -> GroundPlane | None:
    """:func:`fit_ground_plane` of a keyframe store: its points (:func:`keyframe_samples`), camera centres and up:
    ``up`` (:data:`ENU_UP` for a geo-referenced world) where the cameras stand upright under it
    (:func:`up_fits_cameras`), else :func:`up_direction` of its cameras; the inlier tolerance ``tolerance`` of the
    points' median depth (about 1.4 m over a city seen from 50 m up, 3 cm over a desk seen from 1.5 m)."""
    T = np.asarray(keyframes.T_world_cam, np.float64)
    if up is None or not up_fits_cameras(T, up):
        up = up_direction(T)
    if up is None:
        return None
    points, depth = keyframe_samples(keyframes)
    if len(depth) == 0:
        return None
    return fit_ground_plane(points, T[:, :3, 3], up, tolerance_m=tolerance * float(np.median(depth)))
