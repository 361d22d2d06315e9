"""LLFF ``poses_bounds.npy`` + its image folder -> :class:`PosedImages`.

The format (LLFF's ``imgs2poses.py``, read by NeRF's ``load_llff.py`` and most NeRF code): an ``(N, 17)`` float
array, one row per image in the name order of ``images/``. A row is a 3x5 matrix flattened row-major, then two
numbers: ``[R | t | hwf]`` with ``R | t`` the camera-to-world transform and ``hwf`` = (image height, image width,
focal length in pixels) of the full-resolution images, then ``near, far``: the depth bounds of the scene content
seen from that camera (scene units). The principal point is not stored: LLFF takes the image centre; there is no
distortion (the images are taken as pinhole).

Axes: the columns of ``R`` are the camera's **down, right, backwards** axes in the world (LLFF's order), so the
REP-103 optical axes (right, down, forward) are the columns ``(R[:, 1], R[:, 0], -R[:, 2])``:
``T_world_cam = [R_llff @ LLFF_FROM_OPTICAL | t]``. The world is the COLMAP reconstruction the poses came from
(arbitrary orientation and scale; the file has no notion of up).

Images: ``images/`` beside the file (or ``--images DIR``, e.g. ``images_4``: a copy downscaled by 4, whose focal
length is scaled by the width ratio, as ``load_llff.py`` does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose2rgbd.convert.posed_images.common import (
    ImagesConfig,
    PosedImages,
    SourceCamera,
    check_rotations,
    image_files,
    image_size,
    stamps_from_interval,
)
from pose2rgbd.convert.posed_images.errors import PoseImportError

# columns (down, right, back) -> (right, down, forward): R_optical = R_llff @ LLFF_FROM_OPTICAL
LLFF_FROM_OPTICAL = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
POSES_BOUNDS = "poses_bounds.npy"


def _images_dir(poses: Path, cfg: ImagesConfig) -> Path:
    if cfg.images:
        return Path(cfg.images)
    d = poses.parent / "images"
    if d.is_dir():
        return d
    scaled = sorted(p.name for p in poses.parent.glob("images_*") if p.is_dir())
    raise PoseImportError(
        f"{poses}: no images/ folder beside it"
        + (f" (found {', '.join(scaled)}: downscaled copies; pick one with --images DIR)" if scaled else "")
        + "; give the image folder with --images DIR"
    )


def read_llff(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    p = Path(path)
    if p.is_dir():
        p = p / POSES_BOUNDS
    if not p.is_file():
        raise PoseImportError(f"{p}: file not found")
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:
        raise PoseImportError(f"{p}: not a numpy array file ({e})") from e
    if a.ndim != 2 or a.shape[1] != 17 or not np.issubdtype(a.dtype, np.number):
        raise PoseImportError(
            f"{p}: array of shape {a.shape} ({a.dtype}); LLFF poses_bounds.npy is (N, 17) numbers: a 3x5 [R | t | "
            "height width focal] per image, then near and far"
        )
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(a), axis=1))[0])
        raise PoseImportError(f"{p}: row {bad} contains NaN or inf")
    m = a[:, :15].reshape(-1, 3, 5)
    hwf, bounds = m[:, :, 4], a[:, 15:17]
    img_dir = _images_dir(p, cfg)
    images = image_files(img_dir, "LLFF images")
    if len(images) != len(a):
        raise PoseImportError(
            f"{p}: {len(a)} poses but {len(images)} images in {img_dir}; LLFF pairs the rows with the images in "
            "name order, so the counts must agree (is it the folder the poses were made from?)"
        )
    T = np.tile(np.eye(4), (len(a), 1, 1))
    T[:, :3, :3] = m[:, :, :3] @ LLFF_FROM_OPTICAL
    T[:, :3, 3] = m[:, :, 3]
    T = check_rotations(T, [f"{p}: row {i} ({images[i].name})" for i in range(len(a))])
    w, h = image_size(images[0])
    notes = [
        "LLFF rows are camera-to-world with the camera's columns (down, right, backwards); converted to the optical "
        "frame (right, down, forward) as (R[:, 1], R[:, 0], -R[:, 2])",
        "the world frame is the reconstruction's own (arbitrary orientation and scale; not ENU, no datum)",
        f"rows paired with the images of {img_dir.name}/ in name order; no capture times: stamps are index x "
        f"{cfg.frame_interval_s} s",
        f"depth bounds near {bounds[:, 0].min():.4g} .. far {bounds[:, 1].max():.4g} (scene units, all images)",
    ]
    if cfg.has_intrinsics():
        cams = [cfg.flag_camera(w, h, "an LLFF file")] * len(a)
        notes.append("intrinsics from the flags")
    else:
        H0, W0, f = (float(v) for v in hwf[0])
        if not (H0 > 0 and W0 > 0 and f > 0) or np.ptp(hwf, axis=0).max() > 1e-6 * max(H0, W0, f):
            raise PoseImportError(
                f"{p}: height, width and focal (the 5th column) must be > 0 and the same for every image, got "
                f"{hwf[0].tolist()} ... ; give the intrinsics with --fx (and --cx --cy) instead"
            )
        if abs(w / h - W0 / H0) > 0.01 * (W0 / H0):
            raise PoseImportError(
                f"{p}: the poses are for {W0:g}x{H0:g} images but {images[0].name} is {w}x{h}, another aspect ratio; "
                "give the image folder the poses were made from with --images DIR"
            )
        s = w / W0  # images_N: focal scaled by the width ratio (load_llff.py does the same)
        dist, model = cfg.flag_distortion()
        cams = [SourceCamera(w, h, f * s, f * s, (w - 1) / 2.0, (h - 1) / 2.0, dist, model)] * len(a)
        notes.append(
            f"intrinsics from the file: focal {f:g} px at {W0:g}x{H0:g}"
            + (f", scaled by {s:.4g} to the {w}x{h} images" if abs(s - 1) > 1e-9 else "")
            + "; principal point at the image centre (LLFF stores none)"
        )
    return PosedImages(
        kind="llff", source=p, images=images, T_world_cam=T,
        stamps_ns=stamps_from_interval(len(images), cfg.frame_interval_s), cameras=cams,
        convention="LLFF rotation columns are (down, right, backwards), converted once here", assumptions=notes,
        pose_units="unscaled", bounds=bounds,
    )  # fmt: skip
