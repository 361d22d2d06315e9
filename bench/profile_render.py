"""Where one render's time goes (not a test, not a benchmark of record): the default renderer at batch B.

    .venv/bin/python bench/profile_render.py                                   # CPU, 256x256, 1,801 keyframes
    .venv/bin/python bench/profile_render.py --poses flight                    # bench_engine.py's flight
    .venv/bin/python bench/profile_render.py --device cuda --size 512 --precision auto --out /tmp/prof

The engine (``RenderEngine.render``, as ``bench/bench_engine.py`` calls it for renders/s) renders a walk of poses
among the keyframes (or with ``--poses flight`` the serving benchmark's flight) of a ``hybrid-fast`` checkpoint
(:func:`pose2rgbd.testing.hybrid_keyframes.make_hybrid_checkpoint`), ``--batch`` poses per call. Three passes over
the same poses after a warm-up:

1. **wall**: milliseconds per call (median, p90), nothing attached;
2. **ops** (``torch.profiler``): the operators by their own time on the CPU (and on the GPU, with ``--device
   cuda``), per call, and how many GPU kernels one call launches -- on a GPU, wall time well above the GPU's busy
   time is time the host spends (Python, launches, copies, the keyframe search);
3. **Python** (``cProfile``): the package's functions by their own time per call, and the calls taking most time
   in all (``cumulative``), which the op table cannot see.

The tables go to standard output and, with ``--out``, to ``OUT/profile.md`` (with the command and the machine).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pose2rgbd, not an installed one

from bench_common import depth_uncertainty_extra, matmul_gflops
from bench_engine import _machine


def walk(n: int, keyframes: int, seed: int = 3) -> np.ndarray:
    """``n`` poses 0.2 m apart along x from one query pose among the keyframes (a flight: neighbours shared)."""
    from pose2rgbd.testing.hybrid_keyframes import query_poses

    start = query_poses(1, seed=seed, n_keyframes=keyframes)[0]
    T = np.repeat(start[None], n, axis=0)
    T[:, 0, 3] += 0.2 * np.arange(n)
    return T


def flight(n: int) -> np.ndarray:
    """``n`` camera poses of ``bench/bench_engine.py``'s flight at 10 Hz (its bag's ``T_world_cam``): the bench's case,
    where most keyframe points land inside the view (a walk's renders see less of their keyframes)."""
    from pose2rgbd.testing.flight_bag import FIRST_CAMERA_S, T_world_cam

    return T_world_cam(FIRST_CAMERA_S + 0.1 * np.arange(n))


def op_table(prof: object, calls: int, cuda: bool, rows: int) -> tuple[str, float, float]:
    """Markdown rows of the operators by own time per call, and per call: GPU kernels launched, GPU busy ms."""
    events = prof.key_averages()  # type: ignore[attr-defined]
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    kept = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:rows]
    lines = ["| operator | calls per render call | own CPU ms per call | own GPU ms per call |", "|---|---:|---:|---:|"]
    for e in kept:
        gpu_ms = getattr(e, "self_device_time_total", 0.0) / 1e3 / calls if cuda else float("nan")
        lines.append(
            f"| `{e.key[:60]}` | {e.count / calls:.1f} | {e.self_cpu_time_total / 1e3 / calls:.3f} | "
            + ("-" if not cuda else f"{gpu_ms:.3f}")
            + " |"
        )
    kernels = busy_us = 0.0
    if cuda:
        for ev in prof.events():  # type: ignore[attr-defined]  # the device's own events: kernels, copies, sets
            if str(getattr(ev, "device_type", "")).endswith("CUDA"):
                kernels += 1
                busy_us += ev.time_range.elapsed_us()
    return "\n".join(lines), kernels / calls, busy_us / 1e3 / calls


def python_table(pr: cProfile.Profile, calls: int, rows: int) -> str:
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    out = []
    for order in ("tottime", "cumulative"):
        s.seek(0)
        s.truncate()
        st.sort_stats(order).print_stats(rows)
        out.append(f"By {'own' if order == 'tottime' else 'cumulative'} time ({calls} calls; seconds in all):")
        body = s.getvalue()
        start = body.find("ncalls")
        out.append(body[start:].rstrip() if start >= 0 else body.rstrip())
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--keyframes", type=int, default=1801, help="keyframes in the checkpoint (default 1801)")
    p.add_argument("--preset", default="hybrid-fast", help="hybrid preset (default hybrid-fast)")
    p.add_argument("--precision", default="auto", help="engine.precision (default auto)")
    p.add_argument("--threads", type=int, default=0, help="engine.threads (0: the engine's choice)")
    p.add_argument("--batch", type=int, default=1, help="poses per render call (default 1)")
    p.add_argument("--cuda-graphs", default=None, help="engine.cuda_graphs: auto | on | off (default: the engine's)")
    p.add_argument(
        "--poses",
        choices=("walk", "flight"),
        default="walk",
        help="walk: 0.2 m steps among the keyframes; flight: bench_engine.py's flight (default walk)",
    )
    p.add_argument("--calls", type=int, default=60, help="render calls per pass (default 60)")
    p.add_argument("--rows", type=int, default=25, help="rows per table (default 25)")
    p.add_argument("--out", type=Path, default=None, help="folder for profile.md (and the profiler's trace.json)")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from pose2rgbd.inference import EngineConfig, RenderEngine
    from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint

    if args.calls < 1 or args.batch < 1:
        p.error("--calls and --batch must be at least 1")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    gflops = matmul_gflops()  # the CPU's speed at the start, for ratios between runs
    t0 = time.perf_counter()
    ck = make_hybrid_checkpoint(args.size, args.keyframes, preset=args.preset)
    ck.extra.update(depth_uncertainty_extra())  # as bench_engine.py's: each render computes its depth_sigma
    graphs = args.cuda_graphs or EngineConfig().cuda_graphs
    cfg = EngineConfig(device=args.device, precision=args.precision, threads=args.threads, warmup=3, cuda_graphs=graphs)
    eng = RenderEngine(cfg, ck)
    print(f"checkpoint and engine: {time.perf_counter() - t0:.1f} s; precision {eng.precision}", flush=True)
    n = args.calls * args.batch
    T = walk(n + 10 * args.batch, args.keyframes) if args.poses == "walk" else flight(n + 10 * args.batch)
    for i in range(10):  # warm-up: the keyframes of the walk decoded (and on a GPU, moved) once
        eng.render(T[i * args.batch : (i + 1) * args.batch])
    T = T[10 * args.batch :].reshape(args.calls, args.batch, 4, 4)

    ms = []
    for Tb in T:
        a = time.perf_counter()
        eng.render(Tb)
        ms.append(1e3 * (time.perf_counter() - a))
    wall = f"{np.median(ms):.2f} ms per call (p90 {np.percentile(ms, 90):.2f}), {args.batch} poses each"

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for Tb in T:
            eng.render(Tb)
    ops, kernels, busy = op_table(prof, args.calls, cuda, args.rows)

    pr = cProfile.Profile()
    pr.enable()
    for Tb in T:
        eng.render(Tb)
    pr.disable()
    py = python_table(pr, args.calls, args.rows)
    eng.close()

    head = [
        "# Where one render's time goes",
        "",
        f"`{shlex.join([sys.executable, *sys.argv])}`",
        "",
        f"Machine: {_machine(args)}, fp32 2048^3 matmul {gflops:.0f} GFLOP/s at start; "
        f"engine precision {eng.precision}, {torch.get_num_threads()} threads, CUDA graphs "
        f"{'on' if getattr(eng.backend, 'cuda_graphs', False) else 'off'}; "
        f"{args.preset} at {args.size}x{args.size}, {args.keyframes} keyframes, the {args.poses}'s poses.",
        "",
        f"Wall: {wall}.",
    ]
    if cuda:
        head.append(f"GPU: {kernels:.0f} kernels per call, busy {busy:.2f} ms per call (the rest: the host).")
    body = ["## Operators (torch.profiler)", "", ops, "", "## Python (cProfile)", "", "```", py, "```", ""]
    text = "\n".join([*head, "", *body])
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = args.out / "profile.md.tmp"
        tmp.write_text(text)
        tmp.replace(args.out / "profile.md")
        prof.export_chrome_trace(str(args.out / "trace.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
