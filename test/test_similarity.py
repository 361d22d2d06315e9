"""Robust Sim(3) alignment of structure-from-motion camera centres to GPS positions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.similarity import apply_sim3, robust_sim3, umeyama


def _survey(n: int = 200) -> np.ndarray:
    """A lawn-mower survey in metres (4 legs of 150 m, 40 m apart) with gentle altitude changes."""
    u = np.linspace(0.0, 4.0, n)
    leg = np.floor(np.minimum(u, 3.999)).astype(int)
    f = u - leg
    x = np.where(leg % 2 == 0, f, 1.0 - f) * 150.0
    y = leg * 40.0 + 40.0 * np.clip((f - 0.95) / 0.05, 0, 1)
    z = 60.0 + 5.0 * np.sin(u * 2.0)
    return np.stack([x, y, z], 1)


S_TRUE = 0.37  # metres per SfM unit ... we map SfM -> GPS: gps = S R sfm + t
R_TRUE = Rotation.from_euler("xyz", [10.0, -25.0, 130.0], degrees=True).as_matrix()
T_TRUE = np.array([120.0, -40.0, 15.0])


def _data(seed: int = 0, noise: float = 1.5, outliers: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gps_true = _survey()
    # the SfM frame: the inverse similarity of the GPS track
    sfm = ((gps_true - T_TRUE) @ R_TRUE) / S_TRUE
    gps = gps_true + rng.normal(0.0, noise, gps_true.shape)
    bad = rng.random(len(gps)) < outliers
    gps[bad] += rng.uniform(20.0, 60.0, (int(bad.sum()), 1)) * rng.normal(size=(int(bad.sum()), 3))
    return sfm, gps, bad


def _rot_err_deg(R: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(R.T @ R_TRUE).magnitude()))


def test_umeyama_is_exact_on_noise_free_points() -> None:
    sfm, _, _ = _data(noise=0.0, outliers=0.0)
    s, R, t = umeyama(sfm, apply_sim3(S_TRUE, R_TRUE, T_TRUE, sfm))
    assert s == pytest.approx(S_TRUE, rel=1e-9)
    assert _rot_err_deg(R) < 1e-6
    np.testing.assert_allclose(t, T_TRUE, atol=1e-6)


def test_robust_sim3_recovers_scale_rotation_translation_from_noisy_gps_with_outliers() -> None:
    sfm, gps, bad = _data()
    assert 0.15 < bad.mean() < 0.25
    fit = robust_sim3(sfm, gps, threshold=5.0, bootstrap=200)
    assert fit.s == pytest.approx(S_TRUE, rel=0.01)
    assert _rot_err_deg(fit.R) < 1.0
    np.testing.assert_allclose(fit.t, T_TRUE, atol=3.0)
    # the outliers are found, the residual of the rest is the GPS noise (1.5 m per axis: ~2.6 m 3-D RMS)
    assert np.mean(fit.inliers[bad]) < 0.1 and np.mean(fit.inliers[~bad]) > 0.9
    assert 1.5 < fit.rms < 3.5
    assert fit.median < 3.5
    # the bootstrap interval covers the true scale and is not absurdly wide
    lo, hi = fit.scale_ci
    assert lo <= S_TRUE <= hi
    assert 0 < fit.scale_sigma < 0.01 * S_TRUE
    # a plain least-squares fit is pulled away by the outliers: the robust fit is needed
    s_ls = umeyama(sfm, gps)[0]
    assert abs(s_ls - S_TRUE) / S_TRUE > 3 * abs(fit.s - S_TRUE) / S_TRUE
    summary = fit.summary()
    assert summary["inliers"] == fit.n_inliers and summary["residual_rms_m"] == fit.rms


def test_bootstrap_interval_covers_the_true_scale_over_seeds() -> None:
    covered = 0
    for seed in range(10):
        sfm, gps, _ = _data(seed=seed + 1)
        fit = robust_sim3(sfm, gps, bootstrap=150, iterations=200, seed=seed)
        covered += fit.scale_ci[0] <= S_TRUE <= fit.scale_ci[1]
    assert covered >= 8


def test_robust_sim3_bad_input() -> None:
    with pytest.raises(ConfigError, match="at least 3"):
        robust_sim3(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="NaN"):
        robust_sim3(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="shape"):
        robust_sim3(np.zeros((5, 3)), np.zeros((4, 3)))
