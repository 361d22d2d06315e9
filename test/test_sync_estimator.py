"""Unit tests of the Algorithm 1 estimator core on synthetic signals, and on the real GoPro clips."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.errors import SyncError
from pose2rgbd.sync import SyncConfig, correlate_signals, speed_from_positions


def _speed_profile(t: np.ndarray, seed: int = 0) -> np.ndarray:
    """A flight with speed changes: smooth random steps between 2 and 12 m/s."""
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter1d

    knots = np.arange(-20.0, 100.0, 4.0)
    vals = rng.uniform(2, 12, knots.size)
    grid = np.arange(-20.0, 100.0, 0.01)
    fine = gaussian_filter1d(np.interp(grid, knots, vals), 60)
    return np.interp(t, grid, fine)


@pytest.mark.parametrize("d", [-2.0, -0.5, 0.0, 0.7, 1.5])
def test_recovers_offset_on_synthetic_signals(d: float) -> None:
    rng = np.random.default_rng(1)
    tf = np.arange(0, 50, 1 / 30)
    flow = 3.0 * _speed_profile(tf) * (1 + 0.1 * rng.standard_normal(tf.size))
    tg = np.arange(-3, 53, 0.1)  # GPS stamps; measured at tg - d
    speed = _speed_profile(tg - d) + 0.3 * rng.standard_normal(tg.size)
    r = correlate_signals(tf, flow, tg, speed, SyncConfig())
    assert r.verdict == "ok", r.describe()
    assert abs(r.offset_s - d) < 1 / 30, r.describe()
    assert r.confidence > 0.5


def test_pure_noise_is_weak_and_uses_the_fallback() -> None:
    rng = np.random.default_rng(2)
    tf = np.arange(0, 30, 1 / 30)
    tg = np.arange(0, 30, 0.1)
    r = correlate_signals(tf, rng.random(tf.size), tg, rng.random(tg.size), SyncConfig(),
                          fallback_offset_s=0.25)  # fmt: skip
    assert r.verdict == "weak" and r.reasons
    assert r.offset_s == 0.25
    assert np.isfinite(r.estimate_s)


def test_constant_speed_is_weak() -> None:
    tf = np.arange(0, 30, 1 / 30)
    tg = np.arange(0, 30, 0.1)
    rng = np.random.default_rng(3)
    r = correlate_signals(tf, 5 + 0.01 * rng.standard_normal(tf.size), tg, np.full(tg.size, 5.0))
    assert r.verdict == "weak"
    assert r.offset_s == 0.0


def test_no_overlap_is_weak_not_an_exception() -> None:
    tf = np.arange(0, 10, 1 / 30)
    tg = np.arange(100, 110, 0.1)
    r = correlate_signals(tf, np.sin(tf), tg, np.sin(tg))
    assert r.verdict == "weak" and "overlap" in r.reasons[0]


@pytest.mark.parametrize(
    "bad",
    [
        ("empty", np.zeros(0), np.zeros(0)),
        ("nan", np.full(10, np.nan), np.arange(10.0)),
        ("non-monotonic", np.array([0.0, 1.0, 0.5, 2.0, 3.0]), np.ones(5)),
    ],
)
def test_bad_stamps_raise_clear_errors(bad) -> None:
    name, t, x = bad
    with pytest.raises(SyncError) as e:
        correlate_signals(t, x, np.arange(10.0), np.arange(10.0))
    assert ("increasing" in str(e.value)) if name == "non-monotonic" else ("usable samples" in str(e.value))


def test_speed_from_noisy_positions() -> None:
    rng = np.random.default_rng(5)
    t = np.arange(0, 60, 0.1)
    p = np.stack([4.0 * t, 3.0 * t, np.zeros_like(t)], -1) + rng.normal(0, 1.5, (t.size, 3))
    s = speed_from_positions(t, p, 2.0)
    assert abs(np.median(s) - 5.0) < 0.3


def _turn_corrupted(seed: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flow that follows the speed except during three 'turns in place', where rotation flow dominates."""
    rng = np.random.default_rng(seed)
    tf = np.arange(0, 60, 1 / 30)
    flow = _speed_profile(tf, seed) + 0.1 * rng.standard_normal(tf.size)
    turning = np.zeros(tf.size, bool)
    for c in (12.0, 31.0, 47.0):
        m = np.abs(tf - c) < 1.5
        flow[m] += 25.0 * np.sin(np.pi * (tf[m] - c + 1.5) / 3.0)  # large, smooth: not caught as outliers
        turning |= m
    tg = np.arange(0, 60, 0.1)
    return tf, flow, tg, _speed_profile(tg - 0.7, seed), turning


def test_masked_reference_samples_are_left_out() -> None:
    tf, flow, tg, speed, turning = _turn_corrupted()
    cfg = SyncConfig(n_surrogates=0)
    bad = correlate_signals(tf, flow, tg, speed, cfg)
    good = correlate_signals(tf, flow, tg, speed, cfg, ref_valid=~turning)
    assert abs(good.estimate_s - 0.7) < 1 / 30, good.describe()
    assert good.peak_ncc > 0.95
    assert bad.peak_ncc < good.peak_ncc - 0.1  # the turns do corrupt the unmasked estimate
    # masked samples are not bridged by interpolation: replacing them by anything gives the same answer
    flow2 = flow.copy()
    flow2[turning] = 1e3
    again = correlate_signals(tf, flow2, tg, speed, cfg, ref_valid=~turning)
    assert again.estimate_s == pytest.approx(good.estimate_s)


def test_everything_masked_is_weak_and_says_why() -> None:
    tf, flow, tg, speed, _ = _turn_corrupted()
    r = correlate_signals(tf, flow, tg, speed, SyncConfig(n_surrogates=0), ref_valid=np.zeros(tf.size, bool),
                          fallback_offset_s=0.1)  # fmt: skip
    assert r.verdict == "weak" and r.offset_s == 0.1
    assert "masked" in r.reasons[0] and "max_rotation_dps" in r.reasons[0]
    with pytest.raises(SyncError, match="validity flags"):
        correlate_signals(tf, flow, tg, speed, ref_valid=np.ones(3, bool))


@pytest.mark.parametrize("n", [4, 6, 9])
def test_a_clip_shorter_than_the_median_filter_warns_nothing(n: int) -> None:
    """A few frames at 30 fps are fewer than the flow's median filter (0.3 s: 9 samples): the filter is shortened
    to the clip (SciPy's own warning about zero-padding is not what a user should read), and answers weak."""
    import warnings

    tf = np.arange(n) / 30
    tg = np.arange(-1, 2, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = correlate_signals(tf, 1.0 + 0.1 * np.arange(n), tg, 5.0 + np.sin(tg), SyncConfig(n_surrogates=0))
    assert r.verdict == "weak" and r.offset_s == 0.0
