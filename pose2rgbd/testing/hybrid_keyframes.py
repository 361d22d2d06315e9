"""A hybrid checkpoint without training (tests and benchmarks of the serving path): its keyframes
(:class:`~pose2rgbd.placemap.keyframes.ArrayKeyframes`, held in memory; saved, they are bundled in the checkpoint) are
analytic ground-plane frames (:mod:`pose2rgbd.testing.ground_plane`) on a lawn-mower grid, the networks at
their initial weights (or randomized, so the fill network's correction is not zero).

The compute of a forward pass does not depend on what the weights learnt, so its timings are those of a trained
model of the same preset, size and keyframe count.
"""

from __future__ import annotations

import numpy as np
import torch

from pose2rgbd.methods.hybrid.config import PRESETS, HybridConfig
from pose2rgbd.methods.hybrid.net import HybridNet, build_model
from pose2rgbd.models.checkpoint import LoadedCheckpoint
from pose2rgbd.models.normalization import DepthNormalizer, PoseNormalizer
from pose2rgbd.models.registry import get_family
from pose2rgbd.placemap.keyframes import ArrayKeyframes
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint, render_ground_plane


def keyframe_poses(n: int, *, spacing_m: float = 2.0, altitude_m: float = 24.0) -> np.ndarray:
    """``(n, 4, 4)`` downward-looking cameras on rows of a square grid, yaw varying slowly."""
    side = max(1, int(np.ceil(np.sqrt(n))))
    T = [
        look_down_pose(spacing_m * (i % side), spacing_m * (i // side), altitude_m + 2.0 * np.sin(0.1 * i), 0.01 * i)
        for i in range(n)
    ]
    return np.stack(T)


def make_hybrid_checkpoint(
    size: int,
    n_keyframes: int,
    *,
    preset: str = "hybrid",
    randomize: bool = True,
    seed: int = 0,
    chunk: int = 64,
    **overrides: object,
) -> LoadedCheckpoint:
    """An in-memory hybrid checkpoint at ``size`` with ``n_keyframes`` ground-plane keyframes (see the module
    docstring); ``randomize``: the fill network's zero-initialized output convolution gets small random weights,
    so its correction shows in the renders (a check of the network part then compares something)."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {list(PRESETS)}")
    fam = get_family("hybrid")
    cfg = fam.make_config(preset, size=size, **overrides)
    assert isinstance(cfg, HybridConfig)
    T = keyframe_poses(n_keyframes)
    lo = np.array([T[:, 0, 3].min() - 5, T[:, 1, 3].min() - 5, 15.0, -1.0, -1.0, -1.0, 0.0])
    hi = np.array([T[:, 0, 3].max() + 5, T[:, 1, 3].max() + 5, 35.0, 1.0, 1.0, 1.0, 1.0])
    torch.manual_seed(seed)
    model: HybridNet = build_model(cfg, pose_normalizer=PoseNormalizer("6dof-quat", lo, hi))
    model.set_depth_normalizer(DepthNormalizer(0.0, 80.0))
    plane = make_ground_plane_checkpoint(size)
    camera = plane.camera
    assert camera is not None
    rgb = np.empty((n_keyframes, size, size, 3), np.uint8)
    depth = np.empty((n_keyframes, size, size), np.float32)
    for i in range(0, n_keyframes, chunk):
        out = render_ground_plane(plane, T[i : i + chunk])
        assert out["rgb"] is not None and out["depth"] is not None
        rgb[i : i + chunk] = out["rgb"]
        depth[i : i + chunk] = out["depth"]
    model.use_keyframes(ArrayKeyframes(rgb, depth, T, camera), camera=camera, rot_weight_m=20.0)
    if randomize:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.fill.out.weight.copy_(torch.randn(model.fill.out.weight.shape, generator=g) * 0.01)
    return LoadedCheckpoint(
        path=None,
        model=model.eval(),
        family=fam,
        model_config=cfg,
        dataset_fingerprint="stub",
        camera=camera,
    )


def query_poses(n: int, *, seed: int = 1, n_keyframes: int = 100) -> np.ndarray:
    """``(n, 4, 4)`` query cameras among the keyframes of :func:`make_hybrid_checkpoint` (off the grid points)."""
    rng = np.random.default_rng(seed)
    T = keyframe_poses(n_keyframes)
    k = rng.integers(0, n_keyframes, n)
    out = []
    for i in k:
        x, y, z = T[i, :3, 3] + rng.uniform(-1.0, 1.0, 3)
        out.append(look_down_pose(float(x), float(y), float(z), yaw=float(rng.uniform(-0.2, 0.2))))
    return np.stack(out)
