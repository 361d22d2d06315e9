"""Time-offset estimation between two speed-like signals (Algorithm 1 of the paper, section 2.1), with a verdict.

Offset definition (shared with the simulator): with offset ``d``, a sample of the *other* stream (GPS)
stamped ``t`` was measured at reference-clock (camera) time ``t - d``; corrected stamps are ``t - d``.
So ``other(t) ~ ref(t - d)`` and the estimator searches ``d`` in ``[-max_lag_s, max_lag_s]``.

Steps (:func:`correlate_signals`):

1. denoise: reference samples far above the robust level (median + ``outlier_mad`` x MAD: the camera
   whipping around, scene cuts) are masked, and so are the samples the caller marks invalid (``ref_valid``:
   the converter marks frames during which the camera turns faster than ``max_rotation_dps``, measured by
   the IMU / odometry / TF orientation); then both signals are median filtered (``scipy.signal.medfilt``);
2. both are resampled onto one uniform grid (the reference sample period) with validity masks (gaps and
   ends are masked, never extrapolated);
3. the masked normalized cross-correlation (NCC) for every lag on the grid, all lags at once with FFTs
   (overlap-aware sums, so each lag is normalized over exactly the samples that overlap there);
4. the best lag is refined to sub-sample precision with a parabola through the peak and its neighbours;
5. how sure: *peak* NCC; *margin* to the best other local maximum more than ``exclusion_s`` away;
   *p-value* of the peak against phase-randomized surrogates of the other signal (same spectrum, no
   relation to the reference: "would a random signal with this smoothness match as well somewhere in the
   lag window?"); *uncertainty* = jackknife standard deviation of the peak lag over time blocks left out
   in turn (a peak carried by one feature, such as a single speed knee, moves when that block is gone).
6. verdict ``ok`` when all four pass their thresholds; otherwise ``weak``: the signal is too weak to
   decide, and the offset used is the caller's fallback (the user's ``--time-offset``, or 0), with the
   failed checks listed in ``reasons``. Never a silent guess.

The same core serves the converter (video or bag + GPS) and ``convert gps-odom`` (two speed signals). The record
node does not estimate an offset: it takes the stamps of a robot whose clocks are synchronized (README, "Record or
convert?").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError, SyncError
from pose2rgbd.sync.flow import FlowConfig

log = logging.getLogger(__name__)


@dataclass
class SyncConfig:
    """Time-offset estimator (Algorithm 1): correlation of image-flow magnitude with GPS/odometry speed."""

    max_lag_s: float = help_field(5.0, "search offsets in [-max_lag_s, +max_lag_s] seconds")
    grid_dt_s: float = help_field(0.0, "resampling period in s; 0 = the median reference (frame) period")
    ref_median_s: float = help_field(0.3, "median filter length for the flow signal, seconds")
    other_median_n: int = help_field(3, "median filter length for the speed signal, samples (odd)")
    outlier_mad: float = help_field(6.0, "flow samples above median + this x MAD are masked (whip pans, cuts)")
    max_gap_s: float = help_field(1.0, "gaps longer than this in either stream are masked, not interpolated")
    min_overlap_s: float = help_field(4.0, "a lag is only scored if the streams overlap this long there")
    min_peak_ncc: float = help_field(0.7, "verdict ok needs a peak NCC of at least this")
    min_margin: float = help_field(0.05, "verdict ok needs peak minus best other local peak >= this")
    exclusion_s: float = help_field(0.5, "other local peaks closer than this to the best one are ignored")
    n_surrogates: int = help_field(200, "phase-randomized surrogates for the p-value (0 = skip the test)")
    max_p_value: float = help_field(0.01, "verdict ok needs the surrogate p-value to be at most this")
    jackknife_blocks: int = help_field(6, "time blocks for the jackknife lag uncertainty (0 = skip)")
    max_uncertainty_s: float = help_field(0.25, "verdict ok needs a jackknife lag std of at most this (s)")
    max_rotation_dps: float = help_field(
        10.0, "flow samples during which the camera turns faster than this (deg/s) are left out of the "
        "correlation: rotation flow is not speed (turns in place, yaw corrections). Needs an orientation on "
        "the camera clock (IMU, odometry or TF in a bag); 0 = off"
    )  # fmt: skip
    seed: int = help_field(0, "random seed of the surrogates (results are deterministic)")
    flow: FlowConfig = field(default_factory=FlowConfig, metadata={"help": "optical-flow magnitude settings"})

    def __post_init__(self) -> None:
        if isinstance(self.flow, dict):
            from pose2rgbd.config import from_dict

            self.flow = from_dict(FlowConfig, self.flow, where="flow")
        if self.max_lag_s <= 0:
            raise ConfigError(f"max_lag_s must be > 0, got {self.max_lag_s}")
        if self.grid_dt_s < 0:
            raise ConfigError(f"grid_dt_s must be >= 0, got {self.grid_dt_s}")
        if self.other_median_n < 1 or self.other_median_n % 2 == 0:
            raise ConfigError(f"other_median_n must be a positive odd number, got {self.other_median_n}")
        if self.max_rotation_dps < 0:
            raise ConfigError(f"max_rotation_dps must be >= 0 (0 = off), got {self.max_rotation_dps}")
        if self.n_surrogates < 0 or self.jackknife_blocks < 0 or self.jackknife_blocks == 1:
            raise ConfigError("n_surrogates must be >= 0 and jackknife_blocks 0 or >= 2")
        if self.n_surrogates > 0 and 1.0 / (1 + self.n_surrogates) > self.max_p_value:
            raise ConfigError(
                f"n_surrogates={self.n_surrogates} cannot reach p <= max_p_value={self.max_p_value}; "
                f"use at least {int(np.ceil(1 / self.max_p_value))} surrogates"
            )


@dataclass
class SyncResult:
    """What the estimator found. ``offset_s`` is what to use; ``estimate_s`` is the raw correlation peak."""

    offset_s: float
    estimate_s: float
    verdict: str  # "ok" | "weak" | "user"
    reasons: list[str]
    confidence: float
    peak_ncc: float
    margin: float
    second_lag_s: float
    p_value: float
    uncertainty_s: float
    overlap_s: float
    grid_dt_s: float
    lags_s: np.ndarray = field(repr=False)
    ncc: np.ndarray = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 6)

        return {
            "offset_s": f(self.offset_s),
            "estimate_s": f(self.estimate_s),
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "confidence": f(self.confidence),
            "peak_ncc": f(self.peak_ncc),
            "margin": f(self.margin),
            "second_lag_s": f(self.second_lag_s),
            "p_value": f(self.p_value),
            "uncertainty_s": f(self.uncertainty_s),
            "overlap_s": f(self.overlap_s),
            "grid_dt_s": f(self.grid_dt_s),
        }

    def describe(self) -> str:
        head = (
            f"offset {self.offset_s:+.3f} s (estimate {self.estimate_s:+.3f} s, verdict {self.verdict}, "
            f"confidence {self.confidence:.2f}; peak NCC {self.peak_ncc:.2f}, margin {self.margin:.2f}, "
            f"p {self.p_value:.3f}, jackknife +-{self.uncertainty_s:.2f} s)"
        )
        return head + ("" if not self.reasons else "; " + "; ".join(self.reasons))


# ----------------------------------------------------------------------------------------------------------
# helpers


def _check_series(
    t: np.ndarray, x: np.ndarray, name: str, min_n: int = 3, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite samples of ``(t, x)`` and their caller-given validity (all True when ``valid`` is None)."""
    t = np.asarray(t, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64).ravel()
    if t.shape != x.shape:
        raise SyncError(f"{name}: {t.size} stamps but {x.size} values")
    v = np.ones(t.shape, bool) if valid is None else np.asarray(valid, dtype=bool).ravel()
    if v.shape != t.shape:
        raise SyncError(f"{name}: {t.size} stamps but {v.size} validity flags")
    keep = np.isfinite(t) & np.isfinite(x)
    t, x, v = t[keep], x[keep], v[keep]
    if t.size < min_n:
        raise SyncError(f"{name}: only {t.size} usable samples (need at least {min_n})")
    d = np.diff(t)
    if np.any(d <= 0):
        i = int(np.argmax(d <= 0))
        raise SyncError(
            f"{name}: stamps are not strictly increasing at sample {i} ({t[i]:.6f} s -> {t[i + 1]:.6f} s); "
            "sort the stream or drop duplicates first"
        )
    return t, x, v


def _robust_mask(x: np.ndarray, k: float) -> np.ndarray:
    """True where ``x`` is not an upward outlier (median + k * 1.4826 * MAD)."""
    med = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - med)))
    if mad <= 0:
        return np.ones(x.shape, bool)
    return x <= med + k * mad


def _odd(n: int) -> int:
    n = max(1, int(n))
    return n if n % 2 else n + 1


def _to_grid(t: np.ndarray, x: np.ndarray, valid: np.ndarray, grid: np.ndarray, max_gap: float):
    """Linear interpolation onto ``grid`` with a mask: outside the span, inside long gaps, or where the nearest
    sample is invalid (a masked sample is left out, never bridged by interpolating its neighbours)."""
    tv, xv = t[valid], x[valid]
    out = np.zeros(grid.size)
    m = np.zeros(grid.size, bool)
    if tv.size < 2:
        return out, m
    out = np.interp(grid, tv, xv)
    m = (grid >= tv[0]) & (grid <= tv[-1])
    j = np.clip(np.searchsorted(tv, grid), 1, tv.size - 1)
    m &= (tv[j] - tv[j - 1]) <= max_gap
    if not valid.all():
        k = np.clip(np.searchsorted(t, grid), 1, t.size - 1)
        nearest = np.where(grid - t[k - 1] <= t[k] - grid, k - 1, k)
        m &= valid[nearest]
    return np.where(m, out, 0.0), m


def _xcorr(f: np.ndarray, g: np.ndarray, nfft: int, K: int) -> np.ndarray:
    """``c[k] = sum_i f[i] g[i + k]`` for ``k = -K..K`` (FFT)."""
    F = np.fft.rfft(f, nfft)
    G = np.fft.rfft(g, nfft)
    c = np.fft.irfft(np.conj(F) * G, nfft)
    return np.concatenate([c[nfft - K :], c[: K + 1]])


def _masked_ncc(x: np.ndarray, mx: np.ndarray, y: np.ndarray, my: np.ndarray, K: int, min_count: int):
    """NCC between x[i] and y[i + k] over samples valid in both, for k = -K..K; NaN where overlap < min_count."""
    n = x.size
    nfft = 1 << int(np.ceil(np.log2(2 * n + 1)))
    fx, fy = mx.astype(np.float64), my.astype(np.float64)
    xm, ym = x * fx, y * fy
    cnt = np.rint(_xcorr(fx, fy, nfft, K))
    sx = _xcorr(xm, fy, nfft, K)
    sy = _xcorr(fx, ym, nfft, K)
    sxx = _xcorr(xm * x, fy, nfft, K)
    syy = _xcorr(fx, ym * y, nfft, K)
    sxy = _xcorr(xm, ym, nfft, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.maximum(cnt, 1.0)
        cov = sxy - sx * sy / c
        vx = sxx - sx * sx / c
        vy = syy - sy * sy / c
        r = cov / np.sqrt(np.maximum(vx, 0) * np.maximum(vy, 0))
    tiny = 1e-9 * max(1.0, float(c.max()))
    r[(cnt < min_count) | (vx <= tiny) | (vy <= tiny)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _peak(r: np.ndarray) -> tuple[int, float]:
    """Index of the maximum and its parabolic sub-sample offset in [-0.5, 0.5]."""
    i = int(np.nanargmax(r))
    if 0 < i < r.size - 1 and np.isfinite(r[i - 1]) and np.isfinite(r[i + 1]):
        a, b, c = r[i - 1], r[i], r[i + 1]
        den = a - 2 * b + c
        if den < 0:
            return i, float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    return i, 0.0


def _phase_surrogate(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = y.size
    Y = np.fft.rfft(y - y.mean())
    ph = rng.uniform(0, 2 * np.pi, Y.size)
    ph[0] = 0.0
    if n % 2 == 0:
        ph[-1] = 0.0
    return np.fft.irfft(np.abs(Y) * np.exp(1j * ph), n) + y.mean()


# ----------------------------------------------------------------------------------------------------------
# batch core


def correlate_signals(
    t_ref: np.ndarray,
    x_ref: np.ndarray,
    t_other: np.ndarray,
    y_other: np.ndarray,
    cfg: SyncConfig | None = None,
    *,
    fallback_offset_s: float | None = None,
    ref_valid: np.ndarray | None = None,
) -> SyncResult:
    """Estimate ``d`` with ``y_other(t) ~ x_ref(t - d)`` (times in seconds; see the module docstring).

    ``x_ref`` is the image-side signal (flow magnitude at frame times), ``y_other`` the speed from the
    stream whose clock may be off (GPS fixes, wheel odometry). ``ref_valid`` (bool per reference sample)
    leaves samples out of the correlation, e.g. frames taken while the camera turned (the converter uses
    ``OrientationTrack.rotation_rate_dps`` and ``cfg.max_rotation_dps``).
    Raises :class:`SyncError` for empty, NaN-only or non-monotonic input; returns a ``weak`` verdict (never
    raises) when the data cannot decide.
    """
    # imported here, not at the top: scipy.signal takes 0.4 s, and every command line's parser reads SyncConfig
    from scipy.signal import medfilt

    cfg = cfg or SyncConfig()
    fallback = 0.0 if fallback_offset_s is None else float(fallback_offset_s)
    t_ref, x_ref, ref_ok = _check_series(t_ref, x_ref, "reference signal (flow)", valid=ref_valid)
    t_other, y_other, _ = _check_series(t_other, y_other, "speed signal")

    dt = cfg.grid_dt_s or float(np.median(np.diff(t_ref)))
    if dt <= 0:
        raise SyncError("reference signal: zero sample period")
    # 1. denoise
    if ref_ok.sum() < 3:
        return SyncResult(
            fallback, float("nan"), "weak",
            [f"only {int(ref_ok.sum())} of {ref_ok.size} flow samples are usable (the rest were masked, e.g. "
             f"taken while the camera turned faster than max_rotation_dps={cfg.max_rotation_dps} deg/s)"],
            0.0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), 0.0, dt,
            np.zeros(0), np.zeros(0),
        )  # fmt: skip
    vx = ref_ok.copy()
    vx[ref_ok] = _robust_mask(x_ref[ref_ok], cfg.outlier_mad)
    if vx.sum() >= 3:
        xs = x_ref.copy()
        # a clip shorter than the filter: the longest odd length it holds (SciPy would zero-pad and warn)
        n_vx = int(vx.sum())
        xs[vx] = medfilt(x_ref[vx], min(_odd(round(cfg.ref_median_s / dt)), n_vx if n_vx % 2 else n_vx - 1))
    else:
        xs = x_ref
    ys = medfilt(y_other, cfg.other_median_n) if y_other.size >= cfg.other_median_n else y_other
    # 2. uniform grid covering both streams
    t0 = min(t_ref[0], t_other[0])
    t1 = max(t_ref[-1], t_other[-1])
    n = int(np.floor((t1 - t0) / dt)) + 1
    if n > 20_000_000:
        raise SyncError(f"streams span {t1 - t0:.0f} s; stamps from different clocks? (grid of {n} samples)")
    grid = t0 + dt * np.arange(n)
    gap_ref = max(cfg.max_gap_s, 3 * dt)
    gap_other = max(cfg.max_gap_s, 3 * float(np.median(np.diff(t_other))))
    xg, mx = _to_grid(t_ref, xs, vx, grid, gap_ref)
    yg, my = _to_grid(t_other, ys, np.ones(ys.size, bool), grid, gap_other)
    K = max(1, round(cfg.max_lag_s / dt))
    lags = dt * np.arange(-K, K + 1)
    min_count = max(3, int(np.ceil(cfg.min_overlap_s / dt)))

    def scored(mask_x: np.ndarray) -> np.ndarray:
        return _masked_ncc(xg, mask_x, yg, my, K, min_count)

    r = scored(mx)
    empty = np.full(lags.size, np.nan)
    if not np.isfinite(r).any():
        overlap = float(min(t_ref[-1], t_other[-1]) - max(t_ref[0], t_other[0]))
        return SyncResult(
            fallback, float("nan"), "weak",
            [f"the streams overlap {max(overlap, 0):.1f} s, less than min_overlap_s={cfg.min_overlap_s} s "
             f"at every lag within +-{cfg.max_lag_s} s, or one signal is constant"],
            0.0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), max(overlap, 0.0), dt,
            lags, empty,
        )  # fmt: skip
    i, frac = _peak(r)
    est = float((i - K + frac) * dt)
    peak = float(r[i])
    # margin to the best other local maximum away from the peak
    rr = np.where(np.isfinite(r), r, -np.inf)
    locmax = np.zeros(rr.size, bool)
    locmax[1:-1] = (rr[1:-1] >= rr[:-2]) & (rr[1:-1] >= rr[2:])
    locmax[0] = rr[0] > rr[1]
    locmax[-1] = rr[-1] > rr[-2]
    far = np.abs(lags - lags[i]) > cfg.exclusion_s
    cand = np.flatnonzero(locmax & far & np.isfinite(r))
    if cand.size:
        j = cand[np.argmax(r[cand])]
        second, second_lag = float(r[j]), float(lags[j])
    else:
        second, second_lag = float(np.nanmin(r)), float("nan")
    margin = peak - second
    # overlap at the chosen lag
    k_shift = i - K
    ysh = np.zeros_like(my)
    if k_shift >= 0:
        ysh[: n - k_shift] = my[k_shift:]
    else:
        ysh[-k_shift:] = my[: n + k_shift]
    overlap_s = float((mx & ysh).sum() * dt)
    # p-value against phase-randomized surrogates of the other signal (on its valid span)
    p_value = float("nan")
    if cfg.n_surrogates > 0:
        rng = np.random.default_rng(cfg.seed)
        idx = np.flatnonzero(my)
        lo, hi = idx[0], idx[-1] + 1
        seg = yg[lo:hi]
        beats = 0
        y_save = yg
        for _ in range(cfg.n_surrogates):
            ysur = y_save.copy()
            ysur[lo:hi] = _phase_surrogate(seg, rng)
            rs = _masked_ncc(xg, mx, ysur, my, K, min_count)
            if np.isfinite(rs).any() and np.nanmax(rs) >= peak:
                beats += 1
        p_value = (1 + beats) / (1 + cfg.n_surrogates)
    # jackknife over time blocks of the reference
    unc = float("nan")
    if cfg.jackknife_blocks >= 2:
        ids = np.flatnonzero(mx)
        ests = []
        for blk in np.array_split(ids, cfg.jackknife_blocks):
            m2 = mx.copy()
            m2[blk] = False
            rj = scored(m2)
            if np.isfinite(rj).any():
                ij, fj = _peak(rj)
                ests.append((ij - K + fj) * dt)
        if len(ests) >= 2:
            e = np.asarray(ests)
            unc = float(np.sqrt((len(e) - 1) / len(e) * np.sum((e - e.mean()) ** 2)))
    reasons = []
    if peak < cfg.min_peak_ncc:
        reasons.append(f"peak NCC {peak:.2f} < min_peak_ncc {cfg.min_peak_ncc}")
    if margin < cfg.min_margin:
        reasons.append(
            f"peak is not distinct: margin {margin:.3f} to the peak at {second_lag:+.2f} s "
            f"< min_margin {cfg.min_margin}"
        )
    if np.isfinite(p_value) and p_value > cfg.max_p_value:
        reasons.append(f"random signals with the same smoothness match as well (p={p_value:.3f} > {cfg.max_p_value})")
    if np.isfinite(unc) and unc > cfg.max_uncertainty_s:
        reasons.append(
            f"the peak moves when parts of the data are left out (jackknife +-{unc:.2f} s > {cfg.max_uncertainty_s} s)"
        )
    if abs(est) >= cfg.max_lag_s - dt:
        reasons.append(f"peak at the edge of the lag window (+-{cfg.max_lag_s} s); widen max_lag_s")
    verdict = "ok" if not reasons else "weak"
    conf = max(0.0, peak) * (1.0 - (p_value if np.isfinite(p_value) else 0.0))
    conf *= float(np.clip(margin / (2 * cfg.min_margin), 0, 1)) if cfg.min_margin > 0 else 1.0
    if np.isfinite(unc) and cfg.max_uncertainty_s > 0:
        conf *= float(np.clip(2.0 - unc / cfg.max_uncertainty_s, 0, 1))
    if verdict != "ok":
        conf = min(conf, 0.49)
    offset = est if verdict == "ok" else fallback
    return SyncResult(
        offset, est, verdict, reasons, float(conf), peak, float(margin), second_lag, p_value, unc, overlap_s, dt,
        lags, r,
    )  # fmt: skip


def speed_from_positions(
    t: np.ndarray, enu: np.ndarray, window_s: float = 2.0, *, horizontal: bool = True
) -> np.ndarray:
    """Speed (m/s) at each fix (horizontal, or 3-D), from :func:`velocity_from_positions`."""
    v = velocity_from_positions(t, enu, window_s, dims=2 if horizontal else 3)
    return np.linalg.norm(v, axis=1)


def velocity_from_positions(t: np.ndarray, enu: np.ndarray, window_s: float = 2.0, dims: int = 2) -> np.ndarray:
    """Velocity ``(N, dims)`` (m/s, east/north[/up]) at each fix: slope of a local least-squares line
    through the fixes within ``+-window_s / 2`` (noisy fixes make finite differences useless: 1.5 m noise
    at 10 Hz is ~10 m/s)."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(enu, dtype=np.float64)[:, :dims]
    n = t.size
    if n < 2:
        raise SyncError("need at least two fixes to compute a speed")
    lo = np.searchsorted(t, t - window_s / 2, "left")
    hi = np.searchsorted(t, t + window_s / 2, "right")
    # cumulative sums for O(n) windowed regression
    c = lambda a: np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, axis=0)])  # noqa: E731
    tc = t - t[0]
    S1, St, Stt = c(np.ones(n)), c(tc), c(tc * tc)
    Sp, Stp = c(p), c(tc[:, None] * p)
    hi = np.maximum(hi, np.minimum(lo + 2, n))
    lo = np.minimum(lo, hi - 2)
    m = S1[hi] - S1[lo]
    st, stt = St[hi] - St[lo], Stt[hi] - Stt[lo]
    sp, stp = Sp[hi] - Sp[lo], Stp[hi] - Stp[lo]
    den = (m * stt - st * st)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (m[:, None] * stp - st[:, None] * sp) / den
    v[~np.isfinite(v)] = 0.0
    return v
