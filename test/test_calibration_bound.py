"""The covariance scale fitted on held-out fixes is the upper one-sided confidence bound of their median squared
Mahalanobis error (``pose2rgbd.inference.calibration.median_upper_bound``), not the median itself: on errors drawn
with a known scale it is at least that scale in about the stated share of draws, where the median is in half."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.inference.calibration import (
    SCALE_LEVEL,
    Calibration,
    compute_calibration,
    information_factors,
    median_bound_rank,
)

TRUE_SCALE = 2.5  # variance: the errors are 2.5x the covariances the fixes carry


def _draw(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fixes, each with its own covariance (random orientation and sizes, position in metres, orientation in
    radians, correlated), and Gaussian errors of ``TRUE_SCALE`` times that covariance."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 6, 6)) * np.array([0.05] * 3 + [0.004] * 3)[None, :, None]
    cov = a @ a.transpose(0, 2, 1) + np.diag([1e-4] * 3 + [1e-6] * 3)[None]
    cov *= np.exp(rng.uniform(-1.5, 1.5, n))[:, None, None]  # fixes of very different strength
    e = np.einsum("nij,nj->ni", np.linalg.cholesky(TRUE_SCALE * cov), rng.standard_normal((n, 6)))
    return e, cov


def test_the_scale_bound_is_at_least_the_true_scale_in_the_stated_share_of_draws() -> None:
    """200 seeded calibrations of n = 35 fixes: the fitted scale (whole, position block, orientation block) is at
    least the true scale in a share within three standard errors of the bound's exact coverage (0.845 for n = 35
    at level 0.8, the order statistic's binomial probability) and within 0.1 of the level; the plain median (the
    fit before) is at least the true scale in about half of them only."""
    n, draws = 35, 200
    rank, coverage = median_bound_rank(n, SCALE_LEVEL)
    assert rank == 21 and SCALE_LEVEL <= coverage < SCALE_LEVEL + 0.05
    fitted = np.array([information_factors(*_draw(s, n), level=SCALE_LEVEL) for s in range(draws)])
    median = np.array([information_factors(*_draw(s, n)) for s in range(draws)])
    share = (fitted >= TRUE_SCALE).mean(axis=0)
    share_median = (median >= TRUE_SCALE).mean(axis=0)
    se = np.sqrt(coverage * (1 - coverage) / draws)
    assert np.all(np.abs(share - coverage) <= 3 * se), (share, coverage)
    assert np.all(np.abs(share - SCALE_LEVEL) <= 0.1), share
    assert np.all(share_median <= SCALE_LEVEL - 0.15), share_median  # the median alone: about 0.5
    assert np.all(fitted >= median)  # the bound only ever enlarges the covariance


def test_the_bound_and_its_level_and_n_are_stored_in_the_calibration() -> None:
    """``compute_calibration`` with per-fix covariances records how the scale was fitted (level, n, the order
    statistic's rank, its exact coverage, the sample medians) and the record survives the file round trip; a level
    outside (0, 1) is refused."""
    e, cov = _draw(7, 30)
    T_true = np.tile(np.eye(4), (30, 1, 1))
    T_est = T_true.copy()
    T_est[:, :3, 3] = e[:, :3]
    from scipy.spatial.transform import Rotation

    T_est[:, :3, :3] = Rotation.from_rotvec(e[:, 3:]).as_matrix()
    cal = compute_calibration(T_est, T_true, np.ones(30), confidence_bins=1, information=cov)
    b = cal.information_scale_bound
    assert b["level"] == SCALE_LEVEL and b["n"] == 30 and b["rank"] == 18 and b["coverage"] >= SCALE_LEVEL
    assert cal.information_scale_position >= b["median_position"] > 0
    assert cal.information_scale_orientation >= b["median_orientation"] > 0
    assert Calibration.from_dict(cal.to_dict()).information_scale_bound == b
    med = compute_calibration(T_est, T_true, np.ones(30), confidence_bins=1, information=cov, scale_level=0.5)
    assert med.information_scale_position < cal.information_scale_position
    with pytest.raises(ConfigError, match="level"):
        compute_calibration(T_est, T_true, np.ones(30), confidence_bins=1, information=cov, scale_level=1.0)


def test_map_build_uses_the_same_level() -> None:
    """``map build``'s self-calibration and ``localize calibrate`` default to one level."""
    from pose2rgbd.placemap.build import SelfCalibrationConfig

    assert SelfCalibrationConfig().scale_level == SCALE_LEVEL
