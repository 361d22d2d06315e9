"""A ``torch.utils.data.Dataset`` over a :class:`~pose2rgbd.dataset.cache.TrainingCache` (imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from pose2rgbd.dataset.cache import TrainingCache


class PoseInput(Protocol):
    """The part of a pose -> image model the dataset uses: its own pose normalization."""

    def normalize_poses(self, T_world_cam: np.ndarray) -> np.ndarray: ...


class PoseRGBDDataset(_TorchDataset[dict[str, Any]]):
    """Items: ``{"pose": (D,) float32 in [-1, 1], "rgb": (3, S, S) float32 in [-1, 1],
    "depth": (1, S, S) float32 raw depth (metres or unscaled; NaN invalid, +inf sky; absent if the
    dataset has none), "index": int}``.

    Pose and depth normalization belong to the model: poses are normalized once here by
    ``model.normalize_poses`` (the model's pose normalizer), depth is normalized by the model in its loss.
    """

    def __init__(self, cache: TrainingCache, indices: Sequence[int] | np.ndarray, model: PoseInput) -> None:
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(cache)):
            raise IndexError("split indices out of range for this cache")
        self.poses = torch.from_numpy(model.normalize_poses(cache.T_world_cam[self.indices]))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | int]:
        i = int(self.indices[k])
        rgb = torch.from_numpy(np.array(self.cache.rgb[i])).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        item: dict[str, torch.Tensor | int] = {"pose": self.poses[k], "rgb": rgb, "index": i}
        if self.cache.depth is not None:
            item["depth"] = torch.from_numpy(np.array(self.cache.depth[i]))[None]
        return item
