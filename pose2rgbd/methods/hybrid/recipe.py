"""How to train a hybrid model: the recipe the generic driver (:func:`pose2rgbd.training.train.train`) calls.

It builds the dataset cache at the model's size, makes the split, fits the model's transforms on the training
frames (pose normalization, depth range) and gives the model its keyframes from the **training split only**:
the place map ``model.map`` (refused unless every keyframe is a training frame of this dataset), or else the
training frames (evenly subsampled in time to ``model.max_keyframes``) written as a keyframe map into the run
folder (``OUT/keyframes``: PNG at the model's size, no local features); validation and test frames never enter
it. The checkpoints name that map (:mod:`pose2rgbd.methods.hybrid.stored`). Training items carry
the frame's pose, source and position in time, so the model can leave the frame itself and its temporal
neighbours (``model.exclude_window``) out of the keyframes it warps.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.dataset.cache import TrainingCache
from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation.baseline import default_rot_weight
from pose2rgbd.methods.hybrid.config import HybridConfig
from pose2rgbd.methods.hybrid.net import HybridNet, build_model
from pose2rgbd.methods.hybrid.pretrained import init_fill
from pose2rgbd.models.normalization import ENCODING_FIX, DepthNormalizer, PoseNormalizer, warn_encoding_jumps
from pose2rgbd.training.train import RecipeContext, TrainingSetup, split_for

if TYPE_CHECKING:
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.keyframes import Keyframes

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


KEYFRAME_MAP = "keyframes"  # the run folder's keyframe map (pose2rgbd.training.run_folder.RUN_FILES)


def training_map(ds: Dataset, cache: TrainingCache, train: np.ndarray, path: Path) -> PlaceMap:
    """A place map given for training (``model.map``), checked: of this dataset, with depth, and every keyframe a
    training frame -- a map holding validation or test frames would let the model warp the frames it is scored on."""
    from pose2rgbd.placemap import MapError, PlaceMap

    try:
        pm = PlaceMap(path, cache_keyframes=0)
        pm.check_dataset(ds.fingerprint(), str(ds.path), path=ds.path, frames=len(ds))
    except MapError as e:
        raise ConfigError(f"model.map: {e}") from e
    if not pm.has_depth:
        raise ConfigError(f"model.map {path}: the hybrid warps keyframes with their metric depth; this map has none")
    outside = np.setdiff1d(np.asarray(pm.frames, np.int64), np.asarray(train, np.int64))
    if len(outside):
        raise ConfigError(
            f"model.map {path}: {len(outside)} of its {len(pm)} keyframes are not training frames of this run's split "
            f"(dataset rows {', '.join(map(str, outside[:5]))}{' ...' if len(outside) > 5 else ''}): the model would "
            "warp the validation and test frames it is scored on. Build the map from the training split "
            "(`pose2rgbd map build --split` as train.split, the same seed and fractions), or leave model.map empty "
            "(the run writes its own keyframe map)"
        )
    return pm


def run_keyframe_map(
    ds: Dataset, cache: TrainingCache, rows: np.ndarray, out: Path, rot_weight_m: float, progress: bool
) -> PlaceMap:
    """The run's keyframe map ``out``: the training cache's frames ``rows`` at the model's size (PNG: the model's
    own pixels), written once (:func:`~pose2rgbd.placemap.keyframe_map.write_keyframe_map`); a map already there with
    these keyframes of this dataset (a resumed run, another process of a distributed one) is used as it is."""
    from pose2rgbd.placemap import MapError, PlaceMap
    from pose2rgbd.placemap.build import dataset_entry
    from pose2rgbd.placemap.keyframe_map import write_keyframe_map

    assert cache.depth is not None
    if out.exists():
        try:
            pm = PlaceMap(out, cache_keyframes=0)
            same = pm.fingerprint == ds.fingerprint() and np.array_equal(pm.frames, rows)
            if same and pm.image_hw == (cache.camera.height, cache.camera.width):
                return pm
        except MapError as e:
            log.warning("%s: %s; writing the run's keyframe map again", out, e)
    depth = cache.depth
    write_keyframe_map(
        out, rgb=lambda k: np.asarray(cache.rgb[rows[k]]), depth=lambda k: np.asarray(depth[rows[k]], np.float32),
        T_world_cam=cache.T_world_cam[rows], camera=cache.camera, frames=rows, stamp_ns=cache.stamp_ns[rows],
        source_id=cache.source_id[rows], dataset=dataset_entry(ds, ds.path),
        selection=f"{len(rows)} training frames of the run (model.max_keyframes)", rot_weight_m=rot_weight_m,
        overwrite=True, progress=progress,
    )  # fmt: skip
    return PlaceMap(out, cache_keyframes=0)


def fill_store(model: HybridNet, cache: TrainingCache, train: np.ndarray) -> np.ndarray:
    """Give ``model`` the training frames ``train`` of ``cache`` (``model.max_keyframes`` of them, evenly spread)
    as keyframes held in memory (:class:`~pose2rgbd.placemap.keyframes.ArrayKeyframes` over the cache: saved, they are
    bundled in the checkpoint); returns the rows kept. Training writes them as a keyframe map instead."""
    from pose2rgbd.placemap.keyframes import ArrayKeyframes

    if cache.depth is None:
        raise ConfigError("the hybrid's keyframes need depth in the dataset")
    keep = store_indices(train, int(model.config.max_keyframes))
    rot_w = default_rot_weight(cache.depth, train)
    kf = ArrayKeyframes(cache.rgb, cache.depth, cache.T_world_cam, cache.camera, rows=keep, rot_weight_m=rot_w)
    use_training_keyframes(model, kf, cache, rot_w)
    return keep


def use_training_keyframes(
    model: HybridNet, keyframes: Keyframes, cache: TrainingCache, rot_weight_m: float | None = None
) -> None:
    """Give ``model`` ``keyframes`` (dataset rows ``keyframes.frames`` of ``cache``) for training: all of them
    kept decoded (as the training cache holds them), each with its source and position in time for the
    exclusion; the camera and ``rot_weight_m`` set when given (a new model)."""
    rows = np.asarray(keyframes.frames, np.int64)
    pos = sequence_positions(cache.source_id, cache.stamp_ns)
    model.use_keyframes(
        keyframes, camera=cache.camera if rot_weight_m is not None else None, rot_weight_m=rot_weight_m,
        times=(cache.source_id[rows], pos[rows]), cache_keyframes=len(keyframes),
    )  # fmt: skip


def training_geometry(model: HybridNet, keyframes: Keyframes, *, own_map: bool, progress: bool) -> None:
    """``model.geometry fused``: give ``model`` the fused surface of its keyframes -- of a place map, the one in
    ``<map>/fused/`` (fused there first for the run's own keyframe map, ``own_map``, as ``pose2rgbd map fuse`` does;
    a map given with ``model.map`` must have one); of keyframes in memory, fused in memory."""
    from pose2rgbd.errors import OutputExistsError
    from pose2rgbd.placemap import MapError, PlaceMap
    from pose2rgbd.placemap.fused import FusionConfig, fuse_map, load_fused
    from pose2rgbd.placemap.fused.tsdf import FUSED_DIR

    fi = model.fused_input
    assert fi is not None
    if not isinstance(keyframes, PlaceMap):
        fi.build(model, progress=progress)
        return
    path = keyframes.path
    try:
        if not (path / FUSED_DIR / "fused.json").is_file():
            if not own_map:
                raise ConfigError(
                    f"model.map {path}: model.geometry fused renders with the map's fused geometry, and it has none: "
                    f"make it with `pose2rgbd map fuse --map {path}`, or train with model.geometry warp"
                )
            with contextlib.suppress(OutputExistsError):  # another process of a distributed run fused it first
                fuse_map(path, FusionConfig(), progress=progress)
        geo = load_fused(path)
    except MapError as e:  # Open3D missing, or no keyframe with depth
        raise ConfigError(f"model.geometry fused: {e}; or train with model.geometry warp") from e
    fi.use(geo, source=path)
    m = geo.meta
    log.info("hybrid geometry fused: %d keyframes, %.3f m voxels, %d triangles, in %s", m["keyframes"],
             m["voxel_size_m"], m["triangles"], path / FUSED_DIR)  # fmt: skip


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
            f"{ds.manifest.depth_kind!r}): convert it again with metric depth (a video with GPS: `pose2rgbd convert "
            "video ... --depth selfsup+mvs`; posed images: `convert images ... --depth DIR`; docs/convert.md), or "
            "train a pose2rgbd model with --outputs rgb --preset base instead"
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
        if model.keyframes is None:
            raise ConfigError("the hybrid checkpoint to continue has no keyframes (it names no place map)")
        use_training_keyframes(model, model.keyframes.keyframes, cache)  # the map its checkpoint names
    else:
        model = build_model(mc, pose_normalizer=PoseNormalizer.fit(cache.T_world_cam[split.train], mc.encoding))
        if mc.decoder:  # without the decoder no network takes the pose
            warn_encoding_jumps(cache.T_world_cam[split.train], mc.encoding, ENCODING_FIX)
        dn = DepthNormalizer.fit(
            cache.depth, indices=split.train, max_m=mc.depth_max or None, max_percentile=mc.depth_max_percentile
        )
        model.set_depth_normalizer(dn)
        log.info("hybrid: the fill network starts from %s", init_fill(model, mc.fill_init))
        rot_w = default_rot_weight(cache.depth, split.train)
        if mc.map:
            keyframes: Keyframes = training_map(ds, cache, split.train, Path(mc.map).expanduser())
        else:
            if ctx.out_dir is None:
                raise ConfigError("hybrid training writes its keyframe map into the run folder: none was given")
            keep = store_indices(split.train, int(mc.max_keyframes))
            keyframes = run_keyframe_map(ds, cache, keep, ctx.out_dir / KEYFRAME_MAP, rot_w, ctx.progress)
        use_training_keyframes(model, keyframes, cache, rot_w)
        if model.fused_input is not None:  # model.geometry fused: the keyframes' depth in one surface, with the map
            training_geometry(model, keyframes, own_map=not mc.map, progress=ctx.progress)
        model.fit_hole_border()  # model.hole_border auto: the border holes' depth rule for this place
        log.info(
            "depth range [%.2f, %.2f]; keyframes: %d of %d training frames, from the place map %s",
            dn.min_m, dn.max_m, len(keyframes), len(split.train), getattr(keyframes, "path", ""),
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
