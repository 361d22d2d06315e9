"""Plane-sweep stereo of one reference frame against a few posed neighbours (CPU, vectorized NumPy + OpenCV).

For fronto-parallel planes ``z = d`` of the reference camera, sampled evenly in inverse depth between the far and
the near limit, every source image is warped into the reference through the plane's homography
``H = K_s (R_sr + t_sr n^T / d) K_r^-1`` (``n = (0, 0, 1)``; ``T_src_ref = (R_sr, t_sr)``). The photometric cost is
``1 - ZNCC`` over a small window (zero-mean normalized cross-correlation: unchanged by a gain and an offset, so
auto-exposure does not matter), and per pixel the mean of the ``best_k`` lowest source costs is kept (a surface
hidden in one neighbour is still matched in the others). The cost volume is aggregated by semi-global matching
along four paths (Hirschmueller 2008; P1 for a change of one plane, P2 for a jump), the winner taken per pixel
and refined below a plane by a parabola through its neighbours' aggregated costs. A pixel is left NaN where its
window has no texture, its best raw cost is too high, or the winner is the first or last plane (the surface lies
outside the sweep: sky and far field fall there, never a finite wall).

OpenCV's stereo matchers (``StereoBM`` / ``StereoSGBM``) need a rectified pair along one baseline; here several
unrectified neighbours vote per plane, so the sweep and its aggregation are written out (each step is one
vectorized pass over the whole volume, no per-pixel Python).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError


@dataclass
class MvsConfig:
    """Plane-sweep multi-view stereo from metric poses (:mod:`pose2rgbd.geometry.mvs`)."""

    planes: int = ranged_field(64, "depth planes of the sweep, evenly spaced in inverse depth", 4, 512)
    min_depth: float = ranged_field(0.0, "nearest plane (metres); 0: from the sparse SfM points", 0.0, 1e6)
    max_depth: float = ranged_field(0.0, "farthest plane (metres); 0: from the sparse SfM points", 0.0, 1e6)
    sources: int = ranged_field(4, "neighbouring frames matched against each frame", 1, 16)
    best_k: int = ranged_field(2, "per pixel, the mean of this many lowest source costs (occlusion robust)", 1, 16)
    window: int = ranged_field(5, "ZNCC window edge in pixels (odd)", 3, 31)
    min_texture: float = ranged_field(2.0, "grey-level std (0-255) a window needs to be matched", 0.0, 100.0)
    max_cost: float = ranged_field(0.5, "largest 1 - ZNCC kept at the winning plane", 0.0, 2.0)
    p1: float = ranged_field(0.03, "SGM: penalty of a one-plane step between neighbouring pixels", 0.0, 2.0)
    p2: float = ranged_field(0.3, "SGM: penalty of a larger jump", 0.0, 4.0)
    baseline_ratio: float = ranged_field(
        0.1, "preferred baseline to a source as a share of the median scene depth", 1e-4, 1.0
    )
    min_baseline_ratio: float = ranged_field(0.005, "sources with a smaller baseline share are not used", 0.0, 1.0)
    max_angle_deg: float = ranged_field(30.0, "sources whose optical axis turns more than this are not used", 1, 90)
    search_frames: int = ranged_field(30, "sources are looked for this many frames either side", 1, 1000)
    consistent_views: int = ranged_field(2, "a depth is kept where this many sources' depths agree with it", 0, 16)
    max_reproj_px: float = ranged_field(1.0, "consistency: largest round-trip reprojection error (pixels)", 0.0, 50)
    max_rel_depth: float = ranged_field(0.05, "consistency: largest relative depth difference", 0.0, 1.0)
    far_factor: float = help_field(
        1.5, "combination: the network's depth is kept only up to this times the frame's 95th percentile of "
        "verified depth (sky and far field beyond it stay NaN)"
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.window % 2 == 0:
            raise ConfigError(f"mvs.window {self.window} must be odd (a window centred on its pixel)")
        if self.min_depth and self.max_depth and not self.max_depth > self.min_depth:
            raise ConfigError(f"mvs.max_depth {self.max_depth} must exceed mvs.min_depth {self.min_depth}")
        if self.best_k > self.sources:
            raise ConfigError(f"mvs.best_k {self.best_k} cannot exceed mvs.sources {self.sources}")


def grey(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 grey levels 0-255 of an RGB (or already grey) image."""
    a = np.asarray(rgb)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    return np.asarray(a, np.float32)


def inverse_depths(min_depth: float, max_depth: float, planes: int) -> np.ndarray:
    """``planes`` inverse depths (1/m), index 0 the farthest plane, the last the nearest."""
    if not (0 < min_depth < max_depth and np.isfinite(max_depth)):
        raise ConfigError(f"depth range [{min_depth}, {max_depth}] m: need 0 < min < max < inf")
    return np.linspace(1.0 / max_depth, 1.0 / min_depth, planes)


def _box(x: np.ndarray, w: int) -> np.ndarray:
    """Window mean of ``x`` (H, W) or (H, W, C<=512) (OpenCV's box filter treats the last axis as channels)."""
    return np.asarray(cv2.boxFilter(x, -1, (w, w), borderType=cv2.BORDER_REFLECT), np.float32)


def plane_maps(
    K_ref: np.ndarray, K_src: np.ndarray, T_src_ref: np.ndarray, inv_depth: np.ndarray, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Source-image coordinates ``(u, v)``, each (D, H, W) float32, of every reference pixel on every plane
    ``z = 1 / inv_depth[k]`` of the reference camera (NaN behind the source camera)."""
    h, w = hw
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)])  # (3, HW)
    R, t = T_src_ref[:3, :3], T_src_ref[:3, 3]
    rays = np.linalg.inv(K_ref) @ pix  # z = 1
    a = K_src @ R @ rays  # H_k pix = K_s (R + t n^T inv_k) K_r^-1 pix = a + inv_k * b, with n^T rays = 1
    b = (K_src @ t)[:, None] * rays[2:3]
    p = a[None] + inv_depth[:, None, None] * b[None]  # (D, 3, HW)
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        us = np.where(z > 1e-9, p[:, 0] / z, np.nan)
        vs = np.where(z > 1e-9, p[:, 1] / z, np.nan)
    return us.reshape(-1, h, w).astype(np.float32), vs.reshape(-1, h, w).astype(np.float32)


def source_costs(
    ref: np.ndarray, src: np.ndarray, K_ref: np.ndarray, K_src: np.ndarray, T_src_ref: np.ndarray,
    inv_depth: np.ndarray, window: int,
) -> np.ndarray:  # fmt: skip
    """``(H, W, D)`` float32 ``1 - ZNCC`` of the grey reference ``ref`` and the grey source ``src`` warped onto each
    plane; NaN where the pixel's plane point falls outside the source image (or behind it)."""
    h, w = ref.shape
    us, vs = plane_maps(K_ref, K_src, T_src_ref, inv_depth, (h, w))
    D = len(inv_depth)
    warped = np.empty((h, w, D), np.float32)
    for k in range(D):  # one remap per plane (OpenCV; bilinear, edges replicated and masked below)
        mu = np.nan_to_num(us[k], nan=-1e4)
        mv = np.nan_to_num(vs[k], nan=-1e4)
        warped[..., k] = cv2.remap(src, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (us >= 0) & (us <= src.shape[1] - 1) & (vs >= 0) & (vs <= src.shape[0] - 1)  # (D, H, W)
    mr = _box(ref, window)
    vr = np.maximum(_box(ref * ref, window) - mr * mr, 0.0)
    ms = _box(warped, window)
    vs_ = np.maximum(_box(warped * warped, window) - ms * ms, 0.0)
    cov = _box(warped * ref[..., None], window) - ms * mr[..., None]
    zncc = cov / np.sqrt(np.maximum(vr[..., None] * vs_, 1e-6))
    cost = 1.0 - np.clip(zncc, -1.0, 1.0)
    cost[~np.moveaxis(inside, 0, -1)] = np.nan
    return np.asarray(cost, np.float32)


def combine_sources(costs: list[np.ndarray], best_k: int) -> np.ndarray:
    """Per pixel and plane the mean of the ``best_k`` lowest of the sources' costs that exist (NaN: none)."""
    c = np.stack(costs)  # (S, H, W, D)
    c = np.sort(np.where(np.isnan(c), np.inf, c), axis=0)[: max(1, best_k)]
    n = np.isfinite(c).sum(0)
    s = np.where(np.isfinite(c), c, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan).astype(np.float32)


def sgm(cost: np.ndarray, p1: float, p2: float) -> np.ndarray:
    """Semi-global aggregation of ``cost`` (H, W, D) along the four image axes' directions; NaN costs count as
    the neutral 1.0 (no information). Returns the summed path costs (H, W, D)."""
    C = np.where(np.isnan(cost), 1.0, cost).astype(np.float32)
    total = np.zeros_like(C)
    for axis, reverse in ((1, False), (1, True), (0, False), (0, True)):
        A = np.moveaxis(C, axis, 0)  # paths run along axis 0 of A
        n = A.shape[0]
        out = np.empty_like(A)
        order = range(n - 1, -1, -1) if reverse else range(n)
        prev: np.ndarray | None = None
        for i in order:
            if prev is None:
                cur = A[i].copy()
            else:
                m = prev.min(axis=-1, keepdims=True)
                best = np.minimum(prev, m + p2)
                best[..., 1:] = np.minimum(best[..., 1:], prev[..., :-1] + p1)
                best[..., :-1] = np.minimum(best[..., :-1], prev[..., 1:] + p1)
                cur = A[i] + best - m
            out[i] = cur
            prev = cur
        total += np.moveaxis(out, 0, axis)
    return total


def winner(aggregated: np.ndarray, inv_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winning plane index (H, W) and the sub-plane inverse depth (H, W): a parabola through the aggregated costs
    of the winner and its two neighbours (offset clipped to half a plane)."""
    D = aggregated.shape[-1]
    k = np.argmin(aggregated, axis=-1)
    kc = np.clip(k, 1, D - 2)
    c0 = np.take_along_axis(aggregated, (kc - 1)[..., None], -1)[..., 0]
    c1 = np.take_along_axis(aggregated, kc[..., None], -1)[..., 0]
    c2 = np.take_along_axis(aggregated, (kc + 1)[..., None], -1)[..., 0]
    den = c0 - 2 * c1 + c2
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(den > 1e-9, 0.5 * (c0 - c2) / den, 0.0)
    off = np.where((k == kc), np.clip(off, -0.5, 0.5), 0.0)
    step = (inv_depth[-1] - inv_depth[0]) / max(D - 1, 1)
    return k, inv_depth[k] + off * step


def sweep_depth(
    ref_rgb: np.ndarray,
    src_rgbs: list[np.ndarray],
    K: np.ndarray,
    T_world_ref: np.ndarray,
    T_world_srcs: list[np.ndarray],
    depth_range: tuple[float, float],
    cfg: MvsConfig | None = None,
) -> np.ndarray:
    """Depth (H, W) float32 metres of the reference frame by the plane sweep against the sources (same camera
    ``K``; poses ``T_world_cam``); NaN where it is not matched (see the module docstring). Not yet checked across
    views: :func:`pose2rgbd.geometry.mvs.consistency.consistent_depth` does that."""
    cfg = cfg or MvsConfig()
    if not src_rgbs:
        raise ConfigError("plane sweep: no source frame to match the reference against")
    ref = grey(ref_rgb)
    inv = inverse_depths(depth_range[0], depth_range[1], cfg.planes)
    costs = [source_costs(ref, grey(s), K, K, np.linalg.inv(Ts) @ T_world_ref, inv, cfg.window)
             for s, Ts in zip(src_rgbs, T_world_srcs, strict=True)]  # fmt: skip
    raw = combine_sources(costs, min(cfg.best_k, len(costs)))
    agg = sgm(raw, cfg.p1, cfg.p2)
    k, inv_d = winner(agg, inv)
    raw_at = np.take_along_axis(raw, k[..., None], -1)[..., 0]
    m = _box(ref, cfg.window)
    texture = np.sqrt(np.maximum(_box(ref * ref, cfg.window) - m * m, 0.0))
    ok = (texture >= cfg.min_texture) & (raw_at <= cfg.max_cost) & (k > 0) & (k < cfg.planes - 1) & (inv_d > 0)
    with np.errstate(divide="ignore"):
        return np.where(ok, 1.0 / inv_d, np.nan).astype(np.float32)
