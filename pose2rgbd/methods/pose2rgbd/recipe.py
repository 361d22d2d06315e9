"""How to train a Pose2RGBD model: the recipe the generic driver (:func:`pose2rgbd.training.train.train`) calls.

It builds the dataset cache at the model's size, makes the split, fits the model's transforms on the training
frames (pose normalization; depth range from ``train.depth_max`` / ``train.depth_max_percentile``) and wraps the
frames as :class:`~pose2rgbd.dataset.torch_dataset.PoseRGBDDataset` (poses normalized by the model).
"""

from __future__ import annotations

import logging

from pose2rgbd.dataset import build_cache
from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.pose2rgbd.config import Pose2RGBDConfig
from pose2rgbd.methods.pose2rgbd.net import Pose2RGBDNet, build_model
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer
from pose2rgbd.training.train import RecipeContext, TrainingSetup, split_for

log = logging.getLogger(__name__)


def prepare(ctx: RecipeContext) -> TrainingSetup:
    """The model (transforms fitted, or those of ``ctx.model``) and its train / validation sets."""
    ds, mc, tc = ctx.dataset, ctx.model_config, ctx.train_config
    if not isinstance(mc, Pose2RGBDConfig):
        raise ConfigError(f"pose2rgbd training needs a Pose2RGBDConfig, got {type(mc).__name__}")
    if mc.has_depth and not ds.has_depth:
        raise ConfigError(f"{ds.path}: the dataset has no depth; train with outputs 'rgb'")
    if ds.manifest.depth_kind == "unscaled":
        log.info("depth is unscaled: depth errors are in dataset units, not metres")
    cache = build_cache(ds, mc.size, cache_root=ctx.cache_root, progress=ctx.progress)
    split = split_for(cache, tc.split, tc.seed, tc.val_fraction)
    if ctx.model is not None:
        if not isinstance(ctx.model, Pose2RGBDNet):
            raise ConfigError(f"pose2rgbd training got a {type(ctx.model).__name__} model to continue")
        model = ctx.model
    else:
        model = build_model(mc, pose_normalizer=PoseNormalizer.fit(cache.T_world_cam[split.train], mc.encoding))
        if ds.has_depth and cache.depth is not None:
            dn = DepthNormalizer.fit(
                cache.depth,
                indices=split.train,
                max_m=tc.depth_max or None,
                max_percentile=tc.depth_max_percentile,
            )
            model.set_depth_normalizer(dn)
            log.info("depth range [%.2f, %.2f] (beyond: clipped to the maximum, like sky)", dn.min_m, dn.max_m)
    train_set = PoseRGBDDataset(cache, split.train, model)
    val_set = PoseRGBDDataset(cache, split.val, model) if len(split.val) else None
    return TrainingSetup(
        model=model,
        train_set=train_set,
        val_set=val_set,
        split=split,
        camera=cache.camera,
        description=f"{mc.preset}/{mc.outputs}",
    )
