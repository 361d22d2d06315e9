"""Benchmark of the serving path (not a test): renderer pose-to-images latency, batch 1 vs look-ahead.

    .venv/bin/python bench/bench_engine.py                                  # Base + Slice-10, 128/256/512, CPU
    .venv/bin/python bench/bench_engine.py --sizes 256 --threads 1 2 --precisions fp32 bf16
    .venv/bin/python bench/bench_engine.py --device cuda --precisions bf16
    .venv/bin/python bench/bench_engine.py --presets hybrid base slice10 --keyframes 1801 --precisions fp32

**Pose-to-images latency** (what is measured): the render node's time from a camera pose in hand (after the
TF lookup) to the finished output messages -- pose validation and encoding, the forward pass, tensor -> numpy
(uint8 RGB, metric depth), and building the Image / CameraInfo / RGBD messages. It excludes bag reading,
the TF lookup and bag writing (serialization). It is the ``latency_ms`` the renderer reports in its RGBD
message and diagnostics, and what ``run_renderer_bag`` returns in ``RunStats.latency_ms``.

For each model / size / precision / thread count, the offline runtime (``run_renderer_bag``) replays a
synthetic flight bag (``pose2rgbd.testing.flight_bag.write_flight_bag``: 2 m/s, gentle sway and yaw, TF at
50 Hz) and renders at 10 Hz from TF, once with batch 1 (``engine.lookahead`` 0) and once with look-ahead
(up to ``--lookahead`` extrapolated poses rendered off the request path, served from the cache while the real pose is
within ``--tolerance-m`` / ``--tolerance-deg``). Weights are untrained: speed does not depend on training.
Results are printed as they come and as a Markdown table at the end (with the command and the machine). For the
look-ahead run a line names the requests it missed (rendered inline) and whether each of the five slowest was a miss
or a hit that waited for its prediction (:func:`served_from_cache`: the ``from_cache`` of the output bag's RGBD
messages); ``--latencies`` writes both lists per run.

The hybrid (``--presets hybrid`` / ``hybrid-lite``, or with model settings changed: ``hybrid-lite:fill_channels=8``)
is a checkpoint whose keyframe store holds ``--keyframes``
analytic ground-plane frames (:func:`pose2rgbd.testing.hybrid_keyframes.make_hybrid_checkpoint`, saved and loaded
as a node loads it), on a 2 m grid that the flight crosses. **Resident** is the process's peak resident memory
(VmHWM, reset before the engine is loaded: the checkpoint load, the engine's preparation and the renders, plus
the Python / torch baseline of about 0.4 GB) and the resident memory after the run (VmRSS, the engine still
loaded: what a running render node holds). The machine line gives an fp32 matmul
GFLOP/s measured in the same run (the CPU's speed at that moment, on a machine others share).

``--throughput-batches`` adds **renders per second**: after the batch-1 run, the same engine renders batches of that
many poses back to back (``RenderEngine.render``: pose checks, the forward pass, the outputs copied to host arrays)
for ``--throughput-s`` seconds each; renders/s = frames rendered / time. For a hybrid the poses are among its keyframes
(:func:`pose2rgbd.testing.hybrid_keyframes.query_poses`), spread over the whole place, a new batch every call.

Before each timed run the benchmark waits until the memory it freed building the checkpoint is back with the host of a
virtual machine that reports free pages (:func:`bench_common.settle_free_page_reporting`: while it goes back, renders
stall; docs/serving.md, "Stalls: the host taking back freed memory"), and it reports the memory handed back during each
run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pose2rgbd, not an installed one

from bench_common import (
    NAMES,
    depth_uncertainty_extra,
    reported_free_kib,
    reset_peak_rss,
    resident_mib,
    settle_free_page_reporting,
)


def _hybrid_checkpoint(tmp: Path, preset: str, size: int, keyframes: int) -> Path:
    from pose2rgbd.models import save_checkpoint
    from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint

    name, _, extra = preset.partition(":")  # hybrid-lite:fill_channels=8,fill_levels=3: a preset with overrides
    pairs = [kv.split("=", 1) for kv in extra.split(",") if kv]
    bools = {"true": True, "false": False}
    overrides = {k: int(v) if v.lstrip("-").isdigit() else bools.get(v.lower(), v) for k, v in pairs}
    path = tmp / f"{preset.replace(':', '_').replace(',', '_').replace('=', '')}-{size}-{keyframes}.pt"
    if path.is_file():
        return path
    ck = make_hybrid_checkpoint(size, keyframes, preset=name, **overrides)
    return save_checkpoint(path, ck.model, dataset_fingerprint="bench", camera=ck.camera, depth_kind="metric",
                           extra=depth_uncertainty_extra())  # fmt: skip


def _checkpoint(tmp: Path, preset: str, size: int, keyframes: int = 0) -> Path:
    """The benchmark's checkpoint of ``preset`` at ``size``, written once into ``tmp`` and flushed to disk: at
    512x512 with 1801 keyframes about 5 GB, which the kernel otherwise writes back during the timed run that follows.
    Measured (ad hoc, the same run with the files written just before or long before): 512 p99 103-172 ms against
    87-97 ms, the tail in the writeback."""
    before = set(tmp.iterdir())
    path = _make_checkpoint(tmp, preset, size, keyframes)
    if set(tmp.iterdir()) != before and hasattr(os, "sync"):
        os.sync()
    return path


def _make_checkpoint(tmp: Path, preset: str, size: int, keyframes: int = 0) -> Path:
    import torch

    if preset.startswith("hybrid"):
        return _hybrid_checkpoint(tmp, preset, size, keyframes)

    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer, save_checkpoint
    from pose2rgbd.testing.ground_plane import look_down_pose

    path = tmp / f"{preset}-{size}.pt"
    if path.is_file():
        return path
    torch.manual_seed(0)
    mc = preset_config(preset, size=size, outputs="rgbd", encoding="6dof-quat")
    T = np.stack([look_down_pose(x, y, z) for x in (-100, 100) for y in (-100, 100) for z in (5, 60)])
    return save_checkpoint(
        path,
        build_model(mc, DepthNormalizer(1.0, 200.0), PoseNormalizer.fit(T, "6dof-quat")),
        dataset_fingerprint="bench",
        camera=PinholeCamera.from_fov(size, size, 90.0),
        depth_kind="metric",
        extra=depth_uncertainty_extra(),
    )


def _machine(args: argparse.Namespace) -> str:
    import torch

    from pose2rgbd.experiments.machine import cpu_flags, cpu_model

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "no GPU used"
    return f"{cpu_model()} (SIMD {cpu_flags()}), {os.cpu_count()} cores, {dev}, torch {torch.__version__}"


def _mb(mb: float) -> str:
    return "n/a (no counter)" if mb != mb else f"{mb:.0f} MB"  # NaN: no kernel counter of it (bench_common)


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, all) clock ticks of every CPU since boot from /proc/stat (None where there is none). Steal is time
    the hypervisor ran something else while this machine's virtual CPU wanted to run: on a shared cloud VM the
    render tail moves with it, and no change to the renderer does."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (v[7] if len(v) > 7 else 0), sum(v[:8])


def throughput(eng: Any, batches: list[int], seconds: float, keyframes: int) -> dict[int, float]:
    """Renders per second of ``eng.render`` at each batch size in ``batches`` (see the module docstring)."""
    from pose2rgbd.testing.ground_plane import look_down_pose
    from pose2rgbd.testing.hybrid_keyframes import query_poses

    pool = 512
    if getattr(eng.model, "kind", "") == "hybrid":
        T = query_poses(pool, seed=7, n_keyframes=keyframes)
    else:
        rng = np.random.default_rng(7)
        T = np.stack([look_down_pose(*rng.uniform((-90, -90, 10), (90, 90, 50))) for _ in range(pool)])
    out: dict[int, float] = {}
    for b in batches:
        eng.render(T[:b])  # warm-up (a new batch shape)
        frames, i, t0 = 0, 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < seconds or frames < 3 * b:
            idx = (np.arange(b) + i) % pool
            eng.render(T[idx])
            frames, i = frames + b, i + b
        out[b] = frames / dt
    return out


def served_from_cache(out_bag: Path, frames: int) -> list[bool] | None:
    """Per rendered frame, in order, whether look-ahead served it from its cache: the ``from_cache`` of the render
    node's bundled RGBD messages in the run's output bag (read after the timed run). None where the bag has not one
    such message per frame (``publish.rgbd`` off)."""
    from pose2rgbd.bags import open_bag

    with open_bag(out_bag) as bag:
        topics = bag.topics_of_type("pose2rgbd/msg/RGBD")
        flags = [bool(m.msg.from_cache) for m in bag.messages(topics)] if topics else []
    return flags if len(flags) == frames else None


def run_one(
    args: argparse.Namespace,
    tmp: Path,
    bag: Path,
    preset: str,
    size: int,
    precision: str,
    threads: int,
    la: int,
    backend: str = "torch",
    measure_rate: bool = False,
    cuda_graphs: str = "auto",
) -> dict[str, float]:
    import gc

    import torch

    from pose2rgbd.inference import EngineConfig, RenderEngine
    from pose2rgbd.nodes import RendererConfig
    from pose2rgbd.runtime import run_renderer_bag

    cfg = RendererConfig(rate_hz=10.0)
    ckpt = _checkpoint(tmp, preset, size, args.keyframes)
    gc.collect()
    reset = reset_peak_rss()
    cfg.engine = EngineConfig(
        checkpoint=str(ckpt),
        device=args.device,
        precision=precision,
        threads=threads,
        warmup=3,
        lookahead=la,
        backend=backend,
        tolerance_m=args.tolerance_m,
        tolerance_deg=args.tolerance_deg,
        cuda_graphs=cuda_graphs,
    )
    if threads == 0:
        torch.set_num_threads(args.default_threads)  # as the process started (the engine's auto reads it once)
    eng = RenderEngine.from_config(cfg.engine)
    # the checkpoint's build and load freed gigabytes (bench_common)
    settled = settle_free_page_reporting(max_s=args.settle_max_s)
    k0 = reported_free_kib()
    t0 = cpu_ticks()
    stats = run_renderer_bag(cfg, bag, tmp / "out", engine=eng, overwrite=True, rate=args.rate)
    t1 = cpu_ticks()
    k1 = reported_free_kib()
    # after the run's steal and hand-back are read: reading the bag is not the run's
    from_cache = served_from_cache(tmp / "out", len(stats.latency_ms)) if la > 0 else None
    handed_mb = (k1 - k0) / 1024 if k0 is not None and k1 is not None else float("nan")
    steal = (t1[0] - t0[0]) / max(1, t1[1] - t0[1]) if t0 is not None and t1 is not None else float("nan")
    lat = np.asarray(stats.latency_ms)
    frames = stats.counters["frames"]
    rss = resident_mib("VmHWM") / 1024 if reset else float("nan")
    rss_now = resident_mib("VmRSS") / 1024
    rate = throughput(eng, args.throughput_batches, args.throughput_s, args.keyframes) if measure_rate else {}
    precision, backend_name = eng.precision, eng.backend.name
    if getattr(eng.backend, "cuda_graphs", False):
        backend_name += " (CUDA graphs)"
    eng.close()
    del eng
    gc.collect()
    return {
        "rss_gb": rss,
        "rss_now_gb": rss_now,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
        "frames": frames,
        "hit": stats.counters["cache_hits"] / max(1, frames),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "backend": backend_name,
        "wall": stats.wall_s,
        "steal": steal,
        "settled": str(settled),
        "handed_mb": handed_mb,
        "latency_ms": lat.tolist(),
        "from_cache": from_cache,
        "renders_per_s": rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["base", "slice10"])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="auto, fp32, bf16, fp16")
    p.add_argument(
        "--threads",
        nargs="+",
        type=int,
        default=[0],
        help="the network's CPU threads (0: the engine's auto, one fewer than torch's default; all at >= 512x512)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--backends", nargs="+", default=["torch"], help="engine backends: torch, onnxruntime")
    p.add_argument(
        "--cuda-graphs",
        nargs="+",
        default=None,
        help="engine.cuda_graphs settings to run: auto, on, off (default: the engine's default)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="bag replay speed: 0 as fast as possible (no idle time between renders), 1.0 real time (the look-ahead "
        "thread renders in the idle time between the 10 Hz requests, as on a live node)",
    )
    p.add_argument("--lookahead", type=int, default=4, help="look-ahead poses (the second run of each row)")
    p.add_argument("--tolerance-m", type=float, default=0.15)
    p.add_argument("--tolerance-deg", type=float, default=1.0)
    p.add_argument("--bag-seconds", type=float, default=6.0, help="flight length: 10 renders per second")
    p.add_argument(
        "--throughput-batches",
        nargs="+",
        type=int,
        default=[],
        metavar="B",
        help="also measure renders per second at these batch sizes (after each batch-1 run)",
    )
    p.add_argument("--throughput-s", type=float, default=5.0, help="seconds of rendering per throughput batch size")
    p.add_argument(
        "--settle-max-s",
        type=float,
        default=180.0,
        help="wait at most this long before each timed run for the freed memory to go back to the host",
    )
    p.add_argument("--note", default="", help="load note for the table, e.g. 'quiet machine'")
    p.add_argument(
        "--latencies",
        type=Path,
        help="write every run's per-render latencies (ms, in order) and, with look-ahead, whether each was served "
        "from the cache here (JSON)",
    )
    p.add_argument(
        "--keyframes",
        type=int,
        default=1801,
        help="hybrid: keyframes in the checkpoint's store (1801: the demo survey's; keyframes read from a place "
        "map instead: bench/bench_hybrid_map.py)",
    )
    args = p.parse_args()
    import torch

    from pose2rgbd.inference import EngineConfig

    args.cuda_graphs = args.cuda_graphs or [EngineConfig().cuda_graphs]

    args.default_threads = torch.get_num_threads()
    load0 = os.getloadavg()[0]
    from bench_common import matmul_gflops

    machine = _machine(args) + f", fp32 2048^3 matmul {matmul_gflops():.0f} GFLOP/s at start"
    print(f"machine: {machine}; load average {load0:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from pose2rgbd.testing.flight_bag import write_flight_bag

        bag = tmp / "flight"
        write_flight_bag(bag, duration_s=args.bag_seconds, size=64)
        for preset in args.presets:
            for size in args.sizes:
                for precision in args.precisions:
                    for threads in args.threads:
                        for backend, graphs in itertools.product(args.backends, args.cuda_graphs):
                            if backend == "onnxruntime" and precision not in ("auto", "fp32"):
                                continue  # the exported graph is fp32
                            r1 = run_one(args, tmp, bag, preset, size, precision, threads, 0, backend, True, graphs)
                            r2 = run_one(
                                args, tmp, bag, preset, size, precision, threads, args.lookahead, backend, False, graphs
                            )
                            rows.append((preset, size, r1, r2))
                            print(
                                f"{NAMES.get(preset, preset):9s} {size:4d} {r1['backend']:11s} {r1['precision']:5s} "
                                f"{r1['threads']} thr  "
                                f"batch 1: p50 {r1['p50']:7.1f} p99 {r1['p99']:7.1f} ms   look-ahead {args.lookahead}: "
                                f"p50 {r2['p50']:7.1f} p99 {r2['p99']:7.1f} ms, hits {r2['hit']:.0%}  "
                                f"resident peak {r1['rss_gb']:.2f} / after {r1['rss_now_gb']:.2f} GiB "
                                f"({r1['frames']} frames each), host steal {100 * r1['steal']:.1f} / "
                                f"{100 * r2['steal']:.1f} % of CPU time, freed memory handed to the host "
                                f"{_mb(r1['handed_mb'])} / {_mb(r2['handed_mb'])} (before: {r1['settled']} / "
                                f"{r2['settled']})",
                                flush=True,
                            )
                            if r2["from_cache"] is not None:
                                print("  look-ahead: " + _misses(r2["latency_ms"], r2["from_cache"]), flush=True)
                            if r1["renders_per_s"]:
                                print("  renders/s: " + _rates(r1["renders_per_s"]), flush=True)
    if args.latencies is not None:
        args.latencies.write_text(json.dumps([
            {"preset": preset, "size": size, "precision": r["precision"], "threads": r["threads"],
             "backend": r["backend"], "lookahead": la, "latency_ms": r["latency_ms"], "from_cache": r["from_cache"]}
            for preset, size, r1, r2 in rows for la, r in ((0, r1), (args.lookahead, r2))
        ]))  # fmt: skip
    load1 = os.getloadavg()[0]
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/bench_engine.py", *sys.argv[1:]])
    print()
    print(f"`{cmd}`")
    print()
    note = f"; {args.note}" if args.note else ""
    pace = {0.0: "as fast as possible", 1.0: "real time"}.get(args.rate, "scaled")
    print(
        f"Machine: {machine}; load average {load0:.1f} at start, {load1:.1f} at end{note}. "
        f"Renderer pose-to-images latency in the offline runtime (10 Hz from TF, {rows[0][2]['frames'] if rows else 0} "
        f"renders per run, bag replayed at rate {args.rate:g}: {pace}); look-ahead: {args.lookahead} poses, "
        f"tolerance {args.tolerance_m} m / "
        f"{args.tolerance_deg} deg, 2 m/s flight."
    )
    print()
    print(
        f"| model | size | backend | precision | threads | batch 1 p50 / p99 (ms) | look-ahead {args.lookahead} p50 / "
        "p99 (ms) | look-ahead hits | resident peak / after the run (GiB) | host steal (% of CPU time) | freed memory "
        "handed to the host during the run |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for preset, size, r1, r2 in rows:
        name = _row_name(preset, args.keyframes)
        print(
            f"| {name} | {size} | {r1['backend']} | {r1['precision']} | {r1['threads']} | "
            f"{r1['p50']:.1f} / {r1['p99']:.1f} | {r2['p50']:.1f} / {r2['p99']:.1f} | {r2['hit']:.0%} | "
            f"{r1['rss_gb']:.2f} / {r1['rss_now_gb']:.2f} | {100 * r1['steal']:.1f} / {100 * r2['steal']:.1f} | "
            f"{_mb(r1['handed_mb'])} / {_mb(r2['handed_mb'])} |"
        )
    if args.throughput_batches:
        print()
        print(
            f"Renders per second (`RenderEngine.render`, batches of B poses back to back, {args.throughput_s:g} s "
            "each, host arrays out):"
        )
        print()
        print("| model | size | backend | precision | " + " | ".join(f"B={b}" for b in args.throughput_batches) + " |")
        print("|---|---|---|---|" + "---:|" * len(args.throughput_batches))
        for preset, size, r1, _ in rows:
            name = _row_name(preset, args.keyframes)
            rates = " | ".join(f"{r1['renders_per_s'][b]:.0f}" for b in args.throughput_batches)
            print(f"| {name} | {size} | {r1['backend']} | {r1['precision']} | {rates} |")


def _misses(latency_ms: list[float], from_cache: list[bool], slowest: int = 5) -> str:
    """Which requests look-ahead missed (rendered inline), and which of the slowest were misses: what sets its p99."""
    missed = [i for i, hit in enumerate(from_cache) if not hit]
    shown = ", ".join(map(str, missed[:12])) + (f" and {len(missed) - 12} more" if len(missed) > 12 else "")
    order = sorted(range(len(latency_ms)), key=lambda i: -latency_ms[i])[:slowest]
    worst = ", ".join(f"{i} ({latency_ms[i]:.1f} ms, {'hit' if from_cache[i] else 'miss'})" for i in order)
    return f"{len(missed)} of {len(from_cache)} requests missed ({shown or 'none'}); the {slowest} slowest: {worst}"


def _row_name(preset: str, keyframes: int) -> str:
    return NAMES.get(preset, preset) + (f" ({keyframes} kf)" if preset.startswith("hybrid") else "")


def _rates(rates: dict[int, float]) -> str:
    return ", ".join(f"batch {b}: {r:.0f}" for b, r in rates.items())


if __name__ == "__main__":
    main()
