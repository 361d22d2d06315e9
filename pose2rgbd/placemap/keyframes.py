"""The keyframe store of a place, as its readers see it: :class:`Keyframes`, posed RGB-D keyframes with their own
intrinsics and a nearest-pose index.

A :class:`~pose2rgbd.placemap.PlaceMap` is one (its ``T_world_cam``, ``poses``, ``camera(i)``, ``rgb(i)``,
``depth(i)``; mypy checks it, :func:`place_map_keyframes`); :class:`ArrayKeyframes` is the same over arrays (a
training cache's frames, a test's scene). The fused geometry (:mod:`pose2rgbd.placemap.fused`) reads keyframes through
it, and so does the hybrid renderer in training and serving, through one sized, cached view
(:class:`~pose2rgbd.placemap.keyframe_view.SizedKeyframes`); a new reader of a place's keyframes takes a
:class:`Keyframes`, not a second copy of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import DEFAULT_ROT_WEIGHT_M, PoseSet

if TYPE_CHECKING:
    from pose2rgbd.placemap.place_map import PlaceMap


class Keyframes(Protocol):
    """Posed RGB-D keyframes (REP-103 optical cameras, depth in metres along z, NaN invalid, +inf sky)."""

    T_world_cam: np.ndarray  # (N, 4, 4)
    poses: PoseSet  # the nearest-keyframe index
    frames: np.ndarray  # (N,) int64: each keyframe's row in the dataset it came from (its source and time there)

    def __len__(self) -> int: ...

    def camera(self, i: int) -> PinholeCamera: ...

    def rgb(self, i: int) -> np.ndarray: ...

    def depth(self, i: int) -> np.ndarray: ...


class ArrayKeyframes:
    """Keyframes held in (or memory-mapped from) arrays: ``rgb`` (N', H, W, 3) uint8, ``depth`` (N', H, W),
    ``T_world_cam`` (N', 4, 4), one camera; ``rows`` picks N of the N' frames (default: all). ``frames``: the
    keyframes' dataset rows (default: ``rows``, for arrays indexed like the dataset, e.g. a training cache)."""

    def __init__(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        T_world_cam: np.ndarray,
        camera: PinholeCamera,
        *,
        rows: np.ndarray | None = None,
        frames: np.ndarray | None = None,
        rot_weight_m: float = DEFAULT_ROT_WEIGHT_M,
    ) -> None:
        self.rows = np.arange(len(T_world_cam)) if rows is None else np.asarray(rows, np.int64)
        self._rgb, self._depth, self._camera = rgb, depth, camera
        self.T_world_cam = np.asarray(T_world_cam, np.float64)[self.rows]
        self.frames = self.rows.copy() if frames is None else np.asarray(frames, np.int64).reshape(len(self.rows))
        self.poses = PoseSet(self.T_world_cam, rot_weight_m=rot_weight_m)

    def __len__(self) -> int:
        return len(self.rows)

    def camera(self, i: int) -> PinholeCamera:
        return self._camera

    def rgb(self, i: int) -> np.ndarray:
        return np.asarray(self._rgb[self.rows[i]])

    def depth(self, i: int) -> np.ndarray:
        return np.asarray(self._depth[self.rows[i]], np.float32)


def place_map_keyframes(place_map: PlaceMap) -> Keyframes:
    """A place map as :class:`Keyframes` (an identity: it is here so that mypy checks that a place map is one)."""
    return place_map
