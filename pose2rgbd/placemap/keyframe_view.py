"""Any :class:`~pose2rgbd.placemap.keyframes.Keyframes` seen through one camera at one size, decoded on demand and
cached: what a renderer that warps keyframes (the hybrid) reads, in training and in serving.

Each keyframe is brought to the target camera the way the training cache makes its frames: RGB area-resized,
depth nearest-sampled at pixel centres (:func:`~pose2rgbd.dataset.cache.resize_depth_nearest`), when the
keyframe's own intrinsics scaled to the target size are the target's (one camera, the usual case: nothing else is
done). A keyframe of another camera (a merged map of two lenses) is resampled into the target camera instead: the
same centre of projection under other intrinsics is an affine map of the image plane (``cv2.warpAffine``; linear
RGB, nearest depth, NaN where the keyframe did not see). Only the keyframes asked for are decoded, and the
decoded ones are kept in one LRU cache (the keyframes' own source is opened without a cache of its own, so memory
does not grow with the place). The nearest keyframes come from the keyframes' own
:class:`~pose2rgbd.geometry.coverage.PoseSet` (its k-d tree), scored with the reader's rotation weight.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pose2rgbd.dataset.cache import resize_depth_nearest
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.placemap.keyframes import Keyframes
from pose2rgbd.placemap.lru import LRU

SAME_CAMERA_PX = 1e-3  # intrinsics (pixels at the target size) that differ less are the same camera


class SizedKeyframes:
    """``keyframes`` through ``camera`` (its size and intrinsics), depth as ``depth_dtype`` (float16 for the
    hybrid: its warp's depth, > 65504 m -> +inf sky), at most ``cache_keyframes`` decoded keyframes kept;
    ``rot_weight_m``: the metres per radian of the nearest-keyframe distance (default: the keyframes')."""

    def __init__(
        self,
        keyframes: Keyframes,
        camera: PinholeCamera,
        *,
        rot_weight_m: float | None = None,
        depth_dtype: type[np.floating[Any]] = np.float32,
        cache_keyframes: int = 256,
    ) -> None:
        self.keyframes = keyframes
        self.camera = camera
        self.K = np.asarray(camera.K, np.float64)
        self.depth_dtype = depth_dtype
        w = keyframes.poses.rot_weight_m if rot_weight_m is None else float(rot_weight_m)
        self.poses: PoseSet = keyframes.poses.reweighted(w)
        self._cache: LRU[int, tuple[np.ndarray, np.ndarray]] = LRU(cache_keyframes)

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def T_world_cam(self) -> np.ndarray:
        return self.keyframes.T_world_cam

    @property
    def frames(self) -> np.ndarray:
        return self.keyframes.frames

    @property
    def cache_keyframes(self) -> int:
        """How many decoded keyframes the view keeps."""
        return self._cache.size

    def __deepcopy__(self, memo: dict[int, Any]) -> SizedKeyframes:
        return self  # read-only and thread-safe: a prepared copy of a model shares the keyframes and their cache

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        cam, (W, H) = self.camera, (self.camera.width, self.camera.height)
        rgb, depth = self.keyframes.rgb(i), np.asarray(self.keyframes.depth(i), np.float32)
        own = self.keyframes.camera(i)
        if np.abs(own.scaled(W, H).K - self.K).max() <= SAME_CAMERA_PX:
            if rgb.shape[:2] != (H, W):
                rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)
            if depth.shape != (H, W):
                depth = resize_depth_nearest(depth, W) if W == H else _resize_depth_nearest_hw(depth, H, W)
        else:  # target pixel -> keyframe pixel: u_kf = fx_kf / fx * (u - cx) + cx_kf (and v alike)
            sx, sy = own.fx / cam.fx, own.fy / cam.fy
            M = np.array([[sx, 0.0, own.cx - sx * cam.cx], [0.0, sy, own.cy - sy * cam.cy]])
            flags = cv2.WARP_INVERSE_MAP
            rgb = cv2.warpAffine(rgb, M, (W, H), flags=cv2.INTER_LINEAR | flags, borderValue=(0, 0, 0))
            depth = np.asarray(
                cv2.warpAffine(depth, M, (W, H), flags=cv2.INTER_NEAREST | flags, borderValue=float("nan")), np.float32
            )
        with np.errstate(over="ignore"):  # float16: beyond 65504 m is +inf, the sky
            return np.ascontiguousarray(rgb, np.uint8), depth.astype(self.depth_dtype)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Keyframe ``i``: RGB uint8 (H, W, 3) and depth (H, W) in metres (NaN invalid, +inf sky), cached."""
        return self._cache.get(int(i), lambda: self._load(int(i)))

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rows`` (B, k) -> rgb uint8 (B, k, H, W, 3), depth (B, k, H, W), T_world_cam float64 (B, k, 4, 4)."""
        r = np.asarray(rows, np.int64)
        uniq, inv = np.unique(r, return_inverse=True)
        got = [self.get(int(i)) for i in uniq]
        rgb = np.stack([g[0] for g in got])[inv.reshape(r.shape)]
        depth = np.stack([g[1] for g in got])[inv.reshape(r.shape)]
        return rgb, depth, np.asarray(self.keyframes.T_world_cam, np.float64)[r]

    def nearest(self, T_world_cam: np.ndarray, k: int) -> np.ndarray:
        """``(B, k)`` rows of the ``k`` keyframes nearest each query pose, nearest first (exact)."""
        return self.poses.nearest(T_world_cam, k)

    def as_keyframes(self) -> Keyframes:
        """These keyframes as :class:`Keyframes` at this view's size: every one through :attr:`camera`, its pixels
        from this view's cache (what the fused-geometry renderer of a model reads)."""
        return _AtSize(self)

    def cache_stats(self) -> dict[str, int]:
        return self._cache.stats()


class _AtSize:
    """A :class:`SizedKeyframes` as :class:`Keyframes` (:meth:`SizedKeyframes.as_keyframes`)."""

    def __init__(self, sized: SizedKeyframes) -> None:
        self.sized = sized
        self.T_world_cam = sized.T_world_cam
        self.poses = sized.poses
        self.frames = sized.frames

    def __len__(self) -> int:
        return len(self.sized)

    def camera(self, i: int) -> PinholeCamera:
        return self.sized.camera

    def rgb(self, i: int) -> np.ndarray:
        return self.sized.get(i)[0]

    def depth(self, i: int) -> np.ndarray:
        return np.asarray(self.sized.get(i)[1], np.float32)


def _resize_depth_nearest_hw(depth: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest sampling at pixel centres to (h, w) (:func:`resize_depth_nearest` for a non-square target)."""
    H, W = depth.shape
    ys = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return np.asarray(depth[ys[:, None], xs[None, :]])
