"""A render's depth uncertainty: fitted on held-out frames, honest on others, carried from training to the render
node, the RGBD message and evaluate."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.errors import CheckpointError
from pose2rgbd.evaluation import evaluate
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.methods.hybrid import HybridConfig
from pose2rgbd.methods.pose2rgbd import preset_config
from pose2rgbd.models import load_checkpoint, save_checkpoint
from pose2rgbd.models.depth_uncertainty import (
    EXTRA_KEY,
    LEVEL,
    DepthUncertainty,
    fit_depth_uncertainty,
    share_within,
)
from pose2rgbd.training import TrainConfig, fit_checkpoint_depth_uncertainty, train_model


def _draw(rng: np.random.Generator, n: int, spread: tuple[float, float], far: float = 2.0) -> tuple[np.ndarray, ...]:
    """Answers whose relative error is normal with the given spread in holes (confidence 0) and elsewhere (1), and
    ``far`` times the spread beyond 50 m."""
    truth = rng.uniform(5.0, 80.0, n)
    conf = (rng.random(n) < 0.7).astype(np.float32)
    s = np.where(conf > 0, spread[1], spread[0]) * np.where(truth > 50.0, far, 1.0)
    depth = truth / (1.0 + rng.normal(0.0, s))  # |depth - truth| / depth is |N(0, s)|
    return depth, truth, conf


def test_the_fitted_bound_holds_at_its_level_on_fresh_draws_per_kind_of_pixel() -> None:
    rng = np.random.default_rng(0)
    fitted = fit_depth_uncertainty(*_draw(rng, 60_000, (0.20, 0.03)))
    assert fitted is not None and fitted.level == LEVEL
    # one standard deviation of the relative error in each cell: holes 0.20, keyframe pixels 0.03 (0.06 far)
    assert fitted.relative[0, 0] == pytest.approx(0.20, rel=0.08)
    assert fitted.relative[1, 0] == pytest.approx(0.03, rel=0.08)
    assert fitted.relative[1, 2] > 1.5 * fitted.relative[1, 0]  # the far third: twice the spread on most pixels
    depth, truth, conf = _draw(np.random.default_rng(1), 60_000, (0.20, 0.03))
    sigma = fitted.sigma(depth, conf)
    assert share_within(depth, truth, sigma) == pytest.approx(LEVEL, abs=0.015)
    for row in (0.0, 1.0):  # honest in holes and elsewhere, not only on average
        m = conf == row
        assert share_within(depth[m], truth[m], sigma[m]) == pytest.approx(LEVEL, abs=0.03)
    # a normal error's 95 % lies within 1.96 standard deviations (the far third mixes two spreads: wider tails)
    normal = fit_depth_uncertainty(*_draw(np.random.default_rng(4), 60_000, (0.05, 0.03), far=1.0))
    assert normal is not None
    assert normal.wide[0] == pytest.approx(1.96, rel=0.05) and normal.wide[1] == pytest.approx(1.96, rel=0.05)
    assert fitted.wide[0] > 2.0  # the mixture's tails: the multiple says so
    # the log line at load names the multiple as one of depth_sigma, and says when the tails are heavier than normal
    assert f"95 % of them within {normal.wide[1]:.2f} x depth_sigma" in normal.describe()
    assert "tails are heavier" not in normal.describe()
    heavy = fitted.describe()
    assert f"(confidence >= 0.5; {fitted.wide[0]:.2f} x below)" in heavy, heavy
    assert ("tails are heavier" in heavy) == (max(fitted.wide) > 2.5), heavy
    wide = sigma * np.where(conf >= 0.5, fitted.wide[1], fitted.wide[0])  # each kind of pixel its own multiple
    for row in (0.0, 1.0):
        m = conf == row
        assert share_within(depth[m], truth[m], wide[m]) == pytest.approx(0.95, abs=0.015)
    # a single bound for every pixel would be dishonest in both: the test can tell
    one = fit_depth_uncertainty(depth, truth, None)
    assert one is not None
    flat = one.sigma(depth, None)
    assert share_within(depth[conf == 0], truth[conf == 0], flat[conf == 0]) < LEVEL - 0.15


def test_sigma_is_nan_where_the_depth_is_no_answer_and_scales_with_the_depth() -> None:
    u = DepthUncertainty(LEVEL, (10.0, 20.0), np.array([[0.5, 0.5, 0.5], [0.1, 0.2, 0.3]]), np.ones((2, 3), int))
    depth = np.array([5.0, 15.0, 30.0, np.nan, np.inf, -1.0, 5.0], np.float32)
    conf = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)
    s = u.sigma(depth, conf)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s[:3], [0.5, 3.0, 9.0], rtol=1e-6)
    assert np.isnan(s[3:6]).all()
    assert s[6] == pytest.approx(2.5)
    np.testing.assert_allclose(u.sigma(depth[:3], None), [0.5, 3.0, 9.0], rtol=1e-6)  # no confidence: the row of 1


def test_the_kernel_answers_the_fits_cells_on_their_edges_and_for_nan_confidence() -> None:
    fitted = fit_depth_uncertainty(*_draw(np.random.default_rng(5), 20_000, (0.2, 0.03)))
    assert fitted is not None
    lo, hi = fitted.depth_edges
    depth = np.array([lo, hi, np.nextafter(np.float32(lo), np.float32(0)), 1.0, 1e4, lo, hi], np.float32)
    conf = np.array([1, 1, 1, 1, 1, np.nan, 0.5], np.float32)
    # the fit's rule: searchsorted(edges, depth, side="right") for the column, confidence >= 0.5 for the row
    col = np.minimum(np.searchsorted(np.array([lo, hi], np.float32), depth, side="right"), 2)
    row = (conf >= 0.5).astype(int)
    np.testing.assert_allclose(
        fitted.sigma(depth, conf), depth * fitted.relative[row, col].astype(np.float32), rtol=1e-6
    )
    assert fitted.sigma(np.float32(10.0), np.float32(1.0)).shape == ()  # a 0-d depth keeps its shape


def test_degenerate_cells_still_state_a_bound_and_few_pixels_no_multiple() -> None:
    truth = np.full(5_000, 10.0)
    depth = truth.copy()
    depth[:500] = 11.0  # 90 % exact answers: the 68.3 % quantile is 0
    conf = np.ones(5_000, np.float32)
    conf[:3] = 0.0  # 3 hole pixels: too few for a 95 % multiple of their own
    fitted = fit_depth_uncertainty(depth, truth, conf)
    assert fitted is not None and (fitted.relative > 0).all()
    assert np.isfinite(fitted.wide[1]) and np.isnan(fitted.wide[0])
    assert json.loads(json.dumps(fitted.to_dict(), allow_nan=False))["wide_95"][0] is None  # plain JSON, no NaN
    assert np.isnan(DepthUncertainty.from_dict(fitted.to_dict()).wide[0])


def test_a_sparse_row_takes_its_own_bounded_quantile_and_too_few_pixels_fit_nothing() -> None:
    """100 hole pixels that err 7x more than the rest (fewer than the minimum): the holes' bound is the 80 % upper
    confidence bound of their own quantile (it was all pixels' quantile, the confident ones': far narrower than the
    holes' errors); 10 hole pixels: the widest bound measured."""
    from pose2rgbd.models.depth_uncertainty import ROW_BOUND_CONFIDENCE
    from pose2rgbd.order_statistics import quantile_upper_bound

    rng = np.random.default_rng(2)
    truth = rng.uniform(5.0, 80.0, 20_000)
    conf = np.ones(len(truth), np.float32)
    conf[:100] = 0.0  # 100 hole pixels: fewer than the minimum per cell
    depth = truth / (1.0 + rng.normal(0.0, np.where(conf > 0, 0.03, 0.20)))
    fitted = fit_depth_uncertainty(depth, truth, conf, min_pixels=500)
    assert fitted is not None
    assert (fitted.pixels[0] < 500).all()
    ok = depth > 0  # a draw may answer a negative depth: no answer, not scored
    rel = np.abs(depth[ok] - truth[ok]) / depth[ok]
    everything = np.quantile(rel, LEVEL)
    own = quantile_upper_bound(rel[conf[ok] < 0.5], LEVEL, ROW_BOUND_CONFIDENCE)
    assert own > 3 * everything
    np.testing.assert_allclose(fitted.relative[0], own)
    assert np.isfinite(fitted.wide[0])  # its 95 % multiple too
    conf[10:100] = 1.0  # 10: no bound of their own
    fitted = fit_depth_uncertainty(depth, truth, conf, min_pixels=500)
    assert fitted is not None
    rel_all = np.abs(depth[ok] - truth[ok]) / depth[ok]
    widest = max(np.quantile(rel_all, LEVEL), np.quantile(rel_all[conf[ok] >= 0.5], LEVEL))
    np.testing.assert_allclose(fitted.relative[0], widest)
    assert fit_depth_uncertainty(depth[:400], truth[:400], conf[:400], min_pixels=500) is None
    with pytest.raises(ValueError, match="must match"):
        fit_depth_uncertainty(depth, truth[:10])


def test_the_upper_bound_of_a_quantile_covers_it_in_at_least_its_share_of_samples() -> None:
    from pose2rgbd.order_statistics import quantile_upper_bound

    rng = np.random.default_rng(7)
    true_q = 1.0  # the 0.683 quantile of |N(0, 1)| is 1.0 (to 3 digits: 1.0004)
    covered = [quantile_upper_bound(np.abs(rng.normal(size=100)), LEVEL, 0.8) >= true_q for _ in range(400)]
    assert 0.78 <= np.mean(covered) <= 0.92
    assert quantile_upper_bound(np.array([3.0, 1.0, 2.0]), 0.9, 0.99) == 3.0  # too few: the largest


def test_it_survives_its_plain_form_and_a_malformed_one_is_named() -> None:
    fitted = fit_depth_uncertainty(*_draw(np.random.default_rng(3), 10_000, (0.2, 0.03)), fitted_on={"frames": 7.0})
    assert fitted is not None
    back = DepthUncertainty.from_dict(json.loads(json.dumps(fitted.to_dict())))
    np.testing.assert_array_equal(back.relative, fitted.relative)
    assert back.wide == fitted.wide
    assert back.depth_edges == fitted.depth_edges and back.fitted_on["frames"] == 7.0
    bad = fitted.to_dict() | {"relative": [[0.1, 0.2], [0.3, 0.4]]}
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        DepthUncertainty.from_dict(bad)
    with pytest.raises(ValueError, match="level"):
        DepthUncertainty.from_dict({"relative": fitted.to_dict()["relative"]})
    with pytest.raises(ValueError, match="fitted_on"):
        DepthUncertainty.from_dict(fitted.to_dict() | {"fitted_on": [1, 2, 3]})  # type: ignore[dict-item]


def _draw_far(rng: np.random.Generator, frames: int, growth: float, per_frame: int = 800) -> tuple[np.ndarray, ...]:
    """Frames at coverage distances 1-40 m whose pixels' relative error is normal with a spread of 0.02 (holes 0.1)
    times ``1 + growth * distance``: the error of a render grows with its distance from what the model saw."""
    dist = np.repeat(rng.uniform(1.0, 40.0, frames), per_frame)
    depth, truth, conf = _draw(rng, frames * per_frame, (0.1, 0.02), far=1.0)
    depth = truth / (1.0 + (truth / depth - 1.0) * (1.0 + growth * dist))
    return depth, truth, conf, dist


def test_the_bound_grows_with_the_coverage_distance_as_the_error_does() -> None:
    depth, truth, conf, dist = _draw_far(np.random.default_rng(10), 80, growth=0.05)
    fitted = fit_depth_uncertainty(depth, truth, conf, distance_m=dist)
    assert fitted is not None
    assert fitted.growth_per_m == pytest.approx(0.05, rel=0.25)
    assert fitted.relative[1, 0] == pytest.approx(0.02, rel=0.1)  # the bound at distance 0
    assert fitted.reference_m == pytest.approx(np.median(dist), rel=0.02)  # the scored pixels'
    assert fitted.fitted_on["near_m"] < fitted.fitted_on["far_m"]
    # fresh frames: honest at each distance, not only on average (one distance per frame: a batch of frames)
    d2, t2, c2, x2 = (a.reshape(80, 800) for a in _draw_far(np.random.default_rng(11), 80, growth=0.05))
    sigma = fitted.sigma(d2, c2, x2[:, 0])
    for lo, hi in ((0.0, 10.0), (10.0, 25.0), (25.0, 41.0)):
        m = (x2 >= lo) & (x2 < hi)
        assert share_within(d2[m], t2[m], sigma[m]) == pytest.approx(LEVEL, abs=0.04), (lo, hi)
    # twice as far as the farthest fitted: the growth carried on linearly
    d3, t3, c3, x3 = _draw_far(np.random.default_rng(12), 1, growth=0.05, per_frame=20_000)
    d3 = t3 / (1.0 + (t3 / d3 - 1.0) * (1.0 + 0.05 * 80.0) / (1.0 + 0.05 * x3))  # its error as at 80 m
    assert share_within(d3, t3, fitted.sigma(d3, c3, 80.0)) == pytest.approx(LEVEL, abs=0.06)
    # one bound for all distances (no distance given to the fit) holds far too rarely for the far frames
    flat = fit_depth_uncertainty(depth, truth, conf)
    assert flat is not None and flat.growth_per_m == 0.0
    m = x2 > 32.0
    assert share_within(d2[m], t2[m], flat.sigma(d2, c2)[m]) < LEVEL - 0.12
    assert "times 1 + " in fitted.describe() and "per metre" in fitted.describe()
    assert "fits it again" not in fitted.describe() and "fits it again" in flat.describe()
    back = DepthUncertainty.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert (back.growth_per_m, back.reference_m) == (fitted.growth_per_m, fitted.reference_m)


def test_no_growth_where_the_error_does_not_grow_or_every_frame_is_as_far() -> None:
    depth, truth, conf, dist = _draw_far(np.random.default_rng(13), 80, growth=0.0)
    fitted = fit_depth_uncertainty(depth, truth, conf, distance_m=dist)
    assert fitted is not None and fitted.growth_per_m * fitted.fitted_on["far_m"] < 0.05  # at most noise
    same = fit_depth_uncertainty(depth, truth, conf, distance_m=np.full_like(dist, 3.0))  # every frame 3 m away
    assert same is not None and same.growth_per_m == 0.0
    np.testing.assert_array_equal(same.sigma(depth, conf, 100.0), same.sigma(depth, conf))


def test_the_bound_is_not_carried_below_the_nearest_held_out_distance() -> None:
    """Held-out frames 30-55 m from every training camera (a route split's validation block) whose error grows with
    the distance: the growth fitted there, carried down to 0 m, made the bound well below the one measured at 30 m
    (a hundredth on a simulated run), and a near view whose error is as the nearest measured one's was within it for
    few of its pixels. Below the nearest held-out pixels' distance the bound now stays as it was there."""
    rng = np.random.default_rng(21)
    frames, per = 80, 800
    dist = np.repeat(rng.uniform(30.0, 55.0, frames), per)
    depth, truth, conf = _draw(rng, frames * per, (0.1, 0.02), far=1.0)
    depth = truth / (1.0 + (truth / depth - 1.0) * (1.0 + 0.05 * dist))
    fitted = fit_depth_uncertainty(depth, truth, conf, distance_m=dist)
    assert fitted is not None and fitted.growth_per_m > 0.01
    assert 30.0 < fitted.nearest_m < 33.0  # the 5th percentile of 30-55 m
    d = np.full((1, 4), 30.0, np.float32)
    at_nearest = fitted.sigma(d, None, fitted.nearest_m)
    np.testing.assert_array_equal(fitted.sigma(d, None, 0.0), at_nearest)  # not carried down to 0 m
    np.testing.assert_array_equal(fitted.sigma(d, None, 20.0), at_nearest)
    assert (fitted.sigma(d, None, 55.0) > at_nearest).all()  # within the measured range it still grows
    # a view 0.4 m from a camera whose error is as at the nearest measured: within the bound about as often as the
    # level says (the nearest 5 % of the held-out pixels lie 30-31 m away)
    d2, t2, c2 = _draw(np.random.default_rng(22), 20_000, (0.1, 0.02), far=1.0)
    d2 = t2 / (1.0 + (t2 / d2 - 1.0) * (1.0 + 0.05 * fitted.nearest_m))
    assert share_within(d2, t2, fitted.sigma(d2, c2, 0.4)) == pytest.approx(LEVEL, abs=0.05)
    carried = dataclasses.replace(fitted, nearest_m=0.0)  # as before: the growth carried down to 0 m
    assert share_within(d2, t2, carried.sigma(d2, c2, 0.4)) < LEVEL - 0.25
    assert "never below its value at 3" in fitted.describe()
    back = DepthUncertainty.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert back.nearest_m == fitted.nearest_m
    old = fitted.to_dict()
    del old["nearest_m"]  # written before: carried down to 0 m, as it was
    assert DepthUncertainty.from_dict(old).nearest_m == 0.0


def test_a_batch_takes_one_distance_per_image_and_a_bad_one_is_named() -> None:
    u = DepthUncertainty(LEVEL, (10.0, 20.0), np.full((2, 3), 0.1), np.ones((2, 3), int), growth_per_m=0.5,
                         reference_m=2.0)  # fmt: skip
    depth = np.full((3, 2, 2), 10.0, np.float32)
    np.testing.assert_allclose(u.sigma(depth, None, np.array([0.0, 2.0, 4.0]))[:, 0, 0], [1.0, 2.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(u.sigma(depth, None, 2.0), 2.0, rtol=1e-6)
    np.testing.assert_allclose(u.sigma(depth), 2.0, rtol=1e-6)  # no distance: the validation frames' median
    for bad, what in ((np.zeros(2), "one per image"), (np.zeros((3, 1)), "one per image"), (-1.0, ">= 0"),
                      (np.array([0.0, np.nan, 1.0]), "finite")):  # fmt: skip
        with pytest.raises(ValueError, match=what):
            u.sigma(depth, None, bad)
    old = u.to_dict()
    del old["growth_per_m"], old["reference_m"]  # written before the growth: one bound at any distance
    assert DepthUncertainty.from_dict(old).growth_per_m == 0.0
    assert "--fit-depth-uncertainty` fits it again" in DepthUncertainty.from_dict(old).describe()  # said at load
    with pytest.raises(ValueError, match="growth_per_m"):
        DepthUncertainty.from_dict(u.to_dict() | {"growth_per_m": -0.1})


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "ds", n_survey=30, n_route=10, size=32)


TC = TrainConfig(epochs=1, batch_size=8, max_steps=3, split="route", progress=False, tensorboard=False)


@pytest.fixture(scope="module")
def hybrid_run(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    res = train_model(toy, tmp_path_factory.mktemp("hybrid") / "run", HybridConfig(size=64), TC)
    assert res.best is not None
    return res.best


def test_training_fits_it_on_the_validation_frames_into_each_checkpoint(hybrid_run: Path) -> None:
    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(hybrid_run.parent / name)
        u = DepthUncertainty.from_dict(ck.extra[EXTRA_KEY])
        assert u.fitted_on["frames"] == 5  # the held-out route's first half validates
        assert 0.0 < u.fitted_on["near_m"] <= u.fitted_on["far_m"]  # each frame's distance from the keyframes
        assert u.pixels[0].sum() > 0 and u.pixels[1].sum() > 0  # the hybrid's holes and its keyframe pixels
        assert ck.optimizers  # the rest of the checkpoint kept: a last.pt still resumes


def test_writing_it_keeps_everything_else_of_the_checkpoint(hybrid_run: Path, toy: Path, tmp_path: Path) -> None:
    import shutil

    import torch

    from pose2rgbd.training.depth_uncertainty import add_to_checkpoint

    before = load_checkpoint(hybrid_run.parent / "last.pt")
    copy = shutil.copy(hybrid_run.parent / "last.pt", tmp_path / "last.pt")
    shutil.copytree(hybrid_run.parent / "keyframes", tmp_path / "keyframes")  # the place map it names, beside it
    frames = _validation_frames(toy, copy)
    fitted = add_to_checkpoint(Path(copy), frames)
    after = load_checkpoint(copy)
    assert fitted is not None and after.extra[EXTRA_KEY] == fitted.to_dict()
    assert {k: v for k, v in after.extra.items() if k != EXTRA_KEY}.keys() == before.extra.keys() - {EXTRA_KEY}
    assert (after.step, after.epoch, after.train_config) == (before.step, before.epoch, before.train_config)
    assert after.extra["val"] == before.extra["val"]
    assert repr(after.extra["trainer_state"]) == repr(before.extra["trainer_state"])  # its RNG states: tensors
    sa, sb = after.model.state_dict(), before.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:  # the same weights and buffers, bit for bit (an unfitted buffer holds NaN)
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, equal_nan=True)
    assert after.optimizers.keys() == before.optimizers.keys() and after.optimizers


def _validation_frames(dataset: Path, checkpoint: Path) -> object:
    """The recipe's validation frames of ``checkpoint``'s own split."""
    import importlib

    train_mod = importlib.import_module("pose2rgbd.training.train")
    return train_mod._checkpoint_setup(checkpoint, dataset)[1].val_set


def test_the_engine_renders_it_and_the_node_publishes_it_in_the_rgbd_message(hybrid_run: Path) -> None:
    from pose2rgbd.messages import TypestoreFactory, image_to_numpy, new_typestore, register_custom_msgs
    from pose2rgbd.nodes import Renderer, RendererConfig
    from pose2rgbd.nodes.renderer import RendererPublish

    engine = RenderEngine(EngineConfig(warmup=0), load_checkpoint(hybrid_run))
    T = load_checkpoint(hybrid_run).model.keyframes.T_world_cam[:2]  # type: ignore[attr-defined]
    res = engine.render(T)
    assert res.depth is not None and res.depth_sigma is not None
    assert res.depth_sigma.shape == res.depth.shape and res.depth_sigma.dtype == np.float32
    ok = np.isfinite(res.depth)
    assert (res.depth_sigma[ok] > 0).all() and np.isnan(res.depth_sigma[~ok]).all()
    assert engine.depth_uncertainty is not None and engine.coverage_poses is not None
    dist = engine.coverage_poses.coverage(T).distance  # the keyframes' own poses: 0
    np.testing.assert_array_equal(res.depth_sigma, engine.depth_uncertainty.sigma(res.depth, res.confidence, dist))
    assert res.frame(1).depth_sigma is not None and res.frame(1).depth_sigma.shape == (1, *res.depth.shape[1:])
    ahead = RenderEngine(EngineConfig(warmup=0, lookahead=2), load_checkpoint(hybrid_run))  # the cache's path too
    try:
        got = [ahead.render_lookahead(T[:1], 10**9 * i) for i in range(1, 5)]
    finally:
        ahead.close()
    assert all(g.depth_sigma is not None and g.depth_sigma.shape == g.depth.shape for g in got)  # type: ignore[union-attr]

    factory = TypestoreFactory(register_custom_msgs(new_typestore("humble")))
    node = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), engine, factory)
    out = dict(node._outputs(res.frame(0), 1))
    img = out["rgbd"].depth_sigma
    assert (img.height, img.width, img.encoding) == (*res.depth.shape[1:], "32FC1")
    np.testing.assert_array_equal(image_to_numpy(img), res.depth_sigma[0])
    np.testing.assert_array_equal(image_to_numpy(out["depth/sigma"]), res.depth_sigma[0])
    values = {kv.key: kv.value for kv in node.diagnostics(2).status[0].values}  # what depth/sigma means, stated
    assert float(values["depth_sigma_level"]) == pytest.approx(LEVEL, abs=1e-4)
    assert float(values["depth_sigma_95_multiple"]) == pytest.approx(engine.depth_uncertainty.wide[1], abs=0.01)
    assert float(values["depth_sigma_growth_per_m"]) == pytest.approx(engine.depth_uncertainty.growth_per_m, rel=1e-3)
    off = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0, publish=RendererPublish(depth_sigma=False)), engine,
                   factory)  # fmt: skip
    assert "depth/sigma" not in dict(off._outputs(res.frame(0), 1))


def test_the_engine_grows_it_with_each_requests_distance_from_the_keyframes(hybrid_run: Path, tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from pose2rgbd.models.checkpoint import save_loaded

    path = Path(shutil.copy(hybrid_run, tmp_path / "best.pt"))
    shutil.copytree(hybrid_run.parent / "keyframes", tmp_path / "keyframes")  # the place map it names, beside it
    ck = load_checkpoint(path)
    u = dataclasses.replace(DepthUncertainty.from_dict(ck.extra[EXTRA_KEY]), growth_per_m=0.5, reference_m=1.0)
    save_loaded(ck, path, extra={**ck.extra, EXTRA_KEY: u.to_dict()}, keep_optimizers=True)
    T = np.repeat(ck.model.keyframes.T_world_cam[:1], 3, axis=0)  # type: ignore[attr-defined]
    T[1, :3, 3] += T[1, :3, 0] * 2.0  # 2 m to the camera's right
    T[2, :3, 3] += T[2, :3, 0] * 6.0
    engine = RenderEngine(EngineConfig(warmup=0), load_checkpoint(path))
    res = engine.render(T)
    assert res.depth is not None and res.depth_sigma is not None and res.coverage_m is not None
    assert res.coverage_m[0] == 0.0 and 0.0 < res.coverage_m[1] < res.coverage_m[2]
    dist = engine.coverage_poses.coverage(T).distance  # type: ignore[union-attr]
    np.testing.assert_array_equal(res.depth_sigma, u.sigma(res.depth, res.confidence, dist))
    flat = dataclasses.replace(u, growth_per_m=0.0)
    for i in range(3):  # each image its own factor over the bound at distance 0
        ok = np.isfinite(res.depth[i])
        ratio = res.depth_sigma[i][ok] / flat.sigma(res.depth[i], res.confidence[i])[ok]  # type: ignore[index]
        np.testing.assert_allclose(ratio, 1.0 + 0.5 * dist[i], rtol=1e-5)
    ahead = RenderEngine(EngineConfig(warmup=0, lookahead=2), load_checkpoint(path))  # rendered ahead: grown too
    try:
        got = [ahead.render_lookahead(T[2:], 10**9 * i) for i in range(1, 5)]
    finally:
        ahead.close()
    for g in got:
        assert g.depth is not None and g.depth_sigma is not None
        ok = np.isfinite(g.depth[0])
        assert (
            g.depth_sigma[0][ok] >= flat.sigma(g.depth[0], g.confidence[0])[ok] * (1.0 + 0.5 * dist[2]) * 0.999
        ).all()  # type: ignore[index]


def test_a_render_out_of_bounds_carries_no_bound(hybrid_run: Path) -> None:
    """A pose far beyond the training poses (here 5 km away, flagged out of bounds): its depth_sigma is +inf where
    the depth answers (no fit covers an extrapolation), NaN where it does not; the in-bounds frame of the same
    batch keeps its bound, and a frame served from the look-ahead cache for such a pose too."""
    engine = RenderEngine(EngineConfig(warmup=0), load_checkpoint(hybrid_run))
    T = np.repeat(load_checkpoint(hybrid_run).model.keyframes.T_world_cam[:1], 2, axis=0)  # type: ignore[attr-defined]
    T[1, :3, 3] += [5000.0, 0.0, 0.0]
    res = engine.render(T)
    assert res.depth is not None and res.depth_sigma is not None
    assert list(res.out_of_bounds) == [False, True]
    ok = np.isfinite(res.depth)
    assert np.isfinite(res.depth_sigma[0][ok[0]]).all() and (res.depth_sigma[1][ok[1]] == np.inf).all()
    assert np.isnan(res.depth_sigma[~ok]).all()
    ahead = RenderEngine(EngineConfig(warmup=0, lookahead=2), load_checkpoint(hybrid_run))
    try:
        got = [ahead.render_lookahead(T[1:], 10**9 * i) for i in range(1, 5)]
    finally:
        ahead.close()
    for g in got:
        assert g.depth_sigma is not None and g.out_of_bounds[0] and not np.isfinite(g.depth_sigma).any()
    # a frame rendered for a request just past the bounds, served from the cache for a nearby request within them:
    # the cache keeps the finite bound, and the request in bounds gets it (it had kept the first request's +inf)
    lo, hi = 0.0, 5000.0  # the distance along x at which the pose leaves the bounds
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        probe = T[:1].copy()
        probe[0, 0, 3] += mid
        lo, hi = (lo, mid) if engine.out_of_bounds(probe)[0] else (mid, hi)
    past, inside = T[:1].copy(), T[:1].copy()
    past[0, 0, 3] += hi + 0.05
    inside[0, 0, 3] += lo - 0.05
    near = RenderEngine(EngineConfig(warmup=0, lookahead=2, tolerance_m=0.5, tolerance_deg=5.0),
                        load_checkpoint(hybrid_run))  # fmt: skip
    try:
        first = near.render_lookahead(past, 10**9)
        second = near.render_lookahead(inside, 2 * 10**9)
    finally:
        near.close()
    assert first.out_of_bounds[0] and first.depth_sigma is not None and not np.isfinite(first.depth_sigma).any()
    assert second.from_cache[0] and not second.out_of_bounds[0], (second.from_cache, second.out_of_bounds)
    assert second.depth_sigma is not None and np.isfinite(second.depth_sigma[np.isfinite(second.depth)]).all()


def test_evaluate_scores_it_on_the_test_frames(hybrid_run: Path, toy: Path, tmp_path: Path) -> None:
    ev = evaluate(hybrid_run, toy, out_dir=tmp_path / "ev", fly_frames=2, progress=False)
    m = ev.metrics["model"]
    assert m["depth_sigma_level"] == pytest.approx(LEVEL)
    assert 0.0 <= m["depth_sigma_within"] <= 1.0
    assert m["depth_sigma_pixels_confident"] > 0 and m["depth_sigma_pixels_holes"] > 0
    assert m["depth_sigma_within"] <= m["depth_sigma_within_95"] <= 1.0  # the wider bound holds at least as often
    assert "Depth uncertainty: the depth's |error| was within" in (tmp_path / "ev" / "metrics.md").read_text()
    assert 0.0 <= m["depth_sigma_within_near"] <= 1.0 and 0.0 <= m["depth_sigma_within_far"] <= 1.0
    assert "on the farther half" in (tmp_path / "ev" / "metrics.md").read_text()
    per = ev.per_frame["depth_sigma_within"]  # each frame's share: per_frame.csv, coverage.png's third panel
    assert len(per) == len(ev.per_frame["frame"]) and ((per >= 0) & (per <= 1)).all()
    assert "depth_sigma_within" in (tmp_path / "ev" / "per_frame.csv").read_text().splitlines()[0]
    assert min(per) <= m["depth_sigma_within"] <= max(per)
    assert ev.files["depth_sigma"] == tmp_path / "ev" / "depth_sigma.png" and ev.files["depth_sigma"].stat().st_size
    assert ev.sigma_curves is not None  # depth_sigma.png's curves: at 1 sigma the shares the metrics state
    shares = {c.kind: c.share_at_one for c in ev.sigma_curves.curves}
    assert shares["confident"] == m["depth_sigma_within_confident"] and shares["all"] == m["depth_sigma_within"]
    assert ev.depth_estimated_by is None  # the toy's depth is the truth: the grid calls it GT depth


def test_a_checkpoint_without_it_renders_no_sigma_says_why_and_gets_it_from_evaluate(
    hybrid_run: Path, toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pose2rgbd.cli.main import main

    ck = load_checkpoint(hybrid_run)
    old = tmp_path / "old.pt"
    extra = {k: v for k, v in ck.extra.items() if k != EXTRA_KEY}
    save_checkpoint(old, ck.model, dataset_fingerprint=ck.dataset_fingerprint, camera=ck.camera,
                    train_config=ck.train_config, step=ck.step, extra=extra)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.inference.render"):
        engine = RenderEngine(EngineConfig(warmup=0), load_checkpoint(old))
    res = engine.render(ck.model.keyframes.T_world_cam[:1])  # type: ignore[attr-defined]
    assert res.depth_sigma is None
    from pose2rgbd.messages import TypestoreFactory, new_typestore, register_custom_msgs
    from pose2rgbd.nodes import Renderer, RendererConfig

    factory = TypestoreFactory(register_custom_msgs(new_typestore("humble")))
    out = dict(Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), engine, factory)._outputs(res, 1))
    assert "depth/sigma" not in out and (out["rgbd"].depth_sigma.width, out["rgbd"].depth_sigma.height) == (0, 0)
    assert "carries no depth uncertainty" in caplog.text and "--fit-depth-uncertainty" in caplog.text
    ev = evaluate(old, toy, out_dir=tmp_path / "ev0", fly_frames=2, progress=False)
    assert "depth_sigma_within" not in ev.metrics["model"]
    assert any("carries no depth uncertainty" in n for n in ev.info["notes"])

    rc = main(["evaluate", "--checkpoint", str(old), "--dataset", str(toy), "--out", str(tmp_path / "ev1"),
               "--fit-depth-uncertainty", "--fly-frames", "2", "--no-progress"])  # fmt: skip
    assert rc == 0
    again = load_checkpoint(old)
    assert EXTRA_KEY in again.extra and again.step == ck.step
    np.testing.assert_allclose(again.extra[EXTRA_KEY]["relative"], ck.extra[EXTRA_KEY]["relative"])  # same weights
    assert "depth_sigma_within" in json.loads((tmp_path / "ev1" / "metrics.json").read_text())["metrics"]["model"]
    assert fit_checkpoint_depth_uncertainty(old, toy) is not None


def test_evaluate_says_when_its_test_frames_are_the_ones_it_was_fitted_on(
    hybrid_run: Path, toy: Path, tmp_path: Path
) -> None:
    ev = evaluate(hybrid_run, toy, "all", out_dir=tmp_path / "ev", fly_frames=2, progress=False)
    assert ev.metrics["model"]["depth_sigma_in_sample"] == 1.0
    assert any("in-sample here, not a check of it" in n for n in ev.info["notes"])
    held_out = evaluate(hybrid_run, toy, out_dir=tmp_path / "ev2", fly_frames=2, progress=False)
    assert "depth_sigma_in_sample" not in held_out.metrics["model"]


def test_a_malformed_one_is_refused_naming_the_checkpoint(hybrid_run: Path, tmp_path: Path) -> None:
    ck = load_checkpoint(hybrid_run)
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, ck.model, dataset_fingerprint=ck.dataset_fingerprint, camera=ck.camera,
                    extra={**ck.extra, EXTRA_KEY: {"level": 2.0}})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"bad\.pt: its depth uncertainty is malformed"):
        RenderEngine(EngineConfig(warmup=0), load_checkpoint(bad))


def test_a_failed_fit_keeps_the_training_and_says_so(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib

    train_mod = importlib.import_module("pose2rgbd.training.train")  # the module (the package exports its function)

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("no memory left")

    monkeypatch.setattr(train_mod, "add_to_checkpoint", broken)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.training.train"):
        res = train_model(toy, tmp_path / "run", preset_config("base", size=64, outputs="rgbd"), TC)
    assert res.last.exists() and EXTRA_KEY not in load_checkpoint(res.last).extra
    assert "depth uncertainty was not fitted (RuntimeError: no memory left)" in caplog.text


def test_a_model_without_depth_gets_none(toy: Path, tmp_path: Path) -> None:
    res = train_model(toy, tmp_path / "run", preset_config("base", size=64, outputs="rgb"), TC)
    assert EXTRA_KEY not in load_checkpoint(res.last).extra


def test_render_trajectory_writes_it_beside_each_depth(hybrid_run: Path, tmp_path: Path) -> None:
    from pose2rgbd.convert.trajectories import Trajectory
    from pose2rgbd.evaluation.trajectory import render_trajectory

    engine = RenderEngine(EngineConfig(warmup=0), load_checkpoint(hybrid_run))
    T = np.asarray(engine.model.keyframes.T_world_cam[:3])  # type: ignore[attr-defined]
    traj = Trajectory(tmp_path / "t.txt", "tum", np.arange(3, dtype=np.int64) * 10**8, T, np.arange(3) + 1)
    render_trajectory(engine, traj, tmp_path / "out", progress=False)
    depth = np.load(tmp_path / "out" / "depth_000002.npy")
    sigma = np.load(tmp_path / "out" / "depth_sigma_000002.npy")
    assert engine.depth_uncertainty is not None and sigma.shape == depth.shape
    np.testing.assert_array_equal(np.isnan(sigma), ~np.isfinite(depth))


def test_an_exported_onnx_file_carries_it_to_the_engine(toy: Path, tmp_path: Path) -> None:
    from pose2rgbd.models.export import export_onnx

    res = train_model(toy, tmp_path / "run", preset_config("base", size=64, outputs="rgbd"), TC)
    ck = load_checkpoint(res.last)
    onnx_path = export_onnx(ck, tmp_path / "base.onnx", exporter="torchscript").path
    engine = RenderEngine.from_config(EngineConfig(checkpoint=str(onnx_path), warmup=0))
    assert engine.backend.name == "onnxruntime" and engine.depth_uncertainty is not None
    np.testing.assert_array_equal(engine.depth_uncertainty.relative, ck.extra[EXTRA_KEY]["relative"])
    got = engine.render(_pose(ck))
    assert got.depth is not None and got.depth_sigma is not None and got.depth_sigma.shape == got.depth.shape


def _pose(ck: object) -> np.ndarray:
    """The first training camera of ``ck`` as a 4x4 pose."""
    from pose2rgbd.geometry.transforms import T_from_tq

    tq = np.asarray(ck.extra["training_poses"])[0]  # type: ignore[attr-defined]
    return T_from_tq(tq[:3], tq[3:7])  # quaternion x y z w
