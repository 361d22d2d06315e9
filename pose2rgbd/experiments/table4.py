"""Paper Table 4 on this machine: parameters, memory added by a forward pass, and FPS at batch 1 / 5 / 10.

Each (model, batch) is measured in a fresh Python process so that allocator caches of one measurement do not
hide the memory of the next. Memory is the process resident set (Linux ``/proc/self/status``): ``VmRSS``
after the forward pass (outputs still alive) minus before, and the peak (``VmHWM``, reset through
``/proc/self/clear_refs`` when the kernel allows) minus before. FPS = batch size x runs / time, fp32, no grad,
after one warm-up pass; the paper averages 100 runs, we run until ``min_seconds`` have passed (at least
``min_runs`` runs) to keep the CPU budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_CHILD = r"""
import json, sys, time
import torch
from pose2rgbd.methods.pose2rgbd import build_model, preset_config
from pose2rgbd.models import count_parameters

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) / 1024.0  # MiB
    return float('nan')

preset, size, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
min_s, min_runs, threads = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
device = sys.argv[7] if len(sys.argv) > 7 else 'cpu'
if threads > 0:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_model(preset_config(preset, size=size, outputs='depth', encoding='6dof-quat')).eval().to(device)
x = (torch.rand(batch, 7) * 2 - 1).to(device)
cuda = device.startswith('cuda')

def sync():
    if cuda:
        torch.cuda.synchronize()

peak_reset = False
if cuda:
    # GPU memory: what the forward pass allocates on the device (the weights are allocated before 'before').
    sync()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20
else:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        peak_reset = True
    except OSError:
        pass
    before = status('VmRSS')
with torch.no_grad():
    t0 = time.perf_counter()
    out = model(x)
    sync()
    first = time.perf_counter() - t0
if cuda:
    after = torch.cuda.memory_allocated() / 2**20
    peak = torch.cuda.max_memory_allocated() / 2**20
    peak_reset = True
else:
    after = status('VmRSS')
    peak = status('VmHWM')
runs, t = 0, 0.0
with torch.no_grad():
    for _ in range(3 if cuda else 0):  # GPU: cuDNN picks its algorithms in the first passes
        model(x)
    sync()
    while runs < min_runs or t < min_s:
        t0 = time.perf_counter()
        model(x)
        sync()
        t += time.perf_counter() - t0
        runs += 1
print(json.dumps({
    'preset': preset, 'size': size, 'batch': batch, 'parameters': count_parameters(model), 'device': device,
    'gpu': torch.cuda.get_device_name() if cuda else None,
    'rss_added_mib': after - before, 'peak_added_mib': (peak - before) if peak_reset else None,
    'fps': batch * runs / t, 'ms_per_batch': 1000.0 * t / runs, 'runs': runs, 'first_pass_s': first,
    'threads': torch.get_num_threads(),
}))
"""


def run_table4(
    presets: Sequence[str] = ("base", "slice10", "slice32", "slice64"),
    batches: Sequence[int] = (1, 5, 10),
    *,
    size: int = 512,
    min_seconds: float = 3.0,
    min_runs: int = 2,
    threads: int = 0,
    devices: Sequence[str] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure every (preset, batch, device); returns one dict per measurement (see module docstring).

    ``devices``: ``None`` = the CPU, and CUDA too when a CUDA device is present (the paper's GPU columns). On a
    GPU the memory columns are the device memory the forward pass allocates (``torch.cuda`` allocator statistics)
    and each timed pass ends with a synchronize.
    """
    if devices is None:
        import torch

        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    from pose2rgbd.progress import bar

    rows = []
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    jobs = [(p, b, d) for d in devices for p in presets for b in batches]
    for p, b, d in bar(jobs, desc="table 4", progress=progress, leave=False):
        cmd = [sys.executable, "-c", _CHILD, p, str(size), str(b), str(min_seconds), str(min_runs), str(threads), d]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            err = r.stderr.strip().splitlines()[-1:]
            rows.append({"preset": p, "batch": b, "size": size, "device": d, "error": err})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def table4_markdown(rows: list[dict[str, Any]], paper: dict[str, int] | None = None) -> str:
    """Markdown in the layout of the paper's Table 4: one line per (model, batch), CPU and GPU columns."""
    cpu_rows = [r for r in rows if r.get("device", "cpu") == "cpu"]
    gpu = {(r["preset"], r["batch"]): r for r in rows if str(r.get("device", "cpu")).startswith("cuda")}
    gpu_name = next((r.get("gpu") for r in gpu.values() if r.get("gpu")), None)
    head = (
        "| model | parameters (ours) | parameters (paper) | batch | RSS added (MiB) | peak added (MiB) | CPU FPS "
        f"| GPU FPS{f' ({gpu_name})' if gpu_name else ''} | GPU memory added (MiB) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in cpu_rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | | | {r['batch']} | error: {r['error']} | | | | |")
            continue
        pp = f"{paper[r['preset']]:,}" if paper and r["preset"] in paper else ""
        peak = "n/a" if r.get("peak_added_mib") is None else f"{r['peak_added_mib']:.1f}"
        g = gpu.get((r["preset"], r["batch"]))
        if g is None:
            gfps = gmem = "not measured: no CUDA device on the benchmark machine"
        elif "error" in g:
            gfps, gmem = f"error: {g['error']}", ""
        else:
            gfps, gmem = f"{g['fps']:.1f}", f"{g['peak_added_mib']:.1f}"
        lines.append(
            f"| {r['preset']} | {r['parameters']:,} | {pp} | {r['batch']} | {r['rss_added_mib']:.1f} | {peak} "
            f"| {r['fps']:.2f} | {gfps} | {gmem} |"
        )
    return head + "\n".join(lines) + "\n"
