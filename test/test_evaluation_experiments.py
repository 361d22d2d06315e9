"""The experiments command: run plan, Markdown tables, Table 4 measurement (one tiny row)."""

from __future__ import annotations

import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.experiments.runner import ExperimentsConfig, planned_runs, results_markdown
from pose2rgbd.experiments.table4 import machine_description, run_table4, table4_markdown


def test_plan_covers_tables_and_shares_runs() -> None:
    cfg = ExperimentsConfig(epochs_table1=3, epochs_table2=3)
    runs = planned_runs(cfg)
    # per split: 6 Table 1 runs + 1 paper-lr control + 8 Table 2 runs - 2 shared (Base depth / rgbd, quat)
    assert len(runs) == 2 * 13
    assert sum(r.lr == 0.01 for r in runs) == 2
    cfg2 = ExperimentsConfig(epochs_table1=8, epochs_table2=3, splits=["random"])
    runs2 = planned_runs(cfg2)
    assert len(runs2) == 15 and {r.split for r in runs2} == {"random"}
    assert {r.preset for r in runs2} == {"base", "slice10", "slice32", "slice64"}
    with pytest.raises(ConfigError):
        ExperimentsConfig(splits=["diagonal"])


def _fake(
    split: str, preset: str, outputs: str, enc: str, epochs: int, rgb: float, depth: float, lr: float = 1e-3
) -> dict:
    m = {"frames": 10.0}
    if outputs != "depth":
        m.update(rgb_mae_px=rgb, rgb_psnr_db=20.0, rgb_ssim=0.5)
    if outputs != "rgb":
        m.update(depth_mae=depth, depth_rmse=depth * 2, depth_absrel=0.1)
    return {
        "spec": {"split": split, "preset": preset, "outputs": outputs, "encoding": enc, "epochs": epochs, "lr": lr},
        "model": m,
        "baseline": {"rgb_mae_px": 33.0, "depth_mae": 9.0},
        "train_s": 60.0,
        "split": f"{split} split",
        "train_frames": 80,
        "test_frames": 20,
        "depth_unit": "m",
    }


def test_results_markdown_has_paper_columns() -> None:
    cfg = ExperimentsConfig(epochs_table1=2, epochs_table2=2, splits=["route"], tables=["1", "2"])
    results = [
        _fake("route", "base", o, e, 2, 25.5, 7.25)
        for e in ("6dof-euler", "6dof-quat")
        for o in ("depth", "rgb", "rgbd")
    ]
    results += [
        _fake("route", p, o, "6dof-quat", 2, 24.0, 6.5)
        for p in ("slice10", "slice32", "slice64")
        for o in ("depth", "rgbd")
    ]
    md = results_markdown(cfg, results, [], machine_description(), "toy", "pose2rgbd experiments --out X", 60.0)
    assert "Table 1 analog" in md and "Table 2 analog" in md
    assert "| 0.001 | 6dof-euler | rgbd | 25.50 | 7.25 |" in md
    assert "| 21.45 | 8.85 |" in md  # paper's Euler RGBD row
    assert "| slice32 | depth | n/a | 6.50 |" in md and "| n/a | 6.31 |" in md
    assert "Nearest-pose baseline on the same test frames: RGB MAE 33.00 px" in md


def test_table4_one_row() -> None:
    rows = run_table4(["base"], [2], size=64, min_seconds=0.0, min_runs=1, progress=False)
    r = rows[0]
    assert "error" not in r, r
    assert r["batch"] == 2 and r["parameters"] > 2_000_000 and r["fps"] > 0 and r["rss_added_mib"] > 0
    md = table4_markdown(rows, {"base": 2_928_673})
    assert "2,928,673" in md and "not measured: no CUDA device on the benchmark machine" in md
