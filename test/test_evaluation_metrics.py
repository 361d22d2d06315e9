"""Metrics against hand-computed values, and the nearest-pose baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.evaluation.baseline import NearestPoseBaseline, default_rot_weight
from pose2rgbd.evaluation.metrics import MetricAccumulator, abs_rel, depth_mae, psnr, rgb_mae, ssim
from pose2rgbd.geometry import make_T
from pose2rgbd.geometry.rotations import rpy_to_matrix


def test_rgb_metrics_hand_computed() -> None:
    gt = np.zeros((2, 2, 3), np.uint8)
    pred = gt.copy()
    pred[0, 0] = [12, 0, 0]  # one value off by 12 of 12 values
    pred[1, 1] = [0, 255, 0]
    assert rgb_mae(pred, gt) == pytest.approx((12 + 255) / 12)
    mse = (12**2 + 255**2) / 12
    assert psnr(pred, gt) == pytest.approx(10 * math.log10(255**2 / mse))
    assert psnr(gt, gt) == math.inf
    assert ssim(gt, gt) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    noisy = np.clip(img.astype(int) + rng.integers(-40, 41, img.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(noisy, img) < 0.99
    # SSIM of a constant shift of a flat image is the luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    a, b = np.full((16, 16), 100, np.uint8), np.full((16, 16), 150, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1), rel=1e-6)


def test_depth_metrics_exclude_nan_and_sky() -> None:
    gt = np.array([[10.0, 20.0], [np.inf, np.nan]], np.float32)
    pred = np.array([[12.0, 15.0], [300.0, 1.0]], np.float32)
    assert depth_mae(pred, gt) == pytest.approx((2 + 5) / 2)
    assert abs_rel(pred, gt) == pytest.approx((2 / 10 + 5 / 20) / 2)
    assert depth_mae(pred, gt, max_depth=15.0) == pytest.approx(2.0)  # 20 m is beyond the range: excluded


def test_accumulator_is_pixel_weighted() -> None:
    acc = MetricAccumulator()
    g1 = np.array([[[1.0, np.inf]]], np.float32)  # 1 valid pixel, error 1
    g2 = np.array([[[2.0, 4.0]]], np.float32)  # 2 valid pixels, errors 0 and 3
    acc.add(None, None, np.array([[[2.0, 0.0]]], np.float32), g1)
    acc.add(None, None, np.array([[[2.0, 1.0]]], np.float32), g2)
    r = acc.result()
    assert r["frames"] == 2
    assert r["depth_mae"] == pytest.approx((1 + 0 + 3) / 3)
    assert r["depth_rmse"] == pytest.approx(math.sqrt((1 + 0 + 9) / 3))
    assert r["depth_valid_fraction"] == pytest.approx(3 / 4)
    acc2 = MetricAccumulator(max_depth=3.0)
    acc2.add(None, None, np.array([[[2.0, 1.0]]], np.float32), g2)
    assert acc2.result()["depth_mae"] == 0.0 and acc2.result()["depth_far_fraction"] == 0.5
    assert "rgb_mae_px" not in r


def _T(x: float, yaw: float) -> np.ndarray:
    return make_T(rpy_to_matrix(np.array([0.0, 0.0, yaw])), np.array([x, 0.0, 0.0]))


def test_nearest_pose_baseline_distance() -> None:
    train = np.stack([_T(0.0, 0.0), _T(10.0, 0.0), _T(1.0, np.pi / 2)])
    nn_ = NearestPoseBaseline(train, np.array([5, 6, 7]), rot_weight_m=10.0)
    d = nn_.distances(_T(0.9, 0.0)[None])[0]
    assert d == pytest.approx([0.9, 9.1, 0.1 + 10.0 * np.pi / 2])
    idx, dist = nn_.query(np.stack([_T(0.9, 0.0), _T(1.2, 1.5), _T(9.0, 0.1)]))
    assert idx.tolist() == [5, 7, 6]
    assert dist[0] == pytest.approx(0.9)


def test_nearest_pose_baseline_over_keyframes_uses_their_index_and_reads_its_answers_from_them() -> None:
    from pose2rgbd.evaluation.baseline import nearest_answers
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.placemap.keyframes import ArrayKeyframes

    T = np.stack([_T(0.0, 0.0), _T(3.0, 0.0), _T(10.0, 0.0), _T(1.0, np.pi / 2)])
    rgb = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    depth = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2)
    kf = ArrayKeyframes(rgb, depth, T, PinholeCamera.from_fov(2, 2, 60.0), rows=np.array([0, 2, 3]), rot_weight_m=10.0)
    nn_ = NearestPoseBaseline.of_keyframes(kf)
    assert nn_.poses is kf.poses and nn_.rot_weight_m == 10.0  # one index, not a second one
    rows, dist = nn_.query(np.stack([_T(0.9, 0.0), _T(1.2, 1.5), _T(9.0, 0.1), _T(0.2, 0.0)]))
    assert rows.tolist() == [0, 2, 1, 0] and dist[0] == pytest.approx(0.9)  # keyframe rows (frame 1 is not one)
    a_rgb, a_depth = nearest_answers(kf, rows)
    np.testing.assert_array_equal(a_rgb, rgb[[0, 3, 2, 0]])
    np.testing.assert_array_equal(a_depth, depth[[0, 3, 2, 0]])


def test_default_rot_weight_is_median_depth() -> None:
    depth = np.array([[[1.0, 3.0]], [[np.inf, 5.0]], [[100.0, 100.0]]], np.float32)
    assert default_rot_weight(depth, np.array([0, 1])) == pytest.approx(3.0)
    assert default_rot_weight(None, np.array([0])) == 10.0


def test_depth_metrics_over_pixels_valid_in_both() -> None:
    """A hole in the answer (a baseline's warped keyframe) is excluded and counted, not a NaN for the split."""
    acc = MetricAccumulator()
    gt = np.array([[[1.0, 2.0, np.nan, 4.0]]], np.float32)
    pred = np.array([[[2.0, np.nan, 3.0, 4.0]]], np.float32)  # one hole where gt is valid
    acc.add(None, None, pred, gt)
    r = acc.result()
    assert r["depth_mae"] == pytest.approx(0.5)  # pixels 0 and 3
    assert r["depth_rmse"] == pytest.approx(math.sqrt(0.5))
    assert r["depth_valid_fraction"] == pytest.approx(0.5)
    assert r["depth_pred_missing_fraction"] == pytest.approx(0.25)
    assert depth_mae(pred[0], gt[0]) == pytest.approx(0.5)


def test_psnr_bounded_and_metrics_json_strict(tmp_path: Path) -> None:
    from pose2rgbd.evaluation.evaluate import EvaluationResult, _write_metrics_json
    from pose2rgbd.evaluation.metrics import PSNR_CAP_DB

    img = np.full((1, 8, 8, 3), 100, np.uint8)
    far = img.copy()
    far[..., 0] = 0
    acc = MetricAccumulator()
    acc.add(img, img, None, None)  # a zero-error frame (a repeat answered by its twin)
    acc.add(far, img, None, None)
    r = acc.result()
    assert r["rgb_psnr_db"] == pytest.approx((PSNR_CAP_DB + psnr(far[0], img[0])) / 2)
    res = EvaluationResult(tmp_path, {"model": {"depth_mae": math.nan, "x": math.inf, "n": 1.0}}, {}, "all", 1, "m")
    res.info = {"notes": [], "w": np.float32(2.0)}
    _write_metrics_json(tmp_path / "metrics.json", res)
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["metrics"]["model"] == {"depth_mae": None, "x": None, "n": 1.0}
    assert data["info"]["w"] == 2.0


def test_the_depth_sigma_plot_states_the_shares_metrics_md_states_over_the_same_pixels() -> None:
    """Two batches of unequal size and accuracy (16 frames whose errors often exceed depth_sigma, 2 whose errors
    rarely do): a subsample of a few thousand pixels per batch, as the plot once drew, weighs the small batch as much
    as the big one and overstates the share. The plot's curves count every scored pixel: at 1 sigma they are the
    shares metrics.md gives, for the same kinds of pixel under the same names, and the legend rounds them alike."""
    from pose2rgbd.evaluation.metrics import SIGMA_KINDS, SIGMA_MULTIPLES, SigmaAccumulator
    from pose2rgbd.evaluation.plots import depth_sigma_legend
    from pose2rgbd.models.depth_uncertainty import DepthUncertainty, confidence_rows, scored_pixels

    u = DepthUncertainty(0.683, (5.0, 20.0), np.full((2, 3), 0.1), np.full((2, 3), 1000), wide=(2.5, 2.0))
    rng = np.random.default_rng(0)
    acc = SigmaAccumulator(max_depth=50.0, uncertainty=u)
    subsample: dict[int, list[np.ndarray]] = {0: [], 1: []}  # what the plot drew before: [::step] per batch
    for frames, spread in ((16, 0.15), (2, 0.03)):
        truth = rng.uniform(2.0, 60.0, (frames, 64, 64))  # some beyond max_depth: not scored
        truth[:, 0, :4] = [np.nan, np.inf, 0.0, -1.0]  # invalid, sky, zero, negative: not scored
        depth = truth * (1.0 + rng.normal(0.0, spread, truth.shape))
        depth[:, 1, 0] = np.nan  # no answer: not scored
        conf = rng.uniform(0.0, 2.0, truth.shape).astype(np.float32)  # about a quarter below 0.5: holes
        sigma = u.sigma(depth, conf)
        acc.add(depth, truth, sigma, conf)
        m = scored_pixels(depth, truth, 50.0) & np.isfinite(sigma)
        ratio = np.abs(depth[m] - truth[m]) / sigma[m]
        row, step = confidence_rows(conf, m), max(1, int(m.sum()) // 4096)
        for r in (0, 1):
            subsample[r].append(ratio[row == r][::step])
    metrics = acc.result(u)
    curves = acc.curves(u)
    assert curves is not None and curves.level == pytest.approx(0.683)
    assert [c.kind for c in curves.curves] == ["all", "confident", "holes"]
    for c in curves.curves:
        key = "" if c.kind == "all" else f"_{c.kind}"
        assert c.share_at_one == metrics[f"depth_sigma_within{key}"]  # exactly: the same pixels, counted alike
        if key:
            assert c.pixels == metrics[f"depth_sigma_pixels{key}"]
        assert (np.diff(c.share) >= 0).all() and c.share[-1] <= 1.0
    assert curves.curves[0].pixels == sum(c.pixels for c in curves.curves[1:])
    assert SIGMA_MULTIPLES[40] == 1.0 and np.array_equal(curves.k, SIGMA_MULTIPLES)
    # the case is one where a per-batch subsample is off by several points, on both kinds
    old = {r: float(np.mean(np.concatenate(s) <= 1.0)) for r, s in subsample.items()}
    assert old[1] - metrics["depth_sigma_within_confident"] > 0.05
    assert old[0] - metrics["depth_sigma_within_holes"] > 0.05
    # the legend says the numbers metrics.md says, with the names metrics.md gives the pixels
    legend = depth_sigma_legend(curves)
    sentence = SigmaAccumulator.describe(metrics)
    labels = dict(SIGMA_KINDS)
    for kind, text in legend.items():
        key = "" if kind == "all" else f"_{kind}"
        share = f"{100 * metrics[f'depth_sigma_within{key}']:.1f} %"
        assert text.startswith(f"{labels[kind]}: {share} within 1 sigma")
        assert share in sentence and (kind == "all" or f"{share} with {labels[kind]}" in sentence)
    assert metrics["depth_sigma_relative_median"] == pytest.approx(0.1, rel=0.003)  # sigma = 0.1 x depth here


def test_depth_sigma_curves_of_a_model_without_confidence_have_one_kind() -> None:
    from pose2rgbd.evaluation.metrics import SigmaAccumulator
    from pose2rgbd.models.depth_uncertainty import DepthUncertainty

    u = DepthUncertainty(0.683, (5.0, 20.0), np.full((2, 3), 0.1), np.full((2, 3), 1000))
    acc = SigmaAccumulator(uncertainty=u)
    assert acc.curves(u) is None and acc.result(u) == {}
    truth = np.full((1, 4, 4), 10.0)
    depth = truth + np.array([0.0, 0.5, 1.0, 2.0])  # |error| 0, 0.5, 1, 2 against sigma 1, 1.05, 1.1, 1.2
    acc.add(depth, truth, u.sigma(depth), None)
    curves = acc.curves(u)
    assert curves is not None and [c.kind for c in curves.curves] == ["confident"]
    assert curves.curves[0].share_at_one == acc.result(u)["depth_sigma_within"] == 0.75
    assert curves.curves[0].share[0] == 0.25  # k = 0: the exact answers


def test_the_depth_sigma_sentence_splits_by_kind_only_where_there_are_two() -> None:
    """A model without confidence (one kind of pixel) is not said to have "confidence >= 0.5" pixels."""
    from pose2rgbd.evaluation.metrics import SigmaAccumulator

    base = {"depth_sigma_within": 0.583, "depth_sigma_level": 0.6827, "depth_sigma_relative_median": 0.006}
    one = SigmaAccumulator.describe({**base, "depth_sigma_within_confident": 0.583})
    assert "on 58.3 % of the scored test pixels, against the 68.3 %" in one and "confidence" not in one
    two = SigmaAccumulator.describe({**base, "depth_sigma_within_confident": 0.6, "depth_sigma_within_holes": 0.3})
    assert "(60.0 % with confidence >= 0.5, 30.0 % with confidence < 0.5" in two


def test_the_depth_sigma_shares_by_half_count_each_frames_pixels_in_its_half() -> None:
    from pose2rgbd.evaluation.metrics import SigmaAccumulator
    from pose2rgbd.models.depth_uncertainty import LEVEL, DepthUncertainty

    u = DepthUncertainty(LEVEL, (5.0, 10.0), np.full((2, 3), 0.1), np.ones((2, 3), int))
    truth = np.full((4, 2, 5), 10.0)
    depth = truth.copy()
    depth[1, :, :4] = 12.0  # frame 1 (near): 4 of its 10 pixels 2 m off
    depth[2, :, :] = 12.0  # frame 2 (far): all 10 off
    sigma = np.ones_like(depth)
    acc = SigmaAccumulator(uncertainty=u)
    acc.add(depth[:2], truth[:2], sigma[:2], None, np.array([False, False]))
    acc.add(depth[2:], truth[2:], sigma[2:], None, np.array([True, False]))  # a batch may mix both halves
    m = acc.result(u)
    assert m["depth_sigma_within_near"] == pytest.approx(22 / 30) and m["depth_sigma_within_far"] == 0.0
    assert m["depth_sigma_within"] == pytest.approx(22 / 40)
    assert "73.3 % on the nearer half of the frames (coverage distance) and 0.0 % on the farther" in (
        SigmaAccumulator.describe(m)
    )
    none = SigmaAccumulator(uncertainty=u)
    none.add(depth, truth, sigma, None)  # halves not given: no shares by half
    assert "depth_sigma_within_far" not in none.result(u)


def test_a_baseline_is_ahead_only_where_it_is_as_printed() -> None:
    """PSNR 26.88807 against 26.88852 dB printed "26.89 dB against the reprojection baseline's 26.89 dB"."""
    from pose2rgbd.evaluation.evaluate import baselines_ahead

    model = {"rgb_mae_px": 7.0, "rgb_psnr_db": 26.88807}
    assert baselines_ahead([("reprojection baseline", {"rgb_mae_px": 7.5, "rgb_psnr_db": 26.88852})], model, "m") == ""
    said = baselines_ahead([("reprojection baseline", {"rgb_mae_px": 6.9, "rgb_psnr_db": 27.1})], model, "m")
    assert "RGB MAE 7 px against the reprojection baseline's 6.9 px" in said and "PSNR 26.89 dB against" in said


def test_frames_flagged_out_of_bounds_carry_no_bound_and_are_counted_not_scored() -> None:
    """A test frame whose depth_sigma is +inf (the engine flagged it out of bounds): its pixels are not scored as
    within (an infinite bound holds for any error), and the count of such frames is reported and said."""
    from pose2rgbd.evaluation.metrics import SigmaAccumulator
    from pose2rgbd.models.depth_uncertainty import DepthUncertainty

    u = DepthUncertainty(0.683, (5.0, 20.0), np.full((2, 3), 0.1), np.full((2, 3), 1000), wide=(2.5, 2.0))
    depth = np.full((2, 4, 4), 10.0, np.float32)
    truth = np.full((2, 4, 4), 12.0, np.float32)  # 2 m off: outside a 1 m bound
    sigma = np.stack([np.full((4, 4), 1.0, np.float32), np.full((4, 4), np.inf, np.float32)])
    acc = SigmaAccumulator(np.inf, u)
    acc.add(depth, truth, sigma, np.ones((2, 4, 4), np.float32))
    r = acc.result(u)
    assert r["depth_sigma_within"] == 0.0 and r["depth_sigma_unbounded_frames"] == 1.0
    assert "1 test frame(s) flagged out of bounds carry no bound (+inf) and are not scored" in acc.describe(r)
