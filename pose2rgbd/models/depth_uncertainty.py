"""A rendered depth's uncertainty, fitted on held-out frames: per pixel the error bound ``sigma`` (metres) that the
depth's absolute error stayed within on ``level`` (0.683: the share a normal error keeps within one standard
deviation) of the held-out pixels of the same kind.

A render knows, per pixel, the depth it answers and its confidence (the hybrid: whether a keyframe point landed
there, 1, or the pixel is a hole its rules and fill answered, 0). Depth errors grow with depth, so the bound is
relative: ``sigma = depth * q[cell]``, ``q`` the ``level`` quantile of ``|depth - truth| / depth`` over the held-out
pixels of the cell: the confidence (below or at least 0.5) times the depth's third (by the held-out answers' own
terciles). A cell with fewer than ``min_pixels`` pixels takes its confidence's pooled quantile; a confidence with
fewer than ``min_pixels`` (from :data:`MIN_ROW_PIXELS`) the upper confidence bound of its own quantile
(:func:`pose2rgbd.order_statistics.quantile_upper_bound`), never below all pixels' quantile; one with fewer still
the widest bound measured.
Real depth errors have heavy tails (most warped pixels on the right surface, a few on a wrong one), so ``sigma``
is a quantile, not a standard deviation: the fit also keeps, per confidence row, the multiple of ``sigma`` that 95 %
of the held-out pixels were within (``wide``). ``pose2rgbd train`` fits it on the validation frames with the weights
it keeps (``best.pt``; ``last.pt`` with its own) and stores it in the checkpoint (:data:`EXTRA_KEY`); the render
engine answers ``depth_sigma`` with every depth; ``evaluate`` reports on the test frames the share of pixels within
it (``depth_sigma_within``, to be read against ``level``). Numpy and numba only: the render node computes it without
torch's help.

The bound grows with the query's distance from what the model saw: ``sigma = depth * q[cell] * (1 + growth * d)``,
``d`` the render's coverage distance in metres (:class:`pose2rgbd.geometry.coverage.PoseSet`'s ``position + w *
angle`` to the nearest keyframe the model warps, or training camera). The depth error of a render grows with it (on
the simulator's held-out routes the validation frames' 68.3 % bound, as a multiple of one fitted on all of them,
went from 0.63 at 2-15 m to 1.88 at 42-62 m), and a bound fitted on the validation frames as a whole held for 79 % of
the nearest quarter's pixels and 56 % of the farthest's. ``growth`` (per metre, >= 0) is fitted on the validation
frames so that the bound holds as often for the nearer half of their pixels as for the farther half (with ``q``
refitted at each trial growth); where the validation frames are all about as far (their two halves' median
distances within :data:`MIN_DISTANCE_SPREAD` of each other) or are given no distance, it is 0: the bound is one for
all queries. Beyond the farthest validation frame the growth is carried on linearly: an extrapolation, which the
render's coverage distance and out-of-bounds flag say it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from numba import njit

from pose2rgbd.order_statistics import quantile_upper_bound

EXTRA_KEY = "depth_uncertainty"  # where a checkpoint's extra keeps it (DepthUncertainty.to_dict)
LEVEL = 0.6827  # the share of a normal error within one standard deviation
CONFIDENCE_SPLIT = 0.5  # pixels with confidence below it (the hybrid: holes) form their own cells
MIN_PIXELS = 500  # fewer held-out pixels in a cell: the cell takes its confidence's pooled quantile, or all pixels'
MIN_ROW_PIXELS = 30  # a confidence row with fewer: no bound of its own (the widest of the others and all pixels')
ROW_BOUND_CONFIDENCE = 0.8  # a row of MIN_ROW_PIXELS to MIN_PIXELS: its quantile's upper bound at this confidence
MIN_RELATIVE = 1e-4  # the least relative bound: a cell whose errors are mostly exactly 0 still states one
# the quantile of the validation pixels' coverage distances below which the bound does not shrink (nearest_m)
NEAREST_QUANTILE = 0.05
MIN_DISTANCE_SPREAD = 1.25  # the farther half's median coverage distance over the nearer's below it: no growth fitted
GROWTH_PIXELS = 200_000  # the most held-out pixels the growth's search scores (evenly strided): a bounded fit time
GROWTH_STEPS = 40  # bisections of the growth (the bracket's width shrinks 2^40-fold)


class DepthUncertaintyDict(TypedDict, total=False):
    """:meth:`DepthUncertainty.to_dict`'s plain form (a checkpoint's extra, an ONNX file's metadata)."""

    level: float
    depth_edges: list[float]
    relative: list[list[float]]
    pixels: list[list[int]]
    fitted_on: dict[str, float]
    wide_95: list[float | None]
    growth_per_m: float
    reference_m: float
    nearest_m: float


@dataclass(frozen=True)
class DepthUncertainty:
    """``sigma`` per pixel from a render's depth and confidence (see the module docstring).

    ``depth_edges``: the two terciles of the held-out answers' depth (metres); ``relative``: ``(2, 3)`` the ``level``
    quantile of the relative error, rows confidence below / at least :data:`CONFIDENCE_SPLIT` (one row used when the
    model answers no confidence), columns the depth's thirds; ``pixels``: the held-out pixels of each cell (before
    pooling); ``fitted_on``: what the fit saw (frames, pixels); ``wide``: per row the multiple of ``sigma`` that 95 %
    of the held-out pixels were within (NaN where unknown): real depth errors have heavier tails than a normal
    error's 1.96, so a 95 % bound is ``sigma`` times this, not times 1.96. ``growth_per_m``: how the bound grows with
    the coverage distance (``relative`` is the bound at distance 0; 0: one bound at any distance);
    ``reference_m``: the validation pixels' median coverage distance, the distance assumed where none is given;
    ``nearest_m``: the distance below which the bound does not shrink (the 5th percentile of the validation pixels'
    distances: no held-out view nearer than that was measured, so none says a nearer view errs less; a route split
    whose validation block lies 40-55 m from every training camera had fitted a growth that, carried down to 0 m,
    left a bound 1/100 of the one measured, within which 26 % of a near view's pixels were)."""

    level: float
    depth_edges: tuple[float, float]
    relative: np.ndarray
    pixels: np.ndarray
    fitted_on: dict[str, float] = field(default_factory=dict)
    wide: tuple[float, float] = (float("nan"), float("nan"))
    growth_per_m: float = 0.0
    reference_m: float = 0.0
    nearest_m: float = 0.0

    def sigma(
        self, depth: np.ndarray, confidence: np.ndarray | None = None, distance_m: float | np.ndarray | None = None
    ) -> np.ndarray:
        """``depth`` (any shape, metres; NaN / inf / <= 0: no answer) -> ``sigma`` float32 metres, NaN where the
        depth is no answer. ``confidence`` of the same shape, or ``None`` (the pooled row: a model without one).
        ``distance_m``: the render's coverage distance (metres; one number, or one per image of a batch: ``(N,)``
        for depth ``(N, H, W)``); ``None``: the validation frames' median (:attr:`reference_m`)."""
        d = np.asarray(depth, dtype=np.float32, order="C")  # any shape, 0-d included
        c = None if confidence is None else np.asarray(confidence, dtype=np.float32, order="C")
        if c is not None and c.shape != d.shape:
            raise ValueError(f"confidence {c.shape} must have the depth's shape {d.shape}")
        out = np.empty(d.shape, np.float32)
        lut = np.asarray(self.relative, np.float32).reshape(6)
        lo, hi = self.depth_edges
        _sigma_kernel(d.reshape(-1), c.reshape(-1) if c is not None else _NO_CONFIDENCE, c is not None,
                      np.float32(lo), np.float32(hi), np.float32(CONFIDENCE_SPLIT), lut, out.reshape(-1))  # fmt: skip
        if self.growth_per_m > 0.0:
            out *= self.growth(d.shape, distance_m)
        return out

    def growth(self, shape: tuple[int, ...], distance_m: float | np.ndarray | None = None) -> np.ndarray:
        """The factor ``1 + growth_per_m * max(distance, nearest_m)`` (float32) that broadcasts over a depth of
        ``shape``: one per image of a batch, or one for all (see :meth:`sigma`); a distance that is NaN or negative is
        refused."""
        dist = np.asarray(self.reference_m if distance_m is None else distance_m, np.float64)
        if dist.ndim > 1 or (dist.ndim == 1 and (len(shape) == 0 or dist.shape[0] not in (1, shape[0]))):
            raise ValueError(f"distance_m {dist.shape} must be one number or one per image of the depth {shape}")
        if not (np.isfinite(dist) & (dist >= 0)).all():
            raise ValueError(f"distance_m must be finite and >= 0 (metres), got {dist.tolist()}")
        factor = (1.0 + self.growth_per_m * np.maximum(dist, self.nearest_m)).astype(np.float32)
        return factor.reshape(factor.shape + (1,) * (len(shape) - 1)) if factor.ndim == 1 else factor

    def to_dict(self) -> DepthUncertaintyDict:
        """Plain values (a checkpoint's extra)."""
        return {
            "level": float(self.level),
            "depth_edges": [float(e) for e in self.depth_edges],
            "relative": np.asarray(self.relative, np.float64).tolist(),
            "pixels": np.asarray(self.pixels, np.int64).tolist(),
            "fitted_on": {str(k): float(v) for k, v in self.fitted_on.items()},
            "wide_95": [float(w) if np.isfinite(w) else None for w in self.wide],  # JSON has no NaN
            "growth_per_m": float(self.growth_per_m),
            "reference_m": float(self.reference_m),
            "nearest_m": float(self.nearest_m),
        }

    @classmethod
    def from_dict(cls, d: DepthUncertaintyDict) -> DepthUncertainty:
        """The inverse of :meth:`to_dict`; a ValueError naming what is malformed."""
        try:
            rel = np.asarray(d["relative"], np.float64)
            px = np.asarray(d["pixels"], np.int64)
            lo, hi = (float(e) for e in d["depth_edges"])
            level = float(d["level"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"a depth uncertainty needs level, depth_edges (2), relative and pixels: {e}") from e
        if rel.shape != (2, 3) or px.shape != (2, 3) or not np.isfinite(rel).all() or (rel < 0).any():
            raise ValueError(
                f"a depth uncertainty's relative quantiles must be (2, 3), finite, >= 0; got {rel.tolist()}"
            )
        if not 0.0 < level < 1.0 or not lo <= hi:
            raise ValueError(f"a depth uncertainty's level {level} must lie in (0, 1) and its edges rise ({lo}, {hi})")
        try:
            fitted = {str(k): float(v) for k, v in dict(d.get("fitted_on") or {}).items()}
            w0, w1 = (float("nan") if w is None else float(w) for w in d.get("wide_95") or [None, None])
            growth, reference = float(d.get("growth_per_m", 0.0)), float(d.get("reference_m", 0.0))  # 0: written before
            nearest = float(d.get("nearest_m", 0.0))  # 0: written before (the bound carried down to 0 m)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"a depth uncertainty's fitted_on (names and numbers), wide_95 (two), growth_per_m or reference_m "
                f"(numbers) is malformed: {e}"
            ) from e
        if not all(np.isfinite(v) and v >= 0 for v in (growth, reference, nearest)):
            raise ValueError(
                f"a depth uncertainty's growth_per_m {growth}, reference_m {reference} and nearest_m {nearest} must be "
                "finite and >= 0"
            )
        return cls(level, (lo, hi), rel, px, fitted, (w0, w1), growth, reference, nearest)

    def describe(self) -> str:
        """One line: the level and each cell's relative bound (the holes' row only where the fit saw holes), how much
        wider its 95 % is, and how it grows with the coverage distance."""
        r, (lo, hi) = self.relative, self.depth_edges
        n = int(self.fitted_on.get("pixels", self.pixels.sum()))
        text = (f"{self.level:.1%} of {n} held-out pixels have |depth error| <= {r[1, 0]:.1%} / {r[1, 1]:.1%} / "
                f"{r[1, 2]:.1%} of the depth (depth below {lo:.3g} m / to {hi:.3g} m / beyond)")  # fmt: skip
        if self.pixels[0].sum() > 0:  # answers of confidence below 0.5 seen (the hybrid's holes)
            text += f" where the confidence is >= {CONFIDENCE_SPLIT}, "
            text += f"{r[0, 0]:.1%} / {r[0, 1]:.1%} / {r[0, 2]:.1%} below it"
        if np.isfinite(self.wide[1]):
            text += f"; 95 % of them within {self.wide[1]:.2f} x depth_sigma"
            if self.pixels[0].sum() > 0 and np.isfinite(self.wide[0]):
                text += f" (confidence >= {CONFIDENCE_SPLIT}; {self.wide[0]:.2f} x below)"
            if np.nanmax(self.wide) > 2.5:  # a normal error's 95 % lies within 1.96 of its 68.3 % bound
                text += " (a normal error would need 1.96 x: the errors' tails are heavier)"
        if "near_m" not in self.fitted_on:  # fitted before the growth, or on frames it had no distance for
            text += ("; fitted without the frames' coverage distance, so one bound at every distance (`pose2rgbd "
                     "evaluate --checkpoint C --dataset D --fit-depth-uncertainty` fits it again with it)")  # fmt: skip
        elif self.growth_per_m > 0:
            near, far = self.fitted_on.get("near_m"), self.fitted_on.get("far_m")
            seen = (f"; the held-out frames lie a median {near:.3g} m (nearer half) and {far:.3g} m (farther half) "
                    "from it") if near and far else ""  # fmt: skip
            text += (f". The bound grows with the coverage distance (from the pose to the nearest keyframe): times "
                     f"1 + {self.growth_per_m:.3g} per metre of it, x{1 + self.growth_per_m * self.reference_m:.2f} at "
                     f"{self.reference_m:.3g} m{seen}")  # fmt: skip
            if self.nearest_m > 0:
                text += (f"; never below its value at {self.nearest_m:.3g} m, the nearest held-out pixels' distance "
                         f"(no nearer view was measured), x{1 + self.growth_per_m * self.nearest_m:.2f}")  # fmt: skip
        return text


# One pass per pixel: the numpy form (searchsorted, a 2-D gather, the NaN mask) took 3.2 ms per 256x256 render on one
# AVX2 core, this about 0.15 ms; the render node computes it for every frame.
_NO_CONFIDENCE = np.zeros(0, np.float32)


@njit(cache=True, nogil=True)
def _sigma_kernel(
    depth: np.ndarray,  # (n,) float32 metres
    confidence: np.ndarray,  # (n,) float32, or empty without one
    has_confidence: bool,
    lo: np.float32,  # the depth's tercile edges
    hi: np.float32,
    split: np.float32,  # confidence below it: the first row
    lut: np.ndarray,  # (6,) float32: the (2, 3) relative bounds, row-major
    out: np.ndarray,  # (n,) float32
) -> None:
    for i in range(depth.shape[0]):  # without branches in the cell's choice: the compiler vectorizes the loop
        d = depth[i]
        k = 3 * np.int64(confidence[i] >= split) if has_confidence else np.int64(3)
        k += np.int64(d >= lo) + np.int64(d >= hi)
        v = d * lut[k]
        out[i] = v if (d > 0.0 and d < np.inf) else np.nan


def confidence_rows(confidence: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """The row (0: confidence below :data:`CONFIDENCE_SPLIT`, 1: at least it; 1 for every pixel of a model without
    a confidence) of each pixel ``mask`` selects, as intp: the rule :meth:`DepthUncertainty.sigma`'s kernel applies."""
    if confidence is None:
        return np.ones(int(np.count_nonzero(mask)), np.intp)
    return (np.asarray(confidence)[mask] >= CONFIDENCE_SPLIT).astype(np.intp)


def scored_pixels(depth: np.ndarray, truth: np.ndarray, max_depth: float = np.inf) -> np.ndarray:
    """The pixels a depth answer's uncertainty is fitted and scored on: a finite truth in (0, ``max_depth``] and a
    finite positive answer (``evaluate``'s depth metrics take every finite truth up to ``max_depth`` and every finite
    answer; a relative bound needs both positive)."""
    d, t = np.asarray(depth), np.asarray(truth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(t) & (t > 0) & (t <= max_depth) & np.isfinite(d) & (d > 0)  # type: ignore[no-any-return]


def fit_depth_uncertainty(
    depth: np.ndarray,
    truth: np.ndarray,
    confidence: np.ndarray | None = None,
    *,
    distance_m: np.ndarray | None = None,
    max_depth: float = np.inf,
    level: float = LEVEL,
    min_pixels: int = MIN_PIXELS,
    fitted_on: dict[str, float] | None = None,
) -> DepthUncertainty | None:
    """Fit on held-out answers ``depth`` against ``truth`` (the same shape, metres; see :func:`scored_pixels`) with
    the answers' ``confidence`` (or ``None``) and each pixel's coverage distance ``distance_m`` (its frame's, metres;
    the same shape; ``None``: no growth with distance). ``None`` where fewer than ``min_pixels`` pixels are scored."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level} must lie in (0, 1)")
    d = np.asarray(depth, np.float64)
    t = np.asarray(truth, np.float64)
    c = None if confidence is None else np.asarray(confidence)
    dist = None if distance_m is None else np.asarray(distance_m, np.float64)
    if d.shape != t.shape or (c is not None and c.shape != d.shape) or (dist is not None and dist.shape != d.shape):
        raise ValueError(
            f"depth {d.shape}, truth {t.shape}, confidence {None if c is None else c.shape} and distance_m "
            f"{None if dist is None else dist.shape} must match"
        )
    m = scored_pixels(d, t, max_depth)
    if dist is not None:
        m &= np.isfinite(dist) & (dist >= 0)
    if int(m.sum()) < min_pixels:
        return None
    dd = d[m]
    rel = np.abs(dd - t[m]) / dd
    row = confidence_rows(c, m)
    lo, hi = (float(v) for v in np.quantile(dd, [1 / 3, 2 / 3]))
    col = np.minimum(np.searchsorted(np.array([lo, hi]), dd, side="right"), 2)
    info = {"pixels": float(m.sum()), **(fitted_on or {})}
    growth = reference = nearest = 0.0
    if dist is not None:
        dm = dist[m]
        reference = float(np.median(dm))
        growth, near, far = _fit_growth(rel, row, col, dm, level, min_pixels)
        info.update({"near_m": near, "far_m": far})
        nearest = float(np.quantile(dm, NEAREST_QUANTILE)) if growth > 0 else 0.0
        rel = rel / (1.0 + growth * np.maximum(dm, nearest))  # the bound at distance 0 (not below nearest: sigma)
    q, px, own = _cell_quantiles(rel, row, col, level, min_pixels)
    ratio = rel / q[row, col]  # |error| / sigma on the held-out pixels
    wide = tuple(float(np.quantile(ratio[row == r], 0.95)) if own[r] is not None else float("nan") for r in range(2))
    return DepthUncertainty(float(level), (lo, hi), q, px, info, (wide[0], wide[1]), growth, reference, nearest)


def _cell_quantiles(
    rel: np.ndarray, row: np.ndarray, col: np.ndarray, level: float, min_pixels: int
) -> tuple[np.ndarray, np.ndarray, list[float | None]]:
    """Each cell's ``level`` quantile of ``rel`` ``(2, 3)`` (pooled where the cell is small, see the module
    docstring), each cell's pixels ``(2, 3)``, and each confidence row's own bound (None: too few pixels)."""
    everything = float(np.quantile(rel, level))
    # each confidence row's own bound: its quantile; from fewer than min_pixels, that quantile's upper confidence
    # bound (a few hundred hole pixels are evidence that holes err more, where all pixels' quantile, the confident
    # ones', made the holes' bound the narrower: 30 % of a real clip's test holes within it), never below all pixels'
    own: list[float | None] = [None, None]
    for r in range(2):
        n_row = int((row == r).sum())
        if n_row >= min_pixels:
            own[r] = float(np.quantile(rel[row == r], level))
        elif n_row >= MIN_ROW_PIXELS:
            own[r] = max(quantile_upper_bound(rel[row == r], level, ROW_BOUND_CONFIDENCE), everything)
    # a row with (almost) none: the widest bound measured
    fallback = max([everything] + [v for v in own if v is not None])
    q = np.empty((2, 3))
    px = np.zeros((2, 3), np.int64)
    for r in range(2):
        in_row = row == r
        pooled = own[r] if own[r] is not None else fallback
        for k in range(3):
            cell = in_row & (col == k)
            px[r, k] = int(cell.sum())
            q[r, k] = float(np.quantile(rel[cell], level)) if px[r, k] >= min_pixels else pooled
    return np.maximum(q, MIN_RELATIVE), px, own


def _fit_growth(
    rel: np.ndarray, row: np.ndarray, col: np.ndarray, dist: np.ndarray, level: float, min_pixels: int
) -> tuple[float, float, float]:
    """The growth per metre (>= 0) at which the bound, refitted on ``rel / (1 + growth * dist)``, holds as often for
    the farther half of the pixels (by ``dist``) as for the nearer half; with the halves' median distances. 0 where
    the halves are about as far (:data:`MIN_DISTANCE_SPREAD`), either half is too small, or the farther half is
    already covered as often. Bisection on up to :data:`GROWTH_PIXELS` pixels (hand-written: the share's difference
    is a step function of the growth, which a bracketing search handles and a derivative-based one does not)."""
    step = max(1, -(-len(rel) // GROWTH_PIXELS))
    rel, row, col, dist = rel[::step], row[::step], col[::step], dist[::step]
    far = dist > np.median(dist)
    near_m = float(np.median(dist[~far])) if (~far).any() else 0.0
    far_m = float(np.median(dist[far])) if far.any() else near_m
    small = min(int(far.sum()), int((~far).sum())) < min(min_pixels, len(rel) // 4)
    if small or far_m <= MIN_DISTANCE_SPREAD * near_m:
        return 0.0, near_m, far_m

    def gap(growth: float) -> float:  # the farther half's share within the bound minus the nearer half's
        scaled = rel / (1.0 + growth * dist)
        q = _cell_quantiles(scaled, row, col, level, min_pixels)[0]
        inside = scaled <= q[row, col]
        return float(inside[far].mean() - inside[~far].mean())

    if gap(0.0) >= 0.0:
        return 0.0, near_m, far_m
    lo, hi = 0.0, 1.0 / max(far_m, 1e-6)  # hi: the bound doubles at the farther half's median, then doubles again
    while gap(hi) < 0.0:
        lo, hi = hi, 2.0 * hi
        if hi > 100.0 / max(far_m, 1e-6):  # no growth evens them: the steepest tried (x101 at the far median)
            return hi, near_m, far_m
    for _ in range(GROWTH_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gap(mid) < 0.0 else (lo, mid)
    return hi, near_m, far_m


def share_within(depth: np.ndarray, truth: np.ndarray, sigma: np.ndarray, max_depth: float = np.inf) -> float:
    """The share of the scored pixels (:func:`scored_pixels`) whose absolute error is at most ``sigma`` (NaN where
    none is scored): to be read against the uncertainty's ``level``."""
    m = scored_pixels(depth, truth, max_depth) & np.isfinite(sigma)
    if not m.any():
        return float("nan")
    err = np.abs(np.asarray(depth, np.float64)[m] - np.asarray(truth, np.float64)[m])
    return float(np.mean(err <= np.asarray(sigma, np.float64)[m]))


__all__ = [
    "CONFIDENCE_SPLIT",
    "EXTRA_KEY",
    "GROWTH_PIXELS",
    "LEVEL",
    "MIN_DISTANCE_SPREAD",
    "MIN_PIXELS",
    "MIN_ROW_PIXELS",
    "ROW_BOUND_CONFIDENCE",
    "DepthUncertainty",
    "DepthUncertaintyDict",
    "confidence_rows",
    "fit_depth_uncertainty",
    "scored_pixels",
    "share_within",
]
