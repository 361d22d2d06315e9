"""What the fusion and the fused renderer read: keyframes with pose, intrinsics, RGB and metric depth.

A :class:`~pose2rgbd.map.PlaceMap` is one (its ``T_world_cam``, ``poses``, ``camera(i)``, ``rgb(i)``,
``depth(i)``); :class:`ArrayKeyframes` is the same over arrays (a training cache's frames, a test's scene).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import DEFAULT_ROT_WEIGHT_M, PoseSet


class Keyframes(Protocol):
    """Posed RGB-D keyframes (REP-103 optical cameras, depth in metres along z, NaN invalid, +inf sky)."""

    T_world_cam: np.ndarray  # (N, 4, 4)
    poses: PoseSet  # the nearest-keyframe index

    def __len__(self) -> int: ...

    def camera(self, i: int) -> PinholeCamera: ...

    def rgb(self, i: int) -> np.ndarray: ...

    def depth(self, i: int) -> np.ndarray: ...


class ArrayKeyframes:
    """Keyframes held in (or memory-mapped from) arrays: ``rgb`` (N', H, W, 3) uint8, ``depth`` (N', H, W),
    ``T_world_cam`` (N', 4, 4), one camera; ``rows`` picks N of the N' frames (default: all)."""

    def __init__(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        T_world_cam: np.ndarray,
        camera: PinholeCamera,
        *,
        rows: np.ndarray | None = None,
        rot_weight_m: float = DEFAULT_ROT_WEIGHT_M,
    ) -> None:
        self.rows = np.arange(len(T_world_cam)) if rows is None else np.asarray(rows, np.int64)
        self._rgb, self._depth, self._camera = rgb, depth, camera
        self.T_world_cam = np.asarray(T_world_cam, np.float64)[self.rows]
        self.poses = PoseSet(self.T_world_cam, rot_weight_m=rot_weight_m)

    def __len__(self) -> int:
        return len(self.rows)

    def camera(self, i: int) -> PinholeCamera:
        return self._camera

    def rgb(self, i: int) -> np.ndarray:
        return np.asarray(self._rgb[self.rows[i]])

    def depth(self, i: int) -> np.ndarray:
        return np.asarray(self._depth[self.rows[i]], np.float32)
