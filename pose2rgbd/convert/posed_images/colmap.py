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
    PoseImportError,
    SourceCamera,
    check_rotations,
    missing_images,
    stamps_from_interval,
)

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


def find_model_dir(path: Path) -> Path | None:
    """The folder holding ``cameras.bin`` / ``cameras.txt``: ``path`` itself, ``path/sparse/0`` or ``path/sparse``."""
    for d in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        if d.is_dir() and any((d / f"cameras.{e}").is_file() and (d / f"images.{e}").is_file() for e in ("bin", "txt")):
            return d
    return None


def _camera(cam: object, where: str) -> SourceCamera:
    model = cam.model.name  # type: ignore[attr-defined]
    p = [float(x) for x in cam.params]  # type: ignore[attr-defined]
    w, h = int(cam.width), int(cam.height)  # type: ignore[attr-defined]
    dist: tuple[float, ...]
    if model == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy, dist = p[1], p[2], ()
    elif model == "PINHOLE":
        fx, fy, cx, cy, dist = p[0], p[1], p[2], p[3], ()
    elif model == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, dist = p[1], p[2], (p[3], 0.0, 0.0, 0.0)
    elif model == "RADIAL":
        fx = fy = p[0]
        cx, cy, dist = p[1], p[2], (p[3], p[4], 0.0, 0.0)
    elif model == "OPENCV":
        fx, fy, cx, cy = p[:4]
        dist = (p[4], p[5], p[6], p[7])
    else:
        raise PoseImportError(
            f"{where}: COLMAP camera model {model} is not supported (supported: {', '.join(SUPPORTED_MODELS)}). "
            "Undistort the model with COLMAP first (colmap image_undistorter --image_path IMAGES --input_path "
            "SPARSE --output_path OUT) and import OUT (a PINHOLE model with its undistorted images)"
        )
    # COLMAP pixel-corner convention -> OpenCV / ROS (pixel centres at integers)
    return SourceCamera(w, h, fx, fy, cx - 0.5, cy - 0.5, dist if any(dist) else ())


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
    import pycolmap

    p = Path(path)
    model = find_model_dir(p) if p.is_dir() else None
    if model is None:
        raise PoseImportError(
            f"{p}: not a COLMAP model folder (no cameras.bin + images.bin or cameras.txt + images.txt here or in "
            "sparse/0)"
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
        kind="colmap", source=model, images=images, T_world_cam=T,
        stamps_ns=stamps_from_interval(len(images), cfg.frame_interval_s),
        cameras=[cams[im.camera_id] for im in regs], points=points if len(points) else None,
        observations=obs if len(points) else None,
        convention="COLMAP stores world-to-camera (cam_from_world), inverted once here", assumptions=notes,
    )  # fmt: skip
