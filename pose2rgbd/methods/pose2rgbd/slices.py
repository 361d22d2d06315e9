"""Depth slices of the Slice-S networks (paper Sec. 2): the one-hot targets of the slice head."""

from __future__ import annotations

from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError


def slice_targets(depth_norm: Any, num_slices: int) -> Any:
    """One-hot depth slices (paper Sec. 2): channel k is 1 where the normalized depth lies in the k-th of
    ``num_slices`` equal intervals of [-1, 1] (the intervals are [a, b), the last one includes 1).

    ``depth_norm``: ``(B, 1, H, W)`` torch tensor or ``(..., H, W)`` numpy array in [-1, 1]. NaN pixels get
    all-zero targets (mask them out of the loss). Returns ``(B, S, H, W)`` (torch) or ``(..., S, H, W)``.
    """
    if num_slices < 1:
        raise ConfigError("slice_targets: num_slices must be >= 1")
    if isinstance(depth_norm, np.ndarray):
        d = np.asarray(depth_norm, dtype=np.float64)
        valid = np.isfinite(d)
        idx = np.clip(np.floor((np.where(valid, d, 0.0) + 1.0) * 0.5 * num_slices), 0, num_slices - 1)
        k = np.arange(num_slices).reshape((num_slices,) + (1,) * 2)
        out = (idx[..., None, :, :] == k) & valid[..., None, :, :]
        return out.astype(np.float32)
    import torch

    dt: torch.Tensor = depth_norm
    if dt.dim() != 4 or dt.shape[1] != 1:
        raise ConfigError(f"slice_targets: expected (B, 1, H, W), got {tuple(dt.shape)}")
    vt = torch.isfinite(dt)
    it = torch.floor((torch.where(vt, dt, torch.zeros_like(dt)) + 1.0) * 0.5 * num_slices)
    it = it.clamp(0, num_slices - 1).long()
    ot = torch.zeros(dt.shape[0], num_slices, dt.shape[2], dt.shape[3], dtype=dt.dtype, device=dt.device)
    ot.scatter_(1, it, 1.0)
    return ot * vt.to(dt.dtype)
