"""How to train self-supervised depth on one flight: the recipe the generic driver
(:func:`pose2rgbd.training.train.train`) calls.

It reads every frame once at the model's size, refuses a static video, makes the split (the trainer's), builds
``(previous, target, next)`` triplets within each split and, for ``pose_source: essential``, the OpenCV relative
poses of every pair; for the velocity loss the GPS distances of every pair from the dataset poses.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from pose2rgbd.dataset.format import Dataset
from pose2rgbd.dataset.sequences import (
    SequenceDataset,
    SequenceFrames,
    auto_stride,
    load_sequence_frames,
    triplet_centres,
)
from pose2rgbd.errors import ConfigError, DatasetError
from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
from pose2rgbd.methods.selfsup_depth.essential import essential_poses
from pose2rgbd.methods.selfsup_depth.net import SelfSupDepthNet, build_model
from pose2rgbd.sync.gps import gps_pair_distances
from pose2rgbd.training.train import RecipeContext, TrainingSetup, split_for

log = logging.getLogger(__name__)
TARGET_UNITS = 10.0  # pose_source metric: the median scene depth in network units (metres / metric_unit_m)

STATIC_GREY_LEVELS = 1.0  # mean absolute difference between neighbours (0-255) below which a pair is static
MIN_MOVING_SHARE = 0.2


def check_motion(frames: SequenceFrames, stride: int, where: str) -> float:
    """The share of neighbouring pairs that differ visibly; refuses a static video (DatasetError)."""
    grey = frames.rgb.mean(axis=3, dtype=np.float32)
    i = triplet_centres(frames.source_id, stride)
    if len(i) == 0:
        raise DatasetError(f"{where}: too few frames: need at least 3 time-ordered frames per source "
                           f"({2 * stride + 1} with model.stride {stride})")  # fmt: skip
    diff = np.abs(grey[i + stride] - grey[i]).mean(axis=(1, 2))
    share = float(np.mean(diff > STATIC_GREY_LEVELS))
    if share < MIN_MOVING_SHARE:
        raise DatasetError(
            f"{where}: the video is static ({share:.0%} of neighbouring frames differ by more than "
            f"{STATIC_GREY_LEVELS} grey level): self-supervised depth needs camera motion. Use a part of the flight "
            "where the camera moves, or a larger model.stride"
        )
    return share


def has_gps_poses(ds: Dataset) -> bool:
    """Dataset poses that come with a GPS position (lat / lon) on every frame."""
    return bool(np.all(np.isfinite(ds.frames.latlonalt[:, :2])))


def resolve_stride(frames: SequenceFrames, mc: SelfSupDepthConfig) -> int:
    """``mc.stride``, or for 0 the automatic stride (:func:`pose2rgbd.dataset.sequences.auto_stride`)."""
    if mc.stride > 0:
        return mc.stride
    stride, motion = auto_stride(frames, mc.target_motion_px, mc.max_stride)
    short = motion * stride < 0.5 * mc.target_motion_px  # the largest stride allowed does not come near the target
    (log.warning if short else log.info)(
        "model.stride 0 (automatic): median image motion %.2f px per frame at %dx%d -> stride %d (%.1f px between "
        "neighbours)%s", motion, mc.width, mc.height, stride, motion * stride,
        f", far below the {mc.target_motion_px:g} px the network needs for parallax (model.target_motion_px): it may "
        f"learn a flat, far depth. The median is over the whole image, so a large sky or water keeps it low while "
        f"the ground moves more; raise model.max_stride ({mc.max_stride} now) or set model.stride (`pose2rgbd depth "
        f"train --model.max_stride N` or `--model.stride N`; `convert video --depth-stride N`), and check the depth "
        f"figures of the report" if short else "",
    )  # fmt: skip
    return stride


def essential_for(ds: Dataset, mc: SelfSupDepthConfig, centres: np.ndarray, progress: bool, stride: int) -> dict:
    """Essential-matrix poses of every (target, source) pair at ``mc.essential_width`` (aspect kept)."""
    cam = ds.camera
    w = min(mc.essential_width, cam.width)
    h = max(8, round(cam.height * w / cam.width))
    scaled = cam.scaled(w, h)
    need = sorted({int(x) for c in centres for x in (c - stride, c, c + stride)})
    gray = np.zeros((len(ds), h, w), np.uint8)
    for i in need:
        g = cv2.cvtColor(ds.read_rgb(i), cv2.COLOR_RGB2GRAY)
        gray[i] = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA) if g.shape != (h, w) else g
    pairs = [(int(c), int(c + d)) for c in centres for d in (-stride, stride)]
    ess = essential_poses(gray, scaled.K, pairs, progress=progress)
    log.info("essential poses: %d of %d pairs usable", len(ess), len(pairs))
    return ess


def metric_inputs(
    ds: Dataset, mc: SelfSupDepthConfig, frames: SequenceFrames, centres: np.ndarray, stride: int, progress: bool
) -> tuple[dict, dict, float]:
    """pose_source metric: ``(fixed poses, sparse depths, metres per unit)`` from the metric poses
    (:mod:`pose2rgbd.methods.selfsup_depth.metric`; ``mc.metric_poses`` or computed now). Metres per unit 0 when no
    frame has a metric pose (every source fell back to the pose network: the depth is then unscaled)."""
    from pose2rgbd.methods.selfsup_depth.metric import (
        MetricPoses,
        auto_unit,
        compute_metric_poses,
        training_pairs,
    )

    if mc.metric_poses:
        mp = MetricPoses.load(mc.metric_poses)
        if len(mp.label) != len(ds):
            raise ConfigError(f"{mc.metric_poses}: metric poses of {len(mp.label)} frames, the dataset {ds.path} has "
                              f"{len(ds)}: compute them for this dataset (empty model.metric_poses)")  # fmt: skip
    else:
        if not has_gps_poses(ds):
            raise ConfigError(f"{ds.path}: model.pose_source metric needs GPS poses (lat / lon on every frame); "
                              "use pose_source posenet for a video without GPS")  # fmt: skip
        mp = compute_metric_poses(ds, progress=progress)
    if mp.n_metric == 0:
        log.warning("no frame has a metric pose: the pose network makes every pose (depth unscaled; GPS scale "
                    "fitted at export)")  # fmt: skip
        return {}, {}, 0.0
    unit = mc.metric_unit_m or auto_unit(mp, TARGET_UNITS)
    fixed, sparse = training_pairs(mp, centres, stride, frames.camera.K, (mc.width, mc.height), unit)
    log.info("metric poses: %d of %d frames; %d of %d frame pairs with fixed poses, %d frames with sparse depth; "
             "%.4g m per network unit", mp.n_metric, len(ds), len(fixed), 2 * len(centres), len(sparse),
             unit)  # fmt: skip
    return fixed, sparse, unit


def prepare(ctx: RecipeContext) -> TrainingSetup:
    ds, mc, tc = ctx.dataset, ctx.model_config, ctx.train_config
    if not isinstance(mc, SelfSupDepthConfig):
        raise ConfigError(f"selfsup-depth training needs a SelfSupDepthConfig, got {type(mc).__name__}")
    frames = load_sequence_frames(ds, mc.width, mc.height, progress=ctx.progress)
    stride = resolve_stride(frames, mc)
    check_motion(frames, stride, str(ds.path))
    split = split_for(ds, tc)
    centres = triplet_centres(frames.source_id, stride)
    tr = np.intersect1d(centres, split.train)
    va = np.intersect1d(centres, split.val)
    if len(tr) == 0:
        raise DatasetError(f"{ds.path}: too few frames in the training split for (previous, target, next) triplets")
    if len(tr) < len(split.train) or len(va) < len(split.val):
        log.info("%d of %d training and %d of %d validation frames are the centre of a (previous, target, next) "
                 "triplet at stride %d within their source; the rest serve only as a triplet's neighbours",
                 len(tr), len(split.train), len(va), len(split.val), stride)  # fmt: skip
    ess = (
        essential_for(ds, mc, np.concatenate([tr, va]), ctx.progress, stride) if mc.pose_source == "essential" else None
    )
    gps = None
    if mc.velocity_weight > 0:
        if not has_gps_poses(ds):
            raise ConfigError(
                f"{ds.path}: model.velocity_weight > 0 needs GPS-derived poses (lat / lon on every frame); "
                "set it to 0 for a video without GPS"
            )
        n = len(ds)
        gps = np.full((n, 2), np.nan)
        for j, d in enumerate((-stride, stride)):
            idx = np.arange(n)
            src = np.clip(idx + d, 0, n - 1)
            gps[:, j] = gps_pair_distances(ds.frames.translation, ds.frames.stamp_ns, np.stack([idx, src], 1),
                                           mc.gps_window_s)  # fmt: skip
    fixed = sparse = None
    unit = 0.0
    if mc.pose_source == "metric":
        fixed, sparse, unit = metric_inputs(ds, mc, frames, np.concatenate([tr, va]), stride, ctx.progress)
    if ctx.model is not None:
        if not isinstance(ctx.model, SelfSupDepthNet):
            raise ConfigError(f"selfsup-depth training got a {type(ctx.model).__name__} model to continue")
        model = ctx.model
    else:
        model = build_model(mc)
        if unit > 0:
            model.init_depth(TARGET_UNITS)
    model.train_stride.fill_(stride)  # type: ignore[operator]
    model.metres_per_unit.fill_(unit)  # type: ignore[operator]
    kw = {"essential": ess, "gps_dist": gps, "fixed": fixed, "sparse": sparse, "sparse_points": mc.sparse_points}
    train_set = SequenceDataset(frames, tr, stride, **kw)  # type: ignore[arg-type]
    val_set = SequenceDataset(frames, va, stride, **kw) if len(va) else None  # type: ignore[arg-type]
    return TrainingSetup(
        model=model,
        train_set=train_set,
        val_set=val_set,
        split=split,
        camera=frames.camera,
        description=f"selfsup/{mc.pose_source}, stride {stride}",
    )
