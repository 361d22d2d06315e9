"""The model's pose encodings (Pose2RGBD paper, Sec. 2) and their min-max normalization to [-1, 1].

* ``6dof-euler``: (tx, ty, tz, roll, pitch, yaw) of ``T_world_cam`` -- 6 numbers, rpy as in
  :mod:`pose2rgbd.geometry.rotations`.
* ``6dof-quat``: (tx, ty, tz, qx, qy, qz, qw) of ``T_world_cam`` -- 7 numbers, canonical sign (w >= 0).

:class:`PoseNormalizer` stores the per-dimension extremes of the training set; ``normalize`` maps them to
[-1, 1] (a dimension that is constant in training maps to 0), ``denormalize`` inverts it. Extremes are
saved into checkpoints (``to_dict`` / ``from_dict``) so inference uses exactly the training scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pose2rgbd.errors import ConfigError, GeometryError
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


@dataclass
class PoseNormalizer:
    """Min-max normalization of encoded poses to [-1, 1] from stored training extremes."""

    kind: str
    minimum: np.ndarray
    maximum: np.ndarray

    def __post_init__(self) -> None:
        d = encoding_dim(self.kind)
        self.minimum = np.asarray(self.minimum, dtype=np.float64).reshape(d)
        self.maximum = np.asarray(self.maximum, dtype=np.float64).reshape(d)
        if np.any(self.maximum < self.minimum):
            raise GeometryError("PoseNormalizer: maximum < minimum")

    @classmethod
    def fit(cls, T_world_cam: np.ndarray, kind: str) -> PoseNormalizer:
        enc = encode_poses(T_world_cam, kind)
        return cls(kind, enc.min(axis=0), enc.max(axis=0))

    @property
    def span(self) -> np.ndarray:
        return self.maximum - self.minimum

    def normalize_encoded(self, enc: np.ndarray) -> np.ndarray:
        span = self.span
        safe = np.where(span > 0, span, 1.0)
        out = 2.0 * (np.asarray(enc, dtype=np.float64) - self.minimum) / safe - 1.0
        return np.where(span > 0, out, 0.0)

    def denormalize_encoded(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.where(self.span > 0, (x + 1.0) / 2.0 * self.span + self.minimum, self.minimum)

    def normalize(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``(N, 4, 4)`` -> ``(N, D)`` float32 in [-1, 1] for poses within the training extremes."""
        return self.normalize_encoded(encode_poses(T_world_cam, self.kind)).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return decode_poses(self.denormalize_encoded(x), self.kind)

    def out_of_bounds(self, T_world_cam: np.ndarray, margin: float = 0.1) -> np.ndarray:
        """``(N,)`` bool: some normalized dimension lies outside [-1 - margin, 1 + margin]."""
        x = self.normalize_encoded(encode_poses(T_world_cam, self.kind))
        return np.any(np.abs(x) > 1.0 + margin, axis=-1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "minimum": self.minimum.tolist(), "maximum": self.maximum.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoseNormalizer:
        try:
            return cls(d["kind"], np.asarray(d["minimum"]), np.asarray(d["maximum"]))
        except KeyError as e:
            raise ConfigError(f"pose normalizer: missing key {e}") from e
