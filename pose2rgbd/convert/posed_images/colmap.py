"""COLMAP sparse model (``cameras``/``images``/``points3D`` as .bin or .txt) -> :class:`PosedImages`, read
with pycolmap (the maintained bindings).

Conventions of the format: an image stores ``cam_from_world`` (world-to-camera), inverted here; COLMAP's camera
frame is already the optical one (x right, y down, z forward). The principal point is in COLMAP's pixel-corner
convention (the centre of the top-left pixel is (0.5, 0.5)), so 0.5 is subtracted for the dataset's OpenCV / ROS
convention. The world frame is the reconstruction's own (arbitrary orientation and scale unless geo-registered).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.convert.posed_images.common import (
    IMAGE_SUFFIXES,
    ImagesConfig,
    PosedImages,
    SourceCamera,
    check_rotations,
    missing_images,
    stamps_from_interval,
)
from pose2rgbd.convert.posed_images.errors import PoseImportError

if TYPE_CHECKING:  # imported where it runs (pose2rgbd.geometry.colmap_import)
    from pycolmap import Reconstruction

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


def _is_model(d: Path) -> bool:
    return d.is_dir() and any((d / f"cameras.{e}").is_file() and (d / f"images.{e}").is_file() for e in ("bin", "txt"))


def _numbered_models(folder: Path) -> list[Path]:
    """The models in the numbered subfolders of ``folder`` (COLMAP's mapper writes ``sparse/0``, ``sparse/1``, ...
    when the photos fall into several reconstructions), in number order."""
    if not folder.is_dir():
        return []
    return sorted((d for d in folder.iterdir() if d.name.isdigit() and _is_model(d)), key=lambda d: int(d.name))


def model_candidates(path: Path) -> list[Path]:
    """The model folders ``path`` may mean: ``[path]`` when it is a model itself (an explicit choice); else the
    numbered models under ``path/sparse`` (several when the mapper made several); else ``[path/sparse]``; else the
    numbered models under ``path`` (a ``sparse`` folder given). Empty: no model."""
    if _is_model(path):
        return [path]
    sparse = path / "sparse"
    return _numbered_models(sparse) or ([sparse] if _is_model(sparse) else []) or _numbered_models(path)


def find_model_dir(path: Path) -> Path | None:
    """The (first) folder holding ``cameras.bin`` / ``cameras.txt``: ``path`` itself, ``path/sparse/N`` or
    ``path/sparse`` (:func:`model_candidates`; :func:`read_colmap` picks among several)."""
    found = model_candidates(path)
    return found[0] if found else None


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


def _read_model(model: Path) -> Reconstruction:
    from pose2rgbd.geometry.colmap_import import pycolmap

    try:
        return pycolmap.Reconstruction(str(model))
    except Exception as e:  # pycolmap raises plain RuntimeError / ValueError on damaged files
        raise PoseImportError(f"{model}: pycolmap cannot read the model: {e}") from e


def _n_registered(rec: Reconstruction) -> int:
    return sum(1 for im in rec.images.values() if im.has_pose)


def _pick_model(p: Path, found: list[Path]) -> tuple[Path, Reconstruction, str]:
    """The model to import of those found at ``p``: the only one, or -- several models under ``sparse/`` (the mapper
    split the photos) -- the one with the most registered images (the lowest number on a tie); with the warning
    that names the others and how to pick one (empty for one model)."""
    if len(found) == 1:
        return found[0], _read_model(found[0]), ""
    recs = [_read_model(d) for d in found]
    counts = [_n_registered(r) for r in recs]
    k = max(range(len(found)), key=lambda i: (counts[i], -i))

    def rel(d: Path) -> str:
        return d.relative_to(p).as_posix() if d.is_relative_to(p) else str(d)

    listed = ", ".join(f"{rel(d)} ({n} registered images)" for d, n in zip(found, counts, strict=True))
    other = next(d for i, d in enumerate(found) if i != k)
    return found[k], recs[k], (
        f"{p}: holds {len(found)} COLMAP models ({listed}): COLMAP's mapper made several reconstructions, each in "
        f"a world frame of its own. Imported {rel(found[k])}, the one with the most registered images; the others "
        f"are left out. To import another, give its folder as the source (e.g. pose2rgbd convert images {other} "
        "--out DS)"
    )  # fmt: skip


def _photos_without_pose(img_dir: Path, rec: Reconstruction, model: Path) -> str:
    """A warning when the image folder holds photos that the model does not register (not in it at all, or in it
    without a pose): their count and the first few names; empty when every photo has a pose."""
    ims = list(rec.images.values())
    names = {im.name for im in ims}
    if not img_dir.is_dir():
        return ""
    nested = any("/" in n for n in names)  # image names with folders (several cameras): look in subfolders too
    files = img_dir.rglob("*") if nested else img_dir.iterdir()
    photos = sorted(f.relative_to(img_dir).as_posix() for f in files if f.is_file() and f.suffix in IMAGE_SUFFIXES)
    outside = [n for n in photos if n not in names]
    if not outside:
        return ""
    on_disk = set(photos)
    unposed = [im.name for im in ims if not im.has_pose and im.name in on_disk]
    lost = sorted(outside + unposed)
    shown = ", ".join(lost[:4]) + (" ..." if len(lost) > 4 else "")
    inside = f", {len(unposed)} in it without a pose" if unposed else ""
    beside = [d.name for d in _numbered_models(model.parent) if d != model]
    where = (f"; {model.parent} holds other models too ({', '.join(beside)}): import the one with most of them "
             "(give its folder, or the project folder to take the largest)" if beside else "")  # fmt: skip
    return (
        f"{model}: {len(lost)} of the {len(photos)} photos in {img_dir} have no pose in this model and are left out "
        f"({len(outside)} not in the model{inside}; e.g. {shown}): COLMAP did not register them{where}. To have "
        "them all, reconstruct again (more overlap between the photos, or sequential matching for video frames)"
    )


def read_colmap(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    p = Path(path)
    found = model_candidates(p) if p.is_dir() else []
    if not found:
        part = incomplete_model(p) if p.is_dir() else ""
        raise PoseImportError(
            f"{p}: an incomplete COLMAP model: {part}"
            if part
            else f"{p}: not a COLMAP model folder (no cameras.bin "
            "+ images.bin or cameras.txt + images.txt here or in sparse/0)"
        )
    model, rec, several = _pick_model(p, found)
    warnings = [several] if several else []
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
    if several:
        notes.append(f"{len(found)} models under {p}: {model} imported, the one with the most registered images")
    lost = _photos_without_pose(img_dir, rec, model)
    warnings += [lost] if lost else []
    return PosedImages(
        kind="colmap", source=model, images=images, T_world_cam=T, pose_units="unscaled",
        stamps_ns=stamps_from_interval(len(images), cfg.frame_interval_s),
        cameras=[cams[im.camera_id] for im in regs], points=points if len(points) else None,
        observations=obs if len(points) else None,
        convention="COLMAP stores world-to-camera (cam_from_world), inverted once here", assumptions=notes,
        warnings=warnings,
    )  # fmt: skip
