"""The one reader of /proc/cpuinfo: its values, the CPU's flag set and the native-bf16 answer the engines use."""

from __future__ import annotations

from pathlib import Path

import pytest

from pose2rgbd import cpuinfo


def test_proc_value_reads_the_first_line_of_its_key(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Some CPU: v2\nflags\t\t: fpu avx2\n\nprocessor\t: 1\nflags\t: other\n")
    assert cpuinfo.proc_value("model name", str(f)) == "Some CPU: v2"  # split at the first colon only
    assert cpuinfo.proc_value("flags", str(f)) == "fpu avx2"  # the first CPU's
    assert cpuinfo.proc_value("cache size", str(f)) is None
    assert cpuinfo.proc_value("flags", str(tmp_path / "absent")) is None


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        (frozenset({"avx2", "fma"}), False),
        (frozenset({"avx512f", "avx512_bf16"}), True),
        (frozenset({"amx_bf16", "amx_tile"}), True),
        (frozenset({"avx512_bf16_like"}), False),  # a whole flag, not a substring of the file
        (None, False),  # flags not readable
    ],
)
def test_native_bf16_follows_the_cpus_flags(
    monkeypatch: pytest.MonkeyPatch, flags: frozenset[str] | None, native: bool
) -> None:
    from pose2rgbd.models import device

    monkeypatch.setattr(cpuinfo, "cpu_flag_set", lambda: flags)
    assert cpuinfo.has_native_bf16() is native
    assert device.cpu_has_native_bf16() is native  # the engines' answer is this reader's


def test_the_flag_set_is_this_cpus() -> None:
    from pose2rgbd.experiments.machine import SIMD_FLAGS, cpu_flags

    line = cpuinfo.proc_value("flags")
    flags = cpuinfo.cpu_flag_set()
    if line is None:
        assert flags is None and cpu_flags() == "unknown"
        return
    assert flags == frozenset(line.split())
    assert cpu_flags().split() == [f for f in SIMD_FLAGS if f in flags]
