"""Benchmark of the serving path (not a test): engine latency and offline renderer pose-to-images latency.

    .venv/bin/python bench/bench_engine.py                    # all sizes, both presets, CPU
    .venv/bin/python bench/bench_engine.py --sizes 256 --iters 50 --device cuda --precision bf16

Measures, with untrained weights (speed does not depend on training):

1. engine latency p50 / p99 per pose for Base and Slice-10 at each size: batch 1 (``render``) and with
   look-ahead (``render_lookahead`` on a smooth 10 Hz trajectory; cache hits are nearly free, misses
   render 1 + lookahead poses in one batch);
2. the render node's pose-to-images p99 (render + message building) in the offline runtime on a synthetic
   bag at 256x256 (goal: <= 33 ms).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _checkpoint(tmp: Path, preset: str, size: int) -> Path:
    import torch

    from pose2rgbd.geometry import PinholeCamera, PoseNormalizer
    from pose2rgbd.inference.testing import look_down_pose
    from pose2rgbd.models import DepthNormalizer, build_model, preset_config, save_checkpoint

    torch.manual_seed(0)
    mc = preset_config(preset, size=size, outputs="rgbd", encoding="6dof-quat")
    T = np.stack([look_down_pose(x, y, z) for x in (-100, 100) for y in (-100, 100) for z in (5, 60)])
    return save_checkpoint(
        tmp / f"{preset}-{size}.pt",
        model=build_model(mc, DepthNormalizer(1.0, 200.0)),
        pose_normalizer=PoseNormalizer.fit(T, "6dof-quat"),
        depth_normalizer=DepthNormalizer(1.0, 200.0),
        dataset_fingerprint="bench",
        camera=PinholeCamera.from_fov(size, size, 90.0),
        depth_kind="metric",
    )


def _trajectory(n: int) -> tuple[np.ndarray, np.ndarray]:
    from pose2rgbd.inference.testing import look_down_pose

    t = np.arange(n) * 0.1  # 10 Hz, 1 m/s east, slow yaw
    return (t * 1e9).astype(np.int64), np.stack([look_down_pose(ti, 0.0, 20.0, yaw=0.01 * ti) for ti in t])


def bench_engine(args: argparse.Namespace, tmp: Path) -> list[tuple]:
    from pose2rgbd.inference import EngineConfig, InferenceEngine

    rows = []
    for preset in args.presets:
        for size in args.sizes:
            ck = _checkpoint(tmp, preset, size)
            base = {"checkpoint": str(ck), "device": args.device, "precision": args.precision, "warmup": 3}
            eng = InferenceEngine.from_config(EngineConfig(**base))
            stamps, T = _trajectory(args.iters)
            lat = []
            for i in range(args.iters):
                t0 = time.perf_counter()
                eng.render(T[i])
                lat.append(time.perf_counter() - t0)
            eng_la = InferenceEngine.from_config(
                EngineConfig(
                    **base, lookahead=args.lookahead, lookahead_rate_hz=10.0, tolerance_m=0.15, tolerance_deg=1.0
                )
            )
            lat_la = []
            for i in range(args.iters):
                t0 = time.perf_counter()
                eng_la.render_lookahead(T[i], int(stamps[i]))
                lat_la.append(time.perf_counter() - t0)
            hit = eng_la.stats["cache_hits"] / max(1, eng_la.stats["cache_hits"] + eng_la.stats["cache_misses"])
            row = (preset, size, *_pct(lat), *_pct(lat_la), hit)
            rows.append(row)
            print(
                f"{preset:8s} {size:4d}  batch1 p50 {row[2]:7.1f} p99 {row[3]:7.1f} ms   "
                f"look-ahead({args.lookahead}) p50 {row[4]:7.1f} p99 {row[5]:7.1f} ms  hit rate {hit:.0%}",
                flush=True,
            )
    return rows


def _pct(lat: list[float]) -> tuple[float, float]:
    a = np.asarray(lat) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_offline(args: argparse.Namespace, tmp: Path) -> None:
    from pose2rgbd.inference import EngineConfig, InferenceEngine
    from pose2rgbd.nodes import RendererConfig
    from pose2rgbd.runtime import run_renderer_bag
    from pose2rgbd.runtime.testing import write_flight_bag

    bag = tmp / "flight"
    write_flight_bag(bag, duration_s=args.bag_seconds, size=64)
    for preset in args.presets:
        ck = _checkpoint(tmp, preset, args.offline_size)
        cfg = RendererConfig(rate_hz=10.0)
        cfg.engine = EngineConfig(checkpoint=str(ck), device=args.device, precision=args.precision, warmup=3)
        eng = InferenceEngine.from_config(cfg.engine)
        stats = run_renderer_bag(cfg, bag, tmp / f"out-{preset}", engine=eng)
        print(
            f"offline renderer {preset} {args.offline_size}x{args.offline_size}: {stats.counters['frames']} frames, "
            f"pose-to-images p50 {stats.latency_percentile(50):.1f} ms, p99 {stats.latency_percentile(99):.1f} ms "
            f"(wall {stats.wall_s:.1f} s)",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["base", "slice10"])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512])
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--lookahead", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--offline-size", type=int, default=256)
    p.add_argument("--bag-seconds", type=float, default=6.0)
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--skip-offline", action="store_true")
    args = p.parse_args()
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, CUDA {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}"
    )
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_engine:
            bench_engine(args, Path(d))
        if not args.skip_offline:
            bench_offline(args, Path(d))


if __name__ == "__main__":
    main()
