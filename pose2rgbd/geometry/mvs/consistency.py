"""Geometric consistency across views: a frame's plane-sweep depth is kept only where its neighbours' depths
agree with it (the round-trip check of COLMAP's and MVSNet's fusion).

A reference pixel with depth ``d`` is lifted to 3-D, projected into a source frame, the source's depth read there
(nearest pixel: no blending across a depth edge), lifted again and projected back into the reference. The source
agrees when that round trip lands within ``max_reproj_px`` of the pixel and its depth within ``max_rel_depth`` of
``d``. A pixel agreed by at least ``min_views`` sources keeps the mean of its own depth and the agreeing ones
(averaging the independent sweeps' noise); every other pixel is NaN.
"""

from __future__ import annotations

import cv2
import numpy as np


def reproject(
    depth_ref: np.ndarray, depth_src: np.ndarray, K: np.ndarray, T_src_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Round trip of every reference pixel through the source's depth: ``(error_px, depth_back)`` (H, W) each,
    the distance between the pixel and where it comes back, and the depth it comes back with (reference
    frame); NaN where either depth is missing or the point leaves the source image."""
    h, w = depth_ref.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    Kinv = np.linalg.inv(K)
    pix = np.stack([u, v, np.ones_like(u)], -1)  # (H, W, 3)
    X_ref = (pix @ Kinv.T) * depth_ref[..., None]
    R, t = T_src_ref[:3, :3], T_src_ref[:3, 3]
    X_src = X_ref @ R.T + t
    with np.errstate(invalid="ignore", divide="ignore"):
        p = X_src @ K.T
        us, vs = p[..., 0] / p[..., 2], p[..., 1] / p[..., 2]
    bad = ~np.isfinite(us) | ~np.isfinite(vs) | (p[..., 2] <= 0)
    mu = np.where(bad, -1.0, us).astype(np.float32)
    mv = np.where(bad, -1.0, vs).astype(np.float32)
    d_src = cv2.remap(np.asarray(depth_src, np.float32), mu, mv, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=float("nan"))  # fmt: skip
    d_src = np.where(bad, np.nan, d_src)
    X2 = (np.stack([mu, mv, np.ones_like(mu)], -1).astype(np.float64) @ Kinv.T) * d_src[..., None]
    X_back = (X2 - t) @ R  # T_ref_src = inverse of (R, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = X_back @ K.T
        err = np.hypot(q[..., 0] / q[..., 2] - u, q[..., 1] / q[..., 2] - v)
    return err.astype(np.float32), X_back[..., 2].astype(np.float32)


def consistent_depth(
    depth_ref: np.ndarray,
    depth_srcs: list[np.ndarray],
    K: np.ndarray,
    T_world_ref: np.ndarray,
    T_world_srcs: list[np.ndarray],
    *,
    min_views: int = 2,
    max_reproj_px: float = 1.0,
    max_rel_depth: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """``(depth, views)``: the reference depth where at least ``min_views`` sources agree (the mean of its own and
    the agreeing depths), NaN elsewhere; ``views`` (H, W) int the number of agreeing sources."""
    d = np.asarray(depth_ref, np.float32)
    total = np.where(np.isfinite(d), d, 0.0).astype(np.float64)
    views = np.zeros(d.shape, np.int32)
    for ds, Ts in zip(depth_srcs, T_world_srcs, strict=True):
        err, back = reproject(d, ds, K, np.linalg.inv(Ts) @ T_world_ref)
        with np.errstate(invalid="ignore"):
            agree = (err <= max_reproj_px) & (np.abs(back - d) <= max_rel_depth * d)
        agree &= np.isfinite(d)
        views += agree
        total += np.where(agree, back, 0.0)
    keep = np.isfinite(d) & (views >= min_views)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(keep, total / (views + 1), np.nan)
    return out.astype(np.float32), views
