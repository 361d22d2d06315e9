"""How to train a hybrid model: the recipe the generic driver (:func:`pose2rgbd.training.train.train`) calls.

It builds the dataset cache at the model's size, makes the split, fits the model's transforms on the training
frames (pose normalization, depth range) and fills the keyframe store from the **training split only** (evenly
subsampled in time to ``model.max_keyframes``); validation and test frames never enter it. Training items carry
the frame's pose, source and position in time, so the model can leave the frame itself and its temporal
neighbours (``model.exclude_window``) out of the keyframes it warps.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pose2rgbd.dataset import build_cache
from pose2rgbd.dataset.cache import TrainingCache
from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation.baseline import default_rot_weight
from pose2rgbd.methods.hybrid.config import HybridConfig
from pose2rgbd.methods.hybrid.net import HybridNet, build_model
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer
from pose2rgbd.training.train import RecipeContext, TrainingSetup, split_for

log = logging.getLogger(__name__)
HIGH_LR = 3e-3  # above this the hybrid's fill network did not learn (lr 0.01: flat validation over 1,000 steps)


def sequence_positions(source_id: np.ndarray, stamp_ns: np.ndarray) -> np.ndarray:
    """``(N,)`` int64: each frame's position in time order within its source (0, 1, 2, ...)."""
    sid = np.asarray(source_id, dtype=np.int64)
    order = np.lexsort((np.asarray(stamp_ns), sid))
    pos = np.empty(len(sid), np.int64)
    for s in np.unique(sid):
        m = order[sid[order] == s]
        pos[m] = np.arange(m.size)
    return pos


def store_indices(train: np.ndarray, max_keyframes: int) -> np.ndarray:
    """The training frames the keyframe store keeps: all of them, or ``max_keyframes`` evenly spread."""
    t = np.sort(np.asarray(train, dtype=np.int64))
    if len(t) <= max_keyframes:
        return t
    return np.unique(t[np.linspace(0, len(t) - 1, int(max_keyframes)).round().astype(np.int64)])


def fill_store(model: HybridNet, cache: TrainingCache, train: np.ndarray) -> np.ndarray:
    """Fill ``model``'s keyframe store from the training frames ``train`` of ``cache``; returns the rows kept."""
    if cache.depth is None:
        raise ConfigError("the hybrid keyframe store needs depth in the dataset")
    keep = store_indices(train, int(model.config.max_keyframes))
    pos = sequence_positions(cache.source_id, cache.stamp_ns)
    model.set_keyframes(
        np.asarray(cache.rgb[keep]),
        np.asarray(cache.depth[keep]),
        cache.T_world_cam[keep],
        cache.camera,
        source_id=cache.source_id[keep],
        seq_pos=pos[keep],
        index=keep,
        rot_weight_m=default_rot_weight(cache.depth, train),
    )
    return keep


class HybridDataset(PoseRGBDDataset):
    """:class:`PoseRGBDDataset` items plus ``"T_world_cam"`` ``(4, 4)`` float64, ``"source_id"`` and
    ``"seq_pos"`` (position in time within the source), which the training exclusion needs."""

    def __init__(self, cache: TrainingCache, indices: np.ndarray, model: HybridNet) -> None:
        super().__init__(cache, indices, model)
        self.seq_pos = sequence_positions(cache.source_id, cache.stamp_ns)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | int]:
        item = super().__getitem__(k)
        i = int(self.indices[k])
        item["T_world_cam"] = torch.from_numpy(np.asarray(self.cache.T_world_cam[i], dtype=np.float64))
        item["source_id"] = int(self.cache.source_id[i])
        item["seq_pos"] = int(self.seq_pos[i])
        return item


def prepare(ctx: RecipeContext) -> TrainingSetup:
    """The model (transforms fitted and keyframe store filled, or those of ``ctx.model``) and its data."""
    ds, mc, tc = ctx.dataset, ctx.model_config, ctx.train_config
    if not isinstance(mc, HybridConfig):
        raise ConfigError(f"hybrid training needs a HybridConfig, got {type(mc).__name__}")
    if not ds.has_depth:
        raise ConfigError(
            f"{ds.path}: the hybrid model warps training frames with their depth; this dataset has none (depth kind "
            f"{ds.manifest.depth_kind!r}): train a pose2rgbd model with --outputs rgb --preset base instead"
        )
    if ds.manifest.depth_kind == "unscaled":
        raise ConfigError(
            f"{ds.path}: depth is unscaled; the hybrid model warps with metric depth (scale it first, e.g. "
            "`pose2rgbd convert` with GPS scale, or train a pose2rgbd model)"
        )
    lr = tc.groups.get("model", {}).get("lr", tc.lr)
    if lr > HIGH_LR:
        log.warning(
            "hybrid: learning rate %g; the hybrid learns at 1e-3 (measured on the demo world: at 0.01 its held-out "
            "RGB does not move in 1,000 steps, docs/results.md); pass --lr 1e-3 unless you mean it", lr
        )  # fmt: skip
    cache = build_cache(ds, mc.size, cache_root=ctx.cache_root, progress=ctx.progress, deep=ctx.cache_deep)
    if cache.depth is None:
        raise ConfigError(f"{ds.path}: the training cache has no depth")
    split = split_for(cache, tc)
    if ctx.model is not None:
        if not isinstance(ctx.model, HybridNet):
            raise ConfigError(f"hybrid training got a {type(ctx.model).__name__} model to continue")
        model = ctx.model
    else:
        model = build_model(mc, pose_normalizer=PoseNormalizer.fit(cache.T_world_cam[split.train], mc.encoding))
        dn = DepthNormalizer.fit(
            cache.depth, indices=split.train, max_m=mc.depth_max or None, max_percentile=mc.depth_max_percentile
        )
        model.set_depth_normalizer(dn)
        keep = fill_store(model, cache, split.train)
        if model.fused_input is not None:  # model.geometry fused: the store's depth in one surface, once
            model.fused_input.build(model, progress=ctx.progress)
        mb = (model.kf_rgb.numel() + 2 * model.kf_depth.numel()) / 2**20
        log.info(
            "depth range [%.2f, %.2f]; keyframe store: %d of %d training frames (%.0f MiB in each checkpoint)",
            dn.min_m, dn.max_m, len(keep), len(split.train), mb,
        )  # fmt: skip
    train_set = HybridDataset(cache, split.train, model)
    val_set = HybridDataset(cache, split.val, model) if len(split.val) else None
    return TrainingSetup(
        model=model,
        train_set=train_set,
        val_set=val_set,
        split=split,
        camera=cache.camera,
        description=f"{mc.preset}/k{mc.neighbours}",
    )
