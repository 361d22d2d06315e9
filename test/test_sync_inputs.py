"""The estimator's inputs: the per-frame flow statistic and the camera turn rate used to mask turns."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import ConfigError
from pose2rgbd.sync.flow import FlowConfig, FlowMagnitude


def _two_speed_pair() -> tuple[np.ndarray, np.ndarray]:
    """Textured frame; in the next one the left three quarters move 1 px, the right quarter 6 px (a roof
    passing close under a nadir camera moves faster than the ground)."""
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    a = gaussian_filter(rng.random((96, 160)), 1.5)
    a = ((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)
    b = np.roll(a, 1, axis=1)
    b[:, 120:] = np.roll(a, 6, axis=1)[:, 120:]
    return a, b


@pytest.mark.parametrize("statistic", ["mean", "median", "quantile"])
def test_flow_statistics(statistic: str) -> None:
    a, b = _two_speed_pair()
    fm = FlowMagnitude(FlowConfig(frame_step=1, statistic=statistic, quantile=0.25))
    assert np.isnan(fm.add_gray(0.0, a))
    v = fm.add_gray(0.5, b)  # px per second: displacement / 0.5 s
    if statistic == "mean":
        assert 3.0 < v < 6.0  # pulled up by the fast quarter (1 px * 3/4 + 6 px * 1/4 = 2.25 px -> 4.5 px/s)
    else:  # the ground: 1 px -> 2 px/s
        assert 1.6 < v < 2.6, v


def test_flow_config_errors() -> None:
    with pytest.raises(ConfigError, match="quantile"):
        FlowConfig(statistic="quantile", quantile=1.0)
    with pytest.raises(ConfigError, match="statistic"):
        FlowConfig(statistic="p25")


def test_rotation_rate_of_an_orientation_track() -> None:
    from pose2rgbd.convert.stages.orientation import OrientationTrack

    t = np.arange(0.0, 10.0, 0.02)
    yaw = np.where(t < 5.0, 0.0, np.radians(30.0) * (t - 5.0))  # hover, then a 30 deg/s turn in place
    R = Rotation.from_euler("ZYX", np.stack([yaw, np.zeros_like(t), np.full_like(t, 0.1)], -1)).as_matrix()
    tr = OrientationTrack(t, R, "imu", "")
    ta = np.array([1.0, 6.0, 8.0, 9.95, 20.0, 3.0])
    tb = np.array([1.1, 6.1, 8.5, 9.99, 20.1, 2.9])
    r = tr.rotation_rate_dps(ta, tb)
    assert r[0] == pytest.approx(0.0, abs=1e-6)
    assert r[1] == pytest.approx(30.0, rel=1e-3) and r[2] == pytest.approx(30.0, rel=1e-3)
    assert np.isnan(r[4]) and np.isnan(r[5])  # outside the track; reversed interval
    assert np.isfinite(r[3])  # within one sample period of the end: held
