"""The machine a measurement ran on, as every table and benchmark names it: the CPU model, its SIMD flags that
matter for the numbers (numbers from a CPU with AVX-512 and bf16 do not carry over to one with AVX2 alone), the
cores, and with :func:`machine_description` torch's build and threads. Reads ``/proc/cpuinfo`` (Linux, through
:mod:`pose2rgbd.cpuinfo`); elsewhere ``platform``'s answer and ``unknown`` flags. Nothing here imports torch but
:func:`machine_description`: a benchmark that measures a child process's memory names the CPU without raising its
own."""

from __future__ import annotations

import os
import platform

from pose2rgbd.cpuinfo import cpu_flag_set, proc_value

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model() -> str:
    """e.g. ``Intel(R) Xeon(R) Processor``."""
    return proc_value("model name") or platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    """The SIMD flags of this CPU among :data:`SIMD_FLAGS`, e.g. ``sse4_2 avx avx2 fma avx512f``; ``unknown``."""
    flags = cpu_flag_set()
    if flags is None:
        return "unknown"
    return " ".join(f for f in SIMD_FLAGS if f in flags)


def cpu_line() -> str:
    """One line: ``<model>, <n> cores (<flags>)``."""
    return f"{cpu_model()}, {os.cpu_count()} cores ({cpu_flags()})"


def machine_description() -> dict[str, str | int | float | bool | None]:
    """The CPU, its flags, cores, memory, torch's version and threads, CUDA and the GPU, Python (imports torch)."""
    import torch

    mem_kb = proc_value("MemTotal", "/proc/meminfo")  # "23456789 kB"
    mem_gib = round(int(mem_kb.split()[0]) / 1024**2, 1) if mem_kb else None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }
