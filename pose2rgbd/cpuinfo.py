"""What this CPU is and which instructions it has, from ``/proc/cpuinfo`` (Linux; elsewhere ``None`` and no flags;
the flags read once per process). One reader for the two that ask: the engines' choice of bf16
(:mod:`pose2rgbd.models.device`: native bf16 instructions or not) and the machine every benchmark and table names
(:mod:`pose2rgbd.experiments.machine`). Imports nothing of the package and no torch."""

from __future__ import annotations

import functools
from pathlib import Path


def proc_value(key: str, path: str = "/proc/cpuinfo") -> str | None:
    """The value of the first line of the /proc file ``path`` that starts with ``key`` (``model name``, ``flags``;
    ``MemTotal`` of ``/proc/meminfo``); None where there is no such line or file."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache
def cpu_flag_set() -> frozenset[str] | None:
    """The first CPU's flags (``avx2``, ``avx512_bf16``, ``amx_bf16``, ...); None where they cannot be read. Read
    once per process: a CPU does not change under a running process."""
    flags = proc_value("flags")
    return None if flags is None else frozenset(flags.split())


def has_native_bf16() -> bool:
    """True where the CPU has bf16 instructions (``avx512_bf16`` or ``amx_bf16``); False elsewhere and where the flags
    cannot be read."""
    flags = cpu_flag_set() or frozenset()
    return "avx512_bf16" in flags or "amx_bf16" in flags
