"""Sequential structure from motion with COLMAP (pycolmap) on a video's frames: the one set-up shared by the
video-only trajectory back end (:mod:`pose2rgbd.methods.selfsup_depth.sfm`, a fixed pinhole camera) and the lens
calibration (:mod:`pose2rgbd.convert.lens_calibration`, a fisheye whose focal length and distortion are refined).

SIFT features (one camera for all frames), sequential matching (each frame with the next ``overlap``),
incremental mapping with the initial-pair settings a video needs. The frames are written by the caller into
``<workspace>/images`` of a :func:`colmap_workspace`, a temporary folder removed afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pose2rgbd.errors import ConfigError

if TYPE_CHECKING:  # an optional dependency: imported where it runs (load_pycolmap)
    from pycolmap import Reconstruction

log = logging.getLogger(__name__)

# below COLMAP's 0.0067: small, low-contrast video frames (an aerial view at 640 px) need more features
PEAK_THRESHOLD = 0.004
# COLMAP's 16 deg initial triangulation angle is for photo collections; a pair of video frames has less parallax
INIT_MIN_TRI_ANGLE_DEG = 4.0
INIT_MIN_NUM_INLIERS = 30


def load_pycolmap(needed_by: str, otherwise: str) -> ModuleType:
    """pycolmap (>= 3.12: the options API used here), or a :class:`ConfigError` saying that ``needed_by`` needs
    it, how to install it, and ``otherwise`` (the caller's way around it)."""
    try:
        from pose2rgbd.geometry.colmap_import import pycolmap
    except ImportError as e:  # not installed, or installed and broken: the import's own words say which
        raise ConfigError(f"{needed_by} needs pycolmap ({e}; pip install 'pycolmap>=3.12'); or {otherwise}") from e
    if not hasattr(pycolmap, "FeatureExtractionOptions") or not hasattr(pycolmap, "IncrementalPipelineOptions"):
        raise ConfigError(f"{needed_by} needs pycolmap >= 3.12 (found {pycolmap.__version__}); upgrade it or "
                          f"{otherwise}")  # fmt: skip
    return pycolmap


@contextlib.contextmanager
def colmap_workspace(pycolmap: ModuleType, prefix: str, logger: logging.Logger = log) -> Iterator[Path]:
    """A temporary folder with an empty ``images`` folder for the frames, removed on exit; COLMAP's own INFO and
    WARNING lines stay quiet unless ``logger`` (the caller's) logs at DEBUG (the level is restored on exit)."""
    level = pycolmap.logging.minloglevel
    if not logger.isEnabledFor(logging.DEBUG):
        pycolmap.logging.minloglevel = 2
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            root = Path(tmp)
            (root / "images").mkdir()
            yield root
    finally:
        pycolmap.logging.minloglevel = level


@dataclass
class SequentialSfm:
    """How :func:`sequential_sfm` runs COLMAP.

    ``camera_model`` / ``camera_params``: COLMAP's camera model name and its parameters at the written frames'
    size, one camera for all frames; ``refine_intrinsics``: bundle adjustment refines the focal length and the
    extra (distortion) parameters, never the principal point (False: the camera stays as given);
    ``max_features`` 0: COLMAP's default; ``init_num_trials`` / ``max_num_models`` 0: COLMAP's defaults (200
    initial pairs, 50 models: a clip that cannot register may search for many minutes)."""

    camera_model: str
    camera_params: Sequence[float]
    refine_intrinsics: bool = False
    threads: int = -1
    max_image_size: int = 640
    max_features: int = 0
    overlap: int = 10
    init_num_trials: int = 0
    max_num_models: int = 0
    # with refine_intrinsics: the distortion parameters refined only by a last bundle adjustment of each model, the
    # focal lengths all along. A fisheye's k1..k4 refined from the first pair on diverged (k4 to -1.7e6 on a GoPro
    # HERO7 clip with pycolmap 4.2) and left 2 of 118 frames registered
    distortion_after_mapping: bool = False


def colmap_threads(threads: int) -> int:
    """The threads COLMAP runs on for ``threads`` (a setting; -1 or 0: automatic): a positive ``threads`` as given;
    else ``OMP_NUM_THREADS`` where it is set to a positive number, the limit torch and numpy keep in this process
    and the one a user sharing a machine sets; else -1, COLMAP's every core."""
    if threads > 0:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else -1


def sequential_sfm(
    pycolmap: ModuleType, root: Path, names: Sequence[str], run: SequentialSfm, *, progress: bool = False
) -> list[Reconstruction]:
    """COLMAP on the frames ``root/images/<name>`` (in time order) of a :func:`colmap_workspace`: its
    reconstructions (``pycolmap.Reconstruction``), the one with the most registered frames first (empty: none).
    Each of its three steps is logged as it starts; the mapping, the longest, counts the frames registered (a bar
    with ``progress`` on a terminal, else a log line every ``pose2rgbd.progress.LOG_EVERY_S`` seconds)."""
    from pose2rgbd.progress import bar

    t0 = time.monotonic()
    threads = colmap_threads(run.threads)
    img_dir = root / "images"
    db = root / "database.db"
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = run.camera_model
    reader.camera_params = ",".join(f"{float(v):.10g}" for v in run.camera_params)
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = threads
    ext.max_image_size = run.max_image_size
    if run.max_features > 0:
        ext.sift.max_num_features = run.max_features
    ext.sift.peak_threshold = PEAK_THRESHOLD
    log.info("COLMAP: features of %d frames (threads: %s)", len(names), "every core" if threads < 0 else threads)
    pycolmap.extract_features(db, img_dir, image_names=list(names), camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=ext, device=pycolmap.Device.cpu)  # fmt: skip
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = threads
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = run.overlap
    pairing.quadratic_overlap = False
    log.info("COLMAP: matching each frame with the %d after it (%.0f s so far)", run.overlap, time.monotonic() - t0)
    pycolmap.match_sequential(db, matching_options=match, pairing_options=pairing, device=pycolmap.Device.cpu)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = threads
    opts.random_seed = 0
    opts.ba_refine_focal_length = run.refine_intrinsics
    opts.ba_refine_principal_point = False
    late = run.refine_intrinsics and run.distortion_after_mapping
    opts.ba_refine_extra_params = run.refine_intrinsics and not late
    if not run.refine_intrinsics:
        opts.mapper.abs_pose_refine_focal_length = False
    if not opts.ba_refine_extra_params:
        opts.mapper.abs_pose_refine_extra_params = False
    opts.mapper.init_min_tri_angle = INIT_MIN_TRI_ANGLE_DEG
    opts.mapper.init_min_num_inliers = INIT_MIN_NUM_INLIERS
    if run.init_num_trials > 0:
        opts.init_num_trials = run.init_num_trials
    if run.max_num_models > 0:
        opts.max_num_models = run.max_num_models
    (root / "sparse").mkdir(exist_ok=True)
    log.info("COLMAP: mapping %d frames (%.0f s so far)", len(names), time.monotonic() - t0)
    # a line of the registrations every LOG_EVERY_S s in a log file, also where bars are off (minutes of mapping)
    with bar(total=len(names), desc="COLMAP: frames registered", unit="frame", progress=progress, lines=True,
             logger=log) as shown:  # fmt: skip

        def registered(k: int) -> None:  # called by the mapper as it registers frames (a new model counts on)
            shown.update(k)

        recs = pycolmap.incremental_mapping(db, img_dir, root / "sparse", options=opts,
                                            initial_image_pair_callback=lambda: registered(2),
                                            next_image_callback=lambda: registered(1))  # fmt: skip
    models = sorted(recs.values(), key=lambda r: -r.num_reg_images())
    if late and models:
        ba = pycolmap.BundleAdjustmentOptions()
        ba.refine_focal_length, ba.refine_principal_point, ba.refine_extra_params = True, False, True
        log.info("COLMAP: the distortion refined by a last bundle adjustment (%.0f s so far)", time.monotonic() - t0)
        pycolmap.bundle_adjustment(models[0], ba)
    return models
