"""The model's pose encodings (Pose2RGBD paper, Sec. 2): 4x4 poses <-> flat vectors.

* ``6dof-euler``: (tx, ty, tz, roll, pitch, yaw) of ``T_world_cam`` -- 6 numbers, rpy as in
  :mod:`pose2rgbd.geometry.rotations`.
* ``6dof-quat``: (tx, ty, tz, qx, qy, qz, qw) of ``T_world_cam`` -- 7 numbers, canonical sign (w >= 0).
* ``6dof-rot6d``: (tx, ty, tz, r00, r10, r20, r01, r11, r21) -- 9 numbers: the first two columns of ``R_world_cam``
  (the camera's x and y axes in the world), decoded by Gram-Schmidt. Beyond the paper: the continuous rotation
  representation of Zhou et al., "On the Continuity of Rotation Representations in Neural Networks" (CVPR 2019).
  The paper's two jump between nearly equal poses somewhere: the quaternion's sign rule where w crosses 0, Euler
  angles where they wrap. A camera looking straight down sits on both jumps at every heading (a 180-degree turn
  about a horizontal axis: w = 0, roll = +-pi), so a downward-looking mapping camera's poses come to the network
  as two interleaved clusters; this one has no jump anywhere (:func:`encoding_jumps` measures it on a set of poses).

Their min-max normalization to [-1, 1] is model state: :class:`pose2rgbd.models.normalization.PoseNormalizer`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.rotations import canonical_quat_xyzw, quat_xyzw_to_rpy, rpy_to_quat_xyzw
from pose2rgbd.geometry.transforms import T_from_tq, tq_from_T

PoseEncoding = Literal["6dof-euler", "6dof-quat", "6dof-rot6d"]
_DIMS = {"6dof-euler": 6, "6dof-quat": 7, "6dof-rot6d": 9}
ENCODINGS: tuple[str, ...] = tuple(_DIMS)


def encoding_dim(kind: str) -> int:
    try:
        return _DIMS[kind]
    except KeyError:
        raise ConfigError(f"unknown pose encoding {kind!r}; choose one of {list(ENCODINGS)}") from None


def encode_poses(T_world_cam: np.ndarray, kind: str) -> np.ndarray:
    """``(N, 4, 4)`` -> ``(N, D)`` raw (un-normalized) encoding."""
    encoding_dim(kind)
    T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
    if kind == "6dof-rot6d":  # column-major: x axis, then y axis
        return np.concatenate([T[:, :3, 3], T[:, :3, 0], T[:, :3, 1]], axis=-1)
    t, q = tq_from_T(T)
    if kind == "6dof-quat":
        return np.concatenate([t, q], axis=-1)
    return np.concatenate([t, quat_xyzw_to_rpy(q)], axis=-1)


def decode_poses(encoded: np.ndarray, kind: str) -> np.ndarray:
    """``(N, D)`` raw encoding -> ``(N, 4, 4)``; quaternions are re-normalized."""
    d = encoding_dim(kind)
    e = np.asarray(encoded, dtype=np.float64).reshape(-1, d)
    if kind == "6dof-rot6d":
        return _from_rot6d(e)
    if kind == "6dof-quat":
        q = canonical_quat_xyzw(e[:, 3:7])
    else:
        q = rpy_to_quat_xyzw(e[:, 3:6])
    return T_from_tq(e[:, :3], q)


def _from_rot6d(e: np.ndarray) -> np.ndarray:
    """``(N, 9)`` -> ``(N, 4, 4)``: the rotation closest in the Gram-Schmidt sense to the two given columns (the x
    axis normalized, the y axis made orthogonal to it and normalized, z their cross product)."""
    a, b = e[:, 3:6], e[:, 6:9]
    x = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    y = b - np.sum(x * b, axis=-1, keepdims=True) * x
    y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    T = np.tile(np.eye(4), (len(e), 1, 1))
    T[:, :3, 0], T[:, :3, 1], T[:, :3, 2], T[:, :3, 3] = x, y, np.cross(x, y), e[:, :3]
    return T


def encoding_jumps(T_world_cam: np.ndarray, kind: str, *, max_angle_deg: float = 5.0) -> float:
    """The share of a set of poses' nearby orientation pairs whose encoded rotations lie far apart: for each pose its
    nearest other by rotation angle (within ``max_angle_deg``), the pair counted where the encoding's rotation
    numbers differ by more than 0.5 (a unit quaternion's components, radians) although the rotations are that close.
    0 for :data:`ENCODINGS`' continuous one; 0.3-0.5 for the paper's two on a downward-looking camera."""
    from scipy.spatial import cKDTree

    T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
    if len(T) < 2:
        return 0.0
    R = T[:, :3, :3].reshape(len(T), 9)  # chordal distance orders pairs as the angle does
    dist, idx = cKDTree(R).query(R, k=2)
    near = dist[:, 1] <= 2.0 * np.sqrt(2.0) * np.sin(np.radians(max_angle_deg) / 2.0)
    if not near.any():
        return 0.0
    enc = encode_poses(T, kind)[:, 3:]
    gap = np.abs(enc[near] - enc[idx[near, 1]]).max(axis=-1)
    return float(np.mean(gap > 0.5))
