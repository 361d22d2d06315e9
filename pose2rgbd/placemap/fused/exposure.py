"""Per-keyframe exposure compensation: a gain and an offset per keyframe and channel, fitted once at build time.

Auto-exposure and auto white balance give the same surface another colour in every frame. Model: keyframe ``i``
records ``c_i = g_i * t + o_i`` of a true colour ``t`` (per channel); the fit finds ``(a_i, b_i)`` with
``a_i * c_i + b_i`` the same in every keyframe that sees the point, i.e. for every co-visible pair

    a_i * c_i(p) + b_i - a_j * c_j(p) - b_j = 0

in the least-squares sense (colours in [0, 1]; the sparse normal equations, built from sums per keyframe pair and
solved with SciPy's SuperLU), with a weak pull to (1, 0) so that a keyframe without co-visible samples keeps its
colours, and the gauge (any common ``(s a, s b + t)`` fits as well) fixed after the solve to the mean keyframe:
mean a = 1, mean b = 0. Samples: pixels of keyframe ``i`` with depth, flat (no strong image gradient: a small pose
error moves an edge by a pixel) and unsaturated, lifted to the world and projected into its nearest keyframes,
kept where that keyframe's own depth agrees (the point is visible there). One refit without the samples whose
residual exceeds 3 robust standard deviations (specular highlights, moving objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.placemap.keyframes import Keyframes
from pose2rgbd.placemap.lru import LRU
from pose2rgbd.progress import bar

SATURATED = (6, 249)  # colours outside (grey levels) are clipped by the sensor: no information about the gain
FLAT_GRADIENT = 24.0  # Sobel magnitude (grey levels per pixel) above which a pixel counts as an edge


def bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``img`` (H, W, C) sampled at pixel positions ``u``, ``v`` (M,) (pixel centres at integers; inside)."""
    mx = np.asarray(u, np.float32).reshape(-1, 1)
    my = np.asarray(v, np.float32).reshape(-1, 1)
    out = cv2.remap(np.asarray(img, np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, np.float32).reshape(len(mx), -1)


def project(T_world_cam: np.ndarray, cam: PinholeCamera, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


class _Images:
    """The keyframes' decoded colour and depth as the fit reads them: each keyframe with its nearest, in keyframe
    order, so the last ``keep`` keyframes' of each are kept. On the 2,161 keyframes of the simulator's survey, 6
    kept gave all but 7 of the 8,637 hits that 24 gave (each keyframe decoded about once); none kept, the fit took 30
    s instead of 11 at 320x240. 8 hold 17 MB at 640x480, and only while the samples are taken, not through the
    solve."""

    def __init__(self, kf: Keyframes, keep: int) -> None:
        self.kf = kf
        self._rgb: LRU[int, np.ndarray] = LRU(keep)
        self._depth: LRU[int, np.ndarray] = LRU(keep)

    def rgb(self, i: int) -> np.ndarray:
        return self._rgb.get(i, lambda: self.kf.rgb(i))

    def depth(self, i: int) -> np.ndarray:
        return self._depth.get(i, lambda: self.kf.depth(i))


def _samples(images: _Images, i: int, n: int, depth_max: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Flat, unsaturated pixels of keyframe ``i`` with depth: world points (M, 3) and colours (M, 3) in [0, 255]."""
    kf = images.kf
    rgb = images.rgb(i)
    depth = images.depth(i)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Sobel in integers (exact: at most 4 * 255), the magnitude's test squared: |g| / 4 < FLAT_GRADIENT
    gx = cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3).astype(np.int32)
    gy = cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3).astype(np.int32)
    flat = gx * gx + gy * gy < int((4.0 * FLAT_GRADIENT) ** 2)
    lo, hi = (SATURATED[0] + 1,) * 3, (SATURATED[1] - 1,) * 3
    unsaturated = cv2.inRange(rgb, lo, hi) > 0  # every channel inside (SATURATED), one pass
    with np.errstate(invalid="ignore"):
        ok = (depth > 0) & (depth <= depth_max) & flat & unsaturated  # NaN and +inf fail the comparisons
    at = np.flatnonzero(ok)  # row-major, as np.nonzero's pairs (half its time)
    if len(at) > n:
        at = at[rng.choice(len(at), n, replace=False)]
    vv, uu = np.divmod(at, ok.shape[1])
    cam = kf.camera(i)
    z = depth[vv, uu].astype(np.float64)
    p = np.stack([(uu - cam.cx) / cam.fx * z, (vv - cam.cy) / cam.fy * z, z], axis=1)
    T = kf.T_world_cam[i]
    return p @ T[:3, :3].T + T[:3, 3], rgb[vv, uu].astype(np.float32)


def covisible_pairs(
    kf: Keyframes,
    *,
    neighbours: int,
    samples: int,
    depth_max: float,
    tol_m: float,
    seed: int = 0,
    progress: bool = False,
    keep_images: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Co-visible colour samples: keyframe rows ``i``, ``j`` (P,) and their colours ``c_i``, ``c_j`` (P, 3).

    Written into arrays of their largest possible length (``samples`` per keyframe into each keyframe of its nearest
    list; pages never written take no memory) and returned as views of what was written: no list of pieces joined at the
    end, which held every sample twice (26 MB more at the peak of 2,161 keyframes). ``keep_images``: decoded keyframes
    kept while the samples are taken (:class:`_Images`)."""
    rng = np.random.default_rng(seed)
    images = _Images(kf, keep_images)
    near = kf.poses.nearest(kf.T_world_cam, min(len(kf), neighbours + 1))
    cap = len(kf) * int(samples) * near.shape[1]  # a keyframe not first in its own list has one more neighbour
    I, J = np.empty(cap, np.int32), np.empty(cap, np.int32)
    CI, CJ = np.empty((cap, 3), np.float32), np.empty((cap, 3), np.float32)
    m = 0
    for i in bar(range(len(kf)), progress=progress, desc="fuse: exposure samples", unit="frame"):
        X, ci = _samples(images, i, samples, depth_max, rng)
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
            seen = depth_agrees(images.depth(j), u[sel], v[sel], z[sel], np.maximum(tol_m, 0.03 * z[sel])) == 1.0
            sel = sel[seen]
            if not len(sel):
                continue
            cj = bilinear(images.rgb(j), u[sel], v[sel])
            keep = np.all((cj > SATURATED[0]) & (cj < SATURATED[1]), axis=1)
            sel, cj = sel[keep], cj[keep]
            k = len(sel)
            I[m : m + k], J[m : m + k] = i, j
            CI[m : m + k], CJ[m : m + k] = ci[sel], cj
            m += k
    return I[:m], J[:m], CI[:m], CJ[:m]


def _normal_equations(
    n: int,
    pair_i: np.ndarray,
    pair_j: np.ndarray,
    inv: np.ndarray,
    ci: np.ndarray,
    cj: np.ndarray,
    keep: np.ndarray,
    prior: float,
) -> tuple[Any, np.ndarray]:
    """The least-squares system of :func:`solve_gains`, ``(2n, 2n)`` sparse: the normal equations of the kept
    samples, built from per keyframe-pair sums (a row's contribution depends only on its pair -- ``pair_i[inv]``,
    ``pair_j[inv]`` -- and on ``c_i``, ``c_j``: memory grows with the pairs, not the samples; a sample left out
    weighs 0), and the prior on the diagonal. No dense gauge row: its LU fill-in grew to the full (2n)^2 matrix
    (100 MB at 1,800 keyframes); the gauge is set after the solve."""
    from scipy.sparse import coo_matrix

    m = len(pair_i)
    w = keep.astype(np.float64)
    cnt = np.bincount(inv, w, m)
    wi = ci * w  # float64: each product exact as before, whichever samples are kept
    s_i, s_ii = np.bincount(inv, wi, m), np.bincount(inv, wi * ci, m)
    s_ij = np.bincount(inv, wi * cj, m)
    del wi
    wj = cj * w
    s_j, s_jj = np.bincount(inv, wj, m), np.bincount(inv, wj * cj, m)
    del wj, w
    used = cnt > 0  # a pair whose samples were all left out is no pair
    cnt, s_i, s_j, s_ii, s_jj, s_ij = (a[used] for a in (cnt, s_i, s_j, s_ii, s_jj, s_ij))
    pi, pj = pair_i[used], pair_j[used]
    ai, bi, aj, bj = pi, n + pi, pj, n + pj  # unknowns: a_0..a_n-1, b_0..b_n-1
    rows = [ai, ai, bi, bi, aj, aj, bj, bj, ai, aj, ai, bj, bi, aj, bi, bj]
    cols = [ai, bi, ai, bi, aj, bj, aj, bj, aj, ai, bj, ai, aj, bi, bj, bi]
    vals = [s_ii, s_i, s_i, cnt, s_jj, s_j, s_j, cnt, -s_ij, -s_ij, -s_i, -s_i, -s_j, -s_j, -cnt, -cnt]
    k = np.arange(2 * n)
    rows.append(k)
    cols.append(k)
    vals.append(np.full(2 * n, prior**2))
    H = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * n,) * 2)
    rhs = np.zeros(2 * n)
    rhs[:n] = prior**2  # the prior pulls a_k to 1 (and b_k to 0)
    return H.tocsc(), rhs


RESIDUAL_CHUNK = 1 << 18  # samples per chunk of the residuals (their float64 temporaries: 2 MB each, not 7 MB per 800k)


def solve_gains(
    n: int, i: np.ndarray, j: np.ndarray, ci: np.ndarray, cj: np.ndarray, *, prior: float = 0.05
) -> np.ndarray:
    """``(n, 2)`` per-keyframe ``(a, b)`` of one channel from co-visible colours ``ci``, ``cj`` in [0, 1] (see the
    module docstring); solved twice, the second time without the outlying samples (left out by weight: no copies
    of the samples)."""
    from scipy.sparse.linalg import spsolve

    uniq, inv = np.unique(i.astype(np.int64) * n + j, return_inverse=True)
    pair_i, pair_j = uniq // n, uniq % n
    keep = np.ones(len(i), bool)
    x = np.concatenate([np.ones(n), np.zeros(n)])
    res = np.empty(len(i), np.float32)
    for _ in range(2):
        H, rhs = _normal_equations(n, pair_i, pair_j, inv, ci, cj, keep, prior)
        x = np.asarray(spsolve(H, rhs), np.float64)  # SuperLU
        # the gauge: every (s a, s b + t) fits the samples as well; take the one with mean a = 1, mean b = 0
        scale = 1.0 / np.mean(x[:n])
        x = np.concatenate([x[:n] * scale, (x[n:] - np.mean(x[n:])) * scale])
        for s in range(0, len(i), RESIDUAL_CHUNK):
            r = slice(s, s + RESIDUAL_CHUNK)
            ii, jj = i[r], j[r]
            res[r] = x[ii] * ci[r] + x[n + ii] - x[jj] * cj[r] - x[n + jj]
        kept = res[keep]
        mad = 1.4826 * np.median(np.abs(kept - np.median(kept))) if len(kept) else 0.0
        del kept
        keep = np.abs(res) <= max(3.0 * mad, 2.0 / 255.0)
    return np.stack([x[:n], x[n:]], axis=1)


def fit_exposure(
    kf: Keyframes, settings: Mapping[str, Any], *, neighbours: int = 4, samples: int = 100, progress: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(N, 3, 2)`` float32 ``(a, b)`` per keyframe and channel (``b`` in grey levels) and the fit's statistics.
    ``settings``: the fusion's ``voxel_size_m`` (two of them: how far a keyframe's depth may differ and still see a
    point) and ``depth_max_m`` (:func:`~pose2rgbd.placemap.fused.tsdf.resolve_settings`, or a fused geometry's meta).
    """
    n = len(kf)
    tol = 2.0 * float(settings["voxel_size_m"])
    i, j, ci, cj = covisible_pairs(kf, neighbours=neighbours, samples=samples,
                                   depth_max=float(settings["depth_max_m"]), tol_m=tol, progress=progress)  # fmt: skip
    out = np.zeros((n, 3, 2), np.float32)
    out[..., 0] = 1.0
    if len(i) == 0 or n < 2:
        return out, {"pairs": 0, "keyframes_fitted": 0, "rms_before": None, "rms_after": None}
    for c in range(3):  # one channel at a time: the float64 temporaries are one column each
        ab = solve_gains(n, i, j, ci[:, c] / np.float32(255.0), cj[:, c] / np.float32(255.0))
        out[:, c, 0] = ab[:, 0]
        out[:, c, 1] = ab[:, 1] * 255.0
    sq_before = sq_after = 0.0
    for c in range(3):  # a channel at a time, as above
        a, b = ci[:, c], cj[:, c]
        d = (a - b).astype(np.float64)  # summed in float64: a float32 sum of 800k squares drifts in its 6th digit
        sq_before += float(np.dot(d, d))
        d = ((out[i, c, 0] * a + out[i, c, 1]) - (out[j, c, 0] * b + out[j, c, 1])).astype(np.float64)
        sq_after += float(np.dot(d, d))
    stats = {
        "pairs": len(i),
        "keyframes_fitted": len(np.unique(np.concatenate([i, j]))),
        "rms_before": round(float(np.sqrt(sq_before / ci.size)), 3),
        "rms_after": round(float(np.sqrt(sq_after / ci.size)), 3),
    }
    return out, stats


def apply_exposure(rgb: np.ndarray, ab: np.ndarray | None) -> np.ndarray:
    """float32 (H, W, 3) colours of a keyframe with its ``(3, 2)`` exposure applied (unclipped)."""
    img = np.asarray(rgb, np.float32)
    return img if ab is None else img * ab[:, 0] + ab[:, 1]
