"""Fused-geometry baseline: the training frames' depth fused into one surface, ray-cast at the test pose, coloured
from the training frames that see each point (:mod:`pose2rgbd.map.fused`; docs/place-map.md, "Fused geometry").

The training-free answer a reconstruction pipeline gives: where the reprojection baseline warps three frames' own
depth (their holes and noise included), this one renders one consistent surface made from all of them. Holes (no
surface, or no training frame sees the point) are filled from the nearest training frame, as the reprojection
baseline fills its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pose2rgbd.dataset.cache import TrainingCache
from pose2rgbd.evaluation.baseline import NearestPoseBaseline
from pose2rgbd.evaluation.config import EvaluateConfig
from pose2rgbd.evaluation.metrics import MetricAccumulator
from pose2rgbd.map.format import MapError
from pose2rgbd.map.fused import ArrayKeyframes, FusionConfig, fuse_keyframes
from pose2rgbd.map.fused.render import FusedRenderer


def fused_renderer(
    cache: TrainingCache, train: np.ndarray, *, rot_weight_m: float, neighbours: int = 4, progress: bool = False
) -> FusedRenderer:
    """Fuse the training frames ``train`` of ``cache`` (at its size) and return the renderer over them."""
    if cache.depth is None:
        raise ValueError("the fused-geometry baseline needs depth in the dataset")
    kf = ArrayKeyframes(cache.rgb, cache.depth, cache.T_world_cam, cache.camera, rows=np.sort(train),
                        rot_weight_m=rot_weight_m)  # fmt: skip
    return FusedRenderer(kf, fuse_keyframes(kf, FusionConfig(), progress=progress), neighbours=neighbours)


def fused_answers(
    renderer: FusedRenderer, cache: TrainingCache, idx: np.ndarray, depth_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """RGB ``(B, S, S, 3)``, depth ``(B, S, S)`` (clipped to the model's range like the model's answers, sky kept)
    for the cache frames ``idx``, and each frame's hole fraction before the fill."""
    rgbs, depths, holes = [], [], []
    for q in idx:
        v = renderer.render(cache.T_world_cam[q], cache.camera, fill="nearest")
        rgbs.append(v.rgb)
        depths.append(np.where(np.isnan(v.depth), np.float32(np.nan), np.clip(v.depth, *depth_range)))
        holes.append(v.hole_fraction)
    return np.stack(rgbs), np.stack(depths).astype(np.float32), holes


def fused_baseline(
    cfg: EvaluateConfig, cache: TrainingCache, train: np.ndarray, nn_base: NearestPoseBaseline | None, max_depth: float
) -> tuple[Any, MetricAccumulator | None, list[float], str]:
    """The fused-geometry baseline's renderer and accumulator (None, None when it does not run, with why)."""
    if not cfg.fused_baseline or nn_base is None or cache.depth is None:
        return None, None, [], ""
    try:
        r = fused_renderer(cache, train, rot_weight_m=nn_base.rot_weight_m, progress=cfg.progress)
    except MapError as e:  # Open3D missing, or no training depth to fuse: say so beside the table
        return None, None, [], f"no fused-geometry baseline: {e}"
    except (RuntimeError, MemoryError) as e:  # Open3D failing on the fusion, or out of memory: a note, not an abort
        why = f"fusing the training frames failed ({type(e).__name__}: {e})"
        return None, None, [], f"no fused-geometry baseline: {why}"
    return r, MetricAccumulator(max_depth), [], ""


def describe_fused(r: FusedRenderer, hole_fraction: float) -> str:
    """The baseline's line in metrics.md."""
    m = r.geo.meta
    return (
        f"the {m['keyframes']} training frames' depth fused into one surface (TSDF, {100 * m['voxel_size_m']:.1f} cm "
        f"voxels), ray-cast at the test pose, coloured from the {r.neighbours} nearest training frames that see each "
        f"point (lumigraph weights, exposure-compensated); holes ({100 * hole_fraction:.1f} % of pixels) filled from "
        "the nearest frame"
    )
