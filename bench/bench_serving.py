"""Benchmark of the CPU serving paths of the Pose2RGBD networks (not a test): which runtime and settings render
fastest on this machine, at what fraction of the machine's own matmul speed, and how close to the reference.

    .venv/bin/python bench/bench_serving.py                                   # Base + Slice-10, 512, batch 1 and 10
    .venv/bin/python bench/bench_serving.py --presets slice10 --batches 1 4 --paths torch-ref torch-engine ort
    .venv/bin/python bench/bench_serving.py --profile slice10                 # where Slice-10 spends its time
    .venv/bin/python bench/bench_serving.py --presets hybrid base slice10 --size 256 --batches 1
    .venv/bin/python bench/bench_serving.py --profile hybrid --size 256       # the hybrid's forward, stage by stage

For each preset / batch size / path it reports ms per frame, frames/s, the achieved GFLOP/s (FLOPs of one
forward counted with ``torch.utils.flop_counter``, a multiply-add = 2 FLOPs) and that as a percentage of a
2048x2048 fp32 matmul measured in the same run on the same threads, and the max abs difference of the outputs
from the reference path (``torch-ref``: the plain eval-mode module, the test oracle). Paths:

* ``torch-ref``: ``model.eval()`` as trained (no preparation);
* ``torch-engine``: what the torch backend of the engine runs (BatchNorm folded, plain convolutions
  channels-last: :func:`pose2rgbd.models.device.prepare_for_inference`);
* ``torch-contig``: BatchNorm folded, everything contiguous (NCHW);
* ``torch-cl-all``: BatchNorm folded, transposed convolutions channels-last too (no layout copies between them
  and the 3x3 convolutions);
* ``torch-jit``: ``torch.jit.trace`` + ``torch.jit.freeze`` + ``optimize_for_inference`` (oneDNN fusion);
* ``ort``: the exported ONNX graph in ONNX Runtime, graph optimizations on (the engine's onnxruntime backend);
* ``ort-int8``: that graph quantized to int8 by ONNX Runtime (static, QDQ, per-channel weights, calibrated on
  random normalized poses); measured here only, not a backend of the engine.

The hybrid (``--presets hybrid`` / ``hybrid-lite``; ``--keyframes`` ground-plane keyframes in its store, made by
:func:`pose2rgbd.testing.hybrid_keyframes.make_hybrid_checkpoint`, queries among them) has three paths: ``torch-ref``
(the model as trained, with the torch splat: the serving path before the numba warp), ``torch-engine`` (the engine's
torch backend: prepared as above, the numba warp) and ``ort`` (that, with the decoder + fill network part in ONNX
Runtime: ``engine.backend onnxruntime``); its FLOPs are the networks' (the warp's gathers and scatters count 0).
``--profile hybrid`` times its forward stage by stage (neighbour search, keyframe gather, splat, decoder, fill,
depth correction, tensor -> numpy), for the reference and the engine's path.

The machine line gives the CPU model, its SIMD flags and the load average: other processes on the cores lower
every number, so compare ratios (to the matmul, between paths) rather than absolute values across runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import NAMES, matmul_gflops

HYBRID_PATHS = ("torch-ref", "torch-engine", "ort")
PATHS = ("torch-ref", "torch-engine", "torch-contig", "torch-cl-all", "torch-jit", "ort", "ort-int8")
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor() or "unknown CPU"
    flags: set[str] = set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                cpu = v.strip()
            if k.strip() == "Flags":
                flags = set(v.split())
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "simd": [f for f in SIMD_FLAGS if f in flags],
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": torch.get_num_threads(),
        "load_avg": os.getloadavg()[0],
    }


def build(preset: str, size: int, keyframes: int = 1801) -> Any:
    import torch

    if preset.startswith("hybrid"):
        from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint

        return make_hybrid_checkpoint(size, keyframes, preset=preset).model

    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer
    from pose2rgbd.testing.ground_plane import look_down_pose

    torch.manual_seed(0)
    T = np.stack([look_down_pose(x, y, z) for x in (-100, 100) for y in (-100, 100) for z in (5, 60)])
    mc = preset_config(preset, size=size, outputs="depth", encoding="6dof-quat")
    model = build_model(mc, DepthNormalizer(1.0, 200.0), PoseNormalizer.fit(T, "6dof-quat"))
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # trained-looking BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def inputs(model: Any, batch: int) -> Any:
    """Network inputs of ``batch`` frames: random normalized poses, or for the hybrid poses among its keyframes."""
    import torch

    if getattr(model, "kind", "") == "hybrid":
        from pose2rgbd.testing.hybrid_keyframes import query_poses

        return model.poses_to_input(query_poses(batch, seed=batch, n_keyframes=model.n_keyframes))[0]
    return torch.rand(batch, 7, generator=torch.Generator().manual_seed(batch)) * 2 - 1


def flops_per_frame(model: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = inputs(model, 1)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(x)
    return float(fc.get_total_flops())


def make_runner(path: str, model: Any, tmp: Path, batch: int) -> Any:
    """A callable ``x (B, 7) float32 tensor -> depth (B, 1, S, S) numpy`` for ``path``."""
    import torch

    from pose2rgbd.models.device import fold_batchnorm, prepare_for_inference

    if getattr(model, "kind", "") == "hybrid":
        return hybrid_runner(path, model)
    if path == "torch-ref":

        def ref(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return model(x)["depth"].numpy()

        return ref
    if path in ("torch-engine", "torch-contig"):
        m = prepare_for_inference(model, torch.device("cpu"), fuse_bn=True, channels_last=path == "torch-engine")

        def prepared(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return m(x)["depth"].contiguous().numpy()

        return prepared
    if path == "torch-cl-all":
        m = prepare_for_inference(model, torch.device("cpu"), fuse_bn=True, channels_last=True)
        for mod in m.modules():
            if isinstance(mod, torch.nn.ConvTranspose2d):
                mod.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

        def cl_all(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return m(x)["depth"].contiguous().numpy()

        return cl_all
    if path == "torch-jit":
        m = copy.deepcopy(model).eval()
        fold_batchnorm(m)

        class Depth(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.inner(x)["depth"]

        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(Depth(m).eval(), torch.zeros(batch, 7))
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

        def jit(x: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return frozen(x).contiguous().numpy()

        return jit
    if path in ("ort", "ort-int8"):
        import onnxruntime as ort

        onnx_path = export_once(model, tmp)
        if path == "ort-int8":
            onnx_path = quantize_once(onnx_path, model, tmp)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])

        def run(x: torch.Tensor) -> np.ndarray:
            return sess.run(["depth"], {"input": x.numpy()})[0]  # type: ignore[no-any-return]

        return run
    raise SystemExit(f"unknown path {path!r}; choose from {PATHS}")


def hybrid_runner(path: str, model: Any) -> Any:
    import torch

    from pose2rgbd.models.device import prepare_for_inference

    if path not in HYBRID_PATHS:
        raise ValueError(f"not a path of the hybrid (it has {', '.join(HYBRID_PATHS)})")
    if path == "torch-ref":
        m = model
        m.warp_kernel = "torch"
    else:
        m = prepare_for_inference(model, torch.device("cpu"))
        m.warp_kernel = "auto"
        if path == "ort":
            m.serve_network_part_with_onnxruntime(threads=torch.get_num_threads())

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return m(x)["depth"].contiguous().numpy()  # type: ignore[no-any-return]

    return run


def profile_hybrid(preset: str, size: int, keyframes: int, reps: int) -> None:
    """The hybrid's forward stage by stage, median ms over ``reps`` queries: the reference (torch splat, plain
    module) and the engine's torch path (numba warp, prepared module)."""
    import torch

    from pose2rgbd.methods.hybrid.network import decoder_inputs
    from pose2rgbd.methods.hybrid.warp import warp_gathered
    from pose2rgbd.models.device import prepare_for_inference
    from pose2rgbd.testing.hybrid_keyframes import query_poses

    model = build(preset, size, keyframes)
    Q = query_poses(reps, n_keyframes=keyframes)
    stages = ("encode pose", "neighbour search", "keyframe gather + T", "warp (splat + merge + holes)",
              "hole rules (background depth + colour)", "decoder", "concat (copy)", "fill U-Net",
              "colour + depth correction", "tensor -> numpy", "whole forward")  # fmt: skip
    res: dict[str, dict[str, list[float]]] = {}
    for name, m, kernel in (
        ("reference (torch splat)", model, "torch"),
        ("engine (numba warp, prepared)", prepare_for_inference(model, torch.device("cpu")), "auto"),
    ):
        m.warp_kernel = kernel
        st: dict[str, list[float]] = {k: [] for k in stages}
        with torch.inference_mode():
            for it in range(reps + 2):
                marks: list[float] = [time.perf_counter()]
                mark = (lambda ms: lambda: ms.append(time.perf_counter()))(marks)

                x, _ = m.poses_to_input(Q[it % reps][None])
                mark()
                T = m._poses(x)
                rows, usable, fallback = m.keyframes_to_warp(T)
                mark()
                rgb, depth, kf_T = m.gather_keyframes(rows)
                T_q = torch.linalg.inv(torch.from_numpy(T))[:, None] @ kf_T
                mark()
                dn = m.depth_normalizer
                # the model's own blend rules, as its forward
                w = warp_gathered(rgb, depth, T_q, m.kf_K, torch.from_numpy(usable), depth_min_m=dn.min_m,
                                  depth_max_m=dn.max_m, kernel=kernel, fallback=fallback,
                                  nearest_depth=m.border_takes_nearest, **m.blend_options(T, rows))  # fmt: skip
                mark()
                w_rgb, background, kept = m._holes(w, T)
                mark()
                dec = decoder_inputs(m.decoder, x.masked_fill(m.pose_fixed, 0.0), w_rgb)  # zeros without one
                mark()
                v = w["valid"].to(dec["rgb"].dtype)
                xx = torch.cat([dec["rgb"], dec["depth"], w_rgb, w["depth"], v, w["hits"]], dim=1)
                mark()
                out = m.fill(xx)
                mark()
                o = {"rgb": m._correct_rgb(w_rgb, w_rgb + out[:, :3], w["valid"]),
                     "depth": m._correct_depth(w["depth"], out[:, 3:4], kept, background),
                     "confidence": w["valid"].float()}  # fmt: skip
                mark()
                m.outputs_to_arrays(o)
                mark()
                t0 = time.perf_counter()
                m(x)
                marks.append(marks[-1] + time.perf_counter() - t0)
                if it >= 2:  # warm-up done
                    for k, a, b in zip(stages, marks[:-1], marks[1:], strict=True):
                        st[k].append(1e3 * (b - a))
        res[name] = st
    names = list(res)
    print(f"\n{NAMES.get(preset, preset)} {size}x{size}, {keyframes} keyframes, {torch.get_num_threads()} threads, "
          f"median of {reps} queries (ms)\n")  # fmt: skip
    print("| stage | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for k in stages:
        print(f"| {k} | " + " | ".join(f"{np.median(res[n][k]):.1f}" for n in names) + " |")


_EXPORTED: dict[int, Path] = {}


def export_once(model: Any, tmp: Path) -> Path:
    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.models.checkpoint import LoadedCheckpoint
    from pose2rgbd.models.export import export_onnx
    from pose2rgbd.models.registry import get_family

    key = id(model)
    if key not in _EXPORTED:
        s = model.config.size
        loaded = LoadedCheckpoint(
            path=None,
            model=model,
            family=get_family("pose2rgbd"),
            model_config=model.config,
            dataset_fingerprint="bench",
            camera=PinholeCamera.from_fov(s, s, 90.0),
        )
        out = tmp / f"{model.config.preset}-{s}.onnx"
        _EXPORTED[key] = export_onnx(loaded, out, exporter="torchscript", check_batch=2).path
    return _EXPORTED[key]


def quantize_once(onnx_path: Path, model: Any, tmp: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    out = onnx_path.with_name(onnx_path.stem + "-int8.onnx")
    if out.exists():
        return out
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": rng.uniform(-1, 1, (1, 7)).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(onnx_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return out


def time_runner(fn: Any, x: Any, min_seconds: float, max_reps: int) -> float:
    """Median seconds per call (after one warm-up call)."""
    fn(x)
    times: list[float] = []
    end = time.perf_counter() + min_seconds
    while (time.perf_counter() < end or len(times) < 3) and len(times) < max_reps:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def profile(preset: str, size: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from pose2rgbd.models.device import prepare_for_inference

    model = build(preset, size)
    m = prepare_for_inference(model, torch.device("cpu"))
    x = torch.zeros(1, 7)
    with torch.inference_mode():
        m(x)
        with tprofile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(2):
                m(x)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=14))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["base", "slice10"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 10])
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--threads", type=int, default=0, help="torch / ORT threads (0: torch's default)")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="time each row at least this long")
    ap.add_argument("--max-reps", type=int, default=20)
    ap.add_argument("--profile", metavar="PRESET", help="print a torch.profiler table of PRESET and exit")
    ap.add_argument("--keyframes", type=int, default=1801, help="hybrid: keyframes in the store (the demo's 1801)")
    ap.add_argument("--reps", type=int, default=10, help="--profile hybrid: queries timed")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        m = machine()
        print(f"command: bench/bench_serving.py {shlex.join(sys.argv[1:])}")
        print(f"machine: {m['cpu']}, {m['cores']} cores, SIMD {' '.join(m['simd'])}; load average {m['load_avg']:.1f}; "
              f"fp32 2048x2048 matmul {matmul_gflops():.1f} GFLOP/s")  # fmt: skip
        if args.profile.startswith("hybrid"):
            profile_hybrid(args.profile, args.size, args.keyframes, args.reps)
        else:
            profile(args.profile, args.size)
        return 0
    m = machine()
    mm = matmul_gflops()
    cmd = "bench/bench_serving.py " + shlex.join(sys.argv[1:])
    print(f"command: {cmd}")
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, SIMD {' '.join(m['simd']) or 'none of ' + ','.join(SIMD_FLAGS)}; "
        f"torch {m['torch']} ({m['threads']} threads), onnxruntime {m['onnxruntime']}; load average {m['load_avg']:.1f}"
    )
    print(f"fp32 2048x2048 matmul: {mm:.1f} GFLOP/s\n")
    rows: list[dict[str, Any]] = []
    print("| model | batch | path | ms / frame | FPS | GFLOP/s | % of matmul | max abs err vs torch-ref |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for preset in args.presets:
            model = build(preset, args.size, args.keyframes)
            fl = flops_per_frame(model)
            hybrid = preset.startswith("hybrid")
            for b in args.batches:
                x = inputs(model, b)
                ref = None
                for path in [p for p in args.paths if not hybrid or p in HYBRID_PATHS]:
                    try:
                        fn = make_runner(path, model, tmp, b)
                        out = fn(x)
                    except Exception as e:  # a path that does not work here: say so, go on
                        print(f"| {NAMES[preset]} | {b} | {path} | not measured: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:80]} | | | | |")  # fmt: skip
                        continue
                    if ref is None:
                        ref = make_runner("torch-ref", model, tmp, b)(x) if path != "torch-ref" else out
                    err = float(np.abs(out - ref).max())
                    s = time_runner(fn, x, args.min_seconds, args.max_reps) / b
                    gf = fl / s / 1e9
                    row = {"preset": preset, "batch": b, "path": path, "ms_per_frame": 1e3 * s, "fps": 1 / s,
                           "gflops": gf, "pct_matmul": 100 * gf / mm, "max_abs_err": err,
                           "gflop_per_frame": fl / 1e9}  # fmt: skip
                    rows.append(row)
                    print(f"| {NAMES[preset]} | {b} | {path} | {1e3 * s:.1f} | {1 / s:.2f} | {gf:.1f} | "
                          f"{100 * gf / mm:.0f} % | {err:.1e} |", flush=True)  # fmt: skip
            kf = f", {args.keyframes} keyframes" if hybrid else ""
            print(f"({NAMES[preset]} at {args.size}{kf}: {fl / 1e9:.2f} GFLOP per frame)")
            del model
    m["load_avg_end"] = os.getloadavg()[0]
    print(f"\nload average at end {m['load_avg_end']:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"command": cmd, "machine": m, "matmul_gflops": mm, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
