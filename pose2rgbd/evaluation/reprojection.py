"""Reprojection baseline: the nearest training frames' RGB-D warped into the query pose with their metric depth.

What an engineer with a point cloud would do instead of a neural renderer: take the ``k`` training frames whose
poses are nearest the query (:class:`~pose2rgbd.evaluation.baseline.NearestPoseBaseline` distance), lift every
pixel with a finite depth to 3D, move it into the query camera and splat it onto the pixel it lands on. Where
several points land on one pixel the nearest wins (a z-buffer); the frames are tried nearest first, and a
farther frame only fills pixels that nearer frames left empty or that it sees in front of them.

Pixels no source point lands on are **holes** (``valid`` False; depth NaN, RGB 0). For a full-image score the
holes can be filled with the nearest frame's own pixels (``fill="nearest"``, i.e. the nearest-pose retrieval
image), which is what :func:`pose2rgbd.evaluation.evaluate` reports; the hole fraction is reported beside it.
The sources are a place's :class:`~pose2rgbd.placemap.keyframes.Keyframes` (:func:`reproject_keyframes`: a place map, or
a training cache's training frames as :class:`~pose2rgbd.placemap.keyframes.ArrayKeyframes`), each with its own
intrinsics, or arrays with one camera (:func:`reproject_nearest`).

Written by hand (numpy) because the library warps go the other way: ``kornia.geometry.depth.warp_frame_depth`` and
``cv2.remap`` pull source pixels through the *target's* depth, which is exactly what a query pose does not have;
forward splatting with a z-buffer needs the scatter-min below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.transforms import inverse
from pose2rgbd.placemap.keyframes import Keyframes


@dataclass
class Reprojection:
    """One query view made from source frames."""

    rgb: np.ndarray  # (H, W, 3) uint8; holes 0 (or filled, see ``filled``)
    depth: np.ndarray  # (H, W) float32 metres along optical z; holes NaN (or filled)
    valid: np.ndarray  # (H, W) bool: a source point landed here (before any fill)
    filled: bool  # holes were filled from the nearest frame

    @property
    def hole_fraction(self) -> float:
        return float(1.0 - self.valid.mean())


def splat(
    rgb_src: np.ndarray,
    depth_src: np.ndarray,
    T_world_src: np.ndarray,
    camera_src: PinholeCamera,
    T_world_query: np.ndarray,
    camera_query: PinholeCamera,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward-warp ``k`` source RGB-D frames into one query camera with a z-buffer.

    Args:
        rgb_src: ``(k, H, W, 3)`` uint8 (or ``(H, W, 3)``), the source images.
        depth_src: ``(k, H, W)`` float metres along optical z; NaN / inf / <= 0 are skipped.
        T_world_src: ``(k, 4, 4)`` source camera poses (REP-103 optical frame).
        camera_src: intrinsics of the source images.
        T_world_query: ``(4, 4)`` query camera pose.
        camera_query: intrinsics of the view to make.

    Returns:
        ``(rgb (H', W', 3) uint8, depth (H', W') float32 NaN holes, valid (H', W') bool)``.
    """
    rgb = np.asarray(rgb_src)
    depth = np.asarray(depth_src, dtype=np.float64)
    T_src = np.asarray(T_world_src, dtype=np.float64)
    if rgb.ndim == 3:
        rgb, depth, T_src = rgb[None], depth[None], T_src[None]
    k = len(rgb)
    hw = (camera_src.height, camera_src.width)
    if rgb.shape != (k, *hw, 3) or depth.shape != (k, *hw) or T_src.shape != (k, 4, 4):
        raise ConfigError(
            f"reprojection: sources must be rgb (k, {hw[0]}, {hw[1]}, 3), depth (k, {hw[0]}, {hw[1]}) and poses "
            f"(k, 4, 4) at the source camera's size; got {rgb.shape}, {depth.shape}, {T_src.shape}"
        )
    return _splat([(rgb[i], depth[i], T_src[i], camera_src) for i in range(k)], T_world_query, camera_query)


def _splat(
    sources: list[tuple[np.ndarray, np.ndarray, np.ndarray, PinholeCamera]],
    T_world_query: np.ndarray,
    camera_query: PinholeCamera,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`splat` of sources ``(rgb (H, W, 3), depth (H, W) float64, T_world_src (4, 4), camera)``, each with
    its own intrinsics, nearest first (on equal depth the earlier source wins)."""
    Hq, Wq = camera_query.height, camera_query.width
    T_q_world = inverse(np.asarray(T_world_query, dtype=np.float64))
    keys, zs, cols = [], [], []
    for rgb, depth, T_src, cam in sources:
        rays = cam.rays().reshape(-1, 3)
        d = depth.reshape(-1)
        ok = np.isfinite(d) & (d > 0)
        p_src = rays[ok] * d[ok, None]
        T_q_src = T_q_world @ T_src
        p = p_src @ T_q_src[:3, :3].T + T_q_src[:3, 3]
        z = p[:, 2]
        front = z > 1e-6
        p, z = p[front], z[front]
        u = np.rint(camera_query.fx * p[:, 0] / z + camera_query.cx).astype(np.int64)
        v = np.rint(camera_query.fy * p[:, 1] / z + camera_query.cy).astype(np.int64)
        inside = (u >= 0) & (u < Wq) & (v >= 0) & (v < Hq)
        keys.append(v[inside] * Wq + u[inside])
        zs.append(z[inside])
        cols.append(rgb.reshape(-1, 3)[ok][front][inside])
    key = np.concatenate(keys)
    z = np.concatenate(zs)
    col = np.concatenate(cols) if cols else np.zeros((0, 3), np.uint8)
    out_rgb = np.zeros((Hq * Wq, 3), np.uint8)
    out_depth = np.full(Hq * Wq, np.nan, np.float32)
    valid = np.zeros(Hq * Wq, bool)
    if key.size:
        order = np.lexsort((z, key))  # by pixel, nearest first
        first = np.unique(key[order], return_index=True)[1]
        win = order[first]
        out_rgb[key[win]] = col[win]
        out_depth[key[win]] = z[win]
        valid[key[win]] = True
    return out_rgb.reshape(Hq, Wq, 3), out_depth.reshape(Hq, Wq), valid.reshape(Hq, Wq)


def _check_fill(fill: str) -> None:
    if fill not in ("none", "nearest"):
        raise ConfigError(f"reprojection fill must be 'none' or 'nearest', got {fill!r}")


def _fill_holes(
    rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, r0: np.ndarray, d0: np.ndarray, cam_q: PinholeCamera
) -> None:
    """Fill the holes (``~valid``) of a view in place with the nearest frame's pixels ``r0``, ``d0`` (float32),
    resized to the query size when they differ."""
    if r0.shape[:2] != (cam_q.height, cam_q.width):
        import cv2

        r0 = cv2.resize(r0, (cam_q.width, cam_q.height), interpolation=cv2.INTER_AREA)
        d0 = cv2.resize(d0, (cam_q.width, cam_q.height), interpolation=cv2.INTER_NEAREST)
    hole = ~valid
    rgb[hole] = r0[hole]
    depth[hole] = d0[hole]


def reproject_nearest(
    rgb_src: np.ndarray,
    depth_src: np.ndarray,
    T_world_src: np.ndarray,
    camera_src: PinholeCamera,
    T_world_query: np.ndarray,
    camera_query: PinholeCamera | None = None,
    *,
    fill: str = "none",
) -> Reprojection:
    """:func:`splat` the sources (ordered nearest first) into the query view; ``fill="nearest"`` fills holes with
    the first (nearest) source frame's pixels, resized to the query size when they differ."""
    _check_fill(fill)
    cam_q = camera_query or camera_src
    rgb, depth, valid = splat(rgb_src, depth_src, T_world_src, camera_src, T_world_query, cam_q)
    if fill == "nearest":
        r0: np.ndarray = np.asarray(rgb_src)
        d0: np.ndarray = np.asarray(depth_src, dtype=np.float32)
        r0, d0 = (r0[0], d0[0]) if r0.ndim == 4 else (r0, d0)
        _fill_holes(rgb, depth, valid, r0, d0, cam_q)
    return Reprojection(rgb, depth, valid, fill == "nearest")


def reproject_keyframes(
    keyframes: Keyframes,
    T_world_query: np.ndarray,
    camera_query: PinholeCamera,
    k: int,
    *,
    fill: str = "none",
) -> Reprojection:
    """The ``k`` keyframes nearest the query pose (the keyframes' own index, :class:`~pose2rgbd.geometry.coverage
    .PoseSet` distance) splatted into the query view, each with its own intrinsics; ``fill="nearest"`` fills holes
    from the nearest keyframe."""
    _check_fill(fill)
    rows = [int(i) for i in keyframes.poses.nearest(np.asarray(T_world_query, np.float64), k)[0]]
    sources = [
        (keyframes.rgb(i), np.asarray(keyframes.depth(i), np.float64), keyframes.T_world_cam[i], keyframes.camera(i))
        for i in rows
    ]
    for rgb, depth, _, cam in sources:
        if rgb.shape != (cam.height, cam.width, 3) or depth.shape != (cam.height, cam.width):
            raise ConfigError(
                f"reprojection: a keyframe's rgb {rgb.shape} and depth {depth.shape} are not at its camera's size "
                f"{cam.width}x{cam.height}"
            )
    rgb, depth, valid = _splat(sources, T_world_query, camera_query)
    if fill == "nearest":
        _fill_holes(rgb, depth, valid, sources[0][0], keyframes.depth(rows[0]), camera_query)
    return Reprojection(rgb, depth, valid, fill == "nearest")


def reprojection_answers(
    keyframes: Keyframes,
    T_world_cam: np.ndarray,
    camera: PinholeCamera,
    k: int,
    depth_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The reprojection baseline's RGB ``(B, H, W, 3)`` and depth ``(B, H, W)`` for the query poses ``(B, 4, 4)``
    (the ``k`` nearest keyframes warped into each pose, holes filled from the nearest; depth clipped to the model's
    range like the model's answers, sky kept) and each pose's hole fraction."""
    rgbs, depths, holes = [], [], []
    for T in np.asarray(T_world_cam, np.float64).reshape(-1, 4, 4):
        r = reproject_keyframes(keyframes, T, camera, k, fill="nearest")
        rgbs.append(r.rgb)
        depths.append(np.where(np.isnan(r.depth), np.float32(np.nan), np.clip(r.depth, *depth_range)))
        holes.append(r.hole_fraction)
    return np.stack(rgbs), np.stack(depths).astype(np.float32), holes
