"""Depth at points triangulated among the test frames: the yardstick of datasets whose depth was estimated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.evaluation import evaluate
from pose2rgbd.evaluation.point_depth import (
    CHECK_WARN_RELATIVE,
    FramePoints,
    PointDepthAccumulator,
    dataset_depth_at_points,
    estimated_depth_source,
    triangulate_test_frames,
)
from pose2rgbd.placemap.triangulate import _consistent


@pytest.fixture(scope="module")
def transect(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated straight flight over the city, 121 frames at 128x128; its depth is the truth."""
    from pose2rgbd.sim import SimConfig
    from pose2rgbd.sim.export import export_dataset, world_of

    d = tmp_path_factory.mktemp("points") / "dataset"
    sim = SimConfig(width=128, height=128, routes=["transect"], route_duration_s=20.0, dataset_stride=5)
    export_dataset(sim, d, progress=False, world=world_of(sim))
    return d


def _points(ds: Dataset, size: int, frames: np.ndarray) -> tuple[FramePoints, np.ndarray]:
    cache = build_cache(ds, size, cache_root=ds.path.parent / "cache")
    pts = triangulate_test_frames(ds, frames, cache.T_world_cam[frames], cache.camera, rot_weight_m=30.0)
    return pts, np.asarray(cache.depth[frames])


def test_points_triangulated_among_the_test_frames_lie_at_the_true_depth(transect: Path) -> None:
    ds = Dataset(transect)
    frames = np.arange(20, 44)
    pts, truth = _points(ds, 128, frames)
    assert pts.frames == 24 and pts.count > 300 and sum(len(z) > 0 for z in pts.z.values()) >= 20
    ratio = np.concatenate([truth[n][pts.uv[int(i)][:, 1], pts.uv[int(i)][:, 0]] / pts.z[int(i)]
                            for n, i in enumerate(frames)])  # fmt: skip
    assert abs(np.median(ratio) - 1.0) < 0.01
    assert np.mean(np.abs(ratio - 1.0) < 0.1) > 0.85  # the rest: keypoints on depth edges
    assert "not the dataset's depth" in pts.describe() and f"{pts.count} keypoints" in pts.describe()
    assert "within the model's depth range" not in pts.describe()  # no range: every point scored
    mid = float(np.median(np.concatenate(list(pts.z.values()))))
    n_in = pts.count_within(mid)
    assert 0 < n_in < pts.count  # half of them beyond the median: left out, and said so
    said = pts.describe(mid, "m")
    share = f"{100 * n_in / pts.count:.0f} %"
    assert f"; {n_in} of them ({share}) within the model's depth range (up to {mid:.1f} m)" in said
    # the looser settings of a map (1 deg, any one pair) accept more points, and less exact ones
    loose = triangulate_test_frames(ds, frames, Dataset(transect).frames.T_world_cam[frames],
                                    build_cache(ds, 128, cache_root=transect.parent / "cache").camera,
                                    rot_weight_m=30.0, min_parallax_deg=1.0, min_support=1,
                                    max_spread=np.inf)  # fmt: skip
    assert loose.count > pts.count
    # fewer than two frames: nothing to triangulate, no error
    one = triangulate_test_frames(ds, frames[:1], ds.frames.T_world_cam[frames[:1]], ds.camera, rot_weight_m=30.0)
    assert one.count == 0 and one.frames == 1


def test_a_render_is_scored_at_the_points_pixels(transect: Path) -> None:
    ds = Dataset(transect)
    frames = np.arange(20, 36)
    pts, truth = _points(ds, 64, frames)
    acc = {k: PointDepthAccumulator(pts) for k in ("truth", "scaled", "none", "far")}
    acc["truth"].add(frames, truth)
    acc["scaled"].add(frames, 1.3 * truth)
    acc["none"].add(frames, np.full_like(truth, np.nan))
    acc["far"].add(frames, None)  # nothing predicted: nothing scored
    r = {k: a.result() for k, a in acc.items()}
    assert r["truth"]["point_depth_points"] == pts.count and r["truth"]["point_depth_missing_fraction"] == 0
    assert r["truth"]["point_depth_absrel"] < 0.05  # the nearest pixel at 64x64, points on edges included
    assert r["scaled"]["point_depth_absrel"] == pytest.approx(0.3, abs=0.05)
    assert r["scaled"]["point_depth_mae"] > 3 * r["truth"]["point_depth_mae"]
    assert r["none"]["point_depth_missing_fraction"] == 1.0 and np.isnan(r["none"]["point_depth_mae"])
    assert r["far"]["point_depth_points"] == 0
    # points beyond the model's depth range are not scored
    capped = PointDepthAccumulator(pts, max_depth=float(np.median(np.concatenate(list(pts.z.values())))))
    capped.add(frames, truth)
    assert 0 < capped.result()["point_depth_points"] < r["truth"]["point_depth_points"]


def test_a_keypoint_whose_triangulations_disagree_gets_no_point() -> None:
    """A mismatch on repeated texture along the epipolar line passes each pair's checks; the agreement of several
    pairs is what catches it."""
    T = np.repeat(np.eye(4)[None], 2, axis=0)
    offsets = np.array([0, 3, 5])
    keys = np.array([0, 1, 2, 3])  # keypoints 0-2 of frame 0, keypoint 3 of frame 1
    at = {0: [0, 0, 10], 1: [0, 0, 10], 2: [0, 0, 10], 3: [0, 0, 20]}
    rows, pts = [], []
    for k, spread in ((0, [0.0, 0.1, -0.1]), (1, [0.0, 3.0, -3.0]), (2, [0.0, 0.1]), (3, [0.0, 0.2, 0.3, -0.2])):
        for s in spread:
            rows.append(k)
            pts.append(np.add(at[k], [0, 0, s]))
    r, p = np.asarray(rows), np.asarray(pts, np.float64)
    median = np.array([np.median(p[r == k], axis=0) for k in keys])
    ok = _consistent(r, p, keys, median, offsets, T, 3, 0.05)
    assert ok.tolist() == [True, False, False, True]  # agree / disagree / too few / agree (farther: a wider limit)
    assert _consistent(r, p, keys, median, offsets, T, 2, 0.05).tolist() == [True, False, True, True]


def test_evaluate_scores_depth_at_points_where_the_dataset_depth_was_estimated(transect: Path, tmp_path: Path) -> None:
    from pose2rgbd.methods.pose2rgbd import preset_config
    from pose2rgbd.training import TrainConfig, train_model

    ds = Dataset(transect)
    assert estimated_depth_source(ds) is None  # the simulator's depth is the truth
    ds.manifest.extra["depth"] = {"source": "selfsup-depth"}  # as convert video --depth selfsup writes it
    assert estimated_depth_source(ds) == "selfsup-depth"
    ds.manifest.extra["depth"] = {"source": "lidar"}
    assert estimated_depth_source(ds) is None
    tc = TrainConfig(epochs=1, batch_size=8, max_steps=2, split="route", progress=False, tensorboard=False)
    res = train_model(transect, tmp_path / "run", preset_config("slice10", size=64, outputs="rgbd"), tc)
    auto = evaluate(res.last, transect, write_files=False, progress=False)
    assert "point_depth_mae" not in auto.metrics["model"] and "dataset_depth" not in auto.metrics
    ev = evaluate(res.last, transect, out_dir=tmp_path / "eval", fly_frames=3, progress=False, point_depth="on")
    m, own = ev.metrics["model"], ev.metrics["dataset_depth"]
    assert m["point_depth_points"] > 20 and m["point_depth_mae"] > 0
    for key in ("baseline", "reprojection", "fused"):
        assert ev.metrics[key]["point_depth_points"] > 0, key
    # the dataset's own depth is the truth here: far closer to the points than a 2-step model
    assert own["point_depth_absrel"] < 0.1 and 2 * own["point_depth_absrel"] < m["point_depth_absrel"]
    md = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| the dataset's own depth |" in md and "depth MAE at points (m)" in md and "Depth at points:" in md
    assert 'docs/models.md, "Depth at triangulated points"' in md  # a section that exists there
    with pytest.raises(Exception, match="point_depth"):
        evaluate(res.last, transect, write_files=False, progress=False, point_depth="maybe")


def test_a_datasets_own_depth_is_checked_at_points_triangulated_among_runs_of_its_frames(transect: Path) -> None:
    """The simulator's true depth lies at the points (median relative error near 0, scale 1); the same depth 1.3
    times too far, with no depth on half of each image, is 30 % from them, called far, and counts its missing points;
    runs of ~32 frames in time order, or of the length asked."""
    ds = Dataset(transect)
    true = dataset_depth_at_points(ds)
    assert true.runs == 4 and len(true.relative_per_run) == 4 and true.block == 32  # 121 frames
    assert true.points > 1000 and true.frames_with_points > 100 and true.missing_fraction == 0.0
    assert true.median_relative < 0.05 and abs(true.median_ratio - 1.0) < 0.01 and not true.far
    assert all(r is not None and r < 0.1 for r in true.relative_per_run)
    assert true.absrel > true.median_relative  # the mean: a few wrong near points weigh in
    assert f"{true.points} points" in true.describe() and "median relative error" in true.describe()
    read = ds.read_depth

    def scaled_with_holes(i: int) -> np.ndarray:
        d = 1.3 * read(i)
        d[:, : d.shape[1] // 2] = np.nan  # no depth on the left half
        return d

    ds.read_depth = scaled_with_holes  # type: ignore[method-assign]
    far = dataset_depth_at_points(ds, block=60)
    assert far.runs == 2 and 0.2 < far.missing_fraction < 0.8 and far.far
    assert far.median_relative == pytest.approx(0.3, abs=0.02) and far.median_relative > CHECK_WARN_RELATIVE
    assert far.median_ratio == pytest.approx(1.3, abs=0.013)
