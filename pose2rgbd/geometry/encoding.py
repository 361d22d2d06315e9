"""The model's pose encodings (Pose2RGBD paper, Sec. 2): 4x4 poses <-> flat vectors.

* ``6dof-euler``: (tx, ty, tz, roll, pitch, yaw) of ``T_world_cam`` -- 6 numbers, rpy as in
  :mod:`pose2rgbd.geometry.rotations`.
* ``6dof-quat``: (tx, ty, tz, qx, qy, qz, qw) of ``T_world_cam`` -- 7 numbers, canonical sign (w >= 0).

Their min-max normalization to [-1, 1] is model state: :class:`pose2rgbd.models.normalization.PoseNormalizer`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.rotations import canonical_quat_xyzw, quat_xyzw_to_rpy, rpy_to_quat_xyzw
from pose2rgbd.geometry.transforms import T_from_tq, tq_from_T

PoseEncoding = Literal["6dof-euler", "6dof-quat"]
ENCODINGS: tuple[str, ...] = ("6dof-euler", "6dof-quat")


def encoding_dim(kind: str) -> int:
    if kind == "6dof-euler":
        return 6
    if kind == "6dof-quat":
        return 7
    raise ConfigError(f"unknown pose encoding {kind!r}; choose one of {list(ENCODINGS)}")


def encode_poses(T_world_cam: np.ndarray, kind: str) -> np.ndarray:
    """``(N, 4, 4)`` -> ``(N, D)`` raw (un-normalized) encoding."""
    encoding_dim(kind)
    t, q = tq_from_T(np.asarray(T_world_cam).reshape(-1, 4, 4))
    if kind == "6dof-quat":
        return np.concatenate([t, q], axis=-1)
    return np.concatenate([t, quat_xyzw_to_rpy(q)], axis=-1)


def decode_poses(encoded: np.ndarray, kind: str) -> np.ndarray:
    """``(N, D)`` raw encoding -> ``(N, 4, 4)``; quaternions are re-normalized."""
    d = encoding_dim(kind)
    e = np.asarray(encoded, dtype=np.float64).reshape(-1, d)
    if kind == "6dof-quat":
        q = canonical_quat_xyzw(e[:, 3:7])
    else:
        q = rpy_to_quat_xyzw(e[:, 3:6])
    return T_from_tq(e[:, :3], q)
