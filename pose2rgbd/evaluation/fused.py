"""Fused-geometry baseline: the training frames' depth fused into one surface, ray-cast at the test pose, coloured
from the training frames that see each point (:mod:`pose2rgbd.placemap.fused`; docs/place-map.md, "Fused geometry").

The training-free answer a reconstruction pipeline gives: where the reprojection baseline warps three frames' own
depth (their holes and noise included), this one renders one consistent surface made from all of them. Holes (no
surface, or no training frame sees the point) are filled from the nearest training frame, as the reprojection
baseline fills its own.
"""

from __future__ import annotations

import numpy as np

from pose2rgbd.evaluation.config import EvaluateConfig
from pose2rgbd.evaluation.metrics import MetricAccumulator
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.placemap.format import MapError
from pose2rgbd.placemap.fused import FusionConfig, fuse_keyframes, voxel_words
from pose2rgbd.placemap.fused.render import FusedRenderer
from pose2rgbd.placemap.keyframes import Keyframes


def fused_renderer(keyframes: Keyframes, *, neighbours: int = 4, progress: bool = False) -> FusedRenderer:
    """Fuse the training keyframes (at their size) and return the renderer over them."""
    return FusedRenderer(keyframes, fuse_keyframes(keyframes, FusionConfig(), progress=progress), neighbours=neighbours)


def fused_answers(
    renderer: FusedRenderer, T_world_cam: np.ndarray, camera: PinholeCamera, depth_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """RGB ``(B, H, W, 3)``, depth ``(B, H, W)`` (clipped to the model's range like the model's answers, sky kept)
    for the query poses ``(B, 4, 4)`` seen through ``camera``, and each pose's hole fraction before the fill."""
    rgbs, depths, holes = [], [], []
    for T in T_world_cam:
        v = renderer.render(T, camera, fill="nearest")
        rgbs.append(v.rgb)
        depths.append(np.where(np.isnan(v.depth), np.float32(np.nan), np.clip(v.depth, *depth_range)))
        holes.append(v.hole_fraction)
    return np.stack(rgbs), np.stack(depths).astype(np.float32), holes


def fused_baseline(
    cfg: EvaluateConfig, keyframes: Keyframes | None, max_depth: float
) -> tuple[FusedRenderer | None, MetricAccumulator | None, list[float], str]:
    """The fused-geometry baseline over the training keyframes with depth (None: there are none) -- its renderer
    and accumulator (None, None when it does not run, with why)."""
    if not cfg.fused_baseline or keyframes is None:
        return None, None, [], ""
    try:
        r = fused_renderer(keyframes, progress=cfg.progress)
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
        f"the {m['keyframes']} training frames' depth fused into one surface (TSDF, {voxel_words(m['voxel_size_m'])} "
        f"voxels), ray-cast at the test pose, coloured from the {r.neighbours} nearest training frames that see each "
        f"point (lumigraph weights, exposure-compensated); holes ({100 * hole_fraction:.1f} % of pixels) filled from "
        "the nearest frame"
    )
