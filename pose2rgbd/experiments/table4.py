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
import platform
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
if threads > 0:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_model(preset_config(preset, size=size, outputs='depth', encoding='6dof-quat')).eval()
x = torch.rand(batch, 7) * 2 - 1
try:
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    peak_reset = True
except OSError:
    peak_reset = False
before = status('VmRSS')
with torch.no_grad():
    t0 = time.perf_counter()
    out = model(x)
    first = time.perf_counter() - t0
after = status('VmRSS')
peak = status('VmHWM')
runs, t = 0, 0.0
with torch.no_grad():
    while runs < min_runs or t < min_s:
        t0 = time.perf_counter()
        model(x)
        t += time.perf_counter() - t0
        runs += 1
print(json.dumps({
    'preset': preset, 'size': size, 'batch': batch, 'parameters': count_parameters(model),
    'rss_added_mib': after - before, 'peak_added_mib': (peak - before) if peak_reset else None,
    'fps': batch * runs / t, 'ms_per_batch': 1000.0 * t / runs, 'runs': runs, 'first_pass_s': first,
    'threads': torch.get_num_threads(),
}))
"""


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


def run_table4(
    presets: Sequence[str] = ("base", "slice10", "slice32", "slice64"),
    batches: Sequence[int] = (1, 5, 10),
    *,
    size: int = 512,
    min_seconds: float = 3.0,
    min_runs: int = 2,
    threads: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure every (preset, batch); returns one dict per measurement (see module docstring)."""
    from pose2rgbd.progress import bar

    rows = []
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    jobs = [(p, b) for p in presets for b in batches]
    for p, b in bar(jobs, desc="table 4", progress=progress, leave=False):
        cmd = [sys.executable, "-c", _CHILD, p, str(size), str(b), str(min_seconds), str(min_runs), str(threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            rows.append({"preset": p, "batch": b, "size": size, "error": r.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def table4_markdown(rows: list[dict[str, Any]], paper: dict[str, int] | None = None) -> str:
    """Markdown in the layout of the paper's Table 4 (GPU columns: not run)."""
    head = (
        "| model | parameters (ours) | parameters (paper) | batch | RSS added (MiB) | peak added (MiB) | CPU FPS "
        "| GPU FPS |\n|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | | | {r['batch']} | error: {r['error']} | | | |")
            continue
        pp = f"{paper[r['preset']]:,}" if paper and r["preset"] in paper else ""
        peak = "n/a" if r.get("peak_added_mib") is None else f"{r['peak_added_mib']:.1f}"
        lines.append(
            f"| {r['preset']} | {r['parameters']:,} | {pp} | {r['batch']} | {r['rss_added_mib']:.1f} | {peak} "
            f"| {r['fps']:.2f} | not measured: no CUDA device on the benchmark machine |"
        )
    return head + "\n".join(lines) + "\n"
