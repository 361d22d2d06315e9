"""Rigid transforms ``T_target_source`` (4x4 homogeneous, float64), batched, and a small Pose record.

``T_world_cam`` maps a point in the camera (REP-103 optical) frame into the world (ENU) frame; its
translation is the camera centre in the world. Composition: ``T_a_c = T_a_b @ T_b_c``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.rotations import (
    canonical_quat_xyzw,
    matrix_to_quat_xyzw,
    quat_xyzw_to_matrix,
    rotation_angle_between,
)


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Stack rotation ``(..., 3, 3)`` and translation ``(..., 3)`` into ``(..., 4, 4)``."""
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    shape = np.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = np.zeros((*shape, 4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def T_from_tq(translation: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """Translation ``(..., 3)`` + quaternion ``(..., 4)`` in x, y, z, w order -> ``(..., 4, 4)``."""
    t = np.asarray(translation, dtype=np.float64)
    if t.shape[-1:] != (3,) or not np.all(np.isfinite(t)):
        raise GeometryError(f"translation: expected finite (..., 3), got shape {t.shape}")
    return make_T(quat_xyzw_to_matrix(quat_xyzw), t)


def tq_from_T(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(..., 4, 4)`` -> (translation ``(..., 3)``, canonical quaternion ``(..., 4)`` x, y, z, w)."""
    T = check_T(T)
    return T[..., :3, 3].copy(), matrix_to_quat_xyzw(T[..., :3, :3])


def check_T(T: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] != (4, 4):
        raise GeometryError(f"transform: expected (..., 4, 4), got {T.shape}")
    if not np.all(np.isfinite(T)):
        raise GeometryError("transform: contains NaN or inf")
    R = T[..., :3, :3]
    err = np.abs(np.einsum("...ji,...jk->...ik", R, R) - np.eye(3)).max() if R.size else 0.0
    if err > tol:
        raise GeometryError(f"transform: rotation block is not orthonormal (max error {err:.2e})")
    return T


def inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms: ``T_b_a = inverse(T_a_b)``."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    Rt = np.swapaxes(R, -1, -2)
    t = T[..., :3, 3]
    return make_T(Rt, -np.einsum("...ij,...j->...i", Rt, t))


def relative(T_world_a: np.ndarray, T_world_b: np.ndarray) -> np.ndarray:
    """``T_a_b = inv(T_world_a) @ T_world_b``: pose of b expressed in a (batched)."""
    return inverse(T_world_a) @ np.asarray(T_world_b, dtype=np.float64)


def transform_points(T_target_source: np.ndarray, p_source: np.ndarray) -> np.ndarray:
    """Apply one transform ``(4, 4)`` to points ``(N, 3)`` (or batched ``(..., 4, 4)`` with ``(..., N, 3)``)."""
    T = np.asarray(T_target_source, dtype=np.float64)
    p = np.asarray(p_source, dtype=np.float64)
    out: np.ndarray = np.einsum("...ij,...nj->...ni", T[..., :3, :3], p) + T[..., None, :3, 3]
    return out


def pose_errors(T_est: np.ndarray, T_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(translation error in metres, rotation error in radians), batched."""
    T_est = np.asarray(T_est)
    T_ref = np.asarray(T_ref)
    dt = np.linalg.norm(T_est[..., :3, 3] - T_ref[..., :3, 3], axis=-1)
    return dt, rotation_angle_between(T_est[..., :3, :3], T_ref[..., :3, :3])


@dataclass(frozen=True)
class Pose:
    """One rigid transform ``T_target_source`` as translation (metres) + quaternion (x, y, z, w)."""

    translation: tuple[float, float, float]
    quat_xyzw: tuple[float, float, float, float]

    @classmethod
    def identity(cls) -> Pose:
        return cls((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))

    @classmethod
    def from_matrix(cls, T: np.ndarray) -> Pose:
        t, q = tq_from_T(np.asarray(T).reshape(4, 4))
        return cls(tuple(float(v) for v in t), tuple(float(v) for v in q))  # type: ignore[arg-type]

    @classmethod
    def from_tq(cls, translation: np.ndarray, quat_xyzw: np.ndarray) -> Pose:
        q = canonical_quat_xyzw(np.asarray(quat_xyzw, dtype=np.float64).reshape(4))
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(t)):
            raise GeometryError("translation: contains NaN or inf")
        return cls(tuple(float(v) for v in t), tuple(float(v) for v in q))  # type: ignore[arg-type]

    def matrix(self) -> np.ndarray:
        return T_from_tq(np.array(self.translation), np.array(self.quat_xyzw))

    def inverse(self) -> Pose:
        return Pose.from_matrix(inverse(self.matrix()))

    def __matmul__(self, other: Pose) -> Pose:
        return Pose.from_matrix(self.matrix() @ other.matrix())
