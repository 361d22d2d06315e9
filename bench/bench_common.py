"""What the benchmarks share (not a test): the model names of their tables and the CPU's speed at the moment.

Every benchmark script imports from here, none from another benchmark script, so no two scripts import each other.
"""

from __future__ import annotations

import time

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
