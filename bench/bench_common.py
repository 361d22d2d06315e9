"""What the benchmarks share (not a test): the model names of their tables, the CPU's speed at the moment and the
process's resident memory (current and peak).

Every benchmark script imports from here, none from another benchmark script, so no two scripts import each other.
"""

from __future__ import annotations

import time
from pathlib import Path

NAMES = {
    "base": "Base",
    "slice10": "Slice-10",
    "slice32": "Slice-32",
    "slice64": "Slice-64",
    "hybrid": "Hybrid",
    "hybrid-lite": "Hybrid-lite",
    "hybrid-fast": "Hybrid-fast",
}


def matmul_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    """fp32 ``n x n`` matmul GFLOP/s on torch's threads (best of repeated timings)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: /proc/self/clear_refs, 5); False elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def resident_mib(key: str = "VmRSS") -> float:
    """This process's current (``VmRSS``) or peak (``VmHWM``, since the start or :func:`reset_peak_rss`) resident
    memory in MiB, from /proc/self/status (NaN where there is none: not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # the kernel writes kB (KiB)
    except OSError:
        pass
    return float("nan")
