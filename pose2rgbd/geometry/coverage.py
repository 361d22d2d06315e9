"""How far a query pose is from a set of reference poses (the training cameras): where a model can be trusted.

Distance between camera poses a, b (the nearest-pose baseline's distance)::

    d(a, b) = ||t_a - t_b||  +  w * angle(R_a, R_b)        (metres; angle in radians)

``w`` (metres per radian) trades rotation for translation: rotating by a small angle moves the image by about
``f * angle`` pixels, translating by ``t`` moves a point at depth ``z`` by ``f * t / z`` pixels, so one radian
is worth about one scene depth (callers pass the median training depth; 10 m when there is none).

:meth:`PoseSet.coverage` answers, per query, the reference pose nearest in that distance and its two parts:
the position gap in metres and the viewing-direction gap in degrees. A render far from every training camera in
either is extrapolation; the render node publishes both with each image, and evaluation plots error against them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw

BRUTE_FORCE_MAX = 512  # references up to which a full distance matrix is faster than the k-d tree
# references from which coverage takes the k-d tree; for one pose (a render) the tree takes 0.18 ms at any map size,
# the full distance row 0.17 ms at 1,801 references and 0.70 ms at 20,000
COVERAGE_TREE_MIN = 4096
DEFAULT_ROT_WEIGHT_M = 10.0  # metres per radian when there is no depth to take the scene distance from


def median_depth_weight(depths: Iterable[np.ndarray] | np.ndarray) -> float:
    """The rotation weight ``w`` from sample depth maps: their median finite positive depth (metres per radian);
    :data:`DEFAULT_ROT_WEIGHT_M` when there is none."""
    vals = [np.asarray(d, dtype=np.float32).reshape(-1) for d in depths]
    f = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    f = f[np.isfinite(f) & (f > 0)]
    return float(np.median(f)) if f.size else DEFAULT_ROT_WEIGHT_M


def k_smallest(d: np.ndarray, k: int) -> np.ndarray:
    """``(M, k)`` columns of the ``k`` smallest entries of each row of ``d`` ``(M, N)`` (``k <= N``), smallest first,
    ties to the lower column: the order :meth:`PoseSet.nearest` gives, whether by its k-d tree or by the full
    distance matrix. ``d`` may hold +inf (a reference left out); it sorts last."""
    m, n = d.shape
    part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (m, 1))
    vals = np.take_along_axis(d, part, axis=1)
    out = np.take_along_axis(part, np.lexsort((part, vals)), axis=1)  # by value, then by column
    # where more entries than places share the k-th value, the partition picked among them arbitrarily: those rows
    # are sorted whole (the lowest columns of the tie win, as the k-d tree's search has them)
    kth = vals.max(axis=1, keepdims=True)
    for i in np.flatnonzero((d <= kth).sum(axis=1) > k):
        cand = np.flatnonzero(d[i] <= kth[i, 0])
        out[i] = cand[np.lexsort((cand, d[i, cand]))[:k]]
    return out


@dataclass
class Coverage:
    """Per query pose: the nearest reference pose and how far it is."""

    index: np.ndarray  # (M,) int64 row of the nearest reference pose (into the poses given to PoseSet)
    distance: np.ndarray  # (M,) float64 combined distance d (metres)
    position_m: np.ndarray  # (M,) float64 ||t_query - t_nearest||
    angle_deg: np.ndarray  # (M,) float64 rotation angle between the query and the nearest reference


class PoseSet:
    """Reference camera poses ``(N, 4, 4)`` (``T_world_cam``) with a rotation weight ``rot_weight_m`` (m/rad)."""

    def __init__(self, T_world_cam: np.ndarray, *, rot_weight_m: float) -> None:
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        if len(T) == 0:
            raise GeometryError("pose coverage needs at least one reference pose")
        if not np.isfinite(rot_weight_m) or rot_weight_m < 0:
            raise GeometryError(f"rotation weight must be a finite number >= 0 (m/rad), got {rot_weight_m}")
        self.t = T[:, :3, 3]
        self.q = matrix_to_quat_xyzw(T[:, :3, :3])
        self.rot_weight_m = float(rot_weight_m)
        self._kdtree: Any = None

    def __len__(self) -> int:
        return len(self.t)

    def reweighted(self, rot_weight_m: float) -> PoseSet:
        """The same references under another rotation weight, sharing this set's positions, rotations and k-d
        tree (built once, over the positions only: the weight enters the scoring, not the tree)."""
        if float(rot_weight_m) == self.rot_weight_m:
            return self
        if not np.isfinite(rot_weight_m) or rot_weight_m < 0:
            raise GeometryError(f"rotation weight must be a finite number >= 0 (m/rad), got {rot_weight_m}")
        other = copy.copy(self)
        other.rot_weight_m = float(rot_weight_m)
        other._tree = self._tree  # type: ignore[method-assign]  # one tree for both
        return other

    def parts(self, T_world_cam: np.ndarray, quat_xyzw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(M, N)`` position gaps (m) and rotation angles (rad) to every reference (holds the full matrices).
        ``quat_xyzw`` ``(M, 4)``: the poses' canonical quaternions where the caller has them (else computed)."""
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        dt = np.linalg.norm(T[:, None, :3, 3] - self.t[None, :, :], axis=-1)
        q = matrix_to_quat_xyzw(T[:, :3, :3]) if quat_xyzw is None else np.asarray(quat_xyzw).reshape(-1, 4)
        dot = np.clip(np.abs(q @ self.q.T), 0.0, 1.0)
        return dt, 2.0 * np.arccos(dot)

    def distances(self, T_world_cam: np.ndarray, quat_xyzw: np.ndarray | None = None) -> np.ndarray:
        """``(M, N)`` combined distances d (use :meth:`coverage` for large M; ``quat_xyzw`` as :meth:`parts`)."""
        dt, ang = self.parts(T_world_cam, quat_xyzw)
        return dt + self.rot_weight_m * ang

    def _tree(self) -> Any:
        if self._kdtree is None:
            from scipy.spatial import cKDTree

            self._kdtree = cKDTree(self.t)
        return self._kdtree

    def nearest(
        self, T_world_cam: np.ndarray, k: int, *, chunk: int = 256, quat_xyzw: np.ndarray | None = None
    ) -> np.ndarray:
        """``(M, k)`` rows of the ``k`` nearest references of each query pose, nearest first (``quat_xyzw``
        ``(M, 4)``: the poses' canonical quaternions where the caller has them, as :func:`matrix_to_quat_xyzw`
        gives them; else computed here).

        Exact. Above :data:`BRUTE_FORCE_MAX` references a k-d tree over the positions (SciPy ``cKDTree``) finds
        them: since ``d >= ||t_a - t_b||``, the ``k`` nearest by ``d`` lie inside the ball of radius ``r`` = the
        ``k``-th smallest ``d`` among the ``4k`` nearest positions; only that ball is scored."""
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        k = max(1, min(int(k), len(self)))
        Q = matrix_to_quat_xyzw(T[:, :3, :3]) if quat_xyzw is None else np.asarray(quat_xyzw).reshape(-1, 4)
        if len(self) <= BRUTE_FORCE_MAX:
            return self._nearest_brute(T, k, chunk, Q)
        tree = self._tree()
        out = np.empty((len(T), k), np.int64)
        _, first = tree.query(T[:, :3, 3], k=min(len(self), 4 * k))
        first = np.asarray(first).reshape(len(T), -1)
        for m in range(len(T)):
            cand = first[m]
            d = self._distances_to(T[m], Q[m], cand)
            r = float(np.partition(d, k - 1)[k - 1])
            ball = np.asarray(tree.query_ball_point(T[m, :3, 3], r * (1 + 1e-9) + 1e-9), np.int64)
            if len(ball) > len(cand):
                cand = np.sort(ball)
                d = self._distances_to(T[m], Q[m], cand)
            order = np.lexsort((cand, d))[:k]  # by distance, ties by row (as the brute force)
            out[m] = cand[order]
        return out

    def _distances_to(self, T: np.ndarray, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        dt = np.linalg.norm(self.t[rows] - T[:3, 3], axis=-1)
        dot = np.clip(np.abs(self.q[rows] @ q), 0.0, 1.0)
        return np.asarray(dt + self.rot_weight_m * 2.0 * np.arccos(dot))

    def _nearest_brute(self, T: np.ndarray, k: int, chunk: int, Q: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((len(T), k), np.int64)
        for s in range(0, len(T), chunk):
            d = self.distances(T[s : s + chunk], None if Q is None else Q[s : s + chunk])
            out[s : s + chunk] = k_smallest(d, k)
        return out

    def within(self, position: np.ndarray, radius_m: float) -> np.ndarray:
        """Rows of the references whose position is within ``radius_m`` of ``position`` (3,), sorted."""
        return np.sort(np.asarray(self._tree().query_ball_point(np.asarray(position, np.float64), radius_m), np.int64))

    def coverage(self, T_world_cam: np.ndarray, *, chunk: int = 256) -> Coverage:
        """The nearest reference (by d) of each query pose ``(M, 4, 4)`` or ``(4, 4)``, in chunks of ``chunk``.

        Ties go to the lowest row. From :data:`COVERAGE_TREE_MIN` references on the k-d tree of :meth:`nearest`
        finds it (the same answer), so a render's coverage does not grow with a large map."""
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        m = len(T)
        if len(self) >= COVERAGE_TREE_MIN:
            Q = matrix_to_quat_xyzw(T[:, :3, :3])
            j = self.nearest(T, 1, quat_xyzw=Q)[:, 0]
            pos = np.linalg.norm(self.t[j] - T[:, :3, 3], axis=-1)
            ang = 2.0 * np.arccos(np.clip(np.abs(np.einsum("mi,mi->m", self.q[j], Q)), 0.0, 1.0))
            return Coverage(j, pos + self.rot_weight_m * ang, pos, np.degrees(ang))
        idx, dist = np.empty(m, np.int64), np.empty(m)
        pos, ang = np.empty(m), np.empty(m)
        for s in range(0, m, chunk):
            dt, a = self.parts(T[s : s + chunk])
            d = dt + self.rot_weight_m * a
            j = np.argmin(d, axis=1)
            r = np.arange(len(j))
            idx[s : s + chunk], dist[s : s + chunk] = j, d[r, j]
            pos[s : s + chunk], ang[s : s + chunk] = dt[r, j], np.degrees(a[r, j])
        return Coverage(idx, dist, pos, ang)
