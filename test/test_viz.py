"""The one depth colour map: sky and invalid get their own colours, near is blue and far is red, log scale."""

from __future__ import annotations

import numpy as np
import pytest

from pose2rgbd.viz import INVALID_RGB, SKY_RGB, colorize_depth


def test_sky_and_invalid_have_their_own_colours() -> None:
    d = np.array([[np.inf, np.nan, 10.0, 1000.0]], dtype=np.float32)
    rgb = colorize_depth(d, 10.0, 1000.0)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == SKY_RGB and tuple(rgb[0, 1]) == INVALID_RGB
    near, far = rgb[0, 2].astype(int), rgb[0, 3].astype(int)
    assert near[2] > near[0] and far[0] > far[2]  # near is blue, far is red


def test_log_scale_puts_the_geometric_mean_in_the_middle() -> None:
    lo, hi = 10.0, 1000.0
    mid_log = colorize_depth(np.array([[100.0]]), lo, hi)  # sqrt(lo * hi): the middle of a log scale
    mid_lin = colorize_depth(np.array([[505.0]]), 0.0, 1010.0)  # the middle of a linear scale (lo <= 0)
    np.testing.assert_array_equal(mid_log, mid_lin)
    below, above = colorize_depth(np.array([[1.0, 5000.0]]), lo, hi)[0]  # clipped to the range ends
    np.testing.assert_array_equal(below, colorize_depth(np.array([[lo]]), lo, hi)[0, 0])
    np.testing.assert_array_equal(above, colorize_depth(np.array([[hi]]), lo, hi)[0, 0])


@pytest.mark.parametrize(("lo", "hi"), [(0.5, 4.0), (0.0, 80.0)])
def test_the_depth_colour_bar_matches_the_depth_images(lo: float, hi: float) -> None:
    """A figure's colour bar (depth_norm with turbo) gives every depth the colour colorize_depth gives it, on the log
    scale and on the linear one."""
    import matplotlib

    from pose2rgbd.viz import depth_norm

    d = np.linspace(max(lo, 0.6), hi, 50)[None]
    bar = (matplotlib.colormaps["turbo"](depth_norm(lo, hi)(d))[..., :3] * 255).astype(np.uint8)  # type: ignore[operator]
    assert np.abs(bar.astype(int) - colorize_depth(d, lo, hi)).max() <= 1
