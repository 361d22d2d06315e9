"""Torch forward warp of several keyframes into one query camera each, z-buffered across the keyframes.

Each keyframe is pushed into its query camera with its own metric depth by
:func:`pose2rgbd.methods.pose2rgbd.geometry_losses.forward_splat` (hand-written: kornia's
``warp_frame_depth`` and ``cv2.remap`` pull source pixels through the *target's* depth, which a query pose does
not have; a z-buffered forward splat needs a scatter-min, ``scatter_reduce(amin)``, then the colour of the point
whose depth equals the minimum). It runs on CPU and CUDA. The per-keyframe results are then merged by the same
rule across keyframes: per pixel the nearest surface wins, ties go to the keyframe nearest in pose (first in
order), exactly like the numpy baseline :func:`pose2rgbd.evaluation.reprojection.splat`.

Depth: metres along optical z; NaN / <= 0 never splat; ``+inf`` (sky) splats as a very far point (it moves only
with the rotation) and lands as ``+inf`` -- the numpy baseline leaves sky as holes instead (and fills them from the
nearest frame), so the two agree wherever the sources have finite depth.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypedDict

import numpy as np
import torch
from numba import njit

from pose2rgbd.methods.pose2rgbd.geometry_losses import forward_splat


@torch.no_grad()
def splat_keyframes(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    T_query_src: torch.Tensor,
    K: torch.Tensor,
    *,
    far_m: float,
    usable: torch.Tensor | None = None,
    blend_tolerance: float = 0.0,
    weights: torch.Tensor | None = None,
    fallback: int = 0,
    blend_depth: bool = False,
    blend_colour: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp ``k`` keyframes into each of ``B`` query cameras and z-buffer them together (:func:`_splat_keyframes`,
    whose arguments and first four answers these are)."""
    return _splat_keyframes(rgb, depth, T_query_src, K, far_m=far_m, usable=usable, blend_tolerance=blend_tolerance,
                            weights=weights, fallback=fallback, blend_depth=blend_depth,
                            blend_colour=blend_colour)[:4]  # fmt: skip


def _splat_keyframes(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    T_query_src: torch.Tensor,
    K: torch.Tensor,
    *,
    far_m: float,
    usable: torch.Tensor | None = None,
    blend_tolerance: float = 0.0,
    weights: torch.Tensor | None = None,
    fallback: int = 0,
    blend_depth: bool = False,
    blend_colour: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp ``k`` keyframes into each of ``B`` query cameras and z-buffer them together.

    Args:
        rgb: ``(B, k, C, H, W)`` keyframe images (any float range).
        depth: ``(B, k, 1, H, W)`` keyframe depth in metres (NaN invalid, +inf sky).
        T_query_src: ``(B, k, 4, 4)`` keyframe camera -> query camera.
        K: ``(3, 3)`` intrinsics of keyframes and queries (one camera).
        far_m: where sky is splatted (``1000 * far_m``; see ``forward_splat``).
        usable: ``(B, k)`` bool, keyframes that may splat (others are ignored); default all.
        blend_tolerance: above 0, a pixel whose winner is a surface takes the colour of every keyframe whose own
            nearest point there lies within this fraction of the winner's depth, averaged with ``weights``
            (:func:`blend_weights`); 0: the winner's colour alone.
        weights: ``(B, k)`` the keyframes' blending weights (needed with ``blend_tolerance``).
        fallback: the last ``fallback`` keyframes land points only on pixels where none of the first ``k -
            fallback`` landed any (holes of the others), never in front of them.
        blend_depth: with ``blend_tolerance``, the depth of such a pixel is blended too: the weighted mean of those
            keyframes' own nearest points there (False: the winner's, the nearest of them).
        blend_colour: False: with ``blend_tolerance`` only the depth is blended, the colour stays the winner's.

    Returns:
        ``(rgb (B, C, H, W) 0 in holes, depth (B, 1, H, W) NaN in holes / +inf sky, valid (B, 1, H, W) bool,
        hits (B, 1, H, W) float: how many keyframes landed a point on the pixel, from_fallback (B, 1, H, W) bool:
        only a fallback keyframe landed there)``.
    """
    B, k, C, H, W = rgb.shape
    d = depth.reshape(B * k, 1, H, W).double()
    if usable is not None:
        d = torch.where(usable.reshape(B * k, 1, 1, 1), d, torch.full_like(d, float("nan")))
    Kb = K.to(device=rgb.device, dtype=torch.float64)[None].expand(B * k, 3, 3)
    w_rgb, w_d, w_valid = forward_splat(
        rgb.reshape(B * k, C, H, W), d, T_query_src.reshape(B * k, 4, 4).double(), Kb, far_m=far_m
    )
    w_rgb = w_rgb.reshape(B, k, C, H, W)
    w_d = w_d.reshape(B, k, 1, H, W)
    w_valid = w_valid.reshape(B, k, 1, H, W)
    if fallback > 0:  # the fallback keyframes only where the others left a hole
        main = k - int(fallback)
        w_valid = torch.cat([w_valid[:, :main], w_valid[:, main:] & ~w_valid[:, :main].any(dim=1, keepdim=True)], 1)
    # z-buffer across keyframes: holes lose to sky, sky loses to any finite surface; argmin keeps the first on ties
    z = torch.where(w_valid, torch.where(torch.isinf(w_d), torch.full_like(w_d, 1e30), w_d), torch.full_like(w_d, 1e38))
    best = z.argmin(dim=1, keepdim=True)  # (B, 1, 1, H, W)
    out_rgb = torch.gather(w_rgb, 1, best.expand(B, 1, C, H, W))[:, 0]
    out_d = torch.gather(w_d, 1, best)[:, 0]
    valid = w_valid.any(dim=1)
    hits = w_valid.sum(dim=1).to(rgb.dtype)
    from_fallback = valid & (best[:, 0] >= k - int(fallback)) if fallback > 0 else torch.zeros_like(valid)
    if blend_tolerance > 0:
        if weights is None:
            raise ValueError("blend_tolerance needs the keyframes' weights")
        surf = w_valid & torch.isfinite(w_d)
        zmin = torch.where(surf, w_d, torch.full_like(w_d, float("inf"))).amin(dim=1)  # (B, 1, H, W)
        ok = surf & (w_d <= zmin[:, None] * (1.0 + blend_tolerance))
        wt = ok.double() * weights.to(device=rgb.device, dtype=torch.float64)[:, :, None, None, None]
        wsum = wt.sum(dim=1).clamp_min(1e-300)
        surface = valid & torch.isfinite(out_d)
        if blend_colour:
            blended = (w_rgb.double() * wt).sum(dim=1) / wsum
            out_rgb = torch.where(surface, blended.to(out_rgb.dtype), out_rgb)
        if blend_depth:
            z_blend = (torch.where(ok, w_d.double(), torch.zeros_like(w_d, dtype=torch.float64)) * wt).sum(1) / wsum
            out_d = torch.where(surface, z_blend.to(out_d.dtype), out_d)
    elif blend_depth:
        raise ValueError("blend_depth needs blend_tolerance > 0")
    out_rgb = torch.where(valid, out_rgb, torch.zeros_like(out_rgb))
    out_d = torch.where(valid, out_d, torch.full_like(out_d, float("nan")))
    out_d = out_d.to(depth.dtype if depth.dtype.is_floating_point else torch.float32)
    return out_rgb, out_d, valid, hits, from_fallback


class BlendOptions(TypedDict):
    """The blend rules' keyword arguments of :func:`warp_gathered` (a model's own: ``HybridNet.blend_options``)."""

    blend_tolerance: float
    weights: torch.Tensor | None
    blend_depth: bool
    blend_colour: bool


def blend_weights(distance: np.ndarray) -> np.ndarray:
    """The blending weight of each selected keyframe from its pose distance to the query (metres + the rotation
    weight times radians, :class:`~pose2rgbd.geometry.coverage.PoseIndex`'s): ``1 / (d + 1e-6)``, so a query at
    a keyframe's pose answers that keyframe's colours."""
    return 1.0 / (np.asarray(distance, np.float64) + 1e-6)


# ---------------------------------------------------------------------------------------------- the serving warp
# Why a numba kernel on CPU: the torch splat above runs each keyframe as a chain of full-image tensor ops in float64
# (project, round, mask, scatter-min, gather the winners, scatter the colours), then merges the keyframes with
# another argmin / gather: about 20 passes over k x H x W values plus their allocations, 70 % of the CPU forward at
# 256x256. The kernels below do the same arithmetic in one pass per keyframe with a running z-buffer across
# keyframes, keeping only which keyframe pixel won each query pixel; a second pass writes the outputs (colours
# gathered once).
_jit = njit(cache=True, error_model="numpy", nogil=True)
EPS_Z = 1e-3  # as forward_splat: points closer than this to the query camera plane are dropped


@_jit
def _splat_kernel(
    depth: np.ndarray,  # (B, k, H, W) float32 metres (NaN / <= 0 invalid, +inf sky)
    T: np.ndarray,  # (B, k, 4, 4) float64 keyframe -> query
    K: np.ndarray,  # (3, 3) float64
    usable: np.ndarray,  # (B, k) bool
    sky_m: float,  # where sky is splatted (forward_splat: 1000 * far_m)
    cls: np.ndarray,  # out (B, H * W) int8: 0 surface, 1 sky, 2 nothing landed
    zb: np.ndarray,  # out (B, H * W) float64: the winner's depth in the query (sky: its splat depth)
    kf: np.ndarray,  # out (B, H * W) int8: the winner's keyframe
    pix: np.ndarray,  # out (B, H * W) int32: the winner's keyframe pixel (v * W + u)
    bits: np.ndarray,  # out (B, H * W) int32: bit j set when keyframe j landed a point on the pixel
    blend: bool,  # keep each keyframe's own nearest surface point per pixel too (zk, pk)
    zk: np.ndarray,  # out (B, H * W, k) float32, where bit j of bits is set: keyframe j's nearest surface point's
    # depth there (inf: only sky landed); pixel-major, so a point's writes and the blend's reads stay in one line
    pk: np.ndarray,  # out (B, H * W, k) int32: its keyframe pixel
    n_main: int,  # keyframes j >= n_main are fallbacks: their points land only where no keyframe j < n_main landed
) -> None:
    """The z-buffered splat of every keyframe point into its query camera: per query pixel the winning point.

    The winner is the minimum of one total order (:func:`_wins`): a surface beats sky beats nothing; among surfaces
    the nearer wins, then the earlier keyframe (nearer in pose), then the later keyframe pixel (as the scatter of
    :func:`splat_keyframes`); all sky is equally far, so among sky the earlier keyframe wins, then the nearer
    point, then the later pixel. A fallback keyframe (``j >= n_main``, after the others) lands a point only on a
    pixel none of the others landed on."""
    B, k, H, W = depth.shape
    main_mask = (np.int32(1) << n_main) - 1
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    cls[:] = 2
    zb[:] = np.inf
    kf[:] = -1
    pix[:] = -1
    bits[:] = 0
    xn = np.empty(W, np.float64)
    for u in range(W):
        xn[u] = (u - cx) / fx
    # one keyframe row at a time in two loops: the projection without a branch, which the compiler vectorizes (the
    # two divisions per point were most of a scalar loop's time), into the row's target pixels (-1: the point lands
    # nowhere) and depths; then the z-buffer's scalar loop over them. The same arithmetic in the same order as one
    # loop, so the same answer bit for bit, in about half the time (docs/serving.md, "The splat's projection
    # vectorized")
    qrow = np.empty(W, np.int32)
    zrow = np.empty(W, np.float64)
    for b in range(B):
        for j in range(k):
            if not usable[b, j]:
                continue
            # the transform in locals: the compiler cannot keep array elements in registers across the writes below
            r00, r01, r02, r03 = T[b, j, 0, 0], T[b, j, 0, 1], T[b, j, 0, 2], T[b, j, 0, 3]
            r10, r11, r12, r13 = T[b, j, 1, 0], T[b, j, 1, 1], T[b, j, 1, 2], T[b, j, 1, 3]
            r20, r21, r22, r23 = T[b, j, 2, 0], T[b, j, 2, 1], T[b, j, 2, 2], T[b, j, 2, 3]
            bit = np.int32(1) << j
            for v in range(H):
                yn = (v - cy) / fy
                row = depth[b, j, v]
                for u in range(W):  # no branch: NaN / <= 0 depth and points behind or outside the view get -1
                    d0 = np.float64(row[u])
                    d = sky_m if d0 == np.inf else d0
                    xs = xn[u] * d
                    ys = yn * d
                    z = r20 * xs + r21 * ys + r22 * d + r23
                    px = r00 * xs + r01 * ys + r02 * d + r03
                    py = r10 * xs + r11 * ys + r12 * d + r13
                    fu = np.rint(fx * (px / z) + cx)  # half to even, as torch.round
                    fv = np.rint(fy * (py / z) + cy)
                    lands = (d > 0.0) & (d < np.inf) & (z > EPS_Z) & (fu >= 0) & (fu < W) & (fv >= 0) & (fv < H)
                    qrow[u] = np.int32(fv * W + fu) if lands else np.int32(-1)
                    zrow[u] = z
                for u in range(W):
                    q = qrow[u]
                    if q < 0:
                        continue
                    if j >= n_main and bits[b, q] & main_mask:
                        continue
                    z = zrow[u]
                    sky = row[u] == np.inf
                    c = 1 if sky else 0
                    p = v * W + u
                    if blend:  # keyframe j's own z-buffer at q: its first point there sets it (no fill pass)
                        zj = np.float32(z)
                        if not bits[b, q] & bit:
                            zk[b, q, j] = np.float32(np.inf) if sky else zj
                            pk[b, q, j] = p
                        elif c == 0 and (zj < zk[b, q, j] or (zj == zk[b, q, j] and p > pk[b, q, j])):
                            zk[b, q, j] = zj
                            pk[b, q, j] = p
                    bits[b, q] |= bit
                    if _wins(c, z, j, p, cls[b, q], zb[b, q], kf[b, q], pix[b, q]):
                        cls[b, q] = c
                        zb[b, q] = z
                        kf[b, q] = j
                        pix[b, q] = p


@_jit
def _wins(c: int, z: float, j: int, p: int, bc: int, bz: float, bj: int, bp: int) -> bool:
    """Whether point (class c, depth z, keyframe j, keyframe pixel p) beats the current winner (see
    :func:`_splat_kernel` for the order)."""
    if c != bc:
        return c < bc
    if c == 0:  # surfaces: nearer, then the earlier keyframe, then the later pixel
        if z != bz:
            return z < bz
        return j < bj or (j == bj and p > bp)
    if j != bj:  # sky: the earlier keyframe, then nearer, then the later pixel
        return j < bj
    return z < bz or (z == bz and p > bp)


@_jit
def _merge_kernel(
    cls: np.ndarray,  # (B, HW) int8: one keyframe group's winners (_splat_kernel), merged into in place
    zb: np.ndarray,  # (B, HW) float64
    kf: np.ndarray,  # (B, HW) int8
    pix: np.ndarray,  # (B, HW) int32
    bits: np.ndarray,  # (B, HW) int32
    cls2: np.ndarray,  # the same five of another, disjoint group of keyframes
    zb2: np.ndarray,
    kf2: np.ndarray,
    pix2: np.ndarray,
    bits2: np.ndarray,
    holes_only: bool,  # the other group is the fallback keyframes: merged only where no keyframe of the first landed
    q0: int,  # the pixel range merged: [q0, q1)
    q1: int,
) -> None:
    """Per pixel the winner of the two groups' winners by :func:`_wins`' order, and the keyframes that landed there.
    The order is total, so the minimum over all points is the minimum of the groups' minima: the same answer as one
    pass over every keyframe. A fallback keyframe's points land only where no main keyframe's did
    (:func:`_splat_kernel`), so the fallbacks' own winner counts exactly there (``holes_only``, after every main
    group is merged)."""
    for b in range(cls.shape[0]):
        for q in range(q0, q1):
            if holes_only and bits[b, q]:
                continue
            bits[b, q] |= bits2[b, q]
            c = cls2[b, q]
            if c < 2 and _wins(c, zb2[b, q], kf2[b, q], pix2[b, q], cls[b, q], zb[b, q], kf[b, q], pix[b, q]):
                cls[b, q] = c
                zb[b, q] = zb2[b, q]
                kf[b, q] = kf2[b, q]
                pix[b, q] = pix2[b, q]


@_jit
def _finish_kernel(
    cls: np.ndarray,  # (B, HW) int8: _splat_kernel's winners
    zb: np.ndarray,  # (B, HW) float64
    kf: np.ndarray,  # (B, HW) int8
    pix: np.ndarray,  # (B, HW) int32
    bits: np.ndarray,  # (B, HW) int32
    depth: np.ndarray,  # (B, k, HW) float32: the keyframes' depth (holes take the nearest usable one's)
    rgb: np.ndarray,  # (B, k, HW, 3) uint8: the keyframes' colours
    usable: np.ndarray,  # (B, k) bool
    rgb_out: np.ndarray,  # out (B, 3, HW) float32 zeros: the winner's colour in [-1, 1]
    z_out: np.ndarray,  # out (B, HW) float32 NaN: the winner's depth in the query (+inf sky)
    valid: np.ndarray,  # out (B, HW) bool False
    hits: np.ndarray,  # out (B, HW) float32: keyframes that landed a point on the pixel
    tol: float,  # above 0: a surface winner's colour blended (splat_keyframes' blend_tolerance)
    weights: np.ndarray,  # (B, k) float64: the keyframes' blending weights
    zk: np.ndarray,  # (B, HW, k) float32: _splat_kernel's per-keyframe nearest surface points (where bits say)
    pk: np.ndarray,  # (B, HW, k) int32
    blend_depth: bool,  # with tol: a surface winner's depth blended (the weighted mean of the same points)
    blend_colour: bool,  # with tol: a surface winner's colour blended
    q0: int,  # the pixel range written: [q0, q1)
    q1: int,
) -> None:
    B = cls.shape[0]
    k = depth.shape[1]
    for b in range(B):
        first = -1
        for j in range(k):
            if usable[b, j]:
                first = j
                break
        for q in range(q0, q1):
            c, j, p, m = cls[b, q], kf[b, q], pix[b, q], bits[b, q]
            landed = m
            cnt = 0
            while m:
                cnt += m & 1
                m >>= 1
            hits[b, q] = cnt
            if c < 2:
                valid[b, q] = True
                z_out[b, q] = np.inf if c == 1 else np.float32(zb[b, q])
            elif first >= 0:  # a hole: the nearest usable keyframe's own pixel (the reprojection baseline's fill)
                j, p = first, q
                z_out[b, q] = depth[b, first, q]
            else:
                continue  # no keyframe usable: colour 0, depth NaN
            if c == 0 and tol > 0:  # the colours of the keyframes that see the winner's surface, weighted
                # in float32 as zk: rounding is monotonic, so the winner's own point always counts (wsum > 0)
                lim = np.float32(zb[b, q] * (1.0 + tol))
                a0 = a1 = a2 = az = wsum = 0.0
                for i in range(k):
                    if landed & (1 << i) and zk[b, q, i] <= lim:
                        w, r = weights[b, i], pk[b, q, i]
                        a0 += w * np.float64(rgb[b, i, r, 0])
                        a1 += w * np.float64(rgb[b, i, r, 1])
                        a2 += w * np.float64(rgb[b, i, r, 2])
                        az += w * np.float64(zk[b, q, i])
                        wsum += w
                if blend_depth:
                    z_out[b, q] = np.float32(az / wsum)
                if blend_colour:
                    inv = 1.0 / (wsum * 127.5)
                    rgb_out[b, 0, q] = np.float32(a0 * inv - 1.0)
                    rgb_out[b, 1, q] = np.float32(a1 * inv - 1.0)
                    rgb_out[b, 2, q] = np.float32(a2 * inv - 1.0)
                    continue
            for ch in range(3):  # as torch: uint8 -> float32, / 127.5, - 1, in float32
                rgb_out[b, ch, q] = np.float32(rgb[b, j, p, ch]) / np.float32(127.5) - np.float32(1.0)


_Winners = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # _splat_kernel's cls, zb, kf, pix, bits


def splat_numba(
    rgb: np.ndarray,
    depth: np.ndarray,
    T: np.ndarray,
    K: np.ndarray,
    usable: np.ndarray,
    sky_m: float,
    blend_tolerance: float = 0.0,
    weights: np.ndarray | None = None,
    fallback: int = 0,
    blend_depth: bool = False,
    blend_colour: bool = True,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The z-buffered splat of ``k`` keyframes (``rgb`` ``(B, k, H, W, 3)`` uint8, ``depth`` ``(B, k, H, W)``
    float32 metres) into their query cameras (``T`` ``(B, k, 4, 4)`` float64 keyframe -> query, ``K`` ``(3, 3)``,
    ``usable`` ``(B, k)`` bool). Returns ``rgb`` ``(B, 3, H, W)`` float32 in [-1, 1] (a hole: the nearest usable
    keyframe's own pixel; 0 where none is usable), ``z`` ``(B, H, W)`` float32 (the winner's depth in the query, or
    with ``blend_depth`` the blended one; +inf sky, NaN none), ``valid`` bool and ``hits`` float32 (keyframes that
    landed a point on the pixel), and ``from_fallback`` bool (only a fallback keyframe landed there).
    ``blend_tolerance`` / ``weights`` ``(B, k)`` / ``fallback`` / ``blend_depth`` /
    ``blend_colour``: as :func:`splat_keyframes`.

    ``threads`` > 1 splits the work over that many threads (the kernels release the GIL), with the same answer bit
    for bit: several queries are split between the threads; one query's main keyframes are split into groups and
    the fallback keyframes make one more, each splatted into its own z-buffer, then merged by the kernel's total
    order (:func:`_merge_kernel`; the fallbacks only where no main keyframe landed, their rule), and the outputs are
    written by pixel ranges. Worth it on large frames only (:func:`warp_threads`)."""
    B, k, H, W = depth.shape
    if k > 31:
        raise ValueError(f"the numba warp merges at most 31 keyframes per query, got {k}")
    if not 0 <= fallback < max(k, 1):
        raise ValueError(f"fallback {fallback} must leave at least one of the {k} keyframes before it")
    HW = H * W
    blend = blend_tolerance > 0
    if blend_depth and not blend:
        raise ValueError("blend_depth needs blend_tolerance > 0")
    if blend:
        if weights is None:
            raise ValueError("blend_tolerance needs the keyframes' weights")
        if weights.shape != (B, k) or not (weights > 0).all():  # the kernel reads them unchecked
            raise ValueError(f"the keyframes' weights must be positive, one per keyframe and query {(B, k)}, "
                             f"got shape {weights.shape}")  # fmt: skip
    win = _winner_buffers(B, HW)
    cls, zb, kf, pix, bits = win
    zk = np.empty((B, HW, k) if blend else (1, 1, 1), np.float32)  # set where a keyframe lands (bits)
    pk = np.empty(zk.shape, np.int32)
    w = np.ascontiguousarray(weights, np.float64) if blend else np.zeros((1, 1))
    n_main = k - int(fallback)
    rgb_out = np.zeros((B, 3, HW), np.float32)
    z = np.full((B, HW), np.nan, np.float32)
    valid = np.zeros((B, HW), np.bool_)
    hits = np.zeros((B, HW), np.float32)
    depth_f, rgb_f = depth.reshape(B, k, HW), rgb.reshape(B, k, HW, 3)
    tol = float(blend_tolerance) if blend else 0.0

    def splat(rows: slice, use: np.ndarray, bufs: _Winners) -> None:
        zkb, pkb = (zk[rows], pk[rows]) if blend else (zk, pk)
        _splat_kernel(depth[rows], T[rows], K, use, sky_m, *bufs, blend, zkb, pkb, n_main)

    def finish(rows: slice, q0: int, q1: int) -> None:
        zkb, pkb, wb = (zk[rows], pk[rows], w[rows]) if blend else (zk, pk, w)
        _finish_kernel(
            cls[rows], zb[rows], kf[rows], pix[rows], bits[rows], depth_f[rows], rgb_f[rows], usable[rows],
            rgb_out[rows], z[rows], valid[rows], hits[rows], tol, wb, zkb, pkb, bool(blend_depth), bool(blend_colour),
            q0, q1,
        )  # fmt: skip

    threads = max(1, int(threads))
    main_kf = np.flatnonzero(usable[0, :n_main]) if B == 1 else np.zeros(0, np.intp)
    every = slice(None)
    if threads > 1 and B > 1:  # queries split between the threads: each its own rows of every buffer

        def queries(b0: int, b1: int) -> None:
            rows = slice(b0, b1)
            splat(rows, usable[rows], (cls[rows], zb[rows], kf[rows], pix[rows], bits[rows]))
            finish(rows, 0, HW)

        _POOL.run([functools.partial(queries, b0, b1) for b0, b1 in _ranges(B, threads)])
    elif threads > 1 and len(main_kf) > 1:  # one query: its keyframes split into groups, each its own z-buffer
        groups = np.array_split(main_kf, min(threads, len(main_kf)))  # the larger groups first
        own = [win] + [_winner_buffers(1, HW) for _ in groups[1:]]
        fb_kf = np.flatnonzero(usable[0, n_main:]) + n_main
        fb = _winner_buffers(1, HW) if len(fb_kf) else None

        def only(kfs: np.ndarray) -> np.ndarray:
            use = np.zeros_like(usable)
            use[0, kfs] = True
            return use

        tasks: list[Callable[[], object]] = [functools.partial(splat, every, only(g), o) for g, o in zip(groups, own)]
        if fb is not None:  # the fallbacks alone: where they may land (no main keyframe did) the merge decides; on a
            # thread of their own, or after the smallest group
            fb_task = functools.partial(splat, every, only(fb_kf), fb)
            tasks.append(fb_task if len(tasks) < threads else _in_turn(tasks.pop(), fb_task))
        _POOL.run(tasks)
        ranges = _ranges(HW, threads)

        def merge(q0: int, q1: int) -> None:
            for o in own[1:]:
                _merge_kernel(*win, *o, False, q0, q1)
            if fb is not None:
                _merge_kernel(*win, *fb, True, q0, q1)

        _POOL.run([functools.partial(merge, q0, q1) for q0, q1 in ranges])
        _POOL.run([functools.partial(finish, every, q0, q1) for q0, q1 in ranges])
    else:
        splat(every, usable, win)
        finish(every, 0, HW)
    from_fallback = valid & (kf >= n_main) if fallback > 0 else np.zeros_like(valid)
    shape = (B, H, W)
    return (rgb_out.reshape(B, 3, H, W), z.reshape(shape), valid.reshape(shape), hits.reshape(shape),
            from_fallback.reshape(shape))  # fmt: skip


def _winner_buffers(B: int, HW: int) -> _Winners:
    """:func:`_splat_kernel`'s per-pixel winner: class, depth, keyframe, keyframe pixel, and the keyframes landed."""
    return (np.empty((B, HW), np.int8), np.empty((B, HW), np.float64), np.empty((B, HW), np.int8),
            np.empty((B, HW), np.int32), np.empty((B, HW), np.int32))  # fmt: skip


def _in_turn(*tasks: Callable[[], object]) -> Callable[[], None]:
    """One task that runs ``tasks`` one after the other."""

    def run() -> None:
        for t in tasks:
            t()

    return run


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` in up to ``parts`` contiguous ranges of (nearly) equal length, none empty."""
    edges = np.linspace(0, n, min(parts, n) + 1).astype(int) if n > 0 else np.zeros(1, int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


SPLIT_MIN_PIXELS = 512 * 512  # see warp_threads


def warp_threads(pixels: int) -> int:
    """The threads the numba warp of ``pixels`` query pixels (all queries together) runs on: torch's own thread count
    (the network's, which a render engine sets: :func:`pose2rgbd.inference.serving_process.serving_threads`) from
    :data:`SPLIT_MIN_PIXELS` on, one below (torch's count as the calling thread sees it, the thread that runs the
    network). Measured on 2 cores (docs/serving.md, "The warp on two threads"): with two threads the warp of one
    512x512 query takes about 16 ms instead of 25 and the engine's render about 6 ms less; at 256x256 the engine's
    render took 1 ms more, torch's OpenMP threads still spinning after the network's layers on the core the warp's
    second thread wants."""
    return torch.get_num_threads() if pixels >= SPLIT_MIN_PIXELS else 1


class _Pool:
    """The warp's worker threads: :meth:`run` runs tasks at the same time, the first on the calling thread. One pool
    per process, grown to the most tasks ever asked for at once; a forked child (a data loader's worker) starts its
    own (``os.register_at_fork``), since it has the parent's pool object but none of its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._size = 0

    def _forget(self) -> None:  # in a forked child: the parent's threads and lock state are not ours
        self._lock = threading.Lock()
        self._executor, self._size = None, 0

    def run(self, tasks: Sequence[Callable[[], object]]) -> None:
        """Run ``tasks`` and wait for all of them; then the first error raised (the calling thread's first) is raised.
        They run at the same time when the pool's threads are free; callers on several threads at once share them
        (the pool is as large as the largest call), so some tasks may wait for another caller's."""
        if len(tasks) <= 1:
            for t in tasks:
                t()
            return
        futures: list[Future[object]] = []
        pending = list(tasks[1:])
        error: BaseException | None = None
        with self._lock:  # submitted under the lock, so that a caller that grows the pool cannot shut it down between
            if self._executor is None or self._size < len(tasks) - 1:
                if self._executor is not None:
                    self._executor.shutdown(wait=False)  # what was submitted to it still runs
                self._size = len(tasks) - 1
                self._executor = ThreadPoolExecutor(self._size, thread_name_prefix="pose2rgbd-warp")
            try:
                while pending:
                    futures.append(self._executor.submit(pending[0]))
                    pending.pop(0)
            except RuntimeError as e:
                if "interpreter shutdown" not in str(e):  # e.g. no thread could be started: the task may still be
                    error = e  # queued and run by a running worker, so it is not run here too
        if error is None:
            try:
                tasks[0]()
                for t in pending:  # at interpreter shutdown: in turn on this thread
                    t()
            except BaseException as e:  # raised below, once the other tasks are done with the buffers they share
                error = e
        while True:
            try:
                wait(futures)
                break
            except BaseException as e:  # Ctrl-C while waiting: still wait, then raise it
                error = error or e
        error = error or next((f.exception() for f in futures if f.exception() is not None), None)
        if error is not None:
            raise error


_POOL = _Pool()
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_POOL._forget)


def warp_gathered(
    rgb: torch.Tensor,
    depth: torch.Tensor,
    T_query_kf: torch.Tensor,
    K: torch.Tensor,
    usable: torch.Tensor,
    *,
    depth_min_m: float,
    depth_max_m: float,
    kernel: str = "auto",
    blend_tolerance: float = 0.0,
    weights: torch.Tensor | None = None,
    fallback: int = 0,
    blend_depth: bool = False,
    blend_colour: bool = True,
    nearest_depth: bool = False,
    threads: int | None = None,
) -> dict[str, torch.Tensor]:
    """The reprojection answer of ``k`` selected keyframes per query, as the network part takes it.

    Args:
        rgb: ``(B, k, H, W, 3)`` uint8 keyframe images, nearest keyframe first.
        depth: ``(B, k, H, W)`` keyframe depth in metres (any float dtype; NaN invalid, +inf sky).
        T_query_kf: ``(B, k, 4, 4)`` keyframe camera -> query camera.
        K: ``(3, 3)`` intrinsics; usable: ``(B, k)`` bool.
        depth_min_m, depth_max_m: the model's depth range (normalization; sky splats at ``1000 * depth_max_m``).

    Returns ``rgb`` ``(B, 3, H, W)`` in [-1, 1], ``depth`` ``(B, 1, H, W)`` normalized (holes: the nearest
    usable keyframe's own pixel; NaN -> 1), ``valid`` ``(B, 1, H, W)`` bool, ``hits`` ``(B, 1, H, W)`` / (k -
    fallback) (a fallback keyframe lands only where none of the others did: at most 1), ``from_fallback``
    ``(B, 1, H, W)`` bool (only a fallback keyframe landed there) and, with ``nearest_depth``, ``nearest_depth``
    ``(B, 1, H, W)`` (the nearest usable keyframe's own depth image, normalized, NaN -> 1: what a hole takes). On
    CPU the numba kernel above, elsewhere (CUDA) :func:`splat_keyframes` on the tensors' device: the same answer
    up to float64 rounding at exact half pixels (``kernel``: ``auto``, or ``numba`` / ``torch`` to choose).
    ``blend_tolerance`` / ``weights`` ``(B, k)``: the colour of the keyframes that see each surface, blended
    (:func:`splat_keyframes`). ``fallback``: the last ``fallback`` keyframes fill only the others' holes
    (:func:`splat_keyframes`). ``blend_depth``: the depth of those pixels blended alike; ``blend_colour`` False:
    their depth only (:func:`splat_keyframes`). ``threads``: the numba kernel's (:func:`splat_numba`; the same answer
    on any number); None: :func:`warp_threads` of the queries' pixels."""
    if kernel not in ("auto", "numba", "torch"):
        raise ValueError(f"kernel {kernel!r} is not auto, numba or torch")
    B, k = rgb.shape[:2]
    if not 0 <= fallback < max(k, 1):
        raise ValueError(f"fallback {fallback} must leave at least one of the {k} keyframes before it")
    n_main = float(k - fallback)
    dev = rgb.device
    span = depth_max_m - depth_min_m

    def normalize(d: torch.Tensor) -> torch.Tensor:  # DepthNormalizer.normalize, NaN -> 1
        n = 2.0 * (d.clamp(depth_min_m, depth_max_m) - depth_min_m) / span - 1.0
        return torch.where(torch.isnan(n), torch.ones_like(n), n)

    if kernel == "numba" or (kernel == "auto" and dev.type == "cpu"):
        if dev.type != "cpu":
            raise ValueError("the numba warp runs on CPU tensors; use kernel auto or torch on CUDA")
        out_rgb, z_np, valid_np, hits_np, fb_np = splat_numba(
            rgb.contiguous().numpy(),
            _depth_float32(depth),
            T_query_kf.double().contiguous().numpy(),
            K.double().contiguous().numpy(),
            usable.contiguous().numpy(),
            1000.0 * float(depth_max_m),
            blend_tolerance,
            None if weights is None else weights.double().cpu().numpy(),
            fallback,
            blend_depth,
            blend_colour,
            threads=warp_threads(rgb.shape[0] * rgb.shape[2] * rgb.shape[3]) if threads is None else threads,
        )
        z, valid, hits = torch.from_numpy(z_np), torch.from_numpy(valid_np), torch.from_numpy(hits_np)
        out = {
            "rgb": torch.from_numpy(out_rgb),
            "depth": normalize(z[:, None]),
            "valid": valid[:, None],
            "hits": hits[:, None] / n_main,
            "from_fallback": torch.from_numpy(fb_np)[:, None],
        }
        if nearest_depth:
            out["nearest_depth"] = normalize(_nearest_usable(depth, usable).float())
        return out
    f_rgb = rgb.permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0)  # (B, k, 3, H, W)
    f_depth = depth.float()[:, :, None]
    w_rgb, w_d, valid_t, hits_t, fb_t = _splat_keyframes(
        f_rgb, f_depth, T_query_kf, K, far_m=depth_max_m, usable=usable, blend_tolerance=blend_tolerance,
        weights=weights, fallback=fallback, blend_depth=blend_depth, blend_colour=blend_colour,
    )  # fmt: skip
    first = usable.int().argmax(dim=1)
    any_use = usable.any(dim=1)[:, None, None, None]
    b = torch.arange(B, device=dev)
    near_rgb = torch.where(any_use, f_rgb[b, first], torch.zeros_like(f_rgb[:, 0]))
    near_d = torch.where(any_use, f_depth[b, first], torch.full_like(f_depth[:, 0], float("nan")))
    out = {
        "rgb": torch.where(valid_t, w_rgb, near_rgb),
        "depth": normalize(torch.where(valid_t, w_d.float(), near_d)),
        "valid": valid_t,
        "hits": hits_t / n_main,
        "from_fallback": fb_t,
    }
    if nearest_depth:
        out["nearest_depth"] = normalize(near_d)
    return out


_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # every float16, as float32


@_jit
def _lookup_kernel(src: np.ndarray, table: np.ndarray, dst: np.ndarray) -> None:
    for i in range(src.size):
        dst[i] = table[src[i]]


def _depth_float32(depth: torch.Tensor) -> np.ndarray:
    """A CPU depth tensor as a C-contiguous float32 array. float16 (the keyframe store's) goes through a table of
    every float16 value in one numba loop (0.5 ms for six 512x512 keyframes) rather than torch's conversion (0.3 ms),
    which runs as an OpenMP parallel region whose threads then spin for milliseconds on the cores the split warp's
    threads want next (docs/serving.md, "The warp on two threads"), or numpy's ``astype`` (2.6 ms, one thread)."""
    if depth.dtype != torch.float16:
        return depth.float().contiguous().numpy()
    src = depth.contiguous().numpy().view(np.uint16)
    out = np.empty(src.shape, np.float32)
    _lookup_kernel(src.reshape(-1), _HALF_TO_FLOAT, out.reshape(-1))
    return out


def _nearest_usable(depth: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)``: each query's first usable keyframe's own depth image (of ``depth`` ``(B, k, H, W)``), NaN
    where none is usable."""
    first = usable.int().argmax(dim=1)
    near = depth[torch.arange(len(depth), device=depth.device), first][:, None]
    return torch.where(usable.any(dim=1)[:, None, None, None], near, torch.full_like(near, float("nan")))
