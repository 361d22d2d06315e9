"""A known synthetic RGB-D scene for the fused-geometry tests: a floor plane and a box, seen from a ring of cameras.

Depth and colour are ray-cast from the exact mesh (Open3D), the colour a function of the world point (a
view-independent, Lambertian texture), so any view's truth is known.
"""

from __future__ import annotations

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.placemap.fused import ArrayKeyframes


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """T_world_cam of an optical camera (z forward, y down) at ``eye`` looking at ``target``; world z up."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def scene_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles: a 6 m x 6 m floor at z = 0 and a 1 m box standing on it at the origin."""
    import open3d as o3d

    floor = o3d.geometry.TriangleMesh.create_box(6.0, 6.0, 0.01).translate((-3.0, -3.0, -0.01))
    box = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0).translate((-0.5, -0.5, 0.0))
    m = floor + box
    return np.asarray(m.vertices, np.float32), np.asarray(m.triangles, np.int32)


def texture(X: np.ndarray) -> np.ndarray:
    """uint8 colours of world points (M, 3): smooth stripes that differ in each channel."""
    r = 128 + 90 * np.sin(1.7 * X[:, 0] + 0.3)
    g = 128 + 90 * np.sin(1.3 * X[:, 1] + 2.0 * X[:, 2])
    b = 128 + 60 * np.cos(0.9 * (X[:, 0] + X[:, 1]) + 1.1 * X[:, 2])
    return np.clip(np.stack([r, g, b], axis=1), 0, 255).astype(np.uint8)


def render_truth(T: np.ndarray, cam: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """Exact (rgb uint8 (H, W, 3), depth float32 (H, W), NaN on a miss) of the scene from ``T``."""
    import open3d as o3d

    v, t = scene_mesh()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(t.astype(np.uint32)))
    dirs = cam.rays() @ T[:3, :3].T
    rays = np.concatenate([np.broadcast_to(T[:3, 3], dirs.shape), dirs], axis=-1).astype(np.float32)
    th = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    depth = np.where(np.isfinite(th), th, np.nan).astype(np.float32)
    X = T[:3, 3] + dirs * np.nan_to_num(depth, nan=0.0)[..., None]
    rgb = texture(X.reshape(-1, 3)).reshape(cam.height, cam.width, 3)
    rgb[~np.isfinite(depth)] = 0
    return rgb, depth


def ring_poses(n: int, radius: float = 3.0, height: float = 1.6, phase: float = 0.0) -> np.ndarray:
    """``n`` cameras on a circle around the box, looking at its centre."""
    out = []
    for k in range(n):
        a = phase + 2 * np.pi * k / n
        out.append(look_at(np.array([radius * np.cos(a), radius * np.sin(a), height]), np.array([0.0, 0.0, 0.4])))
    return np.stack(out)


def ring_keyframes(n: int = 12, cam: PinholeCamera | None = None) -> tuple[ArrayKeyframes, PinholeCamera]:
    cam = cam or PinholeCamera.from_fov(96, 72, 70.0)
    T = ring_poses(n)
    views = [render_truth(t, cam) for t in T]
    rgb = np.stack([v[0] for v in views])
    depth = np.stack([v[1] for v in views])
    return ArrayKeyframes(rgb, depth, T, cam, rot_weight_m=3.0), cam
