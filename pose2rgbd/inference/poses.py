"""Poses as the render engine takes them: a checked batch (:func:`check_pose_batch`), the next poses predicted
for the look-ahead (:func:`extrapolate_constant_velocity`), how close a cached frame's pose is to a request
(:func:`pose_close`), the depth uncertainty of a cached frame served for such a request
(:func:`depth_sigma_for_offset`). What a request's coverage is measured against is
:func:`pose2rgbd.models.coverage.coverage_poses` (the depth uncertainty's fit measures the same).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.rotations import rotation_angle_between

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def check_pose_batch(T_world_cam: np.ndarray) -> np.ndarray:
    """``(4, 4)`` or ``(N, 4, 4)`` -> ``(N, 4, 4)`` float64; NaN / inf / non-rigid input raises GeometryError."""
    T = np.asarray(T_world_cam, dtype=np.float64)
    if T.shape == (4, 4):
        T = T[None]
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise GeometryError(f"poses: expected (N, 4, 4) or (4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise GeometryError("pose contains NaN or inf; rejected")
    R = T[:, :3, :3]
    err = np.abs(np.einsum("nji,njk->nik", R, R) - np.eye(3)).max() if len(T) else 0.0
    if err > 1e-4:
        raise GeometryError(f"pose rotation is not orthonormal (max error {err:.1e}); rejected")
    return T


def extrapolate_constant_velocity(
    t0_ns: int, T0: np.ndarray, t1_ns: int, T1: np.ndarray, query_ns: np.ndarray
) -> np.ndarray:
    """Constant linear and angular velocity (world frame) from two poses, evaluated at ``query_ns``.

    Returns ``(M, 4, 4)``. With ``t1_ns <= t0_ns`` the pose is held (zero velocity).
    """
    q = np.asarray(query_ns, dtype=np.int64)
    out = np.repeat(np.asarray(T1, dtype=np.float64)[None], len(q), axis=0)
    dt = (t1_ns - t0_ns) * 1e-9
    if dt <= 0:
        return out
    v = (T1[:3, 3] - T0[:3, 3]) / dt
    w = Rotation.from_matrix(T1[:3, :3] @ T0[:3, :3].T).as_rotvec() / dt  # world-frame angular velocity
    h = (q - t1_ns).astype(np.float64) * 1e-9
    out[:, :3, 3] = T1[:3, 3] + h[:, None] * v
    out[:, :3, :3] = Rotation.from_rotvec(h[:, None] * w).as_matrix() @ T1[:3, :3]
    return out


def pose_close(Ta: np.ndarray, Tb: np.ndarray, tol_m: float, tol_rad: float) -> tuple[bool, float]:
    dt = float(np.linalg.norm(Ta[:3, 3] - Tb[:3, 3]))
    c = (np.trace(Ta[:3, :3].T @ Tb[:3, :3]) - 1.0) / 2.0
    ang = float(np.arccos(np.clip(c, -1.0, 1.0)))
    ok = dt <= tol_m and ang <= tol_rad
    # a single score to pick the best cached entry: metres + radians scaled to metres by the tolerances
    score = dt / max(tol_m, 1e-9) + ang / max(tol_rad, 1e-9)
    return ok, score


# the largest window (pixels either side) the depth's local variation is taken over for a cached frame's offset
MAX_SHIFT_RADIUS_PX = 16


def depth_sigma_for_offset(
    depth: np.ndarray, sigma: np.ndarray, T_rendered: np.ndarray, T_requested: np.ndarray, camera: PinholeCamera
) -> np.ndarray:
    """The depth uncertainty ``(H, W)`` (metres) of a frame rendered for ``T_rendered`` and served for the nearby
    ``T_requested`` (the look-ahead cache; both ``T_world_cam``; ``camera`` the frame's): ``sigma`` (the render's
    own) widened, in quadrature, by how much the depth at a pixel can change between the two poses.

    That change is the translation ``|dt|`` (a surface's distance along the axis moves by at most as much), plus
    the depth's local variation over the pixel's image shift. The shift is the rotation's, ``f * angle * (1 + r^2)``
    pixels at a pixel ``r`` focal lengths from the principal point (its most, for a turn about an axis across the
    pixel's direction), plus the translation's parallax ``f * |dt| / depth``; the variation is the largest
    difference to a pixel of a window of the largest shift's radius (at most :data:`MAX_SHIFT_RADIUS_PX`) about
    the pixel, either way, times the pixel's shift over that radius: on a smooth surface its gradient times the
    shift, next to an edge that share of the jump. Measured on the README demo's test routes (64x64; docs/serving.md,
    "A cached frame's depth uncertainty"). NaN where ``sigma`` is NaN (no answer)."""
    T_a, T_b = np.asarray(T_rendered, np.float64), np.asarray(T_requested, np.float64)
    dt = float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    angle = float(rotation_angle_between(T_a[:3, :3], T_b[:3, :3]))
    if dt == 0.0 and angle == 0.0:
        return sigma
    d = np.asarray(depth, dtype=np.float32)
    h, w = d.shape
    valid = np.isfinite(d) & (d > 0)
    x = (np.arange(w, dtype=np.float32) - np.float32(camera.cx)) / np.float32(camera.fx)
    y = (np.arange(h, dtype=np.float32) - np.float32(camera.cy)) / np.float32(camera.fy)
    f = np.float32(max(camera.fx, camera.fy))
    shift = f * np.float32(angle) * (1 + y[:, None] ** 2 + x[None, :] ** 2)
    shift += f * np.float32(dt) / np.where(valid, d, np.float32(np.inf))
    largest = float(shift[valid].max()) if valid.any() else 0.0
    r = int(min(MAX_SHIFT_RADIUS_PX, max(1, np.ceil(largest))))
    window = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    hi = cv2.dilate(np.where(valid, d, np.float32(-np.inf)), window)
    lo = cv2.erode(np.where(valid, d, np.float32(np.inf)), window)
    # the largest difference to a valid pixel of the window, either way (finite where the pixel is valid)
    with np.errstate(invalid="ignore", over="ignore"):  # the invalid pixels' infinities, replaced by 0
        spread = np.where(valid, np.maximum(hi - d, d - lo), np.float32(0.0))
    change = np.float32(dt) + spread * np.minimum(np.float32(1.0), shift / np.float32(r))
    s = np.asarray(sigma, dtype=np.float32)
    widened: np.ndarray = np.sqrt(s * s + change * change).astype(np.float32)
    return widened
