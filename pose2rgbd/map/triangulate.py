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
from pose2rgbd.map.features import match_ratio, root_sift
from pose2rgbd.progress import bar

RATIO = 0.8
SAMPSON_PX = 2.0
REPROJ_PX = 3.0
MIN_PARALLAX_DEG = 1.0


def _P(T_world_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    T_cam_world = np.linalg.inv(T_world_cam)
    return K @ T_cam_world[:3]  # type: ignore[no-any-return]


def _reproj(P: np.ndarray, X: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.c_[X, np.ones(len(X))] @ P.T
    z = h[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = h[:, :2] / z[:, None]
    return np.linalg.norm(uv - x, axis=1), z


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
) -> np.ndarray:
    """(K_total, 3) float32 world points of every keypoint (NaN where none was accepted)."""
    import cv2

    n = len(T_world_cam)
    estimates: list[list[np.ndarray]] = [[] for _ in range(int(offsets[-1]))]
    Ps = [_P(T, K) for T in T_world_cam]
    Kinv = np.linalg.inv(K)
    near = PoseSet(T_world_cam, rot_weight_m=rot_weight_m).nearest(T_world_cam, min(n, neighbours + 1))
    done: set[tuple[int, int]] = set()
    for i in bar(range(n), progress=progress, desc="triangulate", unit="keyframe"):
        ai, bi = int(offsets[i]), int(offsets[i + 1])
        if bi - ai < 2:
            continue
        di = root_sift(desc[ai:bi])
        for j in near[i]:
            j = int(j)
            if j == i or (min(i, j), max(i, j)) in done:
                continue
            done.add((min(i, j), max(i, j)))
            aj, bj = int(offsets[j]), int(offsets[j + 1])
            if bj - aj < 2:
                continue
            qi, qj = match_ratio(di, root_sift(desc[aj:bj]), RATIO)
            if len(qi) < 8:
                continue
            xi, xj = xy[ai + qi].astype(np.float64), xy[aj + qj].astype(np.float64)
            # fundamental matrix from the known poses: x_j^T F x_i = 0
            T_ji = np.linalg.inv(T_world_cam[j]) @ T_world_cam[i]
            R, t = T_ji[:3, :3], T_ji[:3, 3]
            if np.linalg.norm(t) < 1e-6:
                continue
            tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
            F = Kinv.T @ tx @ R @ Kinv
            hi, hj = np.c_[xi, np.ones(len(xi))], np.c_[xj, np.ones(len(xj))]
            Fx, Ftx = hi @ F.T, hj @ F
            num = np.sum(hj * Fx, axis=1) ** 2
            den = Fx[:, 0] ** 2 + Fx[:, 1] ** 2 + Ftx[:, 0] ** 2 + Ftx[:, 1] ** 2
            ok = num / np.maximum(den, 1e-12) < SAMPSON_PX**2
            if ok.sum() < 4:
                continue
            qi, qj, xi, xj = qi[ok], qj[ok], xi[ok], xj[ok]
            Xh = cv2.triangulatePoints(Ps[i], Ps[j], xi.T, xj.T)
            with np.errstate(divide="ignore", invalid="ignore"):
                X = (Xh[:3] / Xh[3]).T
            ei, zi = _reproj(Ps[i], X, xi)
            ej, zj = _reproj(Ps[j], X, xj)
            ci, cj = T_world_cam[i][:3, 3], T_world_cam[j][:3, 3]
            ri, rj = X - ci, X - cj
            norms = np.linalg.norm(ri, axis=1) * np.linalg.norm(rj, axis=1)
            cosang = np.sum(ri * rj, axis=1) / np.maximum(norms, 1e-12)
            good = (zi > 0) & (zj > 0) & (ei < REPROJ_PX) & (ej < REPROJ_PX)
            good &= cosang < np.cos(np.radians(MIN_PARALLAX_DEG))
            good &= np.all(np.isfinite(X), axis=1)
            for a, b, p in zip(qi[good], qj[good], X[good]):
                estimates[ai + int(a)].append(p)
                estimates[aj + int(b)].append(p)
    out = np.full((len(estimates), 3), np.nan, np.float32)
    for k, e in enumerate(estimates):
        if e:
            out[k] = np.median(np.asarray(e), axis=0)
    return out
