"""Localization metrics (hand-computed errors and statistics), the retrieval baseline, grayscale images, the
report table and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation.localization import (
    LocalizationReport,
    RetrievalLocalizer,
    error_cdf_figure,
    evaluate_localizers,
    pose_errors,
    real_vs_generated_grid,
    summarize,
    summary_markdown,
    to_grayscale,
    trajectory_figure,
)
from pose2rgbd.inference import Localizer
from pose2rgbd.inference.testing import look_down_pose, make_ground_plane_checkpoint, render_ground_plane


def test_pose_errors_by_hand() -> None:
    a = np.stack([np.eye(4), np.eye(4)])
    b = a.copy()
    b[0, :3, 3] = [3.0, 4.0, 0.0]  # 5 m away
    b[1, :3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()  # 30 degrees about z
    pos, rot = pose_errors(a, b)
    np.testing.assert_allclose(pos, [5.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(rot, [0.0, 30.0], atol=1e-9)
    with pytest.raises(ConfigError, match="2 estimates for 1 true poses"):
        pose_errors(a, b[:1])


def test_summary_statistics_and_table() -> None:
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert s["median"] == 3.0 and s["mean"] == 22.0
    assert s["p90"] == pytest.approx(4.0 + 0.6 * 96.0)  # numpy's linear percentile
    assert all(np.isnan(v) for v in summarize(np.array([])).values())
    T = np.repeat(np.eye(4)[None], 4, axis=0)
    est = T.copy()
    est[:, 0, 3] = [0.0, 1.0, 2.0, 10.0]
    rep = LocalizationReport("m", est, T, seconds=0.4)
    row = rep.summary()
    assert row["frames"] == 4 and row["position_m"]["median"] == 1.5 and row["ms_per_frame"] == pytest.approx(100.0)
    md = summary_markdown([row])
    assert "| m | 4 | 1.50 | 0.00 | 3.25 |" in md and "median pos (m)" in md


def _scene(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ck = make_ground_plane_checkpoint(24)
    rng = np.random.default_rng(seed)
    T = np.stack([look_down_pose(*rng.uniform(-40, 40, 2), rng.uniform(20, 35), rng.uniform(-3, 3)) for _ in range(n)])
    rgb = render_ground_plane(ck, T)["rgb"]
    assert rgb is not None
    return rgb, T


def test_retrieval_finds_training_images_and_nearby_views() -> None:
    imgs, T = _scene(60, 0)
    ret = RetrievalLocalizer(imgs, T, thumb=8)
    assert isinstance(ret, Localizer) and ret.input_hw == (24, 24)
    res = ret.localize(imgs[:10])  # a training image is its own best match
    np.testing.assert_allclose(res.T_world_cam, T[:10])
    assert np.all(res.confidence > 0.99)
    # query views near training views: retrieval answers with a near pose, far better than a random training pose
    q = T[:20].copy()
    q[:, :2, 3] += 0.5
    ck = make_ground_plane_checkpoint(24)
    q_img = render_ground_plane(ck, q)["rgb"]
    reports = evaluate_localizers({"retrieval": ret}, q_img, q)
    pos = reports["retrieval"].position_error_m
    rand_pos, _ = pose_errors(T[np.random.default_rng(1).permutation(60)[:20]], q)
    assert np.median(pos) < 0.25 * np.median(rand_pos)
    with pytest.raises(ConfigError, match="3 training images but 2 poses"):
        RetrievalLocalizer(imgs[:3], T[:2])


def test_grayscale_keeps_three_equal_channels() -> None:
    imgs, _ = _scene(3, 1)
    g = to_grayscale(imgs)
    assert g.shape == imgs.shape and g.dtype == np.uint8
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    assert not np.array_equal(g, imgs)
    with pytest.raises(ConfigError, match="uint8"):
        to_grayscale(imgs.astype(np.float32))


def test_figures_are_written(tmp_path: Path) -> None:
    imgs, T = _scene(8, 2)
    est = T.copy()
    est[:, :2, 3] += np.random.default_rng(0).normal(size=(8, 2))
    reps = [LocalizationReport("a", est, T), LocalizationReport("b", T, T)]
    for p in (
        error_cdf_figure(reps, tmp_path / "cdf.png", title="t"),
        trajectory_figure(T, {"a": est}, tmp_path / "traj.png"),
        real_vs_generated_grid(imgs[:4], imgs[4:], tmp_path / "grid.png", labels=["0", "1", "2", "3"]),
    ):
        assert p.exists() and p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
