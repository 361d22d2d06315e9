"""How to train a Pose2RGBD model: the recipe the generic driver (:func:`pose2rgbd.training.train.train`) calls.

It builds the dataset cache at the model's size, makes the split, fits the model's transforms on the training
frames (pose normalization; depth range from ``model.depth_max`` / ``model.depth_max_percentile``) and wraps the
frames as :class:`~pose2rgbd.dataset.torch_dataset.PoseRGBDDataset` (poses normalized by the model).

:func:`train_quick` is a few-minute Pose2RGBD run (:func:`pose2rgbd.training.quick.train_quick` for any kind).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
from pose2rgbd.errors import ConfigError
from pose2rgbd.methods.pose2rgbd.config import Pose2RGBDConfig
from pose2rgbd.methods.pose2rgbd.net import Pose2RGBDNet, build_model
from pose2rgbd.models.normalization import ENCODING_FIX, DepthNormalizer, PoseNormalizer, warn_encoding_jumps
from pose2rgbd.training.train import RecipeContext, TrainingSetup, split_for

log = logging.getLogger(__name__)


def fit_to_dataset(
    mc: Pose2RGBDConfig, dataset: str | Path | Dataset, given: dict[str, Any]
) -> tuple[Pose2RGBDConfig, str]:
    """A dataset without depth (a video, posed photos): an RGB-only model (``outputs rgb``, ``preset base``) when
    the user chose neither setting (``given``), with a note; else one error that names every setting needed, not
    one at a time. The family's ``fit_dataset`` policy
    (:meth:`pose2rgbd.models.registry.ModelFamily.fit_to_dataset`); a path is opened only when the model predicts
    depth."""
    if not mc.has_depth:
        return mc, ""
    ds = Dataset(dataset) if isinstance(dataset, (str, Path)) else dataset
    if ds.has_depth:
        return mc, ""
    chosen = {k: given[k] for k in ("outputs", "preset") if k in given}
    kind = ds.manifest.depth_kind
    if not chosen:
        note = (f"{ds.path} has no depth (depth kind {kind!r}): training an RGB-only model (--outputs rgb --preset "
                "base; give them to silence this note)")  # fmt: skip
        return mc.with_(outputs="rgb", preset="base"), note
    shown = ", ".join(f"{k} {v!r}" for k, v in chosen.items())
    raise ConfigError(
        f"{ds.path} has no depth (depth kind {kind!r}), but the model was set to predict it ({shown}): train an "
        "RGB-only model with --outputs rgb --preset base (slice presets predict depth slices)"
    )


class PosedRGBDDataset(PoseRGBDDataset):
    """:class:`PoseRGBDDataset` items plus ``"T_world_cam"`` ``(4, 4)`` float64, the pose the geometry-aware
    training terms perturb and warp with."""

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | int]:
        item = super().__getitem__(k)
        item["T_world_cam"] = torch.from_numpy(np.asarray(self.cache.T_world_cam[self.indices[k]], dtype=np.float64))
        return item


def prepare(ctx: RecipeContext) -> TrainingSetup:
    """The model (transforms fitted, or those of ``ctx.model``) and its train / validation sets."""
    ds, mc, tc = ctx.dataset, ctx.model_config, ctx.train_config
    if not isinstance(mc, Pose2RGBDConfig):
        raise ConfigError(f"pose2rgbd training needs a Pose2RGBDConfig, got {type(mc).__name__}")
    if mc.has_depth and not ds.has_depth:
        raise ConfigError(
            f"{ds.path}: the dataset has no depth (depth kind {ds.manifest.depth_kind!r}): train an RGB-only model "
            f"with --outputs rgb --preset base (model.outputs rgb, model.preset base; slice presets predict depth)"
        )
    if ds.manifest.depth_kind == "unscaled":
        log.info("depth is unscaled: depth errors are in dataset units, not metres")
    cache = build_cache(ds, mc.size, cache_root=ctx.cache_root, progress=ctx.progress, deep=ctx.cache_deep)
    split = split_for(cache, tc)
    if ctx.model is not None:
        if not isinstance(ctx.model, Pose2RGBDNet):
            raise ConfigError(f"pose2rgbd training got a {type(ctx.model).__name__} model to continue")
        model = ctx.model
    else:
        model = build_model(mc, pose_normalizer=PoseNormalizer.fit(cache.T_world_cam[split.train], mc.encoding))
        warn_encoding_jumps(cache.T_world_cam[split.train], mc.encoding, ENCODING_FIX)
        if ds.has_depth and cache.depth is not None:
            dn = DepthNormalizer.fit(
                cache.depth,
                indices=split.train,
                max_m=mc.depth_max or None,
                max_percentile=mc.depth_max_percentile,
            )
            model.set_depth_normalizer(dn)
            log.info("depth range [%.2f, %.2f] (beyond: clipped to the maximum, like sky)", dn.min_m, dn.max_m)
    data_cls: type[PoseRGBDDataset] = PoseRGBDDataset
    if mc.uses_geometry:
        if not (ds.has_depth and cache.depth is not None):
            raise ConfigError(
                f"{ds.path}: geometry-aware training (model.consistency_* / pose_augment_*) needs depth data"
            )
        if ds.manifest.depth_kind == "unscaled":
            raise ConfigError(
                f"{ds.path}: depth is unscaled; geometry-aware training warps with metric depth -- set "
                "model.consistency_weight, consistency_real_weight and pose_augment_weight to 0"
            )
        model.set_training_camera(cache.camera)
        data_cls = PosedRGBDDataset
    train_set = data_cls(cache, split.train, model)
    val_set = data_cls(cache, split.val, model) if len(split.val) else None
    return TrainingSetup(
        model=model,
        train_set=train_set,
        val_set=val_set,
        split=split,
        camera=cache.camera,
        description=f"{mc.preset}/{mc.outputs}",
    )


def train_quick(
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    size: int = 64,
    minutes: float = 2.5,
    preset: str = "slice10",
    outputs: str = "rgbd",
    encoding: str = "6dof-quat",
    split: str = "route",
    batch_size: int = 16,
    seed: int = 0,
    lr: float | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train a small Pose2RGBD model for about ``minutes`` of wall time (the demo); returns the checkpoint path.
    ``overwrite``: replace an earlier run in ``out_dir`` (:func:`pose2rgbd.training.train`).

    The epoch count is an upper bound (200); the time budget ends training, with a validation and a
    checkpoint. ``split='route'`` holds out the non-survey routes so the fly-through shows unseen poses.
    """
    from pose2rgbd.training.quick import train_quick as train_any

    return train_any(
        dataset_dir, out_dir, kind="pose2rgbd", preset=preset, size=size, minutes=minutes, outputs=outputs,
        encoding=encoding, split=split, batch_size=batch_size, seed=seed, lr=lr, progress=progress,
        overwrite=overwrite,
    )  # fmt: skip
