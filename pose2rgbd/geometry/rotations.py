"""Rotation conversions with the quaternion order explicit in every name.

All quaternions that cross an API are ``quat_xyzw`` (x, y, z, w): the order of ROS messages and SciPy.
``quat_wxyz`` appears only where a function says so. Canonical sign: ``w >= 0``; when ``w == 0`` the
first non-zero of (x, y, z) is positive. Euler angles are ``rpy`` = (roll, pitch, yaw) in radians with
R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (extrinsic x-y-z, the ROS / tf2 ``setRPY`` convention).
Batched: every function takes ``(..., 4)`` / ``(..., 3, 3)`` / ``(..., 3)`` arrays.
SciPy's Rotation does the numerics; this module fixes conventions and checks input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import GeometryError

_UNIT_TOL = 1e-3
# How far the norm of an orientation read from a message or TF may be from 1 before it is refused (float32
# round-trips stay far below); within it the quaternion is normalized.
QUAT_NORM_TOLERANCE = 1e-2


def quat_problem(q_xyzw: Iterable[float]) -> str | None:
    """THE validity rule of an orientation quaternion read from a message or TF, shared by every reader: None when
    its 4 values are finite and its norm is within :data:`QUAT_NORM_TOLERANCE` of 1 (it is then normalized), else
    what is wrong with it. Scalar arithmetic, not numpy: the TF input runs it for every transform on ``/tf``
    (hundreds a second beside a render), where numpy's cost per call on a 4-vector dominated."""
    qx, qy, qz, qw = (float(v) for v in q_xyzw)
    n = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not math.isfinite(n):
        return "contains NaN or inf"
    if n < 1e-6:
        return "is a zero quaternion"
    if abs(n - 1.0) > QUAT_NORM_TOLERANCE:
        return f"is not a unit quaternion (norm {n:.3f})"
    return None


# a rotation matrix within this of orthonormal (max |R R^T - I|, det > 0) skips SciPy's orthogonalization, an SVD
# that costs several times the conversion itself: for one pose 170 us against 40 (the serving path converts each
# query pose's rotation a few times per render). The quaternions of the two paths differ by about this much.
_ORTHONORMAL_TOL = 1e-10


def _as_array(x: object, last: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.shape[a.ndim - len(last) :] != last:
        raise GeometryError(f"{name}: expected shape (..., {', '.join(map(str, last))}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{name}: contains NaN or inf")
    return a


def canonical_quat_xyzw(q_xyzw: np.ndarray) -> np.ndarray:
    """Unit-normalize and flip the sign so that w >= 0 (ties broken on x, then y, then z)."""
    q = _as_array(q_xyzw, (4,), "quat_xyzw")
    n = np.sqrt(np.einsum("...i,...i->...", q, q))[..., None]
    if n.size and n.min() < 1e-9:
        raise GeometryError("quat_xyzw: zero-norm quaternion")
    q = q / n
    w = q[..., 3]
    if np.all(np.abs(w) > 1e-12):  # the usual case, and the same answer as below: the sign of w decides
        flipped: np.ndarray = np.where(w[..., None] < 0.0, -q, q)
        return flipped
    # order of sign decision: w, x, y, z
    keys = q[..., [3, 0, 1, 2]]
    first_nz = np.argmax(np.abs(keys) > 1e-12, axis=-1)
    sign = np.sign(np.take_along_axis(keys, first_nz[..., None], axis=-1))
    q = q * sign
    # a w within rounding of zero is stored as +0 so that "w >= 0" holds exactly
    q[..., 3] = np.where(np.abs(q[..., 3]) <= 1e-12, 0.0, q[..., 3])
    out: np.ndarray = q
    return out


def check_unit_quat_xyzw(q_xyzw: np.ndarray, tol: float = _UNIT_TOL) -> np.ndarray:
    """Raise if a quaternion is far from unit norm (a common sign of a wrong field order)."""
    q = _as_array(q_xyzw, (4,), "quat_xyzw")
    n = np.linalg.norm(q, axis=-1)
    if np.any(np.abs(n - 1.0) > tol):
        raise GeometryError(f"quat_xyzw: norm {n.ravel()[:3]} is not 1 (tolerance {tol}); check the field order")
    return q


def quat_xyzw_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    q = _as_array(q_xyzw, (4,), "quat_xyzw")
    shape = q.shape[:-1]
    R: np.ndarray = Rotation.from_quat(q.reshape(-1, 4)).as_matrix()
    return R.reshape((*shape, 3, 3))


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` xyzw, canonical sign, of rotation matrices ``(..., 3, 3)``; a matrix that is not
    orthonormal (beyond rounding) is first replaced by the nearest orthonormal one (SciPy's ``from_matrix``)."""
    m = _as_array(R, (3, 3), "rotation matrix").reshape(-1, 3, 3)
    shape = np.shape(R)[:-2]
    det = np.linalg.det(m)
    if m.size and not (det > 0.0).all():
        i = int(np.argmin(det > 0.0))
        raise GeometryError(f"rotation matrix {i}: determinant {det[i]:.3g} <= 0, a reflection (a left-handed "
                            "frame) or degenerate, not a rotation: check the axes' order and signs")  # fmt: skip
    gram = np.einsum("nij,nkj->nik", m, m)
    gram[:, [0, 1, 2], [0, 1, 2]] -= 1.0
    valid = bool(m.size) and bool(np.abs(gram).max() <= _ORTHONORMAL_TOL)
    q = Rotation.from_matrix(m, assume_valid=valid).as_quat()
    return canonical_quat_xyzw(q).reshape((*shape, 4))


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    a = _as_array(rpy, (3,), "rpy")
    shape = a.shape[:-1]
    R: np.ndarray = Rotation.from_euler("xyz", a.reshape(-1, 3)).as_matrix()
    return R.reshape((*shape, 3, 3))


def matrix_to_rpy(R: np.ndarray) -> np.ndarray:
    m = _as_array(R, (3, 3), "rotation matrix")
    shape = m.shape[:-2]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gimbal lock: SciPy picks a valid solution
        e: np.ndarray = Rotation.from_matrix(m.reshape(-1, 3, 3)).as_euler("xyz")
    return e.reshape((*shape, 3))


def quat_xyzw_to_rpy(q_xyzw: np.ndarray) -> np.ndarray:
    return matrix_to_rpy(quat_xyzw_to_matrix(q_xyzw))


def rpy_to_quat_xyzw(rpy: np.ndarray) -> np.ndarray:
    return matrix_to_quat_xyzw(rpy_to_matrix(rpy))


def quat_xyzw_to_wxyz(q_xyzw: np.ndarray) -> np.ndarray:
    q = _as_array(q_xyzw, (4,), "quat_xyzw")
    return q[..., [3, 0, 1, 2]]


def quat_wxyz_to_xyzw(q_wxyz: np.ndarray) -> np.ndarray:
    q = _as_array(q_wxyz, (4,), "quat_wxyz")
    return q[..., [1, 2, 3, 0]]


def rotation_angle_between(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Geodesic angle (radians) between rotation matrices, batched."""
    R = np.einsum("...ji,...jk->...ik", np.asarray(R_a), np.asarray(R_b))
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    angle: np.ndarray = np.arccos(np.clip(c, -1.0, 1.0))
    return angle
