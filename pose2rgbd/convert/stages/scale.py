"""Metric scale from GPS (Algorithm 2, lines 2-4): unscaled relative poses of a monocular network against the
relative translations of the synchronized GPS poses (Algorithm 1's output).

Single frame pairs are useless with GPS noise (1.5 m noise against ~1 m of motion between frames), so the
network's relative poses are composed over *windows* that end when the GPS baseline reaches
``min_baseline_m`` (a baseline of 20 m holds 1.5 m noise to a few per cent); each window gives a ratio
``|Δp_gps| / |Δp_net|``. Windows do not overlap, so their ratios are independent samples. A window that has not
reached the baseline after ``max_window_s`` is a hover / slow segment and is rejected, as is one whose network
translation is tiny. The scale is the median of the ratios; its uncertainty is a bootstrap of that median (and the
MAD is reported). :func:`segment_scales` gives the same per segment of the flight, for the scale-over-time plot.

``scaled depth = scale * network depth`` (depth and translation of a self-supervised network share one scale).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError, SyncError


class TooLittleGpsMotion(SyncError):
    """The GPS track has too few windows of the baseline a scale fit needs. ``what`` says how few and why (the
    numbers), ``reason`` the same in words (the track spanning less than one window, or too few windows), both without
    the conclusion and advice the message adds for a conversion whose only scale is this fit."""

    def __init__(self, n_windows: int, need: int, baseline_m: float, hovers: int, span_m: float) -> None:
        self.what = (f"only {n_windows} window(s) with a GPS baseline of {baseline_m} m (need {need}; {hovers} hover "
                     f"/ slow window(s) rejected, the GPS track spans {span_m:.1f} m)")  # fmt: skip
        self.reason = (
            f"the GPS track spans less than one {baseline_m} m window"
            if span_m < baseline_m
            else f"the GPS track gives {n_windows} of the {need} windows of {baseline_m} m the fit needs"
        )
        advice = "Record a longer path, lower scale.min_baseline_m, or write unscaled depth (no GPS)"
        super().__init__(f"scale: {self.what}: the GPS shows too little motion to fit a metric scale. {advice}")


@dataclass
class ScaleConfig:
    """How the metric scale is fitted from GPS."""

    min_baseline_m: float = help_field(20.0, "a window ends when the GPS baseline reaches this many metres")
    max_window_s: float = help_field(30.0, "a window longer than this without the baseline is a hover: rejected")
    min_windows: int = help_field(3, "fewer usable windows than this is an error (GPS without motion)")
    segment_s: float = help_field(30.0, "length of the segments of the scale-over-time report, seconds")
    bootstrap: int = help_field(500, "bootstrap resamples of the median (uncertainty)")
    seed: int = help_field(0, "seed of the bootstrap")

    def __post_init__(self) -> None:
        if self.min_baseline_m <= 0 or self.max_window_s <= 0 or self.segment_s <= 0:
            raise ConfigError("scale: min_baseline_m, max_window_s and segment_s must be > 0")
        if self.min_windows < 1 or self.bootstrap < 10:
            raise ConfigError("scale: min_windows must be >= 1 and bootstrap >= 10")


@dataclass
class ScaleFit:
    """A fitted scale: ``scale`` (metres per network unit), ``sigma`` (bootstrap std of the median),
    ``mad`` (median absolute deviation of the window ratios, relative to the scale), the windows used
    (``windows``: (n, 2) frame indices [start, end]) and ``ratios``, and how many were rejected."""

    scale: float
    sigma: float
    mad: float
    n_windows: int
    n_hover: int
    n_degenerate: int
    windows: np.ndarray = field(repr=False)
    ratios: np.ndarray = field(repr=False)
    window_t_s: np.ndarray = field(repr=False)  # mid time of each window, seconds since the first frame

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("windows", "ratios", "window_t_s"):
            d.pop(k)
        return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in d.items()}


def compose_positions(T_rel: np.ndarray) -> np.ndarray:
    """Camera centres (N, 3) in the first camera's frame from ``T_rel[k] = T_{k+1}_k`` (N-1, 4, 4)
    (``T_source_target`` with the source the next frame)."""
    n = len(T_rel) + 1
    T = np.eye(4)
    out = np.zeros((n, 3))
    for k in range(n - 1):
        T = T @ np.linalg.inv(T_rel[k])  # T_0_{k+1} = T_0_k @ T_k_{k+1}
        out[k + 1] = T[:3, 3]
    return out


def gps_windows(positions: np.ndarray, t_s: np.ndarray, cfg: ScaleConfig) -> tuple[list[tuple[int, int]], int]:
    """Non-overlapping windows ``[a, b]`` whose GPS baseline reaches ``cfg.min_baseline_m``; also the count of
    windows rejected as hovers (too long without the baseline)."""
    wins: list[tuple[int, int]] = []
    hovers = 0
    a, n = 0, len(positions)
    for b in range(1, n):
        if t_s[b] - t_s[a] > cfg.max_window_s:
            hovers += 1
            a = b
            continue
        if np.linalg.norm(positions[b] - positions[a]) >= cfg.min_baseline_m:
            wins.append((a, b))
            a = b
    return wins, hovers


def check_gps_windows(gps_positions: np.ndarray, stamps_ns: np.ndarray, cfg: ScaleConfig | None = None) -> None:
    """Raise :class:`TooLittleGpsMotion` where the GPS alone already gives fewer windows than :func:`fit_scale`
    needs (the network's poses can only reject more): checked before minutes of depth training whose scale would
    come from this fit."""
    cfg = cfg or ScaleConfig()
    p = np.asarray(gps_positions, dtype=np.float64)
    if len(p) == 0 or not np.all(np.isfinite(p)):
        return  # the fit says what is wrong with such positions
    t = (np.asarray(stamps_ns, dtype=np.int64) - int(stamps_ns[0])) / 1e9
    wins, hovers = gps_windows(p, t, cfg)
    if len(wins) < cfg.min_windows:
        span = float(np.linalg.norm(p.max(0) - p.min(0)))
        raise TooLittleGpsMotion(len(wins), cfg.min_windows, cfg.min_baseline_m, hovers, span)


def fit_scale(
    gps_positions: np.ndarray,
    stamps_ns: np.ndarray,
    T_rel: np.ndarray,
    cfg: ScaleConfig | None = None,
) -> ScaleFit:
    """The metric scale of one sequence (see the module docstring).

    Args:
        gps_positions: (N, 3) camera (or antenna) positions from the GPS poses, metres.
        stamps_ns: (N,) frame stamps.
        T_rel: (N-1, 4, 4) the network's ``T_{k+1}_k`` between consecutive frames (network units).
    """
    cfg = cfg or ScaleConfig()
    p = np.asarray(gps_positions, dtype=np.float64)
    T_rel = np.asarray(T_rel, dtype=np.float64)
    n = len(p)
    if T_rel.shape != (n - 1, 4, 4):
        raise ConfigError(f"scale: {n} GPS positions need {n - 1} relative poses, got {T_rel.shape}")
    if not np.all(np.isfinite(p)):
        raise SyncError("scale: the GPS positions contain NaN / inf; fit on the frames that have a GPS pose")
    t = (np.asarray(stamps_ns, dtype=np.int64) - int(stamps_ns[0])) / 1e9
    c = compose_positions(T_rel)
    wins, hovers = gps_windows(p, t, cfg)
    ratios, kept, degenerate = [], [], 0
    for a, b in wins:
        d_net = np.linalg.norm(c[b] - c[a])
        if not d_net > 1e-9:
            degenerate += 1
            continue
        ratios.append(np.linalg.norm(p[b] - p[a]) / d_net)
        kept.append((a, b))
    if len(ratios) < cfg.min_windows:
        span = float(np.linalg.norm(p.max(0) - p.min(0))) if n else 0.0
        raise TooLittleGpsMotion(len(ratios), cfg.min_windows, cfg.min_baseline_m, hovers, span)
    r = np.asarray(ratios)
    s = float(np.median(r))
    rng = np.random.default_rng(cfg.seed)
    boot = np.median(r[rng.integers(0, len(r), (cfg.bootstrap, len(r)))], axis=1)
    w = np.asarray(kept, dtype=np.int64)
    return ScaleFit(
        scale=s,
        sigma=float(np.std(boot)),
        mad=float(np.median(np.abs(r - s)) / s),
        n_windows=len(r),
        n_hover=hovers,
        n_degenerate=degenerate,
        windows=w,
        ratios=r,
        window_t_s=(t[w[:, 0]] + t[w[:, 1]]) / 2.0,
    )


def segment_scales(fit: ScaleFit, segment_s: float) -> list[dict[str, float]]:
    """Per segment of ``segment_s`` seconds: ``{"t_s", "scale", "sigma", "n"}`` from the windows whose middle
    lies in it (``t_s``: the median of those middles, inside the flight where it ends within the segment; sigma:
    1.2533 * 1.4826 * MAD / sqrt(n), the normal-theory std of a median; NaN with one window)."""
    out: list[dict[str, float]] = []
    if fit.n_windows == 0:
        return out
    edges = np.arange(0.0, float(fit.window_t_s.max()) + segment_s, segment_s)
    for lo in edges:
        m = (fit.window_t_s >= lo) & (fit.window_t_s < lo + segment_s)
        if not m.any():
            continue
        r = fit.ratios[m]
        med = float(np.median(r))
        sig = 1.2533 * 1.4826 * float(np.median(np.abs(r - med))) / np.sqrt(len(r)) if len(r) > 1 else float("nan")
        t = float(np.median(fit.window_t_s[m]))
        out.append({"t_s": t, "scale": med, "sigma": sig, "n": float(len(r))})
    return out
