"""A tiny procedural dataset (ray-cast textured ground plane + sky) for tests and offline smoke runs.

Images depend smoothly on the pose: each pixel's ray is intersected with the plane z = 0, the hit point is
coloured by a smooth texture of (x, y), depth is the optical-axis distance; rays above the horizon see sky
(+inf depth). A small corner patch is marked invalid (NaN) so that masking is exercised. Source 0 is a
lawnmower survey, source 1 a diagonal route that crosses it (held out by the ``route`` split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose2rgbd.dataset import DatasetWriter, Manifest
from pose2rgbd.geometry import R_BODY_OPTICAL, PinholeCamera, make_T
from pose2rgbd.geometry.rotations import rpy_to_matrix


def _render(T_world_cam: np.ndarray, cam: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    rays = cam.rays()  # (H, W, 3), z = 1 in the optical frame
    R, c = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays @ R.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -c[2] / d[..., 2]
    hit = (d[..., 2] < -1e-6) & (t > 0) & (t < 250.0)  # beyond 250 m: sky
    p = c[None, None, :2] + np.where(hit[..., None], t[..., None], 0.0) * d[..., :2]
    x, y = p[..., 0], p[..., 1]
    r = 0.5 + 0.4 * np.sin(x / 41.0) * np.cos(y / 53.0)
    g = 0.5 + 0.4 * np.sin((x + y) / 67.0)
    b = 0.5 + 0.4 * np.cos(x / 83.0 - y / 37.0)
    rgb = np.stack([r, g, b], axis=-1)
    rgb[~hit] = (0.75, 0.85, 1.0)
    depth = np.where(hit, t, np.inf).astype(np.float32)
    depth[: max(1, cam.height // 16), : max(1, cam.width // 16)] = np.nan
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8), depth


def _pose(x: float, y: float, z: float, yaw: float, pitch: float) -> np.ndarray:
    R_world_body = rpy_to_matrix(np.array([0.0, pitch, yaw]))
    return make_T(R_world_body @ np.asarray(R_BODY_OPTICAL), np.array([x, y, z]))


def make_toy_dataset(path: str | Path, *, n_survey: int = 48, n_route: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Write the toy dataset to ``path`` (format v1) and return it."""
    rng = np.random.default_rng(seed)
    cam = PinholeCamera.from_fov(size, size, 70.0)
    manifest = Manifest(
        name="toy-plane",
        camera=cam,
        depth_kind="metric",
        sources=[{"id": 0, "kind": "sim", "name": "survey"}, {"id": 1, "kind": "sim", "name": "route-1"}],
    )
    stamp = 0
    with DatasetWriter(path, manifest) as w:
        cols = max(2, int(np.sqrt(n_survey)))
        for i in range(n_survey):
            row, col = divmod(i, cols)
            x = -40.0 + 80.0 * (col if row % 2 == 0 else cols - 1 - col) / max(cols - 1, 1)
            y = -40.0 + 80.0 * row / max((n_survey - 1) // cols, 1)
            yaw = rng.uniform(-np.pi, np.pi)
            pitch = rng.uniform(0.35, 1.2)
            T = _pose(x, y, 30.0 + rng.uniform(-3, 3), yaw, pitch)
            rgb, depth = _render(T, cam)
            w.add_frame(stamp, T, rgb, depth, source_id=0)
            stamp += 100_000_000
        for i in range(n_route):
            s = i / max(n_route - 1, 1)
            T = _pose(-30 + 60 * s, 25 - 50 * s, 30.0, -0.7 + 0.3 * np.sin(3 * s), 0.6 + 0.2 * s)
            rgb, depth = _render(T, cam)
            w.add_frame(stamp, T, rgb, depth, source_id=1)
            stamp += 100_000_000
    return Path(path)
