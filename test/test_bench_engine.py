"""bench/bench_engine.py's look-ahead record: which requests were served from the cache, read back from the render
node's output bag in the order they were rendered (what tells a miss from a wait for a prediction in its tail)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_engine

from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.nodes import RendererConfig
from pose2rgbd.runtime import run_renderer_bag
from pose2rgbd.testing.flight_bag import write_flight_bag
from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint


def test_served_from_cache_is_the_output_bags_flags_per_rendered_frame(tmp_path: Path) -> None:
    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=2.0, size=32)
    cfg = RendererConfig(rate_hz=10.0)
    cfg.engine = EngineConfig(warmup=0, device="cpu", precision="fp32", lookahead=2, tolerance_m=0.15)
    eng = RenderEngine(cfg.engine, make_ground_plane_checkpoint(32))
    stats = run_renderer_bag(cfg, bag, tmp_path / "out", engine=eng, rate=1.0)
    frames = len(stats.latency_ms)
    flags = bench_engine.served_from_cache(tmp_path / "out", frames)
    assert flags is not None and len(flags) == frames == stats.counters["frames"]
    assert sum(flags) == eng.stats["cache_hits"] > 0 and frames - sum(flags) == eng.stats["cache_misses"]
    assert flags[:2] == [False, False]  # no motion known before the second pose
    eng.close()
    assert bench_engine.served_from_cache(tmp_path / "out", frames + 1) is None  # not one message per frame

    text = bench_engine._misses([5.0, 30.0, 1.0, 2.0], [False, False, True, True], slowest=2)
    assert text == "2 of 4 requests missed (0, 1); the 2 slowest: 1 (30.0 ms, miss), 0 (5.0 ms, miss)"
