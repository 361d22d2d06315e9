"""Build a place map from a dataset's frames: ``pose2rgbd map build``.

1. **Select** the keyframes (:class:`MapSelection`): a split's training frames, some sources, or all frames, then
   every N-th of them -- so the frames a localizer or renderer is evaluated on never enter its map.
2. **Per keyframe**: the image, the metric depth (when the dataset has it), SIFT features where the depth is valid,
   and their world points lifted from the depth (the depth at the keypoint, refused on depth edges where the
   keypoint may belong to either side).
3. Without metric depth the points are **triangulated** across neighbouring keyframes with the known poses
   (:mod:`pose2rgbd.placemap.triangulate`).
4. The **global descriptors** (:mod:`pose2rgbd.placemap.place`): a visual vocabulary learned from the map's own
   descriptors, every keyframe's VLAD, a PCA.
5. **Self-calibration** (when the caller hands a ``calibrate`` step, as ``pose2rgbd map build`` does:
   :func:`pose2rgbd.inference.self_calibration.self_calibrate`): a held-out share of the keyframes is
   localized against a map of the rest; the covariance scale, the out-of-distribution gate and the confidence
   model fitted on them go into the manifest (``calibration``).
6. Written atomically (a hidden sibling folder renamed into place), with a manifest naming the dataset's
   fingerprint, the selection and every file's size and SHA-256, which are checked once the map is in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.dataset import Dataset
from pose2rgbd.dataset.repeats import RepeatFilter, digest
from pose2rgbd.dataset.summary import suspect_import_warning
from pose2rgbd.errors import ConfigError
from pose2rgbd.placemap.features import FeatureConfig, ImageFeatures, extract
from pose2rgbd.placemap.format import PLACE_MAP, MapError, MapWriter, encode_depth, encode_rgb, read_manifest
from pose2rgbd.placemap.place import GlobalConfig, GlobalDescriber
from pose2rgbd.placemap.pool import ordered_map, resolve_workers
from pose2rgbd.placemap.selection import MapSelection, select_frames
from pose2rgbd.placemap.verify import verify_files
from pose2rgbd.placemap.view import MapView
from pose2rgbd.progress import bar

log = logging.getLogger(__name__)


@dataclass
class SelfCalibrationConfig:
    """How ``map build`` calibrates the structure localizer on the map's own keyframes (docs/place-map.md)."""

    enabled: bool = help_field(
        True, "localize a held-out share of the keyframes against a map of the rest and store the fitted covariance "
        "scale, out-of-distribution gate and confidence model in the map"
    )  # fmt: skip
    share: float = ranged_field(0.1, "share of the keyframes held out (evenly spread)", 0.01, 0.5)
    min_queries: int = ranged_field(30, "hold out at least this many (at most a quarter of the map)", 12, 100000)
    max_queries: int = ranged_field(150, "hold out at most this many (the build time it adds)", 12, 100000)
    gap_windows: int = ranged_field(
        3, "also hold out up to this many windows of consecutive keyframes of one flight per window length (4, 8, "
        "16, ... keyframes, up to a quarter of the map; fewer where they would not fit apart), each length against "
        "a map without them: the calibration then reaches gaps as large as a route split's held-out blocks or a "
        "later pass leaves (0: single keyframes only)", 0, 20,
    )  # fmt: skip
    bound_m: float = ranged_field(
        0.0, "confidence = P(position error < bound_m) (map units); 0: twice the held-out median position error",
        0.0, 1e6,
    )  # fmt: skip
    gate_quantile: float = ranged_field(
        0.02, "out-of-distribution gate: fewer inliers / less spread than this quantile of the held-out fixes",
        0.0, 0.5,
    )  # fmt: skip
    # 0.8: pose2rgbd.inference.calibration.SCALE_LEVEL (the map layer does not import the inference layer; a test
    # keeps the two equal)
    scale_level: float = ranged_field(
        0.8, "the covariance scale is the upper one-sided confidence bound of the held-out fixes' median at "
        "this level (at least the true scale in this share of calibrations; 0.5: the median itself)", 0.5, 0.99,
    )  # fmt: skip


# a fix of the structure localizer needs this many inlier correspondences (its ``min_inliers``, by default), each a
# query feature matched to a map feature with a world point: a map with fewer points can localize no image, one with
# fewer per keyframe localizes few, if any (a query is matched against a handful of candidate keyframes, and only
# some of their points match: a GoPro clip of 326 frames at 256x144 without depth, every 80th frame, 10 points per
# keyframe: 0 of 65 query images localized; every 40th, 36 per keyframe: 53)
MIN_INLIERS = 20


def _check_points(
    points_kept: list[np.ndarray], features: int, keyframes: int, points: str, stride: int | None, out: str | Path
) -> None:
    """Refuse (:class:`MapError`) a map whose features have too few world points to localize any image; warn when
    they are too few per keyframe to localize many (see :data:`MIN_INLIERS`); both say what to do."""
    n = sum(int(np.all(np.isfinite(p), axis=1).sum()) for p in points_kept)
    if points == "triangulated":
        smaller = f" than {stride}" if stride is not None and stride > 1 else ""
        todo = (
            "without depth a world point is triangulated from a feature that neighbouring keyframes see too: build "
            f"the map from more keyframes that overlap (a smaller --stride{smaller}, more of the dataset's frames), "
            "or from a dataset with depth"
        )
    else:
        todo = "the images are too plain, or their depth invalid where their features are; build it from other frames"
    if n < MIN_INLIERS:
        raise MapError(
            f"{keyframes} keyframes gave only {n} local features with a world point (of {features} stored), fewer "
            f"than the {MIN_INLIERS} inliers a fix needs: such a map could localize no image; {todo}"
        )
    if n < MIN_INLIERS * keyframes:
        log.warning(
            "%s: only %d of %d local features (%.0f per keyframe) have a world point: a fix needs %d inliers from the "
            "few keyframes a query is matched against, so this map will localize few images, if any; %s",
            out, n, features, n / keyframes, MIN_INLIERS, todo,
        )  # fmt: skip


# the self-calibration step ``map build`` and ``map merge`` run on the map's keyframes before it is written
# (:func:`pose2rgbd.inference.self_calibration.self_calibrate`): the manifest's ``calibration`` entry (JSON)
CalibrateStep = Callable[[MapView, SelfCalibrationConfig, bool], dict[str, Any]]


@dataclass
class MapBuildConfig:
    """How a place map is built."""

    selection: MapSelection = field(default_factory=MapSelection, metadata={"help": "which frames are keyframes"})
    features: FeatureConfig = field(
        default_factory=lambda: FeatureConfig(max_features=600),
        metadata={"help": "local features (SIFT) of the keyframes (queries take up to 1000 of their own)"},
    )
    global_desc: GlobalConfig = field(default_factory=GlobalConfig, metadata={"help": "place recognition"})
    image_codec: str = help_field("jpg", "how keyframe images are stored: jpg | png (lossless, about 2x larger)")
    image_quality: int = ranged_field(95, "JPEG quality of stored keyframe images", 50, 100)
    edge_ratio: float = ranged_field(
        0.05, "refuse a keypoint's depth when its 3x3 neighbourhood's depth varies more than this (relative)", 0.0, 10.0
    )
    triangulate_neighbours: int = ranged_field(
        6, "without depth: triangulate each keyframe against this many nearest keyframes", 1, 50
    )
    seed: int = help_field(0, "seed of the vocabulary's k-means")
    keyframe_images: bool = help_field(
        True,
        "store the keyframes' images and depth (the hybrid renderer warps them); false: a localization-only map, "
        "about half the size",
    )
    workers: int = ranged_field(
        0,
        "processes extracting features and triangulating (the per-keyframe work); 0: one per usable core -- a build "
        "is a batch job, and the map is the same for any count; 1: in this process (a shared machine)",
        0,
        256,
    )
    calibration: SelfCalibrationConfig = field(
        default_factory=SelfCalibrationConfig, metadata={"help": "self-calibration of the structure localizer"}
    )

    def __post_init__(self) -> None:
        if self.image_codec not in ("jpg", "png"):
            raise ConfigError(f"image_codec {self.image_codec!r}: use jpg or png")


def lift_points(
    xy: np.ndarray, depth: np.ndarray, T_world_cam: np.ndarray, K: np.ndarray, edge_ratio: float
) -> np.ndarray:
    """World points (K, 3) of keypoints ``xy`` from the keyframe's depth (NaN where it has none or at an edge)."""
    h, w = depth.shape
    u = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
    v = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
    d = depth.astype(np.float64)
    z = d[v, u]
    # 3x3 neighbourhood min / max (edge check): a keypoint on a depth edge may take either side's depth
    pad = np.pad(d, 1, mode="edge")
    win = np.stack([pad[v + dy, u + dx] for dy in range(3) for dx in range(3)], axis=1)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0) & np.all(np.isfinite(win), axis=1)
        ok &= (np.max(win, axis=1) - np.min(win, axis=1)) <= edge_ratio * z
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    p = np.stack([(xy[:, 0] - cx) / fx * z, (xy[:, 1] - cy) / fy * z, z], axis=1)
    world = p @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    world[~ok] = np.nan
    return np.asarray(world, np.float32)


def dataset_entry(ds: Any, path: str | Path) -> dict[str, Any]:
    """The manifest's ``dataset`` section: what the map's keyframes were taken from (its fingerprint is checked
    by every reader that pairs the map with a model or another map)."""
    return {
        "path": str(Path(path).resolve()),
        "name": ds.manifest.name,
        "fingerprint": ds.fingerprint(),
        "world_frame": ds.manifest.world_frame,
        "camera_frame": ds.manifest.camera_frame,
        "frames": len(ds),
        "depth_kind": ds.manifest.depth_kind,
        "pose_units": ds.manifest.resolved_pose_units,
        "source_cameras": ds.manifest.source_cameras,  # the lens queries from that camera have (--camera map)
        "datum": None if ds.manifest.datum is None else ds.manifest.datum.to_dict(),
        # the poses' own error where the dataset states it (a recording's GPS): the localizer adds it to every fix
        **({"pose_error": ds.manifest.pose_error} if ds.manifest.pose_error else {}),
    }


MAX_REPEAT_SHARE = 0.9  # a selection with more repeated keyframes than this is refused (a frozen camera)


def _without_repeats(selected: np.ndarray, kept: np.ndarray, repeats: RepeatFilter, dataset: Path) -> np.ndarray:
    """The keyframes left after dropping those whose image repeats an earlier keyframe's byte for byte (a frozen
    camera: the same view with other poses, no new place); refused when (nearly) all of them do."""
    n = len(selected)
    if repeats.repeats and (len(kept) < 2 or repeats.repeats > MAX_REPEAT_SHARE * n):
        raise MapError(
            f"{repeats.repeats} of the {n} selected keyframes of {dataset} repeat an earlier keyframe's image byte "
            f"for byte ({len(kept)} distinct): a frozen camera, not a place to map. Record the flight again, or "
            "select the frames where the camera ran (--sources, --split); `pose2rgbd dataset info` shows the frames"
        )
    if repeats.repeats:
        shown = ", ".join(repeats.examples[:3]) + (" ..." if repeats.repeats > 3 else "")
        log.warning(
            "%s: %d of %d selected keyframes repeat an earlier keyframe's image byte for byte (a camera re-sending "
            "a frame); left out of the map: %s", dataset, repeats.repeats, n, shown,
        )  # fmt: skip
    return kept


def _check_descriptors(glob: np.ndarray, rows: np.ndarray, kind: str) -> None:
    """Refuse place-recognition descriptors that are not unit vectors (all-zero: keyframe images too alike for
    the descriptor to tell apart, e.g. one image under many poses); such a map would find no place."""
    norm = np.linalg.norm(glob, axis=1)
    bad = np.flatnonzero(~(np.abs(norm - 1.0) < 1e-3))
    if len(bad):
        raise MapError(
            f"{len(bad)} of {len(rows)} keyframes (dataset rows {', '.join(map(str, rows[bad[:5]]))}"
            f"{' ...' if len(bad) > 5 else ''}) got a degenerate {kind} place-recognition descriptor (not a unit "
            "vector): their images are too alike to tell places apart (a frozen or covered camera?); select "
            "frames that show the place"
        )


@dataclass(frozen=True)
class _KeyframeJob:
    """What a worker process needs to describe keyframes (sent once per process)."""

    dataset: str
    metric: bool
    store_depth: bool
    cfg: MapBuildConfig
    T_world_cam: np.ndarray  # every dataset frame's pose
    K: np.ndarray


def _open_dataset(job: _KeyframeJob) -> tuple[_KeyframeJob, Dataset]:
    return job, Dataset(job.dataset)


_Keyframe = tuple[bytes, bytes | None, ImageFeatures, np.ndarray | None, np.ndarray | None, bytes]


def _keyframe(ctx: tuple[_KeyframeJob, Dataset], i: int) -> _Keyframe:
    """Read, extract, lift and encode dataset frame ``i`` (in a worker process of :func:`ordered_map`)."""
    job, ds = ctx
    cfg = job.cfg
    rgb = ds.read_rgb(i)
    seen = digest(rgb)  # a repeated keyframe (a frozen camera) is dropped by the caller
    depth = ds.read_depth(i) if job.metric else None
    mask = None if depth is None else np.isfinite(depth) & (depth > 0)
    feats = extract(rgb, cfg.features, mask)
    xyz = None if depth is None else lift_points(feats.xy, depth, job.T_world_cam[i], job.K, cfg.edge_ratio)
    enc_d = None if depth is None or not job.store_depth else encode_depth(depth)
    sample = None if depth is None else depth[::8, ::8]
    enc_rgb = encode_rgb(rgb, cfg.image_codec, cfg.image_quality) if cfg.keyframe_images else b""
    return enc_rgb, enc_d, feats, xyz, sample, seen


def build_map(
    dataset: str | Path,
    out: str | Path,
    cfg: MapBuildConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    rows: np.ndarray | None = None,
    calibrate: CalibrateStep | None = None,
) -> dict[str, Any]:
    """Build the place map of ``dataset`` into ``out`` (see the module docstring); returns the manifest.
    ``rows``: the keyframes' dataset rows, given by the caller instead of ``cfg.selection`` (the experiments).
    ``calibrate``: the self-calibration step (run when ``cfg.calibration.enabled``), given the map's keyframes
    before they are written; what it returns is the manifest's ``calibration``."""
    from pose2rgbd.geometry.coverage import DEFAULT_ROT_WEIGHT_M, median_depth_weight
    from pose2rgbd.output_guard import check_output, refuse_existing

    cfg = cfg or MapBuildConfig()
    t0 = time.monotonic()
    check_output(out, PLACE_MAP, inputs=[dataset], overwrite=overwrite)
    refuse_existing(out, overwrite=overwrite)
    ds = Dataset(dataset)
    if doubt := suspect_import_warning(ds):
        log.warning("%s", doubt)
    explicit = rows is not None
    rows = select_frames(ds, cfg.selection) if rows is None else np.unique(np.asarray(rows, np.int64))
    if explicit and (len(rows) < 2 or rows[0] < 0 or rows[-1] >= len(ds)):
        raise ConfigError(f"rows: {len(rows)} keyframe rows, within 0..{len(ds) - 1} needed (at least 2)")
    metric = ds.manifest.depth_kind == "metric"
    cam = ds.camera
    K = cam.K
    T_all = ds.frames.T_world_cam
    rot_w = DEFAULT_ROT_WEIGHT_M
    store_depth = metric and cfg.keyframe_images
    with MapWriter(out, has_depth=store_depth, image_codec=cfg.image_codec, image_quality=cfg.image_quality) as w:
        depth_samples: list[np.ndarray] = []
        raw_desc: list[int] = []
        points_kept: list[np.ndarray] = []  # the stored features' world points, for the self-calibration

        job = _KeyframeJob(str(Path(dataset).resolve()), metric, store_depth, cfg, T_all, K)
        workers = resolve_workers(cfg.workers)
        done = ordered_map(_keyframe, (int(i) for i in rows), workers=workers, setup=_open_dataset, setup_args=(job,))
        repeats = RepeatFilter(earlier=True)
        kept: list[int] = []
        with bar(total=len(rows), progress=progress, desc="map keyframes", unit="frame") as pbar:
            for row, (enc_rgb, enc_d, feats, xyz, sample, seen) in zip(rows, done):
                pbar.update(1)
                if repeats.drop_digest(seen, f"row {row}"):
                    continue
                kept.append(int(row))
                if xyz is not None:
                    keep = np.all(np.isfinite(xyz), axis=1)
                    w.add_encoded(enc_rgb, enc_d, feats.xy[keep], feats.desc[keep], xyz[keep])
                    points_kept.append(xyz[keep])
                    if len(depth_samples) < 32 and sample is not None:
                        depth_samples.append(sample)
                else:
                    nan = np.full((len(feats.xy), 3), np.nan, np.float32)
                    w.add_encoded(enc_rgb, None, feats.xy, feats.desc, nan)
                raw_desc.append(len(feats.xy))
        rows = _without_repeats(rows, np.asarray(kept, np.int64), repeats, ds.path)
        if depth_samples:
            rot_w = median_depth_weight(depth_samples)
        points = "depth"
        if not metric:
            from pose2rgbd.placemap.triangulate import triangulate

            offsets, xy, desc = w.read_features()
            xyz = triangulate(offsets, xy, desc, T_all[rows], K, neighbours=cfg.triangulate_neighbours,
                              rot_weight_m=rot_w, progress=progress, workers=workers)  # fmt: skip
            w.set_points(xyz)
            points = "triangulated"
            points_kept = [xyz]
        offsets, kp_xy, desc = w.read_features()
        _check_points(points_kept, int(offsets[-1]), len(rows), points, None if explicit else cfg.selection.stride, out)
        describer = GlobalDescriber.learn_vocabulary(desc, cfg.global_desc, seed=cfg.seed)
        if describer.kind == "vlad":
            glob = describer.describe_keyframes(
                lambda k: desc[offsets[k] : offsets[k + 1]], len(rows), cfg.global_desc.dims
            )
        else:
            glob = np.stack([describer.thumbnail(ds.read_rgb(int(i))) for i in rows])
        _check_descriptors(glob, rows, describer.kind)
        w.save_array("global", glob.astype(np.float32))
        w.save_npz("vocabulary", **describer.arrays())
        w.save_array("poses", T_all[rows])
        w.save_array("intrinsics", np.tile([cam.fx, cam.fy, cam.cx, cam.cy], (len(rows), 1)).astype(np.float64))
        w.save_array("frames", rows.astype(np.int64))
        w.save_array("stamp_ns", ds.frames.stamp_ns[rows])
        w.save_array("source_id", ds.frames.source_id[rows])
        calibration: dict[str, Any] | None = None
        if calibrate is not None and cfg.calibration.enabled:
            t_cal = time.monotonic()
            view = MapView(T_all[rows].astype(np.float64), np.tile([cam.fx, cam.fy, cam.cx, cam.cy], (len(rows), 1)),
                           (cam.height, cam.width), offsets, kp_xy, desc,
                           np.concatenate(points_kept) if points_kept else np.zeros((0, 3), np.float32),
                           glob.astype(np.float32), describer, float(rot_w), ds.manifest.world_frame,
                           triangulate_neighbours=cfg.triangulate_neighbours if points == "triangulated" else 0,
                           read_rgb=lambda k: ds.read_rgb(int(rows[k])), source_id=ds.frames.source_id[rows],
                           stamp_ns=ds.frames.stamp_ns[rows])  # fmt: skip
            calibration = {**calibrate(view, cfg.calibration, progress), "seconds": round(time.monotonic() - t_cal, 2)}
        from pose2rgbd import config as cfgmod

        manifest = {
            "dataset": dataset_entry(ds, dataset),
            "selection": {
                **cfgmod.to_dict(cfg.selection),
                "description": cfg.selection.describe(),
                "keyframes": len(rows),
            },
            "keyframes": len(rows),
            "repeats": {"dropped": repeats.repeats, "examples": repeats.examples},
            "image": {"width": cam.width, "height": cam.height, "codec": cfg.image_codec, "quality": cfg.image_quality},
            "depth": {"codec": "png16-log", "min_m": 0.05, "max_m": 5000.0} if store_depth else None,
            "keyframe_images": bool(cfg.keyframe_images),
            "points": points,
            "features": {
                **cfgmod.to_dict(cfg.features),
                "kind": "sift",
                "total": int(offsets[-1]),
                "extracted": int(sum(raw_desc)),
            },
            "global": {**cfgmod.to_dict(cfg.global_desc), "dims_stored": int(glob.shape[1])},
            "rot_weight_m": float(rot_w),
            "calibration": calibration,
            "build_s": round(time.monotonic() - t0, 2),
        }
        w.close(manifest, overwrite=overwrite)
    # the map as renamed into place reads back as written: every file's size and SHA-256 (pose2rgbd.placemap.verify)
    checked = verify_files(out, read_manifest(out), hashes=True)
    log.info("%s: %s", out, checked.line())
    return manifest
