"""The hybrid's keyframes read from a place map (``pose2rgbd.map``) instead of the checkpoint's embedded store.

Only the keyframes a render needs are decoded, at the model's size the way the training cache made them (RGB
area-resized, depth nearest-sampled at pixel centres, float16 like the embedded store), and kept in an LRU
cache, so the memory of a serving process does not grow with the place; the nearest keyframes come from the map's
k-d tree (exact, the same pose distance and rotation weight as the embedded store).
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from pose2rgbd.dataset.cache import resize_depth_nearest
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.map.format import LRU


class MapKeyframes:
    """Keyframes of ``place_map`` at ``size x size`` (see the module docstring)."""

    def __init__(self, place_map: Any, size: int, rot_weight_m: float, cache_keyframes: int = 256) -> None:
        if not place_map.has_depth:
            raise ConfigError(
                f"{place_map.path}: the hybrid warps keyframes with their metric depth, and this map has none "
                "(built from a dataset without metric depth)"
            )
        self.map = place_map
        self.size = int(size)
        self.poses = PoseSet(place_map.T_world_cam, rot_weight_m=rot_weight_m)
        self.K = place_map.camera(0).scaled(self.size, self.size).K
        self._cache = LRU(cache_keyframes)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.map)

    def __deepcopy__(self, memo: dict[int, Any]) -> MapKeyframes:
        return self  # read-only and thread-safe: a prepared copy of the model shares the map and its cache

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        S = self.size
        rgb = self.map.rgb(i)
        if rgb.shape[:2] != (S, S):
            rgb = cv2.resize(rgb, (S, S), interpolation=cv2.INTER_AREA)
        depth = self.map.depth(i)
        if depth.shape != (S, S):
            depth = resize_depth_nearest(depth, S)
        return np.ascontiguousarray(rgb), depth.astype(np.float16)  # > 65504 m -> +inf (sky), as the store

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows`` (B, k) -> rgb uint8 (B, k, S, S, 3), depth float16 (B, k, S, S), T_world_cam (B, k, 4, 4)."""
        r = np.asarray(rows, np.int64)
        uniq, inv = np.unique(r, return_inverse=True)
        with self._lock:
            got = [self._cache.get(int(i), lambda i=int(i): self._load(i)) for i in uniq]
        rgb = np.stack([g[0] for g in got])[inv.reshape(r.shape)]
        depth = np.stack([g[1] for g in got])[inv.reshape(r.shape)]
        return rgb, depth, self.map.T_world_cam[r]

    def cache_stats(self) -> dict[str, int]:
        return {"cached": len(self._cache.data), "hits": self._cache.hits, "misses": self._cache.misses}
