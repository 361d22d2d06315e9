"""Multi-view stereo over a posed frame sequence (a video with metric poses): for each frame, its sources picked
among the frames near it in time, the plane sweep (:mod:`.sweep`), then the check across views
(:mod:`.consistency`); and the combination with a network's depth (:func:`combine_with_network`)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.mvs.consistency import consistent_depth
from pose2rgbd.geometry.mvs.sweep import MvsConfig, grey, sweep_depth
from pose2rgbd.progress import bar

log = logging.getLogger(__name__)


@dataclass
class MvsResult:
    """``depth`` (N, H, W) float32 metres, NaN where unverified (or the frame has no pose / no sources);
    ``views`` (N, H, W) int8 agreeing sources per pixel; ``sources`` the frames each frame was matched against;
    ``depth_range`` the sweep's (near, far) metres; ``info`` counts for a report."""

    depth: np.ndarray
    views: np.ndarray
    sources: list[list[int]]
    depth_range: tuple[float, float]
    info: dict[str, Any] = field(default_factory=dict)


def pick_sources(T_world_cam: np.ndarray, ok: np.ndarray, i: int, median_depth: float, cfg: MvsConfig) -> list[int]:
    """Up to ``cfg.sources`` frames within ``cfg.search_frames`` of frame ``i`` that have a pose, a baseline of at
    least ``min_baseline_ratio`` x ``median_depth`` and an optical axis within ``max_angle_deg``; those whose
    baseline is nearest (in log) to ``baseline_ratio`` x ``median_depth`` first, taken alternately before and
    after ``i`` (both sides see what one side's occlusions hide)."""
    n = len(T_world_cam)
    lo, hi = max(0, i - cfg.search_frames), min(n, i + cfg.search_frames + 1)
    cand = np.array([j for j in range(lo, hi) if j != i and ok[j]], dtype=np.int64)
    if not len(cand):
        return []
    b = np.linalg.norm(T_world_cam[cand, :3, 3] - T_world_cam[i, :3, 3], axis=1)
    cosang = np.einsum("j,nj->n", T_world_cam[i, :3, 2], T_world_cam[cand, :3, 2])
    use = (b >= cfg.min_baseline_ratio * median_depth) & (cosang >= np.cos(np.deg2rad(cfg.max_angle_deg)))
    cand, b = cand[use], b[use]
    score = np.abs(np.log(np.maximum(b, 1e-12) / (cfg.baseline_ratio * median_depth)))
    before = list(cand[cand < i][np.argsort(score[cand < i], kind="stable")])
    after = list(cand[cand > i][np.argsort(score[cand > i], kind="stable")])
    out: list[int] = []
    while len(out) < cfg.sources and (before or after):
        for side in (before, after):
            if side and len(out) < cfg.sources:
                out.append(int(side.pop(0)))
    return sorted(out)


def depth_range_from_points(depths: np.ndarray, margin: float = 1.5) -> tuple[float, float]:
    """Sweep range from sparse depths (e.g. the SfM points seen by the frames): their 1st and 99th percentiles
    widened by ``margin`` (near / margin, far x margin)."""
    z = np.asarray(depths, np.float64)
    z = z[np.isfinite(z) & (z > 0)]
    if len(z) < 10:
        raise ConfigError(f"{len(z)} sparse depths: too few to set the sweep's depth range; give mvs.min_depth and "
                          "mvs.max_depth")  # fmt: skip
    lo, hi = np.percentile(z, [1, 99])
    return float(lo / margin), float(hi * margin)


def mvs_sequence(
    read_rgb: Callable[[int], np.ndarray],
    K: np.ndarray,
    T_world_cam: np.ndarray,
    ok: np.ndarray | None = None,
    cfg: MvsConfig | None = None,
    *,
    depth_range: tuple[float, float] | None = None,
    median_depth: float | None = None,
    progress: bool = False,
) -> MvsResult:
    """Plane-sweep depth of every frame with a pose (``ok``; default: every finite pose), checked across the
    same sources. ``depth_range``: the sweep's (near, far) metres; default ``cfg.min_depth`` / ``max_depth``;
    ``median_depth`` (what the sources' baselines are sized to): default the range's geometric mean."""
    cfg = cfg or MvsConfig()
    T = np.asarray(T_world_cam, np.float64)
    n = len(T)
    ok = np.all(np.isfinite(T.reshape(n, -1)), axis=1) if ok is None else np.asarray(ok, bool)
    if depth_range is None:
        if not (cfg.min_depth and cfg.max_depth):
            raise ConfigError(
                "multi-view stereo needs a depth range: mvs.min_depth and mvs.max_depth, or sparse points"
            )
        depth_range = (cfg.min_depth, cfg.max_depth)
    median = float(median_depth or np.sqrt(depth_range[0] * depth_range[1]))
    cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def image(j: int) -> np.ndarray:  # grey frames, the few nearby ones kept (each is read by ~5 sweeps)
        if j in cache:
            cache.move_to_end(j)
            return cache[j]
        g = grey(read_rgb(j))
        cache[j] = g
        if len(cache) > 4 * cfg.search_frames + 8:
            cache.popitem(last=False)
        return g

    first = next((j for j in range(n) if ok[j]), None)
    if first is None:
        raise ConfigError("multi-view stereo: no frame has a pose")
    h, w = image(first).shape
    raw = np.full((n, h, w), np.nan, np.float32)
    sources = [pick_sources(T, ok, i, median, cfg) if ok[i] else [] for i in range(n)]
    for i in bar(range(n), desc="stereo", unit="frame", progress=progress):
        if sources[i]:
            raw[i] = sweep_depth(image(i), [image(j) for j in sources[i]], K, T[i], [T[j] for j in sources[i]],
                                 depth_range, cfg)  # fmt: skip
    depth = np.full_like(raw, np.nan)
    views = np.zeros(raw.shape, np.int8)
    for i in bar(range(n), desc="check views", unit="frame", progress=progress):
        if sources[i]:
            depth[i], v = consistent_depth(raw[i], [raw[j] for j in sources[i]], K, T[i], [T[j] for j in sources[i]],
                                           min_views=cfg.consistent_views, max_reproj_px=cfg.max_reproj_px,
                                           max_rel_depth=cfg.max_rel_depth)  # fmt: skip
            views[i] = np.minimum(v, 127)
    fin = np.isfinite(depth)
    matched, verified = float(np.isfinite(raw).mean()), float(fin.mean())
    info: dict[str, Any] = {"frames": n, "frames_with_sources": int(sum(1 for s in sources if s)),
            "depth_range_m": [round(depth_range[0], 3), round(depth_range[1], 3)], "planes": cfg.planes,
            "matched_share": round(matched, 4), "verified_share": round(verified, 4)}  # fmt: skip
    log.info("multi-view stereo: %d frames, %.1f %% of pixels matched, %.1f %% verified across views", n,
             100 * matched, 100 * verified)  # fmt: skip
    return MvsResult(depth, views, sources, depth_range, info)


def combine_with_network(
    mvs: np.ndarray, net: np.ndarray, *, far_factor: float = 1.5, min_pixels: int = 50
) -> tuple[np.ndarray, float]:
    """One frame: the verified stereo depth where it exists, the network's depth scaled to it elsewhere (its
    per-frame scale: the median ratio stereo / network over the verified pixels), but only up to ``far_factor`` x
    the 95th percentile of the verified depth (the network gives sky and far field a finite depth; beyond what
    stereo saw, it stays NaN). With fewer than ``min_pixels`` verified pixels the network's depth is returned
    as is (scale 1.0). Returns ``(depth, scale)``."""
    mvs = np.asarray(mvs, np.float32)
    net = np.asarray(net, np.float32)
    both = np.isfinite(mvs) & np.isfinite(net) & (net > 0)
    if both.sum() < min_pixels:
        return net.copy(), 1.0
    s = float(np.median(mvs[both] / net[both]))
    far = far_factor * float(np.percentile(mvs[np.isfinite(mvs)], 95))
    scaled = net * s
    out = np.where(np.isfinite(mvs), mvs, np.where(scaled <= far, scaled, np.nan))
    return out.astype(np.float32), s
