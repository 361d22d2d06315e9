"""Depth in the holes of a hybrid model's warped view (``model.hole_depth background``): :func:`background_fill`.

A hole is where no keyframe point landed, mostly a disocclusion; it takes the farther surface around it. On CPU
a numba kernel computes it, on CUDA torch does, on the device; both give the same answer. Used by
:meth:`pose2rgbd.methods.hybrid.net.HybridNet.forward` before the depth correction.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

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

    On CPU a numba kernel grows the rings as a front, visiting only the pixels next to the last ring (OpenCV's
    dilation of the whole image and numpy before: 2.4 -> 0.6 ms at 256x256 and 9.5 -> 2.3 ms at 512x512, one
    thread, on a benchmark view with 36 % holes, the same answer; AMD EPYC, AVX2); elsewhere (CUDA) torch does, on
    the device. Both give the same answer (test/test_hybrid.py)."""
    if depth_n.device.type != "cpu":
        return _background_fill_torch(depth_n, valid)
    x = np.ascontiguousarray(depth_n.detach().float().numpy())
    v = np.ascontiguousarray(valid.detach().numpy())
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            _background_fill_kernel(x[b, c], v[b, c], out[b, c])
    return torch.from_numpy(out)


_NEG = np.float32(-3e38)  # "no known depth" (below any normalized depth, above float32's lowest)


@njit(cache=True, nogil=True)
def _background_fill_kernel(x: np.ndarray, valid: np.ndarray, out: np.ndarray) -> None:
    """:func:`background_fill` of one ``(H, W)`` float32 image into ``out``.

    The rings as a breadth-first front: ring r is the unknown pixels next to a pixel that became known in ring
    r - 1 (the first: next to a surface pixel), each taking the maximum of its known 3x3 neighbours, all computed
    before any is written -- a 3x3 max dilation of the known depths, restricted to unknown pixels, visiting only
    the front instead of the whole image. Then the row rule for what is left."""
    H, W = x.shape
    neg = _NEG
    d = np.empty((H, W), np.float32)
    known = np.empty((H, W), np.bool_)
    queued = np.zeros((H, W), np.int32)  # the ring a pixel is queued for (0: none)
    front = np.empty(H * W, np.int64)
    grown = np.empty(H * W, np.float32)
    n = 0
    for v in range(H):
        for u in range(W):
            s = valid[v, u] and x[v, u] < 1.0  # sky (normalized 1) is no surface
            known[v, u] = s
            d[v, u] = x[v, u] if s else neg
    for v in range(H):  # ring 1: unknown pixels with a known neighbour
        for u in range(W):
            if known[v, u]:
                continue
            hit = False
            for vv in range(max(v - 1, 0), min(v + 2, H)):
                for uu in range(max(u - 1, 0), min(u + 2, W)):
                    hit = hit or known[vv, uu]
            if hit:
                queued[v, u] = 1
                front[n] = v * W + u
                n += 1
    for ring in range(1, RING_STEPS + 1):
        for i in range(n):
            v, u = front[i] // W, front[i] % W
            m = neg
            for vv in range(max(v - 1, 0), min(v + 2, H)):
                for uu in range(max(u - 1, 0), min(u + 2, W)):
                    m = max(m, d[vv, uu])
            grown[i] = m
        for i in range(n):
            d[front[i] // W, front[i] % W] = grown[i]
            known[front[i] // W, front[i] % W] = True
        if ring == RING_STEPS:
            break
        m_next = 0  # the next ring goes to the end of the buffer: the front is read while it is built
        for i in range(n):
            v, u = front[i] // W, front[i] % W
            for vv in range(max(v - 1, 0), min(v + 2, H)):
                for uu in range(max(u - 1, 0), min(u + 2, W)):
                    if not known[vv, uu] and queued[vv, uu] <= ring:
                        queued[vv, uu] = ring + 1
                        front[H * W - 1 - m_next] = vv * W + uu
                        m_next += 1
        for i in range(m_next):
            front[i] = front[H * W - 1 - i]
        n = m_next
    side = np.empty(W, np.float32)
    for v in range(H):
        last = neg  # the nearest known depth to the left, then to the right
        for u in range(W):
            if known[v, u]:
                last = d[v, u]
            side[u] = last
        last = neg
        for u in range(W - 1, -1, -1):
            if known[v, u]:
                last = d[v, u]
                out[v, u] = last
            else:
                f = max(side[u], last)
                out[v, u] = f if f > neg else x[v, u]


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
