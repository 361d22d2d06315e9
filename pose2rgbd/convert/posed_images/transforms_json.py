"""``transforms.json`` (instant-ngp / nerfstudio) -> :class:`PosedImages`.

Conventions of the format: ``transform_matrix`` is camera-to-world (``T_world_cam``) with OpenGL / Blender
camera axes (x right, y up, z back), converted here to the optical frame by flipping the camera's y and z
(:data:`GL_FROM_OPTICAL`). Intrinsics are top-level (shared) or per frame: ``fl_x``, ``fl_y``, ``cx``, ``cy``,
``w``, ``h`` or ``camera_angle_x`` (and ``camera_angle_y``); distortion ``k1 k2 p1 p2 [k3]`` (OpenCV's model), or
``k1 k2 k3 k4`` with ``camera_model: OPENCV_FISHEYE`` (OpenCV's fisheye model).
The principal point is in the pixel-corner convention of both tools (pixel centres at +0.5), so 0.5 is
subtracted to reach the OpenCV / ROS convention of the dataset. The world's up axis is +z (Blender, nerfstudio).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.convert.posed_images.common import (
    IMAGE_SUFFIXES,
    ImagesConfig,
    PosedImages,
    SourceCamera,
    check_rotations,
    image_size,
    missing_images,
    stamps_from_interval,
)
from pose2rgbd.convert.posed_images.errors import PoseImportError
from pose2rgbd.geometry.camera_axes import GL_FROM_OPTICAL

_UNSUPPORTED = ("EQUIRECTANGULAR", "FISHEYE", "FISHEYE624")
_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "k1", "k2", "k3", "k4", "p1",
         "p2")  # fmt: skip


def _inside(base: Path, rel: str) -> bool:
    """Whether ``rel`` (relative to ``base``, or absolute) names a path inside ``base``, by its spelling
    (``..`` and absolute paths; symlinks placed inside the folder are the user's own choice and allowed)."""
    b = os.path.normpath(os.path.abspath(base))
    q = os.path.normpath(os.path.join(b, rel))
    return q == b or q.startswith(b.rstrip(os.sep) + os.sep)


def _checked(base: Path, rel: str, cfg: ImagesConfig, where: str, key: str) -> str:
    if not cfg.allow_outside and not _inside(base, rel):
        raise PoseImportError(
            f"{where}: {key} {rel!r} points outside {base} (the folder the paths are relative to); refused so that a "
            "transforms.json cannot make the import read files elsewhere and copy them into the dataset. Move the "
            "files into the folder, or pass --allow-outside if this is intended"
        )
    return rel


def _resolve(base: Path, rel: str) -> Path:
    p = (base / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    if p.suffix in IMAGE_SUFFIXES or p.is_file():
        return p
    for s in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):  # Blender sets list "./train/r_0" without the suffix
        if p.with_name(p.name + s).is_file():
            return p.with_name(p.name + s)
    return p


def _camera(params: dict[str, Any], image: Path, where: str) -> SourceCamera:
    model = str(params.get("camera_model", "OPENCV")).upper()
    if model in _UNSUPPORTED:
        raise PoseImportError(
            f"{where}: camera_model {model} is not supported (OPENCV, OPENCV_FISHEYE and pinhole only); convert "
            "the images to perspective first (e.g. nerfstudio's ns-process-data with --camera-type perspective)"
        )
    fisheye = model == "OPENCV_FISHEYE"
    if not fisheye and any(params.get(k) for k in ("k4",)):
        raise PoseImportError(
            f"{where}: k4 is a fisheye coefficient; set camera_model OPENCV_FISHEYE (k1 k2 k3 k4), or give only "
            "k1 k2 p1 p2 k3 (OPENCV)"
        )
    if fisheye and any(params.get(k) for k in ("p1", "p2")):
        raise PoseImportError(f"{where}: OPENCV_FISHEYE has no tangential p1 / p2; only k1 k2 k3 k4")
    if "w" in params and "h" in params:
        w, h = int(params["w"]), int(params["h"])
    else:
        if not image.is_file():
            raise PoseImportError(f"{where}: no 'w'/'h' and the image {image} is missing, so its size is unknown")
        w, h = image_size(image)
    try:
        if "fl_x" in params:
            fx = float(params["fl_x"])
            fy = float(params.get("fl_y", fx))
        elif "camera_angle_x" in params:
            fx = 0.5 * w / math.tan(0.5 * float(params["camera_angle_x"]))
            fy = 0.5 * h / math.tan(0.5 * float(params["camera_angle_y"])) if "camera_angle_y" in params else fx
        else:
            raise PoseImportError(
                f"{where}: no intrinsics: give fl_x (and fl_y, cx, cy) or camera_angle_x, shared at the top level "
                "or in each frame"
            )
        # corner convention (pixel centres at +0.5) -> OpenCV (pixel centres at integers)
        cx = float(params.get("cx", w / 2.0)) - 0.5
        cy = float(params.get("cy", h / 2.0)) - 0.5
        keys = ("k1", "k2", "k3", "k4") if fisheye else ("k1", "k2", "p1", "p2", "k3")
        dist = tuple(float(params.get(k, 0.0)) for k in keys)
    except (TypeError, ValueError) as e:
        raise PoseImportError(f"{where}: bad intrinsics value: {e}") from e
    if not any(dist):
        dist = ()
    elif not fisheye and dist[4] == 0.0:
        dist = dist[:4]
    return SourceCamera(w, h, fx, fy, cx, cy, dist, "fisheye" if fisheye else "opencv")


def read_transforms_json(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    p = Path(path)
    if p.is_dir():
        p = p / "transforms.json"
    if not p.is_file():
        raise PoseImportError(f"{p}: file not found")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PoseImportError(f"{p}: not valid JSON: {e}") from e
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(frames, list) or not frames:
        raise PoseImportError(f"{p}: no 'frames' list; is this an instant-ngp / nerfstudio transforms.json?")
    base = p.parent if not cfg.images else Path(cfg.images)
    shared = {k: doc[k] for k in (*_KEYS, "camera_model") if k in doc}
    images: list[Path] = []
    cams: list[SourceCamera] = []
    mats: list[np.ndarray] = []
    depths: list[Path | None] = []
    where: list[str] = []
    cache: dict[str, SourceCamera] = {}
    skipped: list[str] = []
    skipped_depth: list[str] = []
    times: list[tuple[bool, object]] = []  # per kept frame: whether it has timestamp_ns, and its value
    for i, fr in enumerate(frames):
        w = f"{p}: frames[{i}]"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise PoseImportError(f"{w}: needs 'file_path' and 'transform_matrix'")
        img = _resolve(base, _checked(base, str(fr["file_path"]), cfg, w, "file_path"))
        if cfg.skip_missing and not img.is_file():
            skipped.append(str(fr["file_path"]))
            continue
        dp = fr.get("depth_file_path")
        depth = _resolve(p.parent, _checked(p.parent, str(dp), cfg, w, "depth_file_path")) if dp else None
        if cfg.skip_missing and depth is not None and not depth.is_file():
            skipped_depth.append(str(dp))
            continue
        try:
            M = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise PoseImportError(f"{w}: transform_matrix is not a matrix of numbers: {e}") from e
        if M.shape == (3, 4):
            M = np.vstack([M, [0.0, 0.0, 0.0, 1.0]])
        if M.shape != (4, 4):
            raise PoseImportError(f"{w}: transform_matrix has shape {M.shape}, expected 4x4 (or 3x4)")
        params = {**shared, **{k: fr[k] for k in (*_KEYS, "camera_model") if k in fr}}
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in cache or ("w" not in params and img.is_file()):
            cache[key] = _camera(params, img, w)
        images.append(img)
        cams.append(cache[key])
        mats.append(M)
        depths.append(depth)
        where.append(w)
        times.append(("timestamp_ns" in fr, fr.get("timestamp_ns")))
    if not images and not skipped_depth:
        raise PoseImportError(f"{p}: none of the {len(frames)} images listed exists (first: {skipped[0]})")
    if not images:
        first = (skipped + skipped_depth)[0]
        raise PoseImportError(f"{p}: none of the {len(frames)} frames listed has its image and depth files (first "
                              f"missing: {first})")  # fmt: skip
    gone_depth = [str(d) for d in depths if d is not None and not d.is_file()]  # said with the images, at once
    also = (f"; and {len(gone_depth)} depth file(s) are missing: " + ", ".join(gone_depth[:3])
            + (" ..." if len(gone_depth) > 3 else "")) if gone_depth else ""  # fmt: skip
    missing_images(images, p, also + "; pass --skip-missing to leave those frames out (they are listed in the report)")
    T = check_rotations(np.stack(mats), where) @ GL_FROM_OPTICAL
    notes = [
        "transform_matrix is camera-to-world with OpenGL camera axes (x right, y up, z back); converted to the "
        "optical frame (x right, y down, z forward) by flipping the camera's y and z",
        "the world frame is the file's own (z up by the format's convention; not ENU, no datum)",
    ]
    stamps, stamp_note, stamp_warning = _stamps(times, where, images, frames, cfg)
    notes.append(stamp_note)
    depth_scale, depth_note = _depth_scale(doc, p)
    if skipped:
        shown = ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        notes.append(f"{len(skipped)} of {len(frames)} frames left out: image missing (skip_missing): {shown}")
    if skipped_depth:
        shown = ", ".join(skipped_depth[:3]) + (" ..." if len(skipped_depth) > 3 else "")
        notes.append(
            f"{len(skipped_depth)} of {len(frames)} frames left out: depth file missing (skip_missing): {shown}"
        )
    if "scale" in doc or "offset" in doc:
        notes.append("instant-ngp 'scale' / 'offset' are ignored: poses are written in the file's own units")
    return PosedImages(
        kind="transforms.json", source=p, images=images, T_world_cam=T, pose_units="unscaled",
        stamps_ns=stamps, cameras=cams, warnings=[stamp_warning] if stamp_warning else [],
        up_hint=np.array([0.0, 0.0, 1.0]), convention="transforms.json uses OpenGL camera axes (x right, y up, "
        "z back), converted once here",
        depths=depths if any(d is not None for d in depths) else None, assumptions=notes,
        depth_scale=depth_scale, depth_scale_note=depth_note, skipped=skipped, skipped_depth=skipped_depth,
    )  # fmt: skip


OTHER_TIME_KEYS = ("timestamp", "time", "stamp")  # per-frame times of other tools, in units nobody defines


def _stamps(times: list[tuple[bool, object]], where: list[str], images: list[Path], frames: list[object],
            cfg: ImagesConfig) -> tuple[np.ndarray, str, str]:  # fmt: skip
    """The frames' stamps (int64 ns): each frame's ``timestamp_ns`` (integer nanoseconds, as pose2rgbd's simulator
    writes them) when every frame has one -- in the file's order, strictly increasing, else refused -- or index x
    ``frame_interval_s`` when none has; with the note for the report and a warning when frames carry times under
    another key (``time``, ``timestamp``: their unit is no standard's, so they are not read)."""
    have = [h for h, _ in times]
    if any(have) and not all(have):
        k = have.index(False)
        j = have.index(True)
        raise PoseImportError(
            f"{where[k]}: no timestamp_ns, but {where[j].rsplit(': ', 1)[-1]} has one; give every frame its capture "
            "time (timestamp_ns, integer nanoseconds) or none (then stamps are index x frame_interval_s)"
        )
    if not any(have):
        other = sorted({k for fr in frames if isinstance(fr, dict) for k in OTHER_TIME_KEYS if k in fr})
        warn = (f"the frames carry {', '.join(repr(k) for k in other)} keys, which are not read: their unit is not "
                "defined by the format; give each frame its capture time as timestamp_ns (integer nanoseconds) to "
                f"have real times (now index x {cfg.frame_interval_s} s)" if other else "")  # fmt: skip
        note = f"frames have no capture times (timestamp_ns): stamps are index x {cfg.frame_interval_s} s"
        return stamps_from_interval(len(images), cfg.frame_interval_s), note, warn
    ns: list[int] = []
    for w, (_, v) in zip(where, times, strict=True):
        if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
            raise PoseImportError(
                f"{w}: timestamp_ns {v!r} is not an integer number of nanoseconds (e.g. 1700000150100000000)"
            )
        ns.append(v)
    a = np.asarray(ns, dtype=np.int64)
    back = np.flatnonzero(np.diff(a) <= 0)
    if back.size:
        k = int(back[0]) + 1
        raise PoseImportError(
            f"{where[k]} ({images[k].name}): timestamp_ns {ns[k]} is not after the previous frame's ({ns[k - 1]}, "
            f"{images[k - 1].name}); frames must be listed in capture order with strictly increasing times (sort "
            "the frames by timestamp_ns, or remove the repeated one)"
        )
    span = (a[-1] - a[0]) / 1e9
    return a, (f"capture times from each frame's timestamp_ns ({span:.3f} s over {len(a)} frames, in the file's "
               "order)"), ""  # fmt: skip


def _depth_scale(doc: dict[str, Any], p: Path) -> tuple[float | None, str]:
    """nerfstudio's ``depth_unit_scale_factor`` (metres per depth unit; nerfstudio multiplies every depth image by
    it, .npy too) as units per metre, with the note the report shows; ``(None, "")`` when absent."""
    if "depth_unit_scale_factor" not in doc:
        return None, ""
    v = doc["depth_unit_scale_factor"]
    try:
        f = float(v)
    except (TypeError, ValueError):
        f = math.nan
    if not (math.isfinite(f) and f > 0):
        raise PoseImportError(
            f"{p}: depth_unit_scale_factor is {v!r}; it must be a number > 0 (metres per depth unit, e.g. 0.001 for "
            "millimetres), or leave it out and give --depth-scale"
        )
    return 1.0 / f, f"transforms.json depth_unit_scale_factor {f:g} (metres per unit)"
