"""CUDA graphs against eager renders on a GPU, interleaved in one process (not a test): ``engine.cuda_graphs``.

    python3 bench/bench_cuda_graphs.py --size 512 --keyframes 1801 --reps 3 --batches 1 4 16

One in-memory ``hybrid-fast`` checkpoint (:func:`pose2rgbd.testing.hybrid_keyframes.make_hybrid_checkpoint`), two
render engines on it, ``engine.cuda_graphs`` off and on, everything else alike. Each repetition measures both, in
turns (the first engine alternates), so that both see the same machine state: batch-to-batch spread on one machine
was as large as the effects measured (docs/serving.md, "Measured again"). Per engine and repetition:

* **renders/s** at each batch size B: ``RenderEngine.render`` on batches of B poses spread over the place, back to
  back for ``--seconds`` (as ``bench/bench_engine.py --throughput-batches``);
* **batch-1 ms**: the median wall time of one ``render`` call of one pose along a walk (neighbours shared, as a
  flight's);

then once per engine, by ``torch.profiler``, the GPU kernels (a graph's replay counts as its kernels) and the GPU's
busy time per batch-1 call, and the two engines' renders of the same poses compared (RGB levels, depth).
The tables go to standard output and, with ``--out``, to ``OUT/cuda_graphs.md`` (with the command and the machine).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pose2rgbd, not an installed one

from bench_common import matmul_gflops
from bench_engine import _machine, throughput
from profile_render import op_table, walk


def batch1_ms(eng: object, T: np.ndarray) -> float:
    """Median wall time (ms) of one ``render`` call per pose of ``T`` ``(N, 4, 4)``."""
    ms = []
    for Tb in T:
        a = time.perf_counter()
        eng.render(Tb[None])  # type: ignore[attr-defined]
        ms.append(1e3 * (time.perf_counter() - a))
    return float(np.median(ms))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:N (default cuda)")
    p.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--keyframes", type=int, default=1801, help="keyframes in the checkpoint (default 1801)")
    p.add_argument("--preset", default="hybrid-fast", help="hybrid preset (default hybrid-fast)")
    p.add_argument("--precision", default="auto", help="engine.precision (default auto: bf16 where supported)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16], help="renders/s at these batch sizes")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of rendering per batch size and engine")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    p.add_argument("--calls", type=int, default=100, help="batch-1 calls timed per repetition (default 100)")
    p.add_argument("--out", type=Path, default=None, help="folder for cuda_graphs.md")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from pose2rgbd.inference import EngineConfig, RenderEngine
    from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint

    if not torch.cuda.is_available():
        p.error(f"this torch ({torch.__version__}) sees no CUDA device: CUDA graphs need one")
    gflops = matmul_gflops()
    t0 = time.perf_counter()
    ck = make_hybrid_checkpoint(args.size, args.keyframes, preset=args.preset)
    modes = ("off", "on")
    engines = {
        m: RenderEngine(EngineConfig(device=args.device, precision=args.precision, cuda_graphs=m, warmup=3), ck)
        for m in modes
    }
    print(f"checkpoint and engines: {time.perf_counter() - t0:.1f} s", flush=True)
    T = walk(args.calls + 10, args.keyframes)
    for eng in engines.values():
        for i in range(10):  # the walk's keyframes decoded and moved to the GPU once
            eng.render(T[i : i + 1])
    T = T[10:]

    rates: dict[str, list[dict[int, float]]] = {m: [] for m in modes}
    one: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(args.reps):
        for m in modes if rep % 2 == 0 else modes[::-1]:
            eng = engines[m]
            rates[m].append(throughput(eng, args.batches, args.seconds, args.keyframes))
            one[m].append(batch1_ms(eng, T))
            print(f"rep {rep} cuda_graphs {m}: renders/s {rates[m][-1]}, batch-1 {one[m][-1]:.2f} ms", flush=True)

    prof_rows = {}
    for m in modes:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for Tb in T[:30]:
                engines[m].render(Tb[None])
        _, kernels, busy = op_table(prof, 30, True, 1)
        prof_rows[m] = (kernels, busy)

    a, b = engines["off"].render(T[:8]), engines["on"].render(T[:8])
    assert a.rgb is not None and b.rgb is not None and a.depth is not None and b.depth is not None
    levels = np.abs(a.rgb.astype(int) - b.rgb.astype(int))
    depth_close = np.isclose(a.depth, b.depth, rtol=1e-4, atol=0, equal_nan=True)
    graphs = engines["on"].model._graphs  # type: ignore[attr-defined]
    for eng in engines.values():
        eng.close()

    lines = [
        "# CUDA graphs against eager renders",
        "",
        f"`{shlex.join([sys.executable, *sys.argv])}`",
        "",
        f"Machine: {_machine(args)}, fp32 2048^3 matmul {gflops:.0f} GFLOP/s at start; {torch.cuda.get_device_name()}, "
        f"torch {torch.__version__}; engine precision {engines['on'].precision}; {args.preset} at "
        f"{args.size}x{args.size}, {args.keyframes} keyframes; {args.reps} interleaved repetitions.",
        "",
        "| engine.cuda_graphs | "
        + " | ".join(f"renders/s, B = {b_}" for b_ in args.batches)
        + " | batch-1 median (ms) | kernels per batch-1 call | GPU busy per batch-1 call (ms) |",
        "|---|" + "---|" * len(args.batches) + "---|---:|---:|",
    ]
    for m in modes:
        cells = [" / ".join(f"{r[b_]:.0f}" for r in rates[m]) for b_ in args.batches]
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {' / '.join(f'{x:.2f}' for x in one[m])} | "
            f"{prof_rows[m][0]:.0f} | {prof_rows[m][1]:.2f} |"
        )
    lines += [
        "",
        f"Graphs captured: {len(graphs) if graphs is not None else 0}; failed captures: "
        f"{graphs.failures if graphs is not None else 'none'}. The same 8 poses by both engines: RGB differs by more "
        f"than 1 level on {100 * (levels > 1).any(-1).mean():.3f} % of the pixels (at most {levels.max()}), depth "
        f"beyond 1e-4 relative on {100 * (~depth_close).mean():.3f} %.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        tmp = args.out / "cuda_graphs.md.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(args.out / "cuda_graphs.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
