"""bench/profile_render.py on the CPU (the GPU runs it through bench/run_on_gpu.sh profile): it renders, writes its
tables, and the package's own functions are in the Python table (a profile of nothing would pass a smoke test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import profile_render


def test_profile_render_writes_the_operator_and_python_tables(tmp_path: Path, capsys, caplog) -> None:
    rc = profile_render.main(
        ["--size", "64", "--keyframes", "24", "--calls", "3", "--batch", "2", "--precision", "fp32",
         "--threads", "1", "--rows", "8", "--out", str(tmp_path)]
    )  # fmt: skip
    assert rc == 0
    text = (tmp_path / "profile.md").read_text()
    assert text in capsys.readouterr().out  # printed as written
    assert "2 poses each" in text and "hybrid-fast at 64x64, 24 keyframes" in text
    ops = text.split("## Operators (torch.profiler)")[1].split("## Python")[0]
    assert ops.count("\n| `") == 8  # the 8 operators with the most own time
    assert "net.py" in text.split("## Python (cProfile)")[1]  # the hybrid's forward was profiled
    assert (tmp_path / "trace.json").stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp"))
    assert "carries no depth uncertainty" not in caplog.text  # as bench_engine.py's: each render's depth_sigma timed


def test_profile_render_refuses_cuda_where_there_is_none(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(SystemExit):
        profile_render.main(["--device", "cuda", "--size", "64", "--keyframes", "8", "--out", str(tmp_path)])
    assert not (tmp_path / "profile.md").exists()
