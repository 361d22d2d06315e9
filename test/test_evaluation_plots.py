"""The evaluation figures' wording and scales: what the dataset's depth is called, the depth colour bar's ticks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.evaluation.plots import dataset_depth_name, depth_bar_ticks, qualitative_grid


def test_the_datasets_depth_is_called_ground_truth_only_where_it_was_measured() -> None:
    assert dataset_depth_name(None, "m") == "GT depth (m)"  # a sensor, a simulator, or a dataset that does not say
    assert dataset_depth_name(None) == "GT depth"
    est = dataset_depth_name("selfsup-depth", "m")
    assert "GT" not in est and est.startswith("dataset depth (m)") and "estimated: selfsup-depth" in est
    short = dataset_depth_name("mvs", short=True)  # a fly-through tile's label
    assert short == "dataset depth (estimated)"
    assert dataset_depth_name(None, short=True) == "GT depth"


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (12.0, 310.0, [20.0, 50.0, 100.0, 200.0]),  # a single "100" before
        (0.5, 4.0, [0.5, 1.0, 2.0]),
        (0.3, 1.5, [0.3, 0.5, 1.0]),
        (0.1, 1000.0, [0.1, 1.0, 10.0, 100.0, 1000.0]),  # over three decades: the powers of ten
        (0.0, 80.0, []),  # a linear bar keeps matplotlib's ticks
    ],
)
def test_log_depth_bar_gets_readable_ticks(lo: float, hi: float, ticks: list[float]) -> None:
    assert depth_bar_ticks(lo, hi) == ticks


@pytest.mark.parametrize(("lo", "hi"), [(10.0, 18.0), (2.1, 2.9), (2.14, 2.96), (1.0, 1.01), (0.02, 0.05)])
def test_a_short_log_range_still_gets_three_ticks_inside_it(lo: float, hi: float) -> None:
    ticks = depth_bar_ticks(lo, hi)
    assert len(ticks) >= 3 and ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    assert all(lo * (1 - 1e-6) <= t <= hi * (1 + 1e-6) for t in ticks)


def test_grid_draws_with_an_estimated_depth_and_sky(tmp_path: Path) -> None:
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    d = np.full((2, 8, 8), 30.0, np.float32)
    d[:, 0] = np.inf  # sky
    d[:, 1] = np.nan  # no depth
    p = qualitative_grid(tmp_path / "g.png", rgb, rgb, d, d, np.ones_like(d), depth_range=(12.0, 310.0),
                         depth_estimated_by="selfsup-depth")  # fmt: skip
    assert p.stat().st_size > 0
