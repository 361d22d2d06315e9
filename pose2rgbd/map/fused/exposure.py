"""Per-keyframe exposure compensation: a gain and an offset per keyframe and channel, fitted once at build time.

Auto-exposure and auto white balance give the same surface another colour in every frame. Model: keyframe ``i``
records ``c_i = g_i * t + o_i`` of a true colour ``t`` (per channel); the fit finds ``(a_i, b_i)`` with
``a_i * c_i + b_i`` the same in every keyframe that sees the point, i.e. for every co-visible pair

    a_i * c_i(p) + b_i - a_j * c_j(p) - b_j = 0

in the least-squares sense (scipy ``lsqr`` on the sparse system; colours in [0, 1]), with the gauge fixed to the
mean keyframe (mean a = 1, mean b = 0) and a weak pull to (1, 0) so that a keyframe without co-visible samples
keeps its colours. Samples: pixels of keyframe ``i`` with depth, flat (no strong image gradient: a small pose
error moves an edge by a pixel) and unsaturated, lifted to the world and projected into its nearest keyframes,
kept where that keyframe's own depth agrees (the point is visible there). One refit without the samples whose
residual exceeds 3 robust standard deviations (specular highlights, moving objects).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pose2rgbd.map.fused.keyframes import Keyframes

SATURATED = (6, 249)  # colours outside (grey levels) are clipped by the sensor: no information about the gain
FLAT_GRADIENT = 24.0  # Sobel magnitude (grey levels per pixel) above which a pixel counts as an edge


def bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``img`` (H, W, C) sampled at pixel positions ``u``, ``v`` (M,) (pixel centres at integers; inside)."""
    mx = np.asarray(u, np.float32).reshape(-1, 1)
    my = np.asarray(v, np.float32).reshape(-1, 1)
    out = cv2.remap(np.asarray(img, np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, np.float32).reshape(len(mx), -1)


def project(T_world_cam: np.ndarray, cam: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points ``X`` (M, 3) -> pixel ``u``, ``v`` and depth ``z`` in a keyframe."""
    p = (X - T_world_cam[:3, 3]) @ T_world_cam[:3, :3]
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return cam.fx * p[:, 0] / z + cam.cx, cam.fy * p[:, 1] / z + cam.cy, z


def depth_agrees(depth: np.ndarray, u: np.ndarray, v: np.ndarray, z: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Per point: the keyframe's own depth at the nearest pixel is finite and within ``tol`` of ``z``; NaN where
    the keyframe has no depth there (no verdict); False where it saw farther or nearer (sky included)."""
    h, w = depth.shape
    d = depth[np.clip(np.rint(v).astype(int), 0, h - 1), np.clip(np.rint(u).astype(int), 0, w - 1)]
    out = np.where(np.abs(d - z) <= tol, 1.0, 0.0)
    out[np.isnan(d) | (d <= 0)] = np.nan
    return out


def _samples(kf: Keyframes, i: int, n: int, depth_max: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Flat, unsaturated pixels of keyframe ``i`` with depth: world points (M, 3) and colours (M, 3) in [0, 255]."""
    rgb = kf.rgb(i)
    depth = kf.depth(i)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)) / 4.0
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > 0) & (depth <= depth_max) & (grad < FLAT_GRADIENT)
    ok &= np.all((rgb > SATURATED[0]) & (rgb < SATURATED[1]), axis=-1)
    vv, uu = np.nonzero(ok)
    if len(vv) > n:
        pick = rng.choice(len(vv), n, replace=False)
        vv, uu = vv[pick], uu[pick]
    cam = kf.camera(i)
    z = depth[vv, uu].astype(np.float64)
    p = np.stack([(uu - cam.cx) / cam.fx * z, (vv - cam.cy) / cam.fy * z, z], axis=1)
    T = kf.T_world_cam[i]
    return p @ T[:3, :3].T + T[:3, 3], rgb[vv, uu].astype(np.float32)


def covisible_pairs(
    kf: Keyframes, *, neighbours: int, samples: int, depth_max: float, tol_m: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Co-visible colour samples: keyframe rows ``i``, ``j`` (P,) and their colours ``c_i``, ``c_j`` (P, 3)."""
    rng = np.random.default_rng(seed)
    near = kf.poses.nearest(kf.T_world_cam, min(len(kf), neighbours + 1))
    I, J, CI, CJ = [], [], [], []
    for i in range(len(kf)):
        X, ci = _samples(kf, i, samples, depth_max, rng)
        if not len(X):
            continue
        for j in (int(k) for k in near[i] if k != i):
            cam = kf.camera(j)
            u, v, z = project(kf.T_world_cam[j], cam, X)
            with np.errstate(invalid="ignore"):
                inside = (z > 0) & (u >= 0) & (u <= cam.width - 1) & (v >= 0) & (v <= cam.height - 1)
            if not inside.any():
                continue
            sel = np.flatnonzero(inside)
            seen = depth_agrees(kf.depth(j), u[sel], v[sel], z[sel], np.maximum(tol_m, 0.03 * z[sel])) == 1.0
            sel = sel[seen]
            if not len(sel):
                continue
            cj = bilinear(kf.rgb(j), u[sel], v[sel])
            keep = np.all((cj > SATURATED[0]) & (cj < SATURATED[1]), axis=1)
            sel, cj = sel[keep], cj[keep]
            I.append(np.full(len(sel), i))
            J.append(np.full(len(sel), j))
            CI.append(ci[sel])
            CJ.append(cj)
    if not I:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    return np.concatenate(I), np.concatenate(J), np.concatenate(CI), np.concatenate(CJ)


def solve_gains(
    n: int, i: np.ndarray, j: np.ndarray, ci: np.ndarray, cj: np.ndarray, *, prior: float = 0.05
) -> np.ndarray:
    """``(n, 2)`` per-keyframe ``(a, b)`` of one channel from co-visible colours ``ci``, ``cj`` in [0, 1] (see the
    module docstring); solved twice, the second time without the outlying samples."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import lsqr

    keep = np.ones(len(i), bool)
    x = np.concatenate([np.ones(n), np.zeros(n)])
    for _ in range(2):
        ii, jj, a, b = i[keep], j[keep], ci[keep], cj[keep]
        p = len(ii)
        r = np.arange(p)
        rows = [r, r, r, r]
        cols = [ii, n + ii, jj, n + jj]
        vals = [a, np.ones(p), -b, -np.ones(p)]
        g = np.sqrt(max(p, 1))  # the gauge rows weigh as much as all the samples
        k = np.arange(n)
        rows += [np.full(n, p), np.full(n, p + 1), p + 2 + k, p + 2 + n + k]
        cols += [k, n + k, k, n + k]
        vals += [np.full(n, g / n), np.full(n, g / n), np.full(n, prior), np.full(n, prior)]
        A = coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(p + 2 + 2 * n, 2 * n)
        )
        rhs = np.zeros(p + 2 + 2 * n)
        rhs[p] = g
        rhs[p + 2 : p + 2 + n] = prior  # prior * a_k = prior  (a_k -> 1); prior * b_k = 0
        x = lsqr(A.tocsr(), rhs, atol=1e-10, btol=1e-10, iter_lim=5000)[0]
        res = x[i] * ci + x[n + i] - x[j] * cj - x[n + j]
        mad = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep]))) if keep.any() else 0.0
        keep = np.abs(res) <= max(3.0 * mad, 2.0 / 255.0)
    return np.stack([x[:n], x[n:]], axis=1)


def fit_exposure(
    kf: Keyframes, geometry: Any, *, neighbours: int = 4, samples: int = 400
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(N, 3, 2)`` float32 ``(a, b)`` per keyframe and channel (``b`` in grey levels) and the fit's statistics."""
    n = len(kf)
    tol = 2.0 * float(geometry.meta["voxel_size_m"])
    i, j, ci, cj = covisible_pairs(kf, neighbours=neighbours, samples=samples,
                                   depth_max=float(geometry.meta["depth_max_m"]), tol_m=tol)  # fmt: skip
    out = np.zeros((n, 3, 2), np.float32)
    out[..., 0] = 1.0
    if len(i) == 0 or n < 2:
        return out, {"pairs": 0, "keyframes_fitted": 0, "rms_before": None, "rms_after": None}
    for c in range(3):
        ab = solve_gains(n, i, j, ci[:, c] / 255.0, cj[:, c] / 255.0)
        out[:, c, 0] = ab[:, 0]
        out[:, c, 1] = ab[:, 1] * 255.0
    before = ci - cj
    after = (out[i, :, 0] * ci + out[i, :, 1]) - (out[j, :, 0] * cj + out[j, :, 1])
    stats = {
        "pairs": len(i),
        "keyframes_fitted": len(np.unique(np.concatenate([i, j]))),
        "rms_before": round(float(np.sqrt(np.mean(before**2))), 3),
        "rms_after": round(float(np.sqrt(np.mean(after**2))), 3),
    }
    return out, stats


def apply_exposure(rgb: np.ndarray, ab: np.ndarray | None) -> np.ndarray:
    """float32 (H, W, 3) colours of a keyframe with its ``(3, 2)`` exposure applied (unclipped)."""
    img = np.asarray(rgb, np.float32)
    return img if ab is None else img * ab[:, 0] + ab[:, 1]
