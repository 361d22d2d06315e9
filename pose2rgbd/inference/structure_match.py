"""The structure localizer's 2-D/3-D correspondences: the query's RootSIFT against its candidate keyframes.

The keyframes' RootSIFT descriptors and world points are kept in a small LRU (consecutive images of a sequence ask
for mostly the same keyframes; converting a keyframe's uint8 SIFT costs as much as matching it), and a candidate
set is matched as ONE matrix product against its keyframes stacked (:func:`~pose2rgbd.map.features.match_ratio_blocks`),
the stacked operand reused while the next image asks for the same set.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.map.features import match_ratio_blocks, root_sift, stack_blocks
from pose2rgbd.map.format import LRU
from pose2rgbd.map.place import GlobalDescriber
from pose2rgbd.map.place_map import KeyframeFeatures


class KeyframeFeatureSource(Protocol):
    """What the matcher reads of a map: a keyframe's local features with their world points (a
    :class:`~pose2rgbd.map.PlaceMap`, or the build's in-memory :class:`~pose2rgbd.map.view.MapView`)."""

    def features(self, i: int) -> KeyframeFeatures: ...


class StructureMap(KeyframeFeatureSource, Protocol):
    """What the structure localizer reads of a map (a :class:`~pose2rgbd.map.PlaceMap`, or the build's in-memory
    :class:`~pose2rgbd.map.view.MapView`; mypy checks both where they are handed to the localizer): the pose index,
    per-keyframe intrinsics, the global descriptors with the describer that makes a query's, local features, and
    the manifest (empty for a map in memory) with the map's own calibration and source cameras."""

    T_world_cam: np.ndarray  # (N, 4, 4)
    poses: PoseSet  # the nearest-keyframe index
    global_desc: np.ndarray  # (N, D) float32
    describer: GlobalDescriber

    def __len__(self) -> int: ...

    @property
    def image_hw(self) -> tuple[int, int]: ...

    @property
    def world_frame(self) -> str: ...

    @property
    def positions(self) -> np.ndarray: ...  # (N, 3)

    @property
    def path(self) -> Path | None: ...  # None: a map in memory

    @property
    def manifest(self) -> Mapping[str, Any]: ...  # map.json (JSON); empty for a map in memory

    def camera(self, i: int = 0) -> PinholeCamera: ...


@dataclass
class Correspondences:
    """One 2-D/3-D correspondence per matched query keypoint."""

    query: np.ndarray  # (M,) query keypoint rows
    xyz: np.ndarray  # (M, 3) float64 world points
    keyframe: np.ndarray  # (M,) map rows of the keyframes that hold the points


class CandidateMatcher:
    """Matches query descriptors against candidate keyframes of a place map (thread-safe)."""

    def __init__(
        self, place_map: KeyframeFeatureSource, cache_keyframes: int = 128, all_features: bool = False
    ) -> None:
        self.map = place_map
        self.all_features = all_features
        self._lock = threading.Lock()
        self._cache = LRU(cache_keyframes)
        self._stacked: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None

    def keyframe(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Keyframe ``i``'s RootSIFT (K, 128) float32 and world points (K, 3) float64: the features with a point, or
        with ``all_features`` every stored feature (NaN: no point).

        ``all_features``: every feature takes part in the ratio test, with a point or without (a triangulated map
        has a point for a fifth of them); against the features with a point only, a query feature whose true match
        has no point can pass the test with a wrong one, for want of the true rival. Cleaner correspondences, but
        fewer: on a small sequence map (320x180) some queries then have too few (docs/results.md)."""

        def make() -> tuple[np.ndarray, np.ndarray]:
            f = self.map.features(i)
            if self.all_features:
                return root_sift(f.desc), f.xyz.astype(np.float64)
            ok = np.all(np.isfinite(f.xyz), axis=1)
            return root_sift(f.desc[ok]), f.xyz[ok].astype(np.float64)

        with self._lock:
            got: tuple[np.ndarray, np.ndarray] = self._cache.get(int(i), make)
        return got

    def _stack(self, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(int(i) for i in cand)
        with self._lock:
            if self._stacked is not None and self._stacked[0] == key:
                return self._stacked[1], self._stacked[2]
        stacked, sizes = stack_blocks([self.keyframe(i)[0] for i in key])
        with self._lock:
            self._stacked = (key, stacked, sizes)
        return stacked, sizes

    def match(self, q_rs: np.ndarray, cand: np.ndarray, ratio: float) -> Correspondences:
        """Ratio-test matches of RootSIFT ``q_rs`` against each keyframe of ``cand`` (map rows), one per query
        keypoint (its most distinctive match over the candidates)."""
        if len(cand) == 0:
            e = np.zeros(0, np.int64)
            return Correspondences(e, np.zeros((0, 3)), e)
        stacked, sizes = self._stack(cand)
        m = match_ratio_blocks(q_rs, stacked, sizes, ratio)
        xyz = np.zeros((len(m.query), 3))
        for b in np.unique(m.block):
            sel = m.block == b
            xyz[sel] = self.keyframe(int(cand[b]))[1][m.ref[sel]]
        ok = np.all(np.isfinite(xyz), axis=1)  # matched to a feature without a point: no correspondence
        return Correspondences(m.query[ok], xyz[ok], np.asarray(cand, np.int64)[m.block[ok]])
