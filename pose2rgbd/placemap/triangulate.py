"""World points of an RGB-only map: keypoints triangulated across neighbouring keyframes with the known poses.

Each keyframe is matched (RootSIFT ratio test) with its nearest keyframes in the pose distance; a match is kept
when it is consistent with the two known poses (Sampson distance to the epipolar line), triangulated with OpenCV
(``cv2.triangulatePoints``), and accepted when the point lies in front of both cameras, reprojects within a few
pixels in both and is seen under enough parallax. A keypoint's point is the median of its accepted
triangulations. This is the known-poses case of structure from motion: no pose is estimated, so no bundle
adjustment is needed (pycolmap's triangulator needs a COLMAP database of matches written first, which costs more
than these few lines).
"""

from __future__ import annotations

import numpy as np

from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.placemap.features import match_ratio, root_sift
from pose2rgbd.placemap.pool import ordered_map, share, unshare
from pose2rgbd.progress import bar

RATIO = 0.8
SAMPSON_PX = 2.0
REPROJ_PX = 3.0
MIN_PARALLAX_DEG = 1.0


def _P(T_world_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    T_cam_world = np.linalg.inv(T_world_cam)
    P: np.ndarray = K @ T_cam_world[:3]
    return P


def _reproj(P: np.ndarray, X: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.c_[X, np.ones(len(X))] @ P.T
    z = h[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = h[:, :2] / z[:, None]
    return np.linalg.norm(uv - x, axis=1), z


PAIRS_PER_TASK = 16  # keyframe pairs a worker process matches per task (a few ms each)


def keyframe_pairs(T_world_cam: np.ndarray, neighbours: int, rot_weight_m: float) -> np.ndarray:
    """(P, 2) int64 ``(i, j)``: each keyframe with its ``neighbours`` nearest in the pose distance, each unordered
    pair once, in keyframe order."""
    n = len(T_world_cam)
    near = PoseSet(T_world_cam, rot_weight_m=rot_weight_m).nearest(T_world_cam, min(n, neighbours + 1))
    done: set[tuple[int, int]] = set()
    pairs = []
    for i in range(n):
        for j in (int(j) for j in near[i]):
            key = (min(i, j), max(i, j))
            if j != i and key not in done:
                done.add(key)
                pairs.append((i, j))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


class _Features:
    """The keyframes' features and cameras a worker matches (made once per process)."""

    def __init__(
        self,
        offsets: np.ndarray,
        xy: object,
        desc: object,
        T_world_cam: np.ndarray,
        K: np.ndarray,
        min_parallax_deg: float = MIN_PARALLAX_DEG,
    ) -> None:
        self.offsets, self.xy, self.desc = offsets, unshare(xy), unshare(desc)
        self.T, self.K, self.Kinv = T_world_cam, K, np.linalg.inv(K)
        self.Ps = [_P(T, K) for T in T_world_cam]
        self.cos_parallax = float(np.cos(np.radians(min_parallax_deg)))


def _pairs(f: _Features, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate keyframe pairs: (M,) int64 feature rows and (M, 3) float64 points, each accepted
    triangulation once for each of its two keypoints."""
    import cv2

    rows: list[np.ndarray] = []
    pts: list[np.ndarray] = []
    for i, j in pairs:
        i, j = int(i), int(j)
        ai, bi = int(f.offsets[i]), int(f.offsets[i + 1])
        aj, bj = int(f.offsets[j]), int(f.offsets[j + 1])
        if bi - ai < 2 or bj - aj < 2:
            continue
        qi, qj = match_ratio(root_sift(f.desc[ai:bi]), root_sift(f.desc[aj:bj]), RATIO)
        if len(qi) < 8:
            continue
        xi, xj = np.asarray(f.xy[ai + qi], np.float64), np.asarray(f.xy[aj + qj], np.float64)
        # fundamental matrix from the known poses: x_j^T F x_i = 0
        T_ji = np.linalg.inv(f.T[j]) @ f.T[i]
        R, t = T_ji[:3, :3], T_ji[:3, 3]
        if np.linalg.norm(t) < 1e-6:
            continue
        tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
        F = f.Kinv.T @ tx @ R @ f.Kinv
        hi, hj = np.c_[xi, np.ones(len(xi))], np.c_[xj, np.ones(len(xj))]
        Fx, Ftx = hi @ F.T, hj @ F
        num = np.sum(hj * Fx, axis=1) ** 2
        den = Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Ftx[:, 0] ** 2 + Ftx[:, 1] ** 2
        ok = num / np.maximum(den, 1e-12) < SAMPSON_PX**2
        if ok.sum() < 4:
            continue
        qi, qj, xi, xj = qi[ok], qj[ok], xi[ok], xj[ok]
        Xh = cv2.triangulatePoints(f.Ps[i], f.Ps[j], xi.T, xj.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            X = (Xh[:3] / Xh[3]).T
        ei, zi = _reproj(f.Ps[i], X, xi)
        ej, zj = _reproj(f.Ps[j], X, xj)
        ri, rj = X - f.T[i][:3, 3], X - f.T[j][:3, 3]
        norms = np.linalg.norm(ri, axis=1) * np.linalg.norm(rj, axis=1)
        cosang = np.sum(ri * rj, axis=1) / np.maximum(norms, 1e-12)
        good = (zi > 0) & (zj > 0) & (ei < REPROJ_PX) & (ej < REPROJ_PX)
        good &= cosang < f.cos_parallax
        good &= np.all(np.isfinite(X), axis=1)
        rows += [ai + qi[good], aj + qj[good]]
        pts += [X[good], X[good]]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 3))
    return np.concatenate(rows).astype(np.int64), np.concatenate(pts)


def triangulate(
    offsets: np.ndarray,
    xy: np.ndarray,
    desc: np.ndarray,
    T_world_cam: np.ndarray,
    K: np.ndarray,
    *,
    neighbours: int = 6,
    rot_weight_m: float = 10.0,
    progress: bool = False,
    workers: int = 1,
    min_parallax_deg: float = MIN_PARALLAX_DEG,
    min_support: int = 1,
    max_spread: float = np.inf,
) -> np.ndarray:
    """(K_total, 3) float32 world points of every keypoint (NaN where none was accepted). ``workers`` processes
    match the keyframe pairs (:func:`~pose2rgbd.placemap.pool.ordered_map`; memory-mapped ``xy`` / ``desc`` are mapped
    again there, not copied); the points do not depend on their count (a median of the same estimates).

    Stricter points (a yardstick rather than a map): each pair's triangulation seen under at least
    ``min_parallax_deg``; a keypoint kept only with at least ``min_support`` accepted pair triangulations whose
    median distance from their median point is at most ``max_spread`` times that point's distance from the
    keypoint's camera (a mismatch on repeated texture along the epipolar line passes each pair's checks, not the
    agreement of several)."""
    pairs = keyframe_pairs(T_world_cam, neighbours, rot_weight_m)
    tasks = [pairs[k : k + PAIRS_PER_TASK] for k in range(0, len(pairs), PAIRS_PER_TASK)]
    args = (np.asarray(offsets), share(xy), share(desc), np.asarray(T_world_cam), np.asarray(K),
            float(min_parallax_deg))  # fmt: skip
    rows: list[np.ndarray] = []
    pts: list[np.ndarray] = []
    with bar(total=len(pairs), progress=progress, desc="triangulate", unit="pair") as pbar:
        for (r, p), task in zip(ordered_map(_pairs, tasks, workers=workers, setup=_Features, setup_args=args), tasks):
            rows.append(r)
            pts.append(p)
            pbar.update(len(task))
    out = np.full((int(offsets[-1]), 3), np.nan, np.float32)
    if rows:
        r, p = np.concatenate(rows), np.concatenate(pts)
        if len(r):
            keys, median = _grouped_median(r, p)
            if min_support > 1 or np.isfinite(max_spread):
                keep = _consistent(r, p, keys, median, np.asarray(offsets), np.asarray(T_world_cam), min_support,
                                   max_spread)  # fmt: skip
                keys, median = keys[keep], median[keep]
            out[keys] = median
    return out


def _consistent(
    rows: np.ndarray,
    pts: np.ndarray,
    keys: np.ndarray,
    median: np.ndarray,
    offsets: np.ndarray,
    T_world_cam: np.ndarray,
    min_support: int,
    max_spread: float,
) -> np.ndarray:
    """(len(keys),) bool: the keypoints with at least ``min_support`` triangulations (``rows`` / ``pts``) whose
    median distance from their ``median`` point is at most ``max_spread`` times its distance from the keypoint's
    camera."""
    pos = np.searchsorted(keys, rows)  # keys are sorted and hold every row's key
    dist = np.linalg.norm(pts - median[pos], axis=1)
    _, spread = _grouped_median(rows, dist[:, None])  # the same keys, in the same order
    counts = np.bincount(pos, minlength=len(keys))
    frame = np.searchsorted(offsets, keys, side="right") - 1
    reach = np.linalg.norm(median - T_world_cam[frame][:, :3, 3], axis=1)
    ok: np.ndarray = (counts >= min_support) & (spread[:, 0] <= max_spread * reach)
    return ok


def _grouped_median(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct key, the per-column median of its rows of ``values`` (what ``np.median(axis=0)`` gives: the
    middle value, or the mean of the two middle ones), sorted instead of one ``np.median`` call per keypoint
    (those calls were most of the triangulation's time)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[starts, len(k)])
    lo, hi = starts + (counts - 1) // 2, starts + counts // 2
    out = np.empty((len(starts), values.shape[1]))
    for c in range(values.shape[1]):
        v = values[np.lexsort((values[:, c], keys)), c]  # by key, then by value
        out[:, c] = (v[lo] + v[hi]) / 2
    return k[starts], out
