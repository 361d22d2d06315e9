"""The fused-geometry renderer: the fused surface's depth at any pose, coloured from the keyframes that see it.

For each pixel the fused surface is ray-cast (:meth:`FusedGeometry.raycast`: the depth), and its world point
is projected into the ``neighbours`` keyframes nearest the query pose. A keyframe colours the point only where it
**sees** it: the ray from the keyframe's camera to the point meets the fused surface no nearer than the point
(less a tolerance), and the keyframe's own depth at that pixel, where it has one, agrees with the point's distance
(an occluder the fusion missed, a person walking by, still hides it). The visible keyframes' colours, each with
its exposure compensation, are blended with unstructured-lumigraph weights (Buehler et al. 2001): a penalty per
keyframe -- the angle between the query's and the keyframe's rays to the point, plus ``distance_weight`` x how
much farther the keyframe is from the point than the query (``max(0, 1 - d_query / d_keyframe)``: a farther view
has less resolution) -- and a weight ``(1 - p / p_max) / (p + eps)``, with ``p_max`` the largest penalty among
``neighbours + 1`` candidates, so that a keyframe's weight falls smoothly to 0 as it leaves the set.

The exposure compensation brings every keyframe's colours to one reference: by default the nearest keyframe's
exposure (``exposure_reference="nearest"``: the blend is consistent, and a view keeps the exposure of the frames
shot where it is), or the mean keyframe's (``"mean"``: one exposure for the whole place).

Pixels with no surface or no keyframe that sees their point are holes (``valid`` False); ``fill="nearest"``
fills them from the nearest keyframe's own pixels, as the reprojection baseline does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.placemap.fused.exposure import apply_exposure, bilinear, depth_agrees, project
from pose2rgbd.placemap.fused.tsdf import FusedGeometry
from pose2rgbd.placemap.keyframes import Keyframes

EPS_PENALTY = 1e-3


@dataclass
class FusedView:
    """One query view rendered from the fused geometry."""

    rgb: np.ndarray  # (H, W, 3) uint8; holes 0 (or filled)
    depth: np.ndarray  # (H, W) float32 metres along optical z; NaN where no surface (or filled)
    valid: np.ndarray  # (H, W) bool: surface hit and coloured by at least one keyframe (before any fill)
    surface: np.ndarray  # (H, W) bool: the ray met the fused surface

    @property
    def hole_fraction(self) -> float:
        return float(1.0 - self.valid.mean())


class FusedRenderer:
    """Renders RGB-D at any pose from keyframes and their fused geometry (see the module docstring)."""

    def __init__(
        self,
        keyframes: Keyframes,
        geometry: FusedGeometry,
        *,
        neighbours: int = 4,
        tolerance_rel: float = 0.05,
        distance_weight: float = 0.5,
        exposure: bool = True,
        exposure_reference: str = "nearest",
    ) -> None:
        if exposure_reference not in ("nearest", "mean"):
            raise ValueError(f"exposure_reference {exposure_reference!r}: use nearest or mean")
        self.kf = keyframes
        self.geo = geometry
        self.neighbours = max(1, int(neighbours))
        self.tolerance_rel = float(tolerance_rel)
        self.distance_weight = float(distance_weight)
        self.exposure = geometry.exposure if exposure else None
        self.exposure_reference = exposure_reference

    def tolerance(self, z: np.ndarray) -> np.ndarray:
        """Depth agreement tolerance at distance ``z``: two voxels, or ``tolerance_rel`` of it if more."""
        return np.maximum(2.0 * self.geo.voxel_size, self.tolerance_rel * z)

    def visible(self, j: int, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which world points ``X`` (M, 3) keyframe ``j`` sees, and where: (visible (M,), u (M,), v (M,))."""
        cam = self.kf.camera(j)
        T = self.kf.T_world_cam[j]
        u, v, z = project(T, cam, X)
        with np.errstate(invalid="ignore"):
            ok = (z > 0) & (u >= 0) & (u <= cam.width - 1) & (v >= 0) & (v <= cam.height - 1)
        idx = np.flatnonzero(ok)
        if len(idx):
            ray = X[idx] - T[:3, 3]  # t = 1 at the point
            dist = np.linalg.norm(ray, axis=1)
            t = self.geo.cast(T[:3, 3], ray)
            fused_ok = t * dist >= dist - self.tolerance(z[idx])
            own = depth_agrees(self.kf.depth(j), u[idx], v[idx], z[idx], self.tolerance(z[idx]))
            ok[idx] = fused_ok & (np.isnan(own) | (own == 1.0))
        return ok, u, v

    def render(self, T_world_cam: np.ndarray, camera: PinholeCamera, *, fill: str = "none") -> FusedView:
        T = np.asarray(T_world_cam, np.float64)
        H, W = camera.height, camera.width
        depth = self.geo.raycast(T, camera)
        surface = np.isfinite(depth)
        X = (camera.rays()[surface] * depth[surface, None]) @ T[:3, :3].T + T[:3, 3]
        rgb = np.zeros((H, W, 3), np.uint8)
        valid = np.zeros((H, W), bool)
        cand = self.kf.poses.nearest(T, min(len(self.kf), self.neighbours + 1))[0]
        if len(X):
            to_q = X - T[:3, 3]
            d_q = np.linalg.norm(to_q, axis=1)
            pen = np.full((len(cand), len(X)), np.inf)
            cols = np.zeros((len(cand), len(X), 3), np.float32)
            seen = np.zeros((len(cand), len(X)), bool)
            for r, j in enumerate(int(c) for c in cand):
                to_j = X - self.kf.T_world_cam[j][:3, 3]
                d_j = np.linalg.norm(to_j, axis=1)
                cos = np.einsum("ij,ij->i", to_q, to_j) / np.maximum(d_q * d_j, 1e-12)
                pen[r] = np.arccos(np.clip(cos, -1.0, 1.0)) + self.distance_weight * np.maximum(0.0, 1.0 - d_q / d_j)
                if r == self.neighbours:  # the extra candidate only sets the threshold
                    continue
                ok, u, v = self.visible(j, X)
                if ok.any():
                    img = apply_exposure(self.kf.rgb(j), self._to_reference(j, int(cand[0])))
                    cols[r, ok] = bilinear(img, u[ok], v[ok])
                    seen[r] = ok
            p_max = pen.max(axis=0) * (1.0 + 1e-6) + 1e-9
            w = np.where(seen, np.maximum(1.0 - pen / p_max, 0.0) / (pen + EPS_PENALTY), 0.0)
            if len(cand) == 1:  # a single keyframe: nothing to set a threshold with
                w = np.where(seen, 1.0, 0.0)
            tot = w.sum(axis=0)
            good = tot > 0
            blend = np.einsum("km,kmc->mc", w[:, good], cols[:, good]) / tot[good, None]
            pix = np.flatnonzero(surface.ravel())[good]
            rgb.reshape(-1, 3)[pix] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
            valid.ravel()[pix] = True
        view = FusedView(rgb, depth, valid, surface)
        if fill == "nearest":
            self._fill_nearest(view, int(cand[0]), camera)
        return view

    def _to_reference(self, j: int, nearest: int) -> np.ndarray | None:
        """Keyframe ``j``'s ``(3, 2)`` exposure map onto the reference exposure: the mean keyframe's, or the nearest
        keyframe's (``a_j c + b_j`` brought back through the nearest keyframe's own ``(a, b)``)."""
        if self.exposure is None:
            return None
        ab = np.asarray(self.exposure[j], np.float64)
        if self.exposure_reference == "mean":
            return ab
        ref = np.asarray(self.exposure[nearest], np.float64)
        return np.stack([ab[:, 0] / ref[:, 0], (ab[:, 1] - ref[:, 1]) / ref[:, 0]], axis=1)

    def _fill_nearest(self, view: FusedView, j: int, camera: PinholeCamera) -> None:
        """Holes take the nearest keyframe's own pixels (its depth only where there is no surface)."""
        import cv2

        r0, d0 = self.kf.rgb(j), self.kf.depth(j)
        if r0.shape[:2] != (camera.height, camera.width):
            r0 = cv2.resize(r0, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
            d0 = cv2.resize(d0, (camera.width, camera.height), interpolation=cv2.INTER_NEAREST)
        view.rgb[~view.valid] = r0[~view.valid]
        view.depth[~view.surface] = d0[~view.surface]
