"""The simulator's posed-images export: one route as a nerfstudio-style ``transforms.json`` folder, the input of
``pose2rgbd convert images`` (docs/byod.md), with the sensor's files as a real RGB-D capture writes them.

Layout::

    OUT/transforms.json      fl_x fl_y cx cy w h (cx cy in the pixel-corner convention: OpenCV's + 0.5),
                             depth_unit_scale_factor, frames: file_path, depth_file_path,
                             transform_matrix (camera-to-world, OpenGL camera axes as nerfstudio writes them;
                             the world is ENU, or y-up with ``realism.world_up: y``)
    OUT/images/NNNNN.jpg     the sensor's JPEG bytes (.png without JPEG: ``realism.jpeg_quality 0`` or realism off)
    OUT/depth/NNNNN.png      16-bit depth in units of ``DEPTH_UNIT_M`` (1 cm: up to 655.34 m); 0 where the sensor
                             had no return (holes, sky), 65535 where it saturated (beyond ``realism.max_range_m``)
                             or the surface lies beyond what the 16 bits hold (:func:`depth_units`)
    OUT/ground_truth.npz     the clean render's depth (metres, +inf sky) and the ENU poses, for tests

A repeated frame (``realism.repeat_prob``) is a byte-identical copy of the previous frame's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pose2rgbd.geometry.camera_axes import GL_FROM_OPTICAL
from pose2rgbd.sim.config import SimConfig
from pose2rgbd.sim.realism import world_up_rotation

DEPTH_UNIT_M = 0.01  # metres per unit of the 16-bit depth files
NO_RETURN, SATURATED = 0, 65535


def depth_units(depth: np.ndarray, saturated: np.ndarray) -> np.ndarray:
    """Depth in metres ``(H, W)`` (inf or NaN: no return) as the 16-bit export's codes: ``DEPTH_UNIT_M`` units, 0 for
    no return, 65535 where ``saturated`` and where the surface lies farther than the largest code below it holds
    (655.34 m): such a pixel is not clipped to 655.34 m, which would be a depth no surface has."""
    units = np.where(np.isfinite(depth), np.rint(depth / DEPTH_UNIT_M), NO_RETURN)
    out = np.where(saturated | (units > SATURATED - 1), SATURATED, np.maximum(units, NO_RETURN)).astype(np.uint16)
    return out


def export_posed_images(
    cfg: SimConfig, out_dir: str | Path, route: str | None = None, *, progress: bool = True, world: object = None
) -> Path:
    """Write ``route`` (default: ``cfg.posed_routes[0]``), every ``cfg.dataset_stride``-th camera frame, as posed
    images at ``out_dir`` (a new folder; written in place: :func:`pose2rgbd.sim.simulate` stages it)."""
    import cv2

    from pose2rgbd.sim.export import _bar, camera_trajectory, make_camera, realism_of, world_of
    from pose2rgbd.sim.render import Renderer

    route = route or (cfg.posed_routes[0] if cfg.posed_routes else cfg.routes[0])
    w = world or world_of(cfg)
    camera = make_camera(cfg)
    renderer = Renderer(w, camera, shadows=cfg.shadows)  # type: ignore[arg-type]
    tr = camera_trajectory(cfg, route)
    idx = np.arange(0, len(tr), cfg.dataset_stride)
    T_up = world_up_rotation(cfg.realism.world_up if cfg.realism.enabled else "z")
    sensor = realism_of(cfg, camera, route)
    jpeg = sensor is not None and cfg.realism.jpeg_quality > 0
    out = Path(out_dir)
    (out / "images").mkdir(parents=True)
    (out / "depth").mkdir()
    frames, gt_depth, repeated = [], [], []
    with _bar(len(idx), f"posed images {route}", progress) as bar:
        for n, k in enumerate(idx):
            T = tr.T_world_cam[k]
            rgb, depth = renderer.render(T)
            gt_depth.append(depth)
            saturated = np.zeros(depth.shape, bool)
            data = None
            if sensor is not None:
                f = sensor.frame(rgb, depth, T)
                rgb, depth, saturated, data = f.rgb, f.depth, f.saturated, f.jpeg
                if f.repeated:
                    repeated.append(n)
            units = depth_units(depth, saturated)
            name = f"{n:05d}"
            img = f"images/{name}.{'jpg' if jpeg else 'png'}"
            if data is not None:  # the sensor's own JPEG (what the dataset holds is its decoding), not a re-encoding
                (out / img).write_bytes(data)
            elif not cv2.imwrite(str(out / img), np.ascontiguousarray(rgb[..., ::-1])):
                raise OSError(f"{out / img}: could not write the image")
            if not cv2.imwrite(str(out / "depth" / f"{name}.png"), units):
                raise OSError(f"{out / 'depth' / name}.png: could not write the depth")
            frames.append({
                "file_path": img,
                "depth_file_path": f"depth/{name}.png",
                "transform_matrix": (T_up @ T @ GL_FROM_OPTICAL).round(12).tolist(),
                "timestamp_ns": int(tr.stamps_ns[k]),
            })  # fmt: skip
            bar.update(1)
    if repeated:  # a repeat is byte-identical in its files too: copy the previous frame's (the JPEG re-encode
        for n in repeated:  # of identical pixels is identical, but say it by construction)
            for key in ("file_path", "depth_file_path"):
                if n > 0:
                    (out / frames[n][key]).write_bytes((out / frames[n - 1][key]).read_bytes())
    doc = {
        "camera_model": "OPENCV",
        "fl_x": camera.fx, "fl_y": camera.fy, "w": camera.width, "h": camera.height,
        # nerfstudio / instant-ngp put pixel centres at +0.5 (the importer subtracts it): OpenCV's cx + 0.5
        "cx": camera.cx + 0.5, "cy": camera.cy + 0.5,
        "depth_unit_scale_factor": DEPTH_UNIT_M,
        "frames": frames,
    }  # fmt: skip
    (out / "transforms.json").write_text(json.dumps(doc, indent=1))
    np.savez_compressed(out / "ground_truth.npz", depth=np.stack(gt_depth), T_world_cam_enu=tr.T_world_cam[idx],
                        T_world_enu=T_up, repeated=np.asarray(repeated, np.int64))  # fmt: skip
    return out
