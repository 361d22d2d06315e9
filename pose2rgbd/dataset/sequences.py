"""Short time-ordered frame sequences with intrinsics (the ``sequences`` capability): what self-supervised
depth and ego-motion train on. Imports torch.

:func:`load_sequence_frames` reads every frame of a dataset once at the training resolution (aspect kept as the
caller chooses, intrinsics scaled with :meth:`PinholeCamera.scaled`) into memory; :class:`SequenceDataset` gives
``(previous, target, next)`` triplets within one source, ``stride`` frames apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from pose2rgbd.dataset.format import Dataset
from pose2rgbd.errors import DatasetError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.progress import bar


@dataclass
class SequenceFrames:
    """Every frame of a dataset at one resolution, in memory."""

    rgb: np.ndarray  # (N, H, W, 3) uint8
    camera: PinholeCamera  # scaled to (W, H)
    stamp_ns: np.ndarray  # (N,) int64
    source_id: np.ndarray  # (N,) int64
    T_world_cam: np.ndarray  # (N, 4, 4) float64 (dataset poses; GPS-derived after a video conversion)

    def __len__(self) -> int:
        return len(self.stamp_ns)


def load_sequence_frames(ds: Dataset, width: int, height: int, *, progress: bool = False) -> SequenceFrames:
    """Read ``ds`` at ``width x height`` (area interpolation). Refuses a dataset without the ``sequences``
    capability (no intrinsics, fewer than 3 time-ordered frames per source) with a message saying what is
    missing."""
    if "sequences" not in ds.capabilities():
        cam = ds.camera
        why = (
            "the camera has no positive focal lengths (fx, fy): write the intrinsics into manifest.yaml"
            if not (cam.fx > 0 and cam.fy > 0)
            else "no source has 3 or more frames with increasing stamps: self-supervised depth needs a video"
        )
        raise DatasetError(f"{ds.path}: cannot train on frame sequences: {why}")
    n = len(ds)
    rgb = np.empty((n, height, width, 3), np.uint8)
    for i in bar(range(n), desc=f"frames {width}x{height}", unit="frame", progress=progress):
        img = ds.read_rgb(i)
        rgb[i] = (
            img if img.shape[:2] == (height, width) else cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        )
    f = ds.frames
    return SequenceFrames(rgb, ds.camera.scaled(width, height), f.stamp_ns.copy(), f.source_id.copy(), f.T_world_cam)


def triplet_centres(source_id: np.ndarray, stride: int) -> np.ndarray:
    """Indices ``i`` whose ``i - stride`` and ``i + stride`` exist in the same source (frames sorted by time
    within a source, as format v1 requires)."""
    n = len(source_id)
    i = np.arange(stride, n - stride)
    ok = (source_id[i - stride] == source_id[i]) & (source_id[i + stride] == source_id[i])
    centres: np.ndarray = i[ok]
    return centres


def expected_motion_px(speed_m_s: float, fps: float, depth_m: float, focal_px: float) -> float:
    """Image motion (pixels per frame) of a scene point ``depth_m`` away when the camera moves sideways at
    ``speed_m_s``: ``focal * (speed / fps) / depth``. The parallax that self-supervised depth learns from is of
    this order; below about a pixel, warping barely changes the photometric loss and the network can settle on
    the far plane (no parallax at all)."""
    if min(speed_m_s, fps, depth_m, focal_px) <= 0:
        raise ValueError("expected_motion_px: speed, fps, depth and focal length must be > 0")
    return focal_px * speed_m_s / fps / depth_m


def stride_for_motion(motion_px_per_frame: float, target_px: float = 3.0, max_stride: int = 10) -> int:
    """The smallest frame stride whose image motion reaches ``target_px`` (1 .. ``max_stride``)."""
    if not motion_px_per_frame > 0:
        return max_stride
    return int(min(max_stride, max(1, np.ceil(target_px / motion_px_per_frame - 1e-9))))


def median_image_motion(frames: SequenceFrames, *, pairs: int = 40, gap: int = 3) -> float:
    """Median image motion between consecutive frames (pixels per frame at the frames' resolution): dense optical
    flow (OpenCV Farneback) between frames ``gap`` apart within a source, at up to ``pairs`` evenly spread
    places, the per-pair median flow length divided by ``gap``; the median over the pairs. NaN when no source
    has ``gap + 1`` frames."""
    sid = frames.source_id
    i = np.arange(len(sid) - gap)
    i = i[sid[i] == sid[i + gap]]
    if len(i) == 0:
        return float("nan")
    i = i[np.unique(np.linspace(0, len(i) - 1, min(pairs, len(i))).round().astype(int))]
    out = []
    for a in i:
        g0 = cv2.cvtColor(frames.rgb[a], cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(frames.rgb[a + gap], cv2.COLOR_RGB2GRAY)
        flow = cv2.calcOpticalFlowFarneback(g0, g1, np.zeros((*g0.shape, 2), np.float32), 0.5, 3, 15, 3, 5, 1.2, 0)
        out.append(float(np.median(np.linalg.norm(flow, axis=2))) / gap)
    return float(np.median(out))


def auto_stride(frames: SequenceFrames, target_px: float = 3.0, max_stride: int = 10) -> tuple[int, float]:
    """``(stride, motion)``: the stride from :func:`stride_for_motion` on the measured
    :func:`median_image_motion`, at most a quarter of the longest source (so that triplets remain)."""
    motion = median_image_motion(frames)
    longest = int(np.max(np.unique(frames.source_id, return_counts=True)[1])) if len(frames) else 0
    cap = max(1, min(max_stride, (longest - 1) // 4))
    return stride_for_motion(motion, target_px, cap), motion


class SequenceDataset(_TorchDataset[dict[str, Any]]):
    """Items: ``{"target": (3, H, W), "sources": (2, 3, H, W)`` (previous, next; float32 in [0, 1]),
    ``"K": (3, 3)`` float32, ``"index": int`` (the target frame), ``"gps_dist": (2,)`` float32 (distance of
    each source frame's camera from the target's, from the dataset poses, metres; NaN unknown) and
    ``"ess_T": (2, 4, 4)``, ``"ess_ok": (2,)`` (a pose from the essential matrix, ``T_source_target`` with a unit
    translation, and whether it is valid; zeros / False when none was computed)}. With ``fixed`` (known
    ``T_source_target`` per ``(target, source)`` pair, network units) also ``"fix_T": (2, 4, 4)``, ``"fix_ok":
    (2,)``; with ``sparse`` (frame -> (P, 4): pixel x, y, depth, weight) also ``"sparse": (sparse_points, 4)``
    (padded with weight 0)."""

    def __init__(
        self,
        frames: SequenceFrames,
        centres: Sequence[int] | np.ndarray,
        stride: int = 1,
        *,
        essential: dict[tuple[int, int], np.ndarray] | None = None,
        gps_dist: np.ndarray | None = None,
        fixed: dict[tuple[int, int], np.ndarray] | None = None,
        sparse: dict[int, np.ndarray] | None = None,
        sparse_points: int = 256,
    ) -> None:
        self.frames = frames
        self.centres = np.asarray(centres, dtype=np.int64)
        self.stride = int(stride)
        if self.centres.size and (
            self.centres.min() - stride < 0 or self.centres.max() + stride >= len(frames)
        ):  # pragma: no cover - guarded by triplet_centres
            raise IndexError("triplet centres out of range")
        self.K = torch.as_tensor(frames.camera.K, dtype=torch.float32)
        self.essential = essential or {}
        self.gps_dist = gps_dist
        self.fixed = fixed
        self.sparse = sparse
        self.sparse_points = int(sparse_points)

    def __len__(self) -> int:
        return len(self.centres)

    def _img(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.frames.rgb[i])).permute(2, 0, 1).float().div_(255.0)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | int]:
        i = int(self.centres[k])
        srcs = (i - self.stride, i + self.stride)
        ess_T = torch.zeros(2, 4, 4)
        ess_ok = torch.zeros(2, dtype=torch.bool)
        gd = torch.full((2,), float("nan"))
        for j, s in enumerate(srcs):
            e = self.essential.get((i, s))
            if e is not None:
                ess_T[j] = torch.as_tensor(e, dtype=torch.float32)
                ess_ok[j] = True
            if self.gps_dist is not None:
                gd[j] = float(self.gps_dist[i, j])
        item: dict[str, torch.Tensor | int] = {}
        if self.fixed is not None:
            fix_T = torch.eye(4).repeat(2, 1, 1)
            fix_ok = torch.zeros(2, dtype=torch.bool)
            for j, s in enumerate(srcs):
                f = self.fixed.get((i, s))
                if f is not None:
                    fix_T[j] = torch.as_tensor(f, dtype=torch.float32)
                    fix_ok[j] = True
            item.update(fix_T=fix_T, fix_ok=fix_ok)
        if self.sparse is not None:
            sp = torch.zeros(self.sparse_points, 4)
            p = self.sparse.get(i)
            if p is not None and len(p):
                p = p[: self.sparse_points]
                sp[: len(p)] = torch.as_tensor(p, dtype=torch.float32)
            item["sparse"] = sp
        return {
            **item,
            "target": self._img(i),
            "sources": torch.stack([self._img(s) for s in srcs]),
            "K": self.K,
            "index": i,
            "gps_dist": gd,
            "ess_T": ess_T,
            "ess_ok": ess_ok,
        }
