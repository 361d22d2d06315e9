"""Posed images as a conversion source (``pose2rgbd convert images``; docs/byod.md).

1. detect the input format (:func:`detect_format`) and read it (:mod:`pose2rgbd.convert.posed_images`) into
   ``T_world_cam`` in the optical frame, per-frame intrinsics + distortion, stamps;
2. check the poses (:mod:`pose2rgbd.convert.pose_check`, with a sample of the depth maps when there are any)
   before anything is written (``strict`` refuses a suspect import);
3. undistort with OpenCV into one pinhole camera (the first camera's, through
   ``cv2.getOptimalNewCameraMatrix``, or its ``cv2.fisheye`` twin; :mod:`pose2rgbd.geometry.lens`) when the
   source has distortion or several cameras; the manifest states the pinhole written (``camera``) and the
   cameras it came from (``source_cameras``);
4. the pipeline (:mod:`pose2rgbd.convert.pipeline`) writes the frames and ``report/`` (``poses.png``,
   ``summary.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose2rgbd.config import size_warning, to_dict
from pose2rgbd.convert.pipeline import DatasetPlan, Frame, SourceBase, convert
from pose2rgbd.convert.pose_check import DepthEvidence, PoseCheck, check_poses, depth_sample, plot_poses
from pose2rgbd.convert.posed_images.common import (
    IMAGE_SUFFIXES,
    ImagesConfig,
    PosedImages,
    SourceCamera,
    parse_invalid_codes,
)
from pose2rgbd.convert.posed_images.depth import DepthReadStats, depth_import_lines, read_depth_map, resolve_depth_scale
from pose2rgbd.convert.posed_images.errors import PoseImportError
from pose2rgbd.dataset import Manifest
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.geometry.lens import Distortion
from pose2rgbd.output_guard import VIDEO_SUFFIXES

log = logging.getLogger(__name__)


def _reader(module: str, name: str) -> Reader:
    def read(path: str | Path, cfg: ImagesConfig) -> PosedImages:
        import importlib

        fn: Reader = getattr(importlib.import_module(f"pose2rgbd.convert.posed_images.{module}"), name)
        return fn(path, cfg)

    return read


Reader = Callable[[str | Path, ImagesConfig], PosedImages]
# the posed-image formats: --format name -> reader (imported when used); detect_format picks one by the path
READERS: dict[str, Reader] = {
    "transforms-json": _reader("transforms_json", "read_transforms_json"),
    "colmap": _reader("colmap", "read_colmap"),
    "llff": _reader("llff", "read_llff"),
    "kitti": _reader("trajectory", "read_kitti"),
    "tum": _reader("trajectory", "read_tum"),
}


def detect_format(path: str | Path) -> str:
    """``transforms-json``, ``colmap``, ``llff``, ``kitti`` or ``tum`` when ``path`` says so unambiguously, else an
    error naming ``--format``: a ``.json`` file or a folder with ``transforms.json``; a folder with (``sparse/0/``)
    ``cameras.bin``/``.txt`` + ``images.bin``/``.txt``; a ``poses_bounds.npy`` or a folder with one; a text file
    with 12 (KITTI) or 8 (TUM) numbers per line. A folder with part of a COLMAP model is named with the file that
    is missing."""
    from pose2rgbd.convert.posed_images.colmap import find_model_dir, incomplete_model
    from pose2rgbd.convert.posed_images.llff import POSES_BOUNDS
    from pose2rgbd.convert.posed_images.trajectory import columns

    p = Path(path)
    if not p.exists():
        raise PoseImportError(f"{p}: not found")
    if p.is_dir():
        found = []
        if (p / "transforms.json").is_file():
            found.append("transforms-json")
        if find_model_dir(p) is not None:
            found.append("colmap")
        if (p / POSES_BOUNDS).is_file():
            found.append("llff")
        if len(found) == 1:
            return found[0]
        if found:
            raise PoseImportError(f"{p}: holds {' and '.join(found)} poses; pick one with --format")
        part = incomplete_model(p)
        if part:
            raise PoseImportError(f"{p}: an incomplete COLMAP model: {part}; give a complete model folder")
        hint = _tum_sequence_hint(p) or _trajectory_files_hint(p) or _photos_hint(p)
        raise PoseImportError(
            f"{p}: no poses found in this folder: no transforms.json, no COLMAP model (cameras + images .bin / "
            f".txt, here or in sparse/0) and no {POSES_BOUNDS}; "
            + (hint or "give the file or model folder, or --format")
        )
    if p.suffix.lower() in VIDEO_SUFFIXES:
        raise PoseImportError(
            f"{p}: a video file, not posed images; convert a video with `pose2rgbd convert video {p} --out DS` "
            "(its GPS from a GoPro's telemetry or --gps LOG; docs/convert.md)"
        )
    if p.suffix.lower() == ".json":
        return "transforms-json"
    if p.suffix.lower() == ".npy":
        return "llff"
    n = columns(p)
    if n == 12:
        return "kitti"
    if n == 8:
        return "tum"
    raise PoseImportError(
        f"{p}: cannot tell the format ({'not a table of numbers' if n is None else f'{n} numbers per line'}; "
        "KITTI has 12, TUM 8); give --format transforms-json, colmap, llff, kitti or tum"
    )


def _trajectory_files_hint(folder: Path) -> str:
    """For a folder holding KITTI or TUM pose files (text tables of 12 or 8 numbers per line) next to its images:
    those files, by format, and that a trajectory is given as the file with its images (``--images``)."""
    from pose2rgbd.convert.posed_images.trajectory import columns

    tables: list[str] = []
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in ("", ".txt", ".csv") and f.stat().st_size < 50_000_000:
            n = columns(f)
            if n in (8, 12):
                tables.append(f"{f.name} ({'TUM' if n == 8 else 'KITTI'})")
    if not tables:
        return ""
    return (
        f"it holds pose files: {', '.join(tables[:4])}{' ...' if len(tables) > 4 else ''}. A trajectory is given as "
        f"its file, with the images' folder: `pose2rgbd convert images {folder / tables[0].split(' (')[0]} "
        "--images IMAGES_DIR --fx F --out DS` (docs/byod.md)"
    )


def _photos_hint(folder: Path) -> str:
    """For a folder of images and nothing else that holds poses: the two ways to poses for them."""
    if not any(f.suffix in IMAGE_SUFFIXES for f in folder.iterdir() if f.is_file()):
        return ""
    return (
        "it holds images without poses. To find where each was taken, localize them against a place map of the same "
        f"place (`pose2rgbd localize images {folder} --map MAP`, a map built from a converted flight, video or bag: "
        "docs/place-map.md), or reconstruct them with COLMAP first and give its model folder here"
    )


def _tum_sequence_hint(folder: Path) -> str:
    """For a TUM RGB-D sequence folder (``groundtruth.txt``) given as the source: the command that imports it."""
    gt = folder / "groundtruth.txt"
    if not gt.is_file():
        return ""
    if (folder / "rgb").is_dir():
        imgs = f"--images {folder / 'rgb'}"
    elif (folder / "rgb.txt").is_file():
        imgs = f"--image-list {folder / 'rgb.txt'}"
    else:
        imgs = "--images DIR"
    depth = f" --depth-list {folder / 'depth.txt'} --depth-scale 5000" if (folder / "depth.txt").is_file() else ""
    what = "the images and the depth" if depth else "the images"
    return (
        f"it holds a TUM trajectory ({gt.name}): give that file as the source, with {what} and the camera: "
        f"pose2rgbd convert images {gt} --format tum {imgs}{depth} --fx FX --fy FY --cx CX --cy CY "
        "[--distortion K1,K2,P1,P2,K3] [--skip-unmatched] --out DS (TUM RGB-D's published intrinsics: docs/byod.md, "
        "TUM)"
    )


def read_posed_images(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    """Read any supported source (``cfg.format``, or detected) into :class:`PosedImages`."""
    fmt = cfg.format if cfg.format != "auto" else detect_format(path)
    if cfg.depth_list and fmt != "tum":
        raise PoseImportError(
            f"--depth-list {cfg.depth_list}: pairs depth images with the images by their timestamps, which only a "
            f"TUM trajectory's images carry (this source is {fmt}); give depth maps named as the images with "
            "--depth DIR"
        )
    return READERS[fmt](path, cfg)


@dataclass
class Undistorter:
    """Maps every source camera onto one pinhole ``target`` (OpenCV remap); identity where nothing changes."""

    target: PinholeCamera
    alpha: float

    def __post_init__(self) -> None:
        self._maps: dict[SourceCamera, tuple[np.ndarray, np.ndarray] | None] = {}

    @classmethod
    def for_cameras(cls, cams: list[SourceCamera], alpha: float) -> Undistorter:
        ref = cams[0]
        lens = ref.distortion
        if lens is not None:
            K = lens.new_camera(ref.K, (ref.width, ref.height), alpha)
            target = PinholeCamera(ref.width, ref.height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]),
                                   float(K[1, 2]))  # fmt: skip
        else:
            target = ref.pinhole()
        return cls(target, alpha)

    def needs_remap(self, cam: SourceCamera) -> bool:
        return cam.has_distortion or cam.pinhole() != self.target

    def maps(self, cam: SourceCamera) -> tuple[np.ndarray, np.ndarray] | None:
        if cam not in self._maps:
            if not self.needs_remap(cam):
                self._maps[cam] = None
            else:
                lens = cam.distortion or Distortion("opencv", (0.0, 0.0, 0.0, 0.0))  # a pinhole onto another
                self._maps[cam] = lens.maps(cam.K, self.target)
        return self._maps[cam]

    def apply(self, img: np.ndarray, cam: SourceCamera, *, nearest: bool = False) -> np.ndarray:
        m = self.maps(cam)
        if m is None:
            return img
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        border = cv2.BORDER_CONSTANT
        fill = float("nan") if nearest and img.dtype == np.float32 else 0
        return cv2.remap(img, m[0], m[1], interp, borderMode=border, borderValue=fill)


LENS_ZOOM_LIMIT = 2.0  # undistortion changing the focal length by more than this factor: a lens no camera has


def _lens_doubt(pi: PosedImages, target: PinholeCamera, alpha: float) -> list[str]:
    """A warning for each source camera whose lens, undistorted alone, changes its focal length by more than
    :data:`LENS_ZOOM_LIMIT` (more, or -- keeping only valid pixels, ``alpha`` 0 -- less): real lenses do not do
    that; a failed reconstruction or calibration (COLMAP's lens of a model of two photos: k1 = 30.9, fx 408
    undistorted to fx 5331) does. (``alpha`` > 0 keeps the corners of a wide lens and may shrink it more.) Every
    camera is looked at, not only the first (whose undistortion sets ``target``): a model whose second camera has
    k1 = 204 maps that camera's photos onto the first one's pinhole from a lens no camera has."""
    src = {"colmap": "the COLMAP model (a model of few images, or one the mapper got wrong)",
           "transforms.json": "the transforms.json (k1 k2 p1 p2 / k1 k2 k3 k4)"}.get(pi.kind, "the source")  # fmt: skip
    used: dict[SourceCamera, int] = {}
    for cam in pi.cameras:
        used[cam] = used.get(cam, 0) + 1
    out = []
    for n, cam in enumerate(used):
        lens = cam.distortion
        if lens is None or not cam.has_distortion:
            continue
        fx = target.fx if n == 0 else float(lens.new_camera(cam.K, (cam.width, cam.height), alpha)[0, 0])
        zoom = fx / cam.fx
        if zoom <= LENS_ZOOM_LIMIT and (zoom >= 1.0 / LENS_ZOOM_LIMIT or alpha > 0):
            continue
        coeffs = ", ".join(f"{v:.4g}" for v in cam.dist)
        what = (f"each image written shows only the central 1/{zoom:.0f} of the photo's width, magnified" if zoom > 1
                else f"each photo is shrunk to {zoom:.2f} of its width in the image written")  # fmt: skip
        whose = "the source camera's lens"
        if len(used) > 1:
            whose = f"the lens of source camera {n + 1} of {len(used)} ({used[cam]} of {len(pi.images)} images)"
        out.append(
            f"{pi.source}: {whose} ({cam.model}: {coeffs}) is probably a failed reconstruction or "
            f"calibration: undistorting it turns the focal length fx {cam.fx:.1f} px into {fx:.1f} px "
            f"({zoom:.1f}x; {what}), which no real lens does. Check the lens of {src}; a reconstruction from more "
            "photos, or the camera's own calibration, gives a usable one"
        )
    return out


def _bounds(b: np.ndarray) -> dict[str, Any]:
    """The per-frame near / far depth bounds of a source (LLFF), for the report."""
    return {"near_min": float(b[:, 0].min()), "far_max": float(b[:, 1].max()), "units": "the poses' own",
            "per_frame": np.round(b, 6).tolist()}  # fmt: skip


def _new_camera_how(cam: SourceCamera) -> str:
    if cam.model == "fisheye" and cam.has_distortion:
        return "cv2.fisheye initUndistortRectifyMap, estimateNewCameraMatrixForUndistortRectify balance ="
    return "getOptimalNewCameraMatrix"


def _read_rgb(path: Path) -> np.ndarray:
    # as stored: an EXIF orientation tag is not applied (the source's intrinsics describe the stored pixels)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise PoseImportError(f"{path}: cannot decode image")
    return np.ascontiguousarray(img[..., ::-1])


def _stored_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as stored, from its header (PIL, no decoding; OpenCV when PIL cannot)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, ValueError, SyntaxError):  # Pillow raises these for corrupt or foreign files
        from pose2rgbd.convert.posed_images.common import image_size

        return image_size(path)


def _size_fix(pi: PosedImages, cfg: ImagesConfig) -> str:
    """What to do about images whose size is not their camera's, by where the camera came from."""
    resize = "resize the images to one size"
    if pi.kind == "transforms.json":
        return (f"{resize}, or give the frames of the other size their own intrinsics (w, h, fl_x, fl_y, cx, cy "
                "inside each such frame: keys in a frame win over the top-level ones)")  # fmt: skip
    if pi.kind in ("kitti", "tum", "llff") and cfg.has_intrinsics():
        return (
            f"the camera of --fx / --hfov is made for the first image's size ({pi.cameras[0].width}x"
            f"{pi.cameras[0].height}) and used for every image: {resize} (the flags are pixels of that size), or "
            "import each size separately"
        )
    if pi.kind in ("kitti", "llff"):
        return (
            f"the camera ({'calib.txt' if pi.kind == 'kitti' else 'poses_bounds.npy'}) is set to the first "
            f"image's size ({pi.cameras[0].width}x{pi.cameras[0].height}) and used for every image: {resize} "
            "(those the poses were made from)"
        )
    if pi.kind == "colmap":
        return (
            "the model's cameras give the size the photos had when it was reconstructed: use those photos "
            "(--images DIR), or resize the images back to that size"
        )
    return resize


def _size_mismatch(pi: PosedImages, cfg: ImagesConfig, first: int, wh: tuple[int, int]) -> PoseImportError:
    """The error for images whose size is not their camera's (image ``first`` decoded at ``wh``, the first such):
    how many of each size, a few names, what to do (every image's size read from its header: the count is
    complete)."""
    sizes = [_stored_size(p) for p in pi.images]
    sizes[first] = wh
    bad = [i for i, (s, c) in enumerate(zip(sizes, pi.cameras, strict=True)) if s != (c.width, c.height)]
    by: dict[tuple[tuple[int, int], tuple[int, int]], list[int]] = {}
    for i in bad:
        by.setdefault((sizes[i], (pi.cameras[i].width, pi.cameras[i].height)), []).append(i)
    parts = []
    for ((w, h), (cw, ch)), idx in sorted(by.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(pi.images[i].name for i in idx[:3]) + (" ..." if len(idx) > 3 else "")
        verb, its = ("is", "its") if len(idx) == 1 else ("are", "their")
        parts.append(f"{len(idx)} {verb} {w}x{h} where {its} camera says {cw}x{ch} ({shown})")
    n_ok = len(pi.images) - len(bad)
    bad_set = set(bad)
    rest = " or ".join(sorted({f"{w}x{h}" for i, (w, h) in enumerate(sizes) if i not in bad_set}))
    others = (f"; the other {n_ok} {'is' if n_ok == 1 else 'are'} {rest}, as {'its' if n_ok == 1 else 'their'} "
              "camera says" if n_ok else "")  # fmt: skip
    return PoseImportError(
        f"{pi.source}: {len(bad)} of {len(pi.images)} images do not have the size of their camera: "
        + "; ".join(parts) + others + f". What to do: {_size_fix(pi, cfg)}"
    )  # fmt: skip


def _depth_list_hint(folder: Path) -> str:
    """A hint to ``--depth-list`` when a ``--depth`` folder looks like depth with its own timestamps (TUM RGB-D):
    files named by their time, or a ``depth.txt`` in or beside it; else ''."""
    from pose2rgbd.convert.posed_images.trajectory import stamp_of_name

    lists = [p for p in (folder / "depth.txt", folder.parent / "depth.txt") if p.is_file()]
    try:
        stamped = any(p.is_file() and stamp_of_name(p.stem) is not None for p in folder.iterdir())
    except OSError:
        stamped = False
    if not lists and not stamped:
        return ""
    if stamped:
        what = "its depth images are named by timestamps of their own" + (
            f", and {lists[0]} lists them" if lists else ""
        )
    else:
        what = f"{lists[0]} lists depth images by timestamp"
    lst = lists[0] if lists else "FILE (a 'timestamp filename' list of them, as TUM's depth.txt)"
    return (
        f"; {what} (depth stamped apart from the images, as in TUM RGB-D): pair them with the images by time with "
        f"--depth-list {lst} instead of --depth (each image gets the depth image nearest in time, within "
        "--depth-tolerance, default 0.02 s)"
    )


def _depth_path(cfg: ImagesConfig, pi: PosedImages, i: int) -> Path | None:
    if cfg.depth:
        stem = pi.images[i].stem
        for ext in (".npy", ".png", ".tif", ".tiff"):
            p = Path(cfg.depth) / (stem + ext)
            if p.is_file():
                return p
        raise PoseImportError(
            f"{cfg.depth}: no depth map named {stem}.npy / .png / .tif for image {pi.images[i]}"
            + _depth_list_hint(Path(cfg.depth))
        )
    return pi.depths[i] if pi.depths is not None else None


def _check_depth_files(cfg: ImagesConfig, pi: PosedImages) -> list[Path] | None:
    paths = [_depth_path(cfg, pi, i) for i in range(len(pi.images))]
    if all(p is None for p in paths):
        return None
    miss = [i for i, p in enumerate(paths) if p is None or not p.is_file()]
    if miss:
        first, dp = pi.images[miss[0]], paths[miss[0]]
        what = f"{first}: its depth file {dp} does not exist" if dp is not None else f"{first}: no depth file listed"
        hint = "; pass --skip-missing to leave those frames out" if pi.kind == "transforms.json" and dp else ""
        raise PoseImportError(f"depth is given for some frames but {len(miss)} lack it (first: {what}){hint}")
    return [p for p in paths if p is not None]


def _default_name(source: Path) -> str:
    """The folder a source lives in, above ``sparse/0`` and the like (``project/sparse/0`` -> ``project``)."""
    p = source.resolve().parent if source.is_file() else source.resolve()
    while p.parent != p and (p.name.isdigit() or p.name in ("sparse", "poses")):
        p = p.parent
    return p.name or "posed-images"


class PosedImagesSource(SourceBase):
    """Posed images read by a format reader (:class:`PosedImages`, from any reader, also your own): the plan is
    the pose check and the undistortion onto one pinhole camera; pass 2 reads, undistorts and yields the frames."""

    kind = "posed-images"

    def __init__(self, source: str | Path | PosedImages, cfg: ImagesConfig | None = None,
                 inputs: list[Path] | None = None) -> None:  # fmt: skip
        """``source``: a path in any supported format (``cfg.format``, or detected; read in :meth:`plan`, after the
        output check), or :class:`PosedImages` already read."""
        self.cfg = cfg = cfg or ImagesConfig()
        if isinstance(source, PosedImages):
            if cfg.depth_list:
                raise ConfigError(
                    f"depth_list ({cfg.depth_list}) is read by the TUM reader; a PosedImages of your own carries its "
                    "depth files in .depths (one per image, None for none)"
                )
            self._pi: PosedImages | None = source
            default = [source.source, *sorted({p.parent for p in source.images})]
        else:
            self._pi, self.source = None, Path(source)
            default = [Path(p) for p in (source, cfg.images, cfg.depth, cfg.image_list, cfg.depth_list, cfg.calib)
                       if p]  # fmt: skip
        self._inputs = inputs if inputs is not None else default
        self._dstats = DepthReadStats()

    @property
    def pi(self) -> PosedImages:
        if self._pi is None:
            self._pi = read_posed_images(self.source, self.cfg)
        return self._pi

    def plan(self, *, progress: bool) -> DatasetPlan:
        pi, cfg = self.pi, self.cfg
        self._depth_files = depth_files = _check_depth_files(cfg, pi)
        self._codes = codes = parse_invalid_codes(cfg.depth_invalid_codes)
        from_source = not cfg.depth and pi.depth_scale is not None  # the source's own depth files, in its units
        self._dscale = dscale = resolve_depth_scale(cfg.depth_scale, pi.depth_scale if from_source else None,
                                                    pi.depth_scale_note)  # fmt: skip
        self._npy_scale = npy_scale = dscale.units_per_m if from_source else None
        evidence = None
        if depth_files is not None:  # what the depth proves about the poses (a sample of frames, read as imported)
            idx = depth_sample(len(pi.images))
            sample = [read_depth_map(depth_files[i], (pi.cameras[i].height, pi.cameras[i].width), dscale, codes,
                                     DepthReadStats(), npy_scale=npy_scale) for i in idx]  # fmt: skip
            evidence = DepthEvidence(idx, [pi.cameras[i].K for i in idx], sample)
        check = check_poses(pi.T_world_cam, points=pi.points, observations=pi.observations, up_hint=pi.up_hint,
                            convention=pi.convention, depth=evidence, quaternion_order=pi.quaternion_order,
                            quaternion_axes=pi.quaternion_axes)  # fmt: skip
        if cfg.strict and check.verdict == "suspect":
            raise PoseImportError(
                f"{pi.source}: the pose check found a likely mistake (strict, nothing written): "
                + " | ".join(check.mistakes)
            )
        self._und = und = Undistorter.for_cameras(pi.cameras, cfg.undistort_alpha)
        warnings = [*pi.warnings, *_lens_doubt(pi, und.target, cfg.undistort_alpha)]
        for w in warnings:
            log.warning("%s", w)
        wh = cfg.size_wh()
        doubt = size_warning(wh, und.target.width, und.target.height)
        if doubt:
            log.warning(doubt)
        cam = und.target if wh is None else und.target.scaled(*wh)
        remapped = sum(und.needs_remap(c) for c in pi.cameras)
        summary: dict[str, Any] = {
            "input": {"kind": pi.kind, "source": str(pi.source), "images": str(pi.images[0].parent)},
            "frames": {"total": len(pi.images) + len(pi.skipped) + len(pi.skipped_depth), "kept": len(pi.images)},
            "camera": cam.to_dict(),
            "source_cameras": [c.to_dict() for c in dict.fromkeys(pi.cameras)],
            "undistortion": {
                "frames_remapped": int(remapped),
                "method": "OpenCV initUndistortRectifyMap + remap onto the first camera's pinhole "
                f"({_new_camera_how(pi.cameras[0])} alpha {cfg.undistort_alpha})"
                if remapped
                else "none (pinhole source)",
            },
            "depth": "given" if depth_files else "none (RGB-only)",
            **({} if pi.bounds is None else {"depth_bounds": _bounds(pi.bounds)}),
            "pose_check": check.to_dict(),
            "assumptions": pi.assumptions,
            "warnings": warnings,
            "config": to_dict(cfg),
        }
        man = Manifest(
            name=cfg.output.name or _default_name(pi.source),
            camera=cam, depth_kind="metric" if depth_files else "none", rgb_encoding=cfg.output.rgb_encoding,
            world_frame=cfg.world_frame,
            sources=[{"id": 0, "kind": pi.kind, "name": pi.source.name}],
            # poses of a format without a scale are in its own units, unless metric depth came with them
            pose_units="m" if depth_files else pi.pose_units,
            source_cameras=summary["source_cameras"] if remapped else [],
            extra={"conversion": {k: summary[k] for k in ("input", "undistortion", "assumptions")},
                   "pose_check": check.verdict},
        )  # fmt: skip
        return DatasetPlan(man, np.asarray(pi.stamps_ns, dtype=np.int64), pi.T_world_cam, summary, detail=check,
                           resize=wh is not None)  # fmt: skip

    def frames(self, plan: DatasetPlan) -> Iterator[Frame]:
        pi, und = self.pi, self._und
        for i in range(len(pi.images)):
            sc = pi.cameras[i]
            raw = _read_rgb(pi.images[i])  # a repeat is judged as stored, before undistortion
            if (raw.shape[1], raw.shape[0]) != (sc.width, sc.height):
                raise _size_mismatch(pi, self.cfg, i, (raw.shape[1], raw.shape[0]))
            depth = None if self._depth_files is None else partial(self._depth, i, sc)  # read for kept frames only
            yield Frame(i, und.apply(raw, sc), depth, pi.images[i].name, raw)

    def _depth(self, i: int, sc: SourceCamera) -> np.ndarray:
        assert self._depth_files is not None
        d = read_depth_map(self._depth_files[i], (sc.height, sc.width), self._dscale, self._codes, self._dstats,
                           npy_scale=self._npy_scale)  # fmt: skip
        return self._und.apply(d, sc, nearest=True)

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        pi, summary, conversion = self.pi, plan.summary, plan.manifest.extra["conversion"]
        frames = summary["frames"]
        frames["kept"] = frames.pop("written")  # here "kept" has always counted the frames written
        if pi.skipped:
            frames["skipped_missing"] = {"count": len(pi.skipped), "entries": pi.skipped}
        if pi.skipped_depth:
            frames["skipped_missing_depth"] = {"count": len(pi.skipped_depth), "entries": pi.skipped_depth}
        conversion["repeats"] = frames["repeats"]
        if self._depth_files is not None:
            summary["depth_import"] = conversion["depth_import"] = self._dstats.to_dict(self._dscale, self._codes)
        plot_pose_report(folder, pi, plan.detail)


def convert_images(
    source: str | Path,
    out: str | Path,
    cfg: ImagesConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Import posed images at ``source`` as a dataset at ``out`` (atomic) with ``report/`` beside the frames."""
    cfg = cfg or ImagesConfig()
    return convert(PosedImagesSource(source, cfg), out, cfg.output, overwrite=overwrite, progress=progress)


def write_posed_images(
    pi: PosedImages,
    out: str | Path,
    cfg: ImagesConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    inputs: list[str | Path | None] | None = None,
) -> Path:
    """Write :class:`PosedImages` (from any reader, also your own) as a dataset: pose check, undistortion, atomic
    writing, ``report/``. ``inputs``: the paths read (never overwritten); default: the source and image folders."""
    cfg = cfg or ImagesConfig()
    paths = None if inputs is None else [Path(p) for p in inputs if p]
    return convert(PosedImagesSource(pi, cfg, paths), out, cfg.output, overwrite=overwrite, progress=progress)


def plot_pose_report(rep: Path, pi: PosedImages, check: PoseCheck) -> None:
    """poses.png: camera positions and viewing directions, the up direction, the check's findings."""
    up = pi.up_hint
    if up is None:
        f = next((f for f in check.findings if f.name == "upright" and "estimated_up" in f.values), None)
        up = np.asarray(f.values["estimated_up"]) if f is not None else None
    plot_poses(rep / "poses.png", pi.T_world_cam, check, points=pi.points, up=up,
               title=f"{pi.kind}: {pi.source.name} ({len(pi.images)} cameras)")  # fmt: skip


PrintFn = Callable[[str], None]


def print_result(out: Path, say: PrintFn = print) -> None:
    """The CLI's lines: frames, camera, pose-check verdict with its mistakes, the report folder."""
    import json

    s = json.loads((out / "report" / "summary.json").read_text())
    c = s["camera"]
    say(f"{out}: {s['frames']['kept']} frames from {s['input']['kind']} ({s['input']['source']}); camera "
        f"{c['width']}x{c['height']} fx {c['fx']:.1f}; undistorted {s['undistortion']['frames_remapped']}; depth "
        f"{s['depth']}")  # fmt: skip
    for sc in s["source_cameras"]:
        if sc.get("distortion"):
            coeffs = ", ".join(f"{v:.4g}" for v in sc["distortion"])
            say(f"  lens: {sc['model']} ({coeffs}) at {sc['width']}x{sc['height']} fx {sc['fx']:.1f}, undistorted once "
                "onto the camera above (the manifest keeps it in source_cameras)")  # fmt: skip
    pc = s["pose_check"]
    sk = s["frames"].get("skipped_missing")
    if sk:
        say(f"  {sk['count']} listed frame(s) left out, image missing (--skip-missing): "
            + ", ".join(sk["entries"][:3]) + (" ..." if sk["count"] > 3 else ""))  # fmt: skip
    sk = s["frames"].get("skipped_missing_depth")
    if sk:
        say(f"  {sk['count']} listed frame(s) left out, depth file missing (--skip-missing): "
            + ", ".join(sk["entries"][:3]) + (" ..." if sk["count"] > 3 else ""))  # fmt: skip
    for note in s.get("assumptions") or []:  # frames a reader left out by --skip-unmatched (no pose or depth in time)
        if str(note).endswith("(skip_unmatched)"):
            say(f"  {str(note).removesuffix(' (skip_unmatched)')} (--skip-unmatched)")
    rp = s["frames"].get("repeats") or {}
    if rp.get("repeats"):
        shown = ", ".join(rp["examples"][:3]) + (" ..." if rp["repeats"] > 3 else "")
        say(f"  {rp['repeats']} repeated frame(s) (pixels identical to the previous frame's) {rp['policy']}: {shown}")
    for line in depth_import_lines(s.get("depth_import")):
        say(f"  {line}")
    say(f"  pose check: {pc['verdict'].upper()}")
    for m in pc["mistakes"]:
        say(f"  WARNING: {m}")
    say(f"  report: {out / 'report'} (poses.png: camera positions and viewing directions)")
