"""Colours for depth images: the one depth colour map of every figure, video and preview pose2rgbd draws.

Near is blue and far is red (matplotlib's ``turbo``) on a log scale between ``lo`` and ``hi`` (linear when
``lo <= 0``); sky (+inf) is light blue and invalid (NaN) grey, so neither is mistaken for a near or far surface.
"""

from __future__ import annotations

import numpy as np

SKY_RGB = (200, 225, 255)  # +inf (sky) in a depth image
INVALID_RGB = (90, 90, 90)  # NaN (invalid) in a depth image


def depth_norm(lo: float, hi: float) -> object:
    """The matplotlib ``Normalize`` of :func:`colorize_depth` (log between ``lo`` and ``hi``, linear when
    ``lo <= 0``): a figure's colour bar for the depth images it shows."""
    from matplotlib.colors import LogNorm, Normalize

    return LogNorm(lo, hi) if lo > 0 and hi > lo else Normalize(lo, max(hi, lo + 1e-9))


def colorize_depth(depth: np.ndarray, lo: float, hi: float, *, cmap: str = "turbo") -> np.ndarray:
    """float ``(H, W)`` depth (metres, REP-118) -> uint8 ``(H, W, 3)`` RGB (see the module docstring)."""
    import matplotlib

    d = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if lo > 0 and hi > lo:
            x = np.log(np.maximum(d, lo) / lo) / np.log(hi / lo)
        else:
            x = (d - lo) / max(hi - lo, 1e-9)
    x = np.clip(x, 0.0, 1.0)
    rgb = (matplotlib.colormaps[cmap](np.nan_to_num(x, nan=0.0))[..., :3] * 255).astype(np.uint8)
    rgb[np.isposinf(d)] = SKY_RGB
    rgb[np.isnan(d)] = INVALID_RGB
    return rgb
