"""Depth in the holes of a hybrid model's warped view (``model.hole_depth background``): :func:`background_fill`.

A hole is where no keyframe point landed, mostly a disocclusion; it takes the farther surface around it. On CPU
OpenCV's dilation and numpy compute it, on CUDA torch does, on the device; both give the same answer. Used by
:meth:`pose2rgbd.methods.hybrid.net.HybridNet.forward` before the depth correction.
"""

from __future__ import annotations

import numpy as np
import torch

RING_STEPS = 8  # pixel rings of a hole filled from their neighbours; the rest from the row (bounded time)


def background_fill(depth_n: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Depth for the holes of a warped view ``(B, 1, H, W)`` (normalized; ``valid``: a keyframe point landed).

    A hole in a warped view is mostly a disocclusion, where the nearer surface that hid it has moved aside, so what
    shows is what lay behind. The hole is grown from its edge for ``RING_STEPS`` pixel rings, each new pixel taking
    the farthest surface among its known 3x3 neighbours (a masked max filter); what is left of a wider hole takes,
    along its row, the farther of the nearest known depths to its left and right (the one side where only one
    exists: two running maxima, constant time). Sky (normalized 1) is no surface; a hole whose row has nothing
    known keeps its input value.

    Measured on held-out routes (docs/results.md, "What limits the hybrid's depth"): the hybrid's depth MAE 13.99 m
    with the nearest keyframe's depth in the holes, 12.06 m with the row rule alone, 11.30 m with rings grown to
    the end (one pass per pixel of hole width), 11.00 m with this mix; OpenCV's inpainting, which blends across the
    edge, had twice the hole error of the nearest keyframe's depth (bench/bench_hybrid_depth_limit.py).

    On CPU OpenCV's dilation runs the rings (about 6x faster than torch's max filter there: 2.7 ms at 256x256,
    one thread); elsewhere (CUDA) torch does, on the device. Both give the same answer
    (test/test_hybrid.py)."""
    if depth_n.device.type != "cpu":
        return _background_fill_torch(depth_n, valid)
    x = depth_n.detach().float().numpy()
    v = valid.detach().numpy()
    out = np.stack([[_background_fill_numpy(x[b, c], v[b, c]) for c in range(x.shape[1])] for b in range(len(x))])
    return torch.from_numpy(out)


_NEG = np.float32(-3e38)  # "no known depth" (below any normalized depth, above float32's lowest)


def _background_fill_numpy(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """:func:`background_fill` of one ``(H, W)`` float32 image on the CPU (OpenCV dilation + numpy)."""
    import cv2

    surface = valid & (x < 1.0)
    d = np.where(surface, x, _NEG).astype(np.float32)
    known = surface.copy()
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(RING_STEPS):
        grown = cv2.dilate(d, kernel)
        new = ~known & (grown > _NEG)
        d = np.where(new, grown, d)
        known |= new
    h, w = x.shape
    cols = np.broadcast_to(np.arange(w), x.shape)
    left = np.maximum.accumulate(np.where(known, cols, -1), axis=-1)
    right_f = np.maximum.accumulate(np.where(known[:, ::-1], cols, -1), axis=-1)[:, ::-1]
    right = np.where(right_f >= 0, w - 1 - right_f, -1)
    rows = np.arange(h)[:, None]
    lv = np.where(left >= 0, d[rows, np.clip(left, 0, None)], _NEG)
    rv = np.where(right >= 0, d[rows, np.clip(right, 0, None)], _NEG)
    fill = np.where(known, d, np.maximum(lv, rv))
    return np.where(fill > _NEG, fill, x).astype(np.float32)


def _background_fill_torch(depth_n: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """:func:`background_fill` in torch, on the tensors' device."""
    x = depth_n.float()
    surface = valid & (x < 1.0)
    neg = float(_NEG)
    d = torch.where(surface, x, torch.full_like(x, neg))
    known = surface
    for _ in range(RING_STEPS):
        grown = torch.nn.functional.max_pool2d(d, 3, stride=1, padding=1)
        new = ~known & (grown > neg)
        d = torch.where(new, grown, d)
        known = known | new
    w = x.shape[-1]
    cols = torch.arange(w, device=x.device).expand(x.shape)
    none = torch.full_like(cols, -1)
    left = torch.where(known, cols, none).cummax(dim=-1).values  # last known column at or before
    right_f = torch.where(known.flip(-1), cols, none).cummax(dim=-1).values.flip(-1)  # in flipped columns
    right = torch.where(right_f >= 0, w - 1 - right_f, none)  # first known column at or after
    lv = torch.where(left >= 0, d.gather(-1, left.clamp_min(0)), torch.full_like(x, neg))
    rv = torch.where(right >= 0, d.gather(-1, right.clamp_min(0)), torch.full_like(x, neg))
    fill = torch.where(known, d, torch.maximum(lv, rv))
    return torch.where(fill > neg, fill, x)
