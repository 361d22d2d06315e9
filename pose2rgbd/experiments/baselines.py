"""The reprojection baseline on a run's test frames, for the experiment tables (beside nearest-pose retrieval).

For each test pose the ``k`` training frames nearest in the nearest-pose baseline's distance
(:class:`~pose2rgbd.geometry.coverage.PoseSet`, rotation weight :func:`~pose2rgbd.evaluation.baseline.
default_rot_weight`) are warped into it with their metric depth
(:func:`pose2rgbd.evaluation.reprojection.reproject_nearest`, z-buffered); holes are filled from the nearest frame
for the full-image MAE, and the hole fraction is reported. Depth answers are clipped to the model's range like the
nearest-pose baseline's, so the three rows (model, retrieval, reprojection) are scored alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError


def k_nearest(poses: Any, T_query: np.ndarray, k: int, *, chunk: int = 256) -> np.ndarray:
    """``(M, k)`` rows of the ``k`` reference poses of a :class:`PoseSet` nearest each query, nearest first."""
    T = np.asarray(T_query, dtype=np.float64).reshape(-1, 4, 4)
    k = min(int(k), len(poses))
    out = np.empty((len(T), k), np.int64)
    for s in range(0, len(T), chunk):
        d = poses.distances(T[s : s + chunk])
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.tile(np.arange(k), (len(d), 1))
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def reprojection_baseline(
    checkpoint: str | Path,
    dataset: str | Path,
    split: str,
    *,
    k: int = 3,
    max_frames: int = 0,
    cache_root: str | Path | None = None,
) -> dict[str, float]:
    """Metrics of the reprojection baseline on the test frames :func:`pose2rgbd.evaluation.evaluate` scores for
    ``checkpoint`` on ``split`` (same frames, same depth range); keys of
    :class:`~pose2rgbd.evaluation.metrics.MetricAccumulator` plus ``hole_fraction`` and ``k``."""
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.evaluation.baseline import default_rot_weight
    from pose2rgbd.evaluation.evaluate import _split
    from pose2rgbd.evaluation.metrics import MetricAccumulator
    from pose2rgbd.evaluation.plots import evenly_spaced
    from pose2rgbd.evaluation.reprojection import reproject_nearest
    from pose2rgbd.geometry.coverage import PoseSet
    from pose2rgbd.models import PoseToImage, load_checkpoint

    if k < 1:
        raise ConfigError(f"reprojection baseline: k must be >= 1, got {k}")
    ds = Dataset(dataset)
    loaded = load_checkpoint(checkpoint)
    model = loaded.model
    if not isinstance(model, PoseToImage):
        raise ConfigError(f"{checkpoint}: the reprojection baseline scores a pose -> image model, not {loaded.kind!r}")
    if ds.manifest.depth_kind == "unscaled" or not ds.has_depth:
        raise ConfigError(f"{ds.path}: the reprojection baseline needs metric depth")
    cache = build_cache(ds, model.image_hw[0], cache_root=cache_root, progress=False)
    if cache.depth is None:
        raise ConfigError(f"{ds.path}: the reprojection baseline needs depth")
    sp = _split(cache, split, loaded.train_config)
    test = sp.val
    if max_frames and len(test) > max_frames:
        test = test[evenly_spaced(len(test), max_frames)]
    if len(sp.train) == 0 or len(test) == 0:
        raise ConfigError(f"{ds.path}: the {split} split needs training and test frames for the reprojection baseline")
    lo, hi = model.depth_range_m if model.depth_range_m is not None else (0.0, np.inf)
    poses = PoseSet(cache.T_world_cam[sp.train], rot_weight_m=default_rot_weight(cache.depth, sp.train))
    near = sp.train[k_nearest(poses, cache.T_world_cam[test], k)]
    acc = MetricAccumulator(hi)
    holes = []
    for qi, src in zip(test, near):
        r = reproject_nearest(
            np.asarray(cache.rgb[src]),
            np.asarray(cache.depth[src]),
            cache.T_world_cam[src],
            cache.camera,
            cache.T_world_cam[qi],
            fill="nearest",
        )
        holes.append(r.hole_fraction)
        d = np.where(np.isnan(r.depth), np.float32(np.nan), np.clip(r.depth, lo, hi)).astype(np.float32)
        acc.add(
            r.rgb[None] if model.has_rgb else None,
            np.asarray(cache.rgb[[qi]]),
            d[None] if model.has_depth else None,
            np.asarray(cache.depth[[qi]]),
        )
    out = acc.result()
    out["hole_fraction"] = float(np.mean(holes))
    out["k"] = float(min(k, len(sp.train)))
    return out
