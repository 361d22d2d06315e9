"""COLMAP sparse model (``cameras``/``images``/``points3D`` as .bin or .txt) -> :class:`PosedImages`, read
with pycolmap (the maintained bindings).

Conventions of the format: an image stores ``cam_from_world`` (world-to-camera), inverted here; COLMAP's camera
frame is already the optical one (x right, y down, z forward). The principal point is in COLMAP's pixel-corner
convention (the centre of the top-left pixel is (0.5, 0.5)), so 0.5 is subtracted for the dataset's OpenCV / ROS
convention. The world frame is the reconstruction's own (arbitrary orientation and scale unless geo-registered).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose2rgbd.convert.posed_images.common import (
    ImagesConfig,
    PosedImages,
    SourceCamera,
    check_rotations,
    missing_images,
    stamps_from_interval,
)
from pose2rgbd.convert.posed_images.errors import PoseImportError

# COLMAP model -> (OpenCV lens model, where its distortion coefficients sit in the parameters, how many OpenCV takes):
# the polynomials are the same, COLMAP's radial k is OpenCV's k1 and its fisheye models are OpenCV's equidistant
# fisheye (theta_d = theta (1 + k1 theta^2 + k2 theta^4 + ...)) with the higher terms zero (docs/byod.md)
_LENS = {
    "SIMPLE_PINHOLE": ("opencv", 3, 0), "PINHOLE": ("opencv", 4, 0),
    "SIMPLE_RADIAL": ("opencv", 3, 4), "RADIAL": ("opencv", 3, 4), "OPENCV": ("opencv", 4, 4),
    "FULL_OPENCV": ("opencv", 4, 8), "SIMPLE_RADIAL_FISHEYE": ("fisheye", 3, 4),
    "RADIAL_FISHEYE": ("fisheye", 3, 4), "OPENCV_FISHEYE": ("fisheye", 4, 4),
}  # fmt: skip
SUPPORTED_MODELS = tuple(_LENS)


def find_model_dir(path: Path) -> Path | None:
    """The folder holding ``cameras.bin`` / ``cameras.txt``: ``path`` itself, ``path/sparse/0`` or ``path/sparse``."""
    for d in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        if d.is_dir() and any((d / f"cameras.{e}").is_file() and (d / f"images.{e}").is_file() for e in ("bin", "txt")):
            return d
    return None


def incomplete_model(path: Path) -> str:
    """What is missing from a COLMAP model that is only partly there (``path``, ``sparse/0``, ``sparse``, ``0``):
    ``"sparse/0/images.bin is missing (beside sparse/0/cameras.bin)"``; empty when no model file is found."""
    for d in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        for e in ("bin", "txt"):
            have = [f"{n}.{e}" for n in ("cameras", "images", "points3D") if (d / f"{n}.{e}").is_file()]
            need = [f"{n}.{e}" for n in ("cameras", "images") if f"{n}.{e}" not in have]
            if have and need:
                rel = "" if d == path else f"{d.relative_to(path)}/"
                return (f"{', '.join(rel + n for n in need)} {'is' if len(need) == 1 else 'are'} missing (beside "
                        f"{', '.join(rel + n for n in have)})")  # fmt: skip
    return ""


def _camera(cam: object, where: str) -> SourceCamera:
    model = cam.model.name  # type: ignore[attr-defined]
    p = [float(x) for x in cam.params]  # type: ignore[attr-defined]
    w, h = int(cam.width), int(cam.height)  # type: ignore[attr-defined]
    if model not in _LENS:
        raise PoseImportError(
            f"{where}: COLMAP camera model {model} is not supported (supported: {', '.join(SUPPORTED_MODELS)}). "
            "Undistort the model with COLMAP first (colmap image_undistorter --image_path IMAGES --input_path "
            "SPARSE --output_path OUT) and import OUT (a PINHOLE model with its undistorted images)"
        )
    lens, n_focal, n_dist = _LENS[model]
    if n_focal == 3:  # f, cx, cy
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    else:  # fx, fy, cx, cy
        fx, fy, cx, cy = p[:4]
    k = p[n_focal:]
    dist = tuple(k + [0.0] * (n_dist - len(k)))[:n_dist] if n_dist else ()
    # COLMAP pixel-corner convention -> OpenCV / ROS (pixel centres at integers)
    return SourceCamera(w, h, fx, fy, cx - 0.5, cy - 0.5, dist if any(dist) else (), lens)


def _images_dir(model: Path, cfg: ImagesConfig) -> Path:
    if cfg.images:
        return Path(cfg.images)
    for d in (model.parent.parent / "images", model.parent / "images", model / "images"):
        if d.is_dir():
            return d
    raise PoseImportError(
        f"{model}: no images/ folder found beside the model (tried ../../images, ../images, images); give --images DIR"
    )


def read_colmap(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    from pose2rgbd.geometry.colmap_import import pycolmap

    p = Path(path)
    model = find_model_dir(p) if p.is_dir() else None
    if model is None:
        part = incomplete_model(p) if p.is_dir() else ""
        raise PoseImportError(
            f"{p}: an incomplete COLMAP model: {part}"
            if part
            else f"{p}: not a COLMAP model folder (no cameras.bin "
            "+ images.bin or cameras.txt + images.txt here or in sparse/0)"
        )
    try:
        rec = pycolmap.Reconstruction(str(model))
    except Exception as e:  # pycolmap raises plain RuntimeError / ValueError on damaged files
        raise PoseImportError(f"{model}: pycolmap cannot read the model: {e}") from e
    img_dir = _images_dir(model, cfg)
    regs = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not regs:
        raise PoseImportError(f"{model}: no registered image (no image has a pose)")
    unreg = len(rec.images) - len(regs)
    cams: dict[int, SourceCamera] = {}
    for cid, cam in rec.cameras.items():
        used = any(im.camera_id == cid for im in regs)
        if used:
            cams[cid] = _camera(cam, f"{model}: camera {cid}")
    pids = sorted(rec.points3D.keys())
    index = {pid: k for k, pid in enumerate(pids)}
    points = np.array([rec.points3D[pid].xyz for pid in pids], dtype=np.float64).reshape(-1, 3)
    mats, obs, where = [], [], []
    for im in regs:
        cfw = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        M = np.vstack([np.asarray(cfw.matrix(), dtype=np.float64), [0.0, 0.0, 0.0, 1.0]])
        mats.append(M)
        where.append(f"{model}: image {im.image_id} ({im.name})")
        obs.append(np.array([index[q.point3D_id] for q in im.points2D if q.has_point3D()], dtype=np.int64))
    cam_from_world = check_rotations(np.stack(mats), where)
    T = np.linalg.inv(cam_from_world)
    T[:, 3] = (0.0, 0.0, 0.0, 1.0)
    images = [img_dir / im.name for im in regs]
    missing_images(images, model)
    notes = [
        "COLMAP stores world-to-camera (cam_from_world); inverted to T_world_cam; camera axes already optical",
        "the world frame is the reconstruction's own (arbitrary orientation and scale; not ENU, no datum)",
        f"images ordered by name; they have no capture times: stamps are index x {cfg.frame_interval_s} s",
    ]
    if unreg:
        notes.append(f"{unreg} images of the model have no pose (not registered) and are left out")
    return PosedImages(
        kind="colmap", source=model, images=images, T_world_cam=T, pose_units="unscaled",
        stamps_ns=stamps_from_interval(len(images), cfg.frame_interval_s),
        cameras=[cams[im.camera_id] for im in regs], points=points if len(points) else None,
        observations=obs if len(points) else None,
        convention="COLMAP stores world-to-camera (cam_from_world), inverted once here", assumptions=notes,
    )  # fmt: skip
