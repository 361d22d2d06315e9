"""Multi-view stereo over a posed frame sequence (a video with metric poses): for each frame, its sources picked
among the frames near it in time, the plane sweep (:mod:`.sweep`), then the check across views
(:mod:`.consistency`); and the combination with a network's depth (:func:`combine_frame`)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.mvs.consistency import consistent_depth
from pose2rgbd.geometry.mvs.sweep import MvsConfig, grey, sweep_depth
from pose2rgbd.progress import logged_pass

log = logging.getLogger(__name__)

MIN_SPARSE_DEPTHS = 10  # sparse depths depth_range_from_points needs


@dataclass
class MvsResult:
    """``depth`` (N, H, W) float32 metres, NaN where unverified (or the frame has no pose / no sources);
    ``views`` (N, H, W) int8 agreeing sources per pixel; ``sources`` the frames each frame was matched against;
    ``depth_range`` the sweep's (near, far) metres; ``info`` counts for a report."""

    depth: np.ndarray
    views: np.ndarray
    sources: list[list[int]]
    depth_range: tuple[float, float]
    info: dict[str, object] = field(default_factory=dict)


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
    if len(z) < MIN_SPARSE_DEPTHS:
        raise ConfigError(f"{len(z)} sparse depths (need {MIN_SPARSE_DEPTHS}): too few to set the plane sweep's "
                          "depth range; give the range instead (MvsConfig's min_depth and max_depth, or "
                          "mvs_sequence's depth_range)")  # fmt: skip
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
    ``median_depth`` (what the sources' baselines are sized to): default the range's geometric mean.

    Logged: a line as it starts (frames, neighbours, depth planes, range), the progress of its two passes
    (:func:`pose2rgbd.progress.logged_pass`: a bar on a terminal, else a line at most every 30 s) and a last
    line with the shares matched and verified and the time; ``info["seconds"]`` the time too."""
    cfg = cfg or MvsConfig()
    T = np.asarray(T_world_cam, np.float64)
    n = len(T)
    ok = np.all(np.isfinite(T.reshape(n, -1)), axis=1) if ok is None else np.asarray(ok, bool)
    if depth_range is None:
        if not (cfg.min_depth and cfg.max_depth):
            raise ConfigError(
                "multi-view stereo needs a depth range: give depth_range=(near, far), or MvsConfig's min_depth and "
                "max_depth (or compute it from sparse points: depth_range_from_points)"
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
    t0 = time.monotonic()
    h, w = image(first).shape
    raw = np.full((n, h, w), np.nan, np.float32)
    sources = [pick_sources(T, ok, i, median, cfg) if ok[i] else [] for i in range(n)]
    work = [i for i in range(n) if sources[i]]
    pairs = sum(len(s) for s in sources)
    skipped = n - len(work)
    log.info("multi-view stereo: plane sweep of %d of %d frames (%dx%d) against %.3g neighbouring frames each (%d "
             "pairs), %d depth planes from %.2f to %.1f m, then the check across views%s", len(work), n, w, h,
             pairs / max(len(work), 1), pairs, cfg.planes, depth_range[0], depth_range[1],
             f"; {skipped} frame(s) without a pose or a neighbour get no stereo depth" if skipped else "")  # fmt: skip
    for i in logged_pass(work, "stereo: plane sweep", "frame", progress=progress, logger=log):
        raw[i] = sweep_depth(image(i), [image(j) for j in sources[i]], K, T[i], [T[j] for j in sources[i]],
                             depth_range, cfg)  # fmt: skip
    t_sweep = time.monotonic() - t0
    depth = np.full_like(raw, np.nan)
    views = np.zeros(raw.shape, np.int8)
    for i in logged_pass(work, "stereo: check across views", "frame", progress=progress, logger=log):
        depth[i], v = consistent_depth(raw[i], [raw[j] for j in sources[i]], K, T[i], [T[j] for j in sources[i]],
                                       min_views=cfg.consistent_views, max_reproj_px=cfg.max_reproj_px,
                                       max_rel_depth=cfg.max_rel_depth)  # fmt: skip
        views[i] = np.minimum(v, 127)
    seconds = time.monotonic() - t0
    fin = np.isfinite(depth)
    matched, verified = float(np.isfinite(raw).mean()), float(fin.mean())
    info: dict[str, object] = {"frames": n, "frames_with_sources": len(work), "pairs": pairs,
            "depth_range_m": [round(depth_range[0], 3), round(depth_range[1], 3)], "planes": cfg.planes,
            "matched_share": round(matched, 4), "verified_share": round(verified, 4),
            "seconds": round(seconds, 1)}  # fmt: skip
    log.info("multi-view stereo: %d frames in %.0f s (plane sweep %.0f s, check across views %.0f s): %.1f %% of "
             "pixels matched, %.1f %% verified across views", n, seconds, t_sweep, seconds - t_sweep,
             100 * matched, 100 * verified)  # fmt: skip
    return MvsResult(depth, views, sources, depth_range, info)


@dataclass
class CombinedDepth:
    """One frame's depth as :func:`combine_frame` makes it: ``depth`` (H, W) float32 metres, NaN where none;
    ``stereo`` (H, W) bool where it is the verified stereo depth (elsewhere a finite depth is the network's, scaled
    by ``scale``)."""

    depth: np.ndarray
    scale: float
    stereo: np.ndarray


def combine_frame(mvs: np.ndarray, net: np.ndarray, *, far_factor: float = 1.5, min_pixels: int = 50) -> CombinedDepth:
    """One frame: the verified stereo depth where it exists, the network's depth scaled to it elsewhere (its
    per-frame scale: the median ratio stereo / network over the verified pixels), but only up to ``far_factor`` x
    the 95th percentile of the verified depth (the network gives sky and far field a finite depth; beyond what
    stereo saw, it stays NaN). With fewer than ``min_pixels`` verified pixels the network's depth is returned
    as is (scale 1.0, no stereo pixel)."""
    mvs = np.asarray(mvs, np.float32)
    net = np.asarray(net, np.float32)
    both = np.isfinite(mvs) & np.isfinite(net) & (net > 0)
    if both.sum() < min_pixels:
        return CombinedDepth(net.copy(), 1.0, np.zeros(net.shape, bool))
    s = float(np.median(mvs[both] / net[both]))
    far = far_factor * float(np.percentile(mvs[np.isfinite(mvs)], 95))
    scaled = net * s
    stereo = np.isfinite(mvs)
    out = np.where(stereo, mvs, np.where(scaled <= far, scaled, np.nan))
    return CombinedDepth(out.astype(np.float32), s, stereo)
