"""A keyframe map: a place map holding posed RGB-D keyframes and nothing a localizer needs (no local features, a
thumbnail global descriptor), written from frames already in memory -- what ``pose2rgbd train --method hybrid``
writes into its run folder as the model's keyframes (docs/place-map.md). The same format and the same writer
(:class:`~pose2rgbd.placemap.format.MapWriter`: atomic, every file's SHA-256 in the manifest) as
``pose2rgbd map build``; ``map build`` makes the map a localizer reads.

:func:`keyframes_digest` names a map's keyframes (poses, intrinsics, dataset rows, images and depth) by the
SHA-256s its manifest records: a checkpoint that reads its keyframes from a map records it and compares it on load.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.placemap.format import MapError, MapWriter, encode_depth, encode_rgb
from pose2rgbd.placemap.place import GlobalDescriber
from pose2rgbd.progress import bar

log = logging.getLogger(__name__)

# the files a keyframe's pixels and pose come from (the localizer's features and descriptors are not among them)
KEYFRAME_FILES = ("poses.npy", "intrinsics.npy", "frames.npy", "images.bin", "images_offsets.npy", "depth.bin",
                  "depth_offsets.npy")  # fmt: skip


def keyframes_digest(manifest: dict[str, Any]) -> str:
    """The SHA-256 over the recorded SHA-256s (or, in a manifest without them, the sizes) of the map's
    :data:`KEYFRAME_FILES`: equal for two maps with the same keyframes, whatever else they hold."""
    sha, sizes = manifest.get("sha256") or {}, manifest.get("files") or {}
    h = hashlib.sha256()
    for name in KEYFRAME_FILES:
        h.update(f"{name}:{sha.get(name) or sizes.get(name, '-')};".encode())
    return h.hexdigest()


def write_keyframe_map(
    out: str | Path,
    *,
    rgb: Callable[[int], np.ndarray],
    depth: Callable[[int], np.ndarray],
    T_world_cam: np.ndarray,
    camera: PinholeCamera,
    frames: np.ndarray,
    stamp_ns: np.ndarray,
    source_id: np.ndarray,
    dataset: dict[str, Any],
    selection: str,
    rot_weight_m: float,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the keyframe map of ``len(frames)`` keyframes into ``out``: ``rgb(k)`` uint8 (H, W, 3) and
    ``depth(k)`` metres (H, W) of keyframe ``k`` at ``camera``'s size, its pose, dataset row, stamp and source;
    ``dataset`` the manifest's dataset section (:func:`pose2rgbd.placemap.build.dataset_entry`), ``selection`` how the
    keyframes were chosen (in words). Images are stored as PNG (lossless: the keyframes are the model's own
    pixels); returns the manifest."""
    t0 = time.monotonic()
    n = len(frames)
    if n < 1:
        raise MapError("a keyframe map needs at least one keyframe")
    describer = GlobalDescriber("thumbnail")
    glob = np.empty((n, describer.thumb**2), np.float32)
    none_xy, none_desc, none_xyz = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), np.zeros((0, 3))
    with MapWriter(out, has_depth=True, image_codec="png", image_quality=95) as w:
        with bar(total=n, progress=progress, desc="keyframe map", unit="frame") as pbar:
            for k in range(n):
                image = np.asarray(rgb(k), np.uint8)
                w.add_encoded(encode_rgb(image, "png", 95), encode_depth(depth(k)), none_xy, none_desc, none_xyz)
                glob[k] = describer.thumbnail(image)
                pbar.update(1)
        w.save_array("global", glob)
        w.save_npz("vocabulary", **describer.arrays())
        w.save_array("poses", np.asarray(T_world_cam, np.float64).reshape(n, 4, 4))
        w.save_array("intrinsics", np.tile([camera.fx, camera.fy, camera.cx, camera.cy], (n, 1)).astype(np.float64))
        w.save_array("frames", np.asarray(frames, np.int64))
        w.save_array("stamp_ns", np.asarray(stamp_ns, np.int64))
        w.save_array("source_id", np.asarray(source_id, np.int64))
        manifest = {
            "dataset": dataset,
            "selection": {"description": selection, "keyframes": n},
            "keyframes": n,
            "repeats": {"dropped": 0, "examples": []},
            "image": {"width": camera.width, "height": camera.height, "codec": "png", "quality": 95},
            "depth": {"codec": "png16-log", "min_m": 0.05, "max_m": 5000.0},
            "keyframe_images": True,
            "points": "none",
            "features": {"kind": "none", "total": 0, "extracted": 0},  # a keyframe map: nothing to localize with
            "global": {"kind": "thumbnail", "thumb": describer.thumb, "dims_stored": int(glob.shape[1])},
            "rot_weight_m": float(rot_weight_m),
            "calibration": None,
            "build_s": round(time.monotonic() - t0, 2),
        }
        w.close(manifest, overwrite=overwrite)
    log.info("%s: keyframe map of %d keyframes at %dx%d", out, n, camera.width, camera.height)
    return manifest


def has_local_features(manifest: dict[str, Any]) -> bool:
    """Whether the map holds local features a structure localizer can match (a keyframe map holds none)."""
    return (manifest.get("features") or {}).get("kind") != "none"
