"""Pose interpolation at arbitrary times: linear in translation, slerp in rotation (SciPy ``Slerp``)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.rotations import canonical_quat_xyzw, check_unit_quat_xyzw


def _check_stamps(stamps_ns: np.ndarray) -> np.ndarray:
    s = np.asarray(stamps_ns)
    if s.ndim != 1 or s.size < 1:
        raise GeometryError(f"stamps_ns: expected a non-empty 1-D array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        raise GeometryError(f"stamps_ns: expected integer nanoseconds, got dtype {s.dtype}")
    if s.size > 1 and np.any(np.diff(s) <= 0):
        bad = int(np.argmax(np.diff(s) <= 0))
        raise GeometryError(f"stamps_ns: not strictly increasing at index {bad} ({s[bad]} -> {s[bad + 1]})")
    return s.astype(np.int64)


def interpolate_translations(stamps_ns: np.ndarray, values: np.ndarray, query_ns: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``(N, D)`` values at ``query_ns`` (must lie within the stamps)."""
    s = _check_stamps(stamps_ns)
    v = np.asarray(values, dtype=np.float64)
    q = np.asarray(query_ns, dtype=np.int64)
    if np.any(q < s[0]) or np.any(q > s[-1]):
        raise GeometryError("query time outside the interpolation range; extrapolation is not allowed")
    # subtract the first stamp before converting to float: int64 ns since 1970 lose precision as float64
    x = (s - s[0]).astype(np.float64)
    xq = (q - s[0]).astype(np.float64)
    return np.stack([np.interp(xq, x, v[:, d]) for d in range(v.shape[1])], axis=-1)


def interpolate_poses(
    stamps_ns: np.ndarray, translations: np.ndarray, quats_xyzw: np.ndarray, query_ns: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate poses at ``query_ns``.

    Args:
        stamps_ns: ``(N,)`` strictly increasing int64 nanoseconds.
        translations: ``(N, 3)`` metres.
        quats_xyzw: ``(N, 4)`` unit quaternions, x, y, z, w order.
        query_ns: ``(M,)`` int64 nanoseconds within ``[stamps_ns[0], stamps_ns[-1]]``.

    Returns:
        ``(M, 3)`` translations and ``(M, 4)`` canonical quaternions (x, y, z, w).
    """
    s = _check_stamps(stamps_ns)
    q = check_unit_quat_xyzw(np.asarray(quats_xyzw, dtype=np.float64))
    t = interpolate_translations(s, translations, query_ns)
    if s.size == 1:
        return t, canonical_quat_xyzw(np.repeat(q[:1], len(t), axis=0))
    x = (s - s[0]).astype(np.float64)
    xq = (np.asarray(query_ns, dtype=np.int64) - s[0]).astype(np.float64)
    rots = Slerp(x, Rotation.from_quat(q))(xq)
    return t, canonical_quat_xyzw(rots.as_quat())


def slerp_quat_xyzw(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    """Spherical interpolation between two unit quaternions (x, y, z, w) at fraction ``a`` in [0, 1].

    Hand-written on purpose: TF lookups call this once per link per lookup, where building SciPy
    ``Rotation`` / ``Slerp`` objects costs tens of microseconds each. Takes the short arc.
    """
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9995:  # nearly parallel: normalized lerp avoids dividing by sin(~0)
        q: np.ndarray = q0 + a * (q1 - q0)
        unit: np.ndarray = q / np.linalg.norm(q)
        return unit
    th = np.arccos(min(d, 1.0))
    out: np.ndarray = (np.sin((1 - a) * th) * q0 + np.sin(a * th) * q1) / np.sin(th)
    return out
