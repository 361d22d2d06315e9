"""Nearest-neighbour pose retrieval baseline: answer a pose with the training frame whose pose is closest.

Distance between camera poses a, b::

    d(a, b) = ||t_a - t_b||  +  w * angle(R_a, R_b)        (metres; angle in radians)

``w`` (metres per radian) trades rotation for translation. Rotating the camera by a small angle moves the
image by about ``f * angle`` pixels; translating by ``t`` moves a point at depth ``z`` by ``f * t / z`` pixels,
so one radian is worth about one scene depth: by default ``w`` = the median finite depth of the training
frames (10 m when there is no depth).
"""

from __future__ import annotations

import numpy as np

from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw


class NearestPoseBaseline:
    def __init__(self, T_world_cam_train: np.ndarray, train_indices: np.ndarray, *, rot_weight_m: float) -> None:
        T = np.asarray(T_world_cam_train, dtype=np.float64).reshape(-1, 4, 4)
        self.t = T[:, :3, 3]
        self.q = matrix_to_quat_xyzw(T[:, :3, :3])
        self.indices = np.asarray(train_indices, dtype=np.int64)
        self.rot_weight_m = float(rot_weight_m)

    def distances(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``(M, N_train)`` distances (use :meth:`query` for large M; this holds the full matrix)."""
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        t = T[:, :3, 3]
        q = matrix_to_quat_xyzw(T[:, :3, :3])
        dt = np.linalg.norm(t[:, None, :] - self.t[None, :, :], axis=-1)
        dot = np.clip(np.abs(q @ self.q.T), 0.0, 1.0)
        ang = 2.0 * np.arccos(dot)
        return dt + self.rot_weight_m * ang

    def query(self, T_world_cam: np.ndarray, *, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices (into the full dataset / cache) of the nearest training poses, and the distances."""
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        idx = np.empty(len(T), dtype=np.int64)
        dist = np.empty(len(T))
        for s in range(0, len(T), chunk):
            d = self.distances(T[s : s + chunk])
            j = np.argmin(d, axis=1)
            idx[s : s + chunk] = self.indices[j]
            dist[s : s + chunk] = d[np.arange(len(j)), j]
        return idx, dist


def default_rot_weight(depth: np.ndarray | None, indices: np.ndarray, *, max_frames: int = 200) -> float:
    """Median finite depth of (up to ``max_frames`` of) the training frames; 10 m without depth."""
    if depth is None or len(indices) == 0:
        return 10.0
    sel = np.sort(np.asarray(indices)[np.linspace(0, len(indices) - 1, min(max_frames, len(indices))).astype(int)])
    d = np.asarray(depth[np.unique(sel)], dtype=np.float32)
    f = d[np.isfinite(d) & (d > 0)]
    return float(np.median(f)) if f.size else 10.0
