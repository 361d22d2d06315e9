"""Structure from motion on a flight's frames with COLMAP (pycolmap): the ``colmap`` video-only trajectory back end.

SIFT features, sequential matching (each frame with the next ``colmap_overlap``), incremental mapping with the
dataset's intrinsics as one fixed PINHOLE camera (focal length, principal point and distortion never refined):
:func:`pose2rgbd.geometry.colmap_sfm.sequential_sfm`, shared with the lens calibration. COLMAP's database and image
copies live in a temporary folder that is removed afterwards. The poses come back in
COLMAP's own frame and scale; :func:`pose2rgbd.methods.selfsup_depth.trajectory.fill_unregistered` ties them to
the network's composed trajectory and fills the frames COLMAP did not register.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.colmap_sfm import SequentialSfm, colmap_workspace, load_pycolmap, sequential_sfm
from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig

log = logging.getLogger(__name__)

MIN_REGISTERED = 3
ADVICE = (
    "structure from motion needs overlapping views with parallax: use a part of the flight where the camera "
    "moves steadily with overlap between frames (a slower flight, a higher frame rate), a smaller "
    "trajectory.colmap_every (every n-th frame) or a larger trajectory.colmap_overlap, or "
    "trajectory.backend compose"
)


@dataclass
class SfmResult:
    """``T_world_cam`` (N, 4, 4) in COLMAP's frame and scale, NaN where ``registered`` (N,) is False; ``model``
    (N,) the index of the reconstruction a frame is in (-1: none; models sorted by size, largest first)."""

    T_world_cam: np.ndarray
    registered: np.ndarray
    model: np.ndarray
    tried: int  # frames given to COLMAP
    seconds: float
    # frame index (row of ``indices``) -> (P, 5): the triangulated points it observes in its camera frame (x, y, z,
    # COLMAP's units), their track length and mean reprojection error (pixels at COLMAP's image size)
    points: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_registered(self) -> int:
        return int(self.registered.sum())


def _pycolmap() -> ModuleType:
    return load_pycolmap("trajectory.backend colmap", "set trajectory.backend compose")


def _observed_points(rec, im, most: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(P, 5) for the triangulated points ``im`` observes: camera-frame x, y, z, track length, reprojection
    error; at most ``most``, the longest tracks / smallest errors first."""
    ids = [p.point3D_id for p in im.points2D if p.has_point3D()]
    if not ids:
        return np.zeros((0, 5))
    pts = [rec.points3D[i] for i in ids]
    xyz = np.array([p.xyz for p in pts], dtype=np.float64)
    cam = im.cam_from_world().matrix()  # 3x4
    xc = xyz @ cam[:, :3].T + cam[:, 3]
    track = np.array([p.track.length() for p in pts], dtype=np.float64)
    err = np.array([p.error if p.has_error() else np.nan for p in pts], dtype=np.float64)
    out = np.concatenate([xc, track[:, None], err[:, None]], 1)
    out = out[(xc[:, 2] > 0) & np.isfinite(err)]
    order = np.lexsort((out[:, 4], -out[:, 3]))
    return out[order[:most]]


def colmap_poses(
    read_rgb: Callable[[int], np.ndarray],
    indices: Sequence[int] | np.ndarray,
    K: np.ndarray,
    cfg: TrajectoryConfig | None = None,
    *,
    progress: bool = False,
) -> SfmResult:
    """Run COLMAP on the frames ``read_rgb(i)`` (RGB uint8) for ``i`` in ``indices`` (time-ordered, one source),
    every ``cfg.colmap_every``-th of them, with the pinhole intrinsics ``K`` of those images. Result rows follow
    ``indices``. Raises :class:`ConfigError` (saying what to do) when fewer than 3 frames register."""
    cfg = cfg or TrajectoryConfig(backend="colmap")
    pycolmap = _pycolmap()
    from pose2rgbd.progress import bar

    t0 = time.monotonic()
    n = len(indices)
    pick = np.arange(0, n, cfg.colmap_every)
    if n - 1 not in pick:
        pick = np.append(pick, n - 1)  # the last frame too, so nothing is extrapolated at the end
    T = np.full((n, 4, 4), np.nan)
    points: dict[int, np.ndarray] = {}
    model_of = np.full(n, -1, np.int64)
    with colmap_workspace(pycolmap, "pose2rgbd-colmap-", log) as root:
        img_dir = root / "images"
        names = []
        Ks = np.asarray(K, dtype=np.float64).copy()
        for k in bar(pick, desc="frames for COLMAP", unit="frame", progress=progress):
            rgb = read_rgb(int(indices[int(k)]))
            h, w = rgb.shape[:2]
            f = min(1.0, cfg.colmap_max_size / max(h, w))
            if f < 1.0:
                rgb = cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
            name = f"{int(k):07d}.png"
            if not cv2.imwrite(str(img_dir / name), np.ascontiguousarray(rgb[..., ::-1])):
                raise OSError(f"{img_dir / name}: could not write a frame for COLMAP")
            names.append(name)
        first = cv2.imread(str(img_dir / names[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise OSError(f"{img_dir / names[0]}: could not read back a frame written for COLMAP")
        h1, w1 = first.shape[:2]
        Ks[0, :] *= w1 / w
        Ks[1, :] *= h1 / h
        log.info("COLMAP: %d of %d frames (every %d), %dx%d", len(names), n, cfg.colmap_every, w1, h1)
        run = SequentialSfm(
            "PINHOLE", (Ks[0, 0], Ks[1, 1], Ks[0, 2], Ks[1, 2]), refine_intrinsics=False, threads=cfg.colmap_threads,
            max_image_size=cfg.colmap_max_size, max_features=cfg.colmap_max_features, overlap=cfg.colmap_overlap,
        )  # fmt: skip
        models = sequential_sfm(pycolmap, root, names, run, progress=progress)
        for m, rec in enumerate(models):
            for im in rec.images.values():
                if not im.has_pose:
                    continue
                k = int(Path(im.name).stem)
                if model_of[k] >= 0:
                    continue  # already in a larger model
                T[k, :3, :] = im.cam_from_world().inverse().matrix()  # 3x4
                model_of[k] = m
                if cfg.colmap_points > 0:
                    points[k] = _observed_points(rec, im, cfg.colmap_points)
    T[:, 3, :] = (0.0, 0.0, 0.0, 1.0)
    reg = model_of >= 0
    T[~reg] = np.nan
    res = SfmResult(
        T_world_cam=T, registered=reg, model=model_of, tried=len(names), seconds=time.monotonic() - t0, points=points
    )
    used = len(np.unique(model_of[reg]))  # a model whose frames are all in a larger one adds none
    log.info("COLMAP: %d of %d frames registered in %d model(s)%s, %.1f s", res.n_registered, len(names), used,
             f" ({len(models) - used} more with no frame of their own)" if len(models) > used else "",
             res.seconds)  # fmt: skip
    if res.n_registered < MIN_REGISTERED:
        raise ConfigError(f"COLMAP registered {res.n_registered} of {len(names)} frames (need {MIN_REGISTERED}): "
                          + ADVICE)  # fmt: skip
    return res
