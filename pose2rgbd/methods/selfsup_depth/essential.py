"""Relative pose from two frames without learning: tracked features (OpenCV Shi-Tomasi + pyramidal Lucas-Kanade),
essential matrix with RANSAC and the cheirality check (``cv2.findEssentialMat`` / ``cv2.recoverPose``).

The translation comes back as a unit vector (a monocular pair has no scale); the pose is ``T_source_target``
(a target-frame point ``p`` is ``R p + t`` in the source frame), the convention of the pose network.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

MIN_INLIERS = 30
MIN_PARALLAX_PX = 0.5  # median feature motion below this: translation direction is noise


def essential_pose(
    target_gray: np.ndarray, source_gray: np.ndarray, K: np.ndarray, *, max_features: int = 600
) -> np.ndarray | None:
    """``T_source_target`` (4, 4) with a unit translation, or ``None`` when the pair is not usable (too few
    tracked features or inliers, too little parallax)."""
    pts = cv2.goodFeaturesToTrack(target_gray, max_features, 0.01, 4)
    if pts is None or len(pts) < MIN_INLIERS:
        return None
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(target_gray, source_gray, pts, None, winSize=(15, 15), maxLevel=3)  # type: ignore[call-overload]
    ok = st.ravel() == 1
    p0, p1 = pts.reshape(-1, 2)[ok], nxt.reshape(-1, 2)[ok]
    if len(p0) < MIN_INLIERS or np.median(np.linalg.norm(p1 - p0, axis=1)) < MIN_PARALLAX_PX:
        return None
    E, mask = cv2.findEssentialMat(p0, p1, K, method=cv2.RANSAC, prob=0.999, threshold=1.0)
    if E is None or E.shape != (3, 3):
        return None
    n, R, t, _mask2 = cv2.recoverPose(E, p0, p1, K, mask=mask)
    if n < MIN_INLIERS:
        return None
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).ravel() / max(float(np.linalg.norm(t)), 1e-12)
    return T


def essential_poses(
    gray: np.ndarray, K: np.ndarray, pairs: Iterable[tuple[int, int]], *, progress: bool = False
) -> dict[tuple[int, int], np.ndarray]:
    """``{(target, source): T_source_target}`` for the usable ``pairs`` of ``gray`` (N, H, W) uint8 frames."""
    from pose2rgbd.progress import bar

    out: dict[tuple[int, int], np.ndarray] = {}
    pairs = list(pairs)
    for i, s in bar(pairs, desc="essential poses", unit="pair", progress=progress):
        T = essential_pose(gray[i], gray[s], K)
        if T is not None:
            out[(i, s)] = T
    return out
