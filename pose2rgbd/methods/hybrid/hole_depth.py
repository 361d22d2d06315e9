"""Depth and colour in the holes of a hybrid model's warped view (``model.hole_depth`` / ``model.hole_rgb``
background): :func:`background_fill_with_source`, :func:`background_colour`, and which holes reach the image's border
(:func:`border_holes`, ``model.hole_border``).

A hole is where no keyframe point landed, mostly a disocclusion; it takes the farther surface around it, its
depth and (through the index of the pixel it came from) its colour. On CPU a numba kernel computes it, on CUDA
torch does, on the device; both give the same answer. Used by :meth:`pose2rgbd.methods.hybrid.net.HybridNet._holes`
once per forward, before the fill network (colour) and the depth correction (depth).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

RING_STEPS = 8  # pixel rings of a hole filled from their neighbours; the rest from the row (bounded time)


def background_fill(depth_n: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Depth for the holes of a warped view ``(B, 1, H, W)`` (normalized; ``valid``: a keyframe point landed):
    the first of :func:`background_fill_with_source`'s answers."""
    return background_fill_with_source(depth_n, valid)[0]


def background_colour(rgb: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``rgb`` ``(B, C, H, W)`` where every pixel takes the colour of the pixel whose depth it took in
    :func:`background_fill_with_source` (``source`` ``(B, 1, H, W)``; -1: its own)."""
    B, C, H, W = rgb.shape
    idx = torch.where(source >= 0, source, torch.arange(H * W, device=rgb.device).reshape(1, 1, H, W))
    return rgb.flatten(2).gather(2, idx.flatten(2).expand(B, C, H * W)).reshape(B, C, H, W)


def background_fill_with_source(depth_n: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth for the holes of a warped view ``(B, 1, H, W)`` (normalized; ``valid``: a keyframe point landed),
    and for every pixel the flat index ``v * W + u`` of the pixel whose depth it took (its own where it is known,
    -1 where nothing was known: it keeps its input), so a colour can follow the depth (:func:`background_colour`).

    A hole in a warped view is mostly a disocclusion, where the nearer surface that hid it has moved aside, so what
    shows is what lay behind. The hole is grown from its edge for ``RING_STEPS`` pixel rings, each new pixel taking
    the farthest surface among its known 3x3 neighbours (a masked max filter); what is left of a wider hole takes,
    along its row, the farther of the nearest known depths to its left and right (the one side where only one
    exists: two running maxima, constant time). Sky (normalized 1) is no surface; a hole whose row has nothing
    known keeps its input value. Ties go to the first neighbour in row-major order, and in the row to the left.

    Measured on held-out routes (docs/results.md, "What limits the hybrid's depth"): the hybrid's depth MAE 13.99 m
    with the nearest keyframe's depth in the holes, 12.06 m with the row rule alone, 11.30 m with rings grown to
    the end (one pass per pixel of hole width), 11.00 m with this mix; OpenCV's inpainting, which blends across the
    edge, had twice the hole error of the nearest keyframe's depth (bench/bench_hybrid_depth_limit.py).

    On CPU a numba kernel grows the rings as a front, visiting only the pixels next to the last ring (OpenCV's
    dilation of the whole image and numpy before: 2.4 -> 0.8 ms at 256x256 and 9.1 -> 2.9 ms at 512x512, one
    thread, on a benchmark view with 36 % holes, the same answer; AMD EPYC, AVX2); elsewhere (CUDA) torch does, on
    the device. Both give the same answer (test/test_hybrid.py)."""
    if depth_n.device.type != "cpu":
        return _background_fill_torch(depth_n, valid)
    x = np.ascontiguousarray(depth_n.detach().float().numpy())
    v = np.ascontiguousarray(valid.detach().numpy())
    out = np.empty_like(x)
    src = np.empty(x.shape, np.int64)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            _background_fill_kernel(x[b, c], v[b, c], out[b, c], src[b, c])
    return torch.from_numpy(out), torch.from_numpy(src)


def border_holes(valid: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: the holes (``~valid``) connected to the image's border through other holes (4-neighbours),
    where the view sees beyond every keyframe's frame rather than behind a surface that moved aside.

    ``scipy.ndimage.label`` on the CPU (a CUDA mask makes one round trip): one pass over the image, where a flood
    from the border in torch would take one step per pixel of hole width."""
    from scipy import ndimage

    v = valid.detach().cpu().numpy().astype(bool)
    out = np.zeros(v.shape, bool)
    for b in range(v.shape[0]):
        for c in range(v.shape[1]):
            labels, n = ndimage.label(~v[b, c])
            if n == 0:
                continue
            edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
            touches = np.zeros(n + 1, bool)
            touches[edge] = True
            touches[0] = False  # label 0: the valid pixels
            out[b, c] = touches[labels]
    return torch.from_numpy(out).to(valid.device)


_NEG = np.float32(-3e38)  # "no known depth" (below any normalized depth, above float32's lowest)


@njit(cache=True, nogil=True)
def _background_fill_kernel(x: np.ndarray, valid: np.ndarray, out: np.ndarray, src: np.ndarray) -> None:
    """:func:`background_fill_with_source` of one ``(H, W)`` float32 image into ``out`` and ``src`` (int64).

    The rings as a breadth-first front: ring r is the unknown pixels next to a pixel that became known in ring
    r - 1 (the first: next to a surface pixel), each taking the maximum of its known 3x3 neighbours, all computed
    before any is written -- a 3x3 max dilation of the known depths, restricted to unknown pixels, visiting only
    the front instead of the whole image. Then the row rule for what is left."""
    H, W = x.shape
    neg = _NEG
    d = np.empty((H, W), np.float32)
    ds = np.full((H, W), -1, np.int64)  # where each known depth came from
    known = np.empty((H, W), np.bool_)
    queued = np.zeros((H, W), np.int32)  # the ring a pixel is queued for (0: none)
    front = np.empty(H * W, np.int64)
    following = np.empty(H * W, np.int64)
    grown = np.empty(H * W, np.float32)
    grown_src = np.empty(H * W, np.int64)
    n = 0
    for v in range(H):
        for u in range(W):
            s = valid[v, u] and x[v, u] < 1.0  # sky (normalized 1) is no surface
            known[v, u] = s
            d[v, u] = x[v, u] if s else neg
            if s:
                ds[v, u] = v * W + u
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
            ms = np.int64(-1)
            for vv in range(max(v - 1, 0), min(v + 2, H)):
                for uu in range(max(u - 1, 0), min(u + 2, W)):
                    if d[vv, uu] > m:  # the first maximum in row-major order (as torch's max_pool2d)
                        m = d[vv, uu]
                        ms = ds[vv, uu]
            grown[i] = m
            grown_src[i] = ms
        for i in range(n):
            d[front[i] // W, front[i] % W] = grown[i]
            ds[front[i] // W, front[i] % W] = grown_src[i]
            known[front[i] // W, front[i] % W] = True
        if ring == RING_STEPS:
            break
        m_next = 0  # the next ring, built in its own buffer while this one is read
        for i in range(n):
            v, u = front[i] // W, front[i] % W
            for vv in range(max(v - 1, 0), min(v + 2, H)):
                for uu in range(max(u - 1, 0), min(u + 2, W)):
                    if not known[vv, uu] and queued[vv, uu] <= ring:
                        queued[vv, uu] = ring + 1
                        following[m_next] = vv * W + uu
                        m_next += 1
        front, following = following, front
        n = m_next
    side = np.empty(W, np.float32)
    side_src = np.empty(W, np.int64)
    for v in range(H):
        last = neg  # the nearest known depth to the left, then to the right
        last_src = np.int64(-1)
        for u in range(W):
            if known[v, u]:
                last = d[v, u]
                last_src = ds[v, u]
            side[u] = last
            side_src[u] = last_src
        last = neg
        last_src = -1
        for u in range(W - 1, -1, -1):
            if known[v, u]:
                last = d[v, u]
                last_src = ds[v, u]
                out[v, u] = last
                src[v, u] = last_src
            elif side[u] > neg and side[u] >= last:  # the farther side; a tie: the left
                out[v, u] = side[u]
                src[v, u] = side_src[u]
            elif last > neg:
                out[v, u] = last
                src[v, u] = last_src
            else:
                out[v, u] = x[v, u]
                src[v, u] = -1


def _background_fill_torch(depth_n: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`background_fill_with_source` in torch, on the tensors' device."""
    x = depth_n.float()
    B, C, H, W = x.shape
    surface = valid & (x < 1.0)
    neg = float(_NEG)
    d = torch.where(surface, x, torch.full_like(x, neg))
    idx = torch.arange(H * W, device=x.device).reshape(1, 1, H, W).expand(B, C, H, W)
    src = torch.where(surface, idx, torch.full_like(idx, -1))
    known = surface
    for _ in range(RING_STEPS):
        grown, at = torch.nn.functional.max_pool2d(d, 3, stride=1, padding=1, return_indices=True)
        new = ~known & (grown > neg)
        d = torch.where(new, grown, d)
        src = torch.where(new, src.flatten(2).gather(2, at.flatten(2)).reshape(B, C, H, W), src)
        known = known | new
    cols = torch.arange(W, device=x.device).expand(x.shape)
    none = torch.full_like(cols, -1)
    left = torch.where(known, cols, none).cummax(dim=-1).values  # last known column at or before
    right_f = torch.where(known.flip(-1), cols, none).cummax(dim=-1).values.flip(-1)  # in flipped columns
    right = torch.where(right_f >= 0, W - 1 - right_f, none)  # first known column at or after
    lv = torch.where(left >= 0, d.gather(-1, left.clamp_min(0)), torch.full_like(x, neg))
    rv = torch.where(right >= 0, d.gather(-1, right.clamp_min(0)), torch.full_like(x, neg))
    ls = torch.where(left >= 0, src.gather(-1, left.clamp_min(0)), none)
    rs = torch.where(right >= 0, src.gather(-1, right.clamp_min(0)), none)
    take_left = lv >= rv  # the farther side; a tie: the left
    fill = torch.where(known, d, torch.where(take_left, lv, rv))
    fill_src = torch.where(known, src, torch.where(take_left, ls, rs))
    ok = fill > neg
    return torch.where(ok, fill, x), torch.where(ok, fill_src, none)
