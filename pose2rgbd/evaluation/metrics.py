"""Image metrics in data units (numpy): the paper's RGB / depth mean absolute errors, PSNR, SSIM, AbsRel.

* RGB: uint8 images; MAE in [0, 255] pixel values (paper Sec. 3), PSNR with peak 255, SSIM (Wang et al. 2004:
  11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, computed per channel and averaged). SSIM is written
  here with OpenCV's Gaussian blur because scikit-image is not a dependency.
* Depth: metres (dataset units when the depth is unscaled). Only pixels valid in BOTH the prediction and the
  ground truth count: ground truth NaN (invalid) and +inf (sky) are excluded from every depth metric, and so are
  pixels farther than ``max_depth`` (the model's depth range: beyond it the model is trained to answer "far", like
  sky -- the usual depth evaluation cap, e.g. 80 m on KITTI); a non-finite prediction (a hole in a baseline's
  warped keyframe) is excluded too and counted (``depth_pred_missing_fraction``), so that one hole does not turn
  the split's metric into NaN. AbsRel = mean(|pred - gt| / gt) over those pixels with gt > 0. Pixel-weighted
  over the whole split (the paper's "mean pixel" error).
* PSNR is bounded: a frame identical to its ground truth (mse 0, e.g. a repeated frame answered by its twin)
  scores :data:`PSNR_CAP_DB` instead of +inf, so that one such frame cannot dominate the split's mean (the mean
  of the per-frame values, each capped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pose2rgbd.models.depth_uncertainty import (
    CONFIDENCE_SPLIT,
    DepthUncertainty,
    confidence_rows,
    scored_pixels,
    share_within,
)


def rgb_abs_error_sum(pred: np.ndarray, gt: np.ndarray) -> tuple[float, int]:
    """Sum of |pred - gt| over all pixels and channels of uint8 images, and the number of values."""
    d = np.abs(pred.astype(np.int16) - gt.astype(np.int16))
    return float(d.sum(dtype=np.int64)), int(d.size)


def rgb_mae(pred: np.ndarray, gt: np.ndarray) -> float:
    s, n = rgb_abs_error_sum(pred, gt)
    return s / n


PSNR_CAP_DB = 60.0
"""The bound on one frame's PSNR (dB): 8-bit images differing by one level in one pixel of a 640x480 image
already score about 103 dB, an identical pair +inf; 60 dB (an RMS error of 0.26 levels) is beyond any real
rendering, so capping there changes no honest score and keeps a zero-error frame from dominating the mean."""


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB of one uint8 image pair (inf when identical; :func:`bounded_psnr` caps it)."""
    mse = float(np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def bounded_psnr(pred: np.ndarray, gt: np.ndarray, cap_db: float = PSNR_CAP_DB) -> float:
    """:func:`psnr` capped at ``cap_db`` (the per-frame value the split's mean PSNR averages)."""
    return min(psnr(pred, gt), cap_db)


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean SSIM of one uint8 image pair ``(H, W)`` or ``(H, W, C)``."""
    x = pred.astype(np.float64)
    y = gt.astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for c in range(x.shape[2]):
        a, b = x[..., c], y[..., c]

        def blur(z: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

        mu_a, mu_b = blur(a), blur(b)
        saa = blur(a * a) - mu_a**2
        sbb = blur(b * b) - mu_b**2
        sab = blur(a * b) - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)
        vals.append(float(np.mean(num / den)))
    return float(np.mean(vals))


def depth_error_sums(pred: np.ndarray, gt: np.ndarray, max_depth: float = np.inf) -> dict[str, float]:
    """Sums over the pixels with finite gt <= ``max_depth`` AND a finite prediction: ``abs`` (|pred-gt|), ``sq``,
    ``n``; ``rel``, ``n_rel`` over gt > 0; ``far``: finite gt pixels beyond ``max_depth`` (excluded);
    ``pred_missing``: gt pixels that count but whose prediction is not finite (excluded)."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    fin = np.isfinite(g)
    in_range = fin & (g <= max_depth)
    m = in_range & np.isfinite(p)
    e = np.abs(p[m] - g[m])
    pos = g[m] > 0
    return {
        "abs": float(e.sum()),
        "sq": float((e**2).sum()),
        "n": float(m.sum()),
        "rel": float((e[pos] / g[m][pos]).sum()),
        "n_rel": float(pos.sum()),
        "far": float((fin & ~in_range).sum()),
        "pred_missing": float((in_range & ~m).sum()),
    }


def depth_mae(pred: np.ndarray, gt: np.ndarray, max_depth: float = np.inf) -> float:
    s = depth_error_sums(pred, gt, max_depth)
    return s["abs"] / s["n"] if s["n"] else math.nan


def abs_rel(pred: np.ndarray, gt: np.ndarray, max_depth: float = np.inf) -> float:
    s = depth_error_sums(pred, gt, max_depth)
    return s["rel"] / s["n_rel"] if s["n_rel"] else math.nan


class MetricAccumulator:
    """Accumulates predictions batch by batch; :meth:`result` gives the split's metrics.

    Keys: ``frames``, ``rgb_mae_px``, ``rgb_psnr_db`` (the mean of the per-image PSNR, each capped at
    :data:`PSNR_CAP_DB`), ``rgb_ssim`` (per-image mean), ``depth_mae``, ``depth_rmse``, ``depth_absrel``
    (pixel-weighted over the pixels valid in both: finite ground truth <= ``max_depth`` and a finite prediction),
    ``depth_valid_fraction`` (share of pixels evaluated), ``depth_far_fraction`` (finite but beyond ``max_depth``),
    ``depth_pred_missing_fraction`` (valid ground truth the prediction has no depth for: excluded).
    """

    def __init__(self, max_depth: float = np.inf) -> None:
        self.max_depth = float(max_depth)
        self.frames = 0
        self.rgb_abs = 0.0
        self.rgb_n = 0
        self.psnr: list[float] = []
        self.ssim: list[float] = []
        self.d = {"abs": 0.0, "sq": 0.0, "n": 0.0, "rel": 0.0, "n_rel": 0.0, "far": 0.0, "pred_missing": 0.0}
        self.depth_pixels = 0

    def add(
        self,
        pred_rgb: np.ndarray | None,
        gt_rgb: np.ndarray | None,
        pred_depth: np.ndarray | None,
        gt_depth: np.ndarray | None,
    ) -> None:
        """Batches: rgb uint8 ``(B, H, W, 3)``, depth float ``(B, H, W)``; None for what is not predicted."""
        b = len(pred_rgb) if pred_rgb is not None else len(pred_depth) if pred_depth is not None else 0
        self.frames += b
        if pred_rgb is not None and gt_rgb is not None:
            s, n = rgb_abs_error_sum(pred_rgb, gt_rgb)
            self.rgb_abs += s
            self.rgb_n += n
            for i in range(b):
                self.psnr.append(bounded_psnr(pred_rgb[i], gt_rgb[i]))
                self.ssim.append(ssim(pred_rgb[i], gt_rgb[i]))
        if pred_depth is not None and gt_depth is not None:
            s2 = depth_error_sums(pred_depth, gt_depth, self.max_depth)
            for k in self.d:
                self.d[k] += s2[k]
            self.depth_pixels += int(np.asarray(gt_depth).size)

    def result(self) -> dict[str, float]:
        r: dict[str, float] = {"frames": float(self.frames)}
        if self.rgb_n:
            r["rgb_mae_px"] = self.rgb_abs / self.rgb_n
            r["rgb_psnr_db"] = float(np.mean(self.psnr))
            r["rgb_ssim"] = float(np.mean(self.ssim))
        if self.depth_pixels:
            n = self.d["n"]
            r["depth_mae"] = self.d["abs"] / n if n else math.nan
            r["depth_rmse"] = math.sqrt(self.d["sq"] / n) if n else math.nan
            r["depth_absrel"] = self.d["rel"] / self.d["n_rel"] if self.d["n_rel"] else math.nan
            r["depth_valid_fraction"] = n / self.depth_pixels
            r["depth_far_fraction"] = self.d["far"] / self.depth_pixels
            r["depth_pred_missing_fraction"] = self.d["pred_missing"] / self.depth_pixels
        return r


def add_frame_errors(
    per_frame: dict[str, list[float]],
    idx: np.ndarray,
    pred: dict[str, np.ndarray | None],
    gt_rgb: np.ndarray,
    gt_depth: np.ndarray | None,
    max_depth: float,
) -> None:
    """Append each frame's RGB MAE (0-255), PSNR (dB, capped at :data:`PSNR_CAP_DB`) and depth MAE (NaN where
    not predicted) to ``per_frame``; where ``per_frame`` has the key ``depth_sigma_within``, the share of the frame's
    scored pixels within its ``depth_sigma`` too (NaN where none)."""
    for b, i in enumerate(idx):
        per_frame["frame"].append(int(i))
        p_rgb, p_depth = pred["rgb"], pred["depth"]
        per_frame["rgb_mae"].append(
            math.nan if p_rgb is None else float(np.abs(p_rgb[b].astype(np.float32) - gt_rgb[b]).mean())
        )
        per_frame["rgb_psnr_db"].append(math.nan if p_rgb is None else bounded_psnr(p_rgb[b], gt_rgb[b]))
        per_frame["depth_mae"].append(
            math.nan if p_depth is None or gt_depth is None else depth_mae(p_depth[b], gt_depth[b], max_depth)
        )
        if "depth_sigma_within" in per_frame:
            sigma = pred.get("depth_sigma")
            per_frame["depth_sigma_within"].append(
                math.nan if p_depth is None or gt_depth is None or sigma is None
                else share_within(p_depth[b], gt_depth[b], sigma[b], max_depth)
            )  # fmt: skip


SIGMA_KINDS: tuple[tuple[str, str], ...] = (
    ("all", "all scored pixels"),
    ("confident", f"confidence >= {CONFIDENCE_SPLIT}"),
    ("holes", f"confidence < {CONFIDENCE_SPLIT} (low confidence: a hybrid's holes)"),
)
"""The kinds of scored pixel :class:`SigmaAccumulator` reports (``depth_sigma_within[_<kind>]``, the ``all`` kind
without a suffix) and their names, in metrics.md and in the legend of ``depth_sigma.png`` alike."""

SIGMA_MULTIPLES = np.arange(121, dtype=np.float64) / 40.0
"""The multiples ``k`` of ``depth_sigma`` (0 to 3 in steps of 0.025; ``k = 1`` exactly at index 40) at which
:class:`SigmaAccumulator` counts the pixels whose ``|error|`` is within ``k * depth_sigma``: the curves of
``depth_sigma.png``."""

_AT_ONE = 40  # SIGMA_MULTIPLES[_AT_ONE] == 1.0
_RELATIVE_EDGES = np.logspace(-6.0, 2.0, 8001)  # log10 bins of 0.001 (0.23 %) for the median depth_sigma / depth


@dataclass(frozen=True)
class SigmaCurve:
    """One kind of scored pixel (:data:`SIGMA_KINDS`): ``within[j]`` of its ``pixels`` had an ``|error|`` at most
    ``SIGMA_MULTIPLES[j]`` times their ``depth_sigma``, counted over every scored pixel (no subsample)."""

    kind: str  # "all", "confident" or "holes": the suffix of the metrics.json keys
    label: str  # the kind's name in metrics.md and in the plot's legend
    pixels: int  # metrics.json depth_sigma_pixels_<kind> (the scored pixels of this kind)
    within: np.ndarray  # (len(SIGMA_MULTIPLES),) int64

    @property
    def share(self) -> np.ndarray:
        """The share within, per multiple."""
        return np.asarray(self.within / max(self.pixels, 1), np.float64)

    @property
    def share_at_one(self) -> float:
        """The share within ``depth_sigma`` itself: metrics.json ``depth_sigma_within[_<kind>]``."""
        return float(self.within[_AT_ONE] / max(self.pixels, 1))


@dataclass(frozen=True)
class SigmaCurves:
    """What ``depth_sigma.png`` draws (:meth:`SigmaAccumulator.curves`): the multiples, the level the uncertainty
    was fitted for, and one curve per kind of scored pixel that had pixels."""

    k: np.ndarray
    level: float
    curves: tuple[SigmaCurve, ...]


class SigmaAccumulator:
    """How honest a render's depth uncertainty is on the scored pixels (those of :func:`~pose2rgbd.models.
    depth_uncertainty.scored_pixels`, up to ``max_depth``): the share whose absolute depth error is at most the
    render's ``depth_sigma``, over all and by confidence (below / at least
    :data:`~pose2rgbd.models.depth_uncertainty.CONFIDENCE_SPLIT`: the hybrid's holes and the pixels a keyframe
    answers), to be read against the uncertainty's level (a share of 0.683 means the stated bound is what it says);
    the share within its 95 % multiple (``uncertainty.wide``: to be read against 0.95); and the median bound relative
    to the depth. Every count is over every scored pixel: the curves of ``depth_sigma.png`` (:meth:`curves`) give at
    ``k = 1`` exactly the shares :meth:`result` gives. Given which frames are the farther half from what the model saw
    (``far`` per image), the shares within for the nearer and the farther half too: a bound that does not grow with
    the distance holds more often near than far."""

    def __init__(self, max_depth: float = np.inf, uncertainty: DepthUncertainty | None = None) -> None:
        self.max_depth = float(max_depth)
        self.wide = np.asarray(uncertainty.wide if uncertainty is not None else (np.nan, np.nan), np.float64)
        self.within = np.zeros(2, np.int64)  # rows: confidence below / at least the split
        self.within_95 = np.zeros(2, np.int64)
        self.scored = np.zeros(2, np.int64)
        self.relative = np.zeros(len(_RELATIVE_EDGES) - 1, np.int64)  # histogram of depth_sigma / depth
        self.within_k = np.zeros((2, len(SIGMA_MULTIPLES)), np.int64)  # per row: |error| <= k * sigma, per k
        self.within_far = np.zeros(2, np.int64)  # by half of the frames: nearer / farther from what the model saw
        self.scored_far = np.zeros(2, np.int64)
        self.unbounded = 0  # frames whose depth_sigma is +inf (flagged out of bounds: no bound, so not scored)

    def add(
        self,
        depth: np.ndarray | None,
        truth: np.ndarray,
        sigma: np.ndarray | None,
        confidence: np.ndarray | None,
        far: np.ndarray | None = None,
    ) -> None:
        """One batch ``(N, H, W)``; ``far`` ``(N,)`` bool: the images of the farther half (None: not by half)."""
        if depth is None or sigma is None:
            return
        self.unbounded += int(np.isposinf(np.asarray(sigma)).reshape(len(sigma), -1).any(axis=1).sum())
        m = scored_pixels(depth, truth, self.max_depth) & np.isfinite(sigma)
        if far is not None:
            half = np.broadcast_to(np.asarray(far, bool).reshape((-1,) + (1,) * (m.ndim - 1)), m.shape)[m]
        d = np.asarray(depth, np.float64)[m]
        s = np.asarray(sigma, np.float64)[m]
        err = np.abs(d - np.asarray(truth, np.float64)[m])
        row = confidence_rows(confidence, m)
        inside = (err <= s).astype(np.int64)
        np.add.at(self.within, row, inside)
        np.add.at(self.within_95, row, (err <= s * self.wide[row]).astype(np.int64))
        np.add.at(self.scored, row, 1)
        if far is not None:
            np.add.at(self.within_far, half.astype(np.intp), inside)
            np.add.at(self.scored_far, half.astype(np.intp), 1)
        rel = np.clip(s / d, _RELATIVE_EDGES[0], _RELATIVE_EDGES[-1])
        self.relative += np.histogram(rel, _RELATIVE_EDGES)[0]
        # |error| / sigma <= k is |error| <= k * sigma (division rounds monotonically, and sigma / sigma is 1):
        # at k = 1 the same pixels as ``within``; a zero sigma holds only a zero error
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(s > 0, err / s, np.where(err > 0, np.inf, 0.0))
        for r in (0, 1):
            sel = np.sort(ratio[row == r])
            self.within_k[r] += np.searchsorted(sel, SIGMA_MULTIPLES, side="right")

    def curves(self, uncertainty: DepthUncertainty | None) -> SigmaCurves | None:
        """The curves of ``depth_sigma.png`` per kind of scored pixel (:data:`SIGMA_KINDS`; a kind without pixels
        left out, ``all`` only beside both others), counted over the same pixels as :meth:`result`; ``None`` where
        :meth:`result` has nothing."""
        n = int(self.scored.sum())
        if uncertainty is None or n == 0:
            return None
        counts = {"all": (n, self.within_k.sum(axis=0)), "confident": (int(self.scored[1]), self.within_k[1]),
                  "holes": (int(self.scored[0]), self.within_k[0])}  # fmt: skip
        shown = [k for k, _ in SIGMA_KINDS if k != "all" and counts[k][0]]
        keep = shown if len(shown) < 2 else ["all", *shown]
        curves = tuple(
            SigmaCurve(kind, label, counts[kind][0], counts[kind][1].copy()) for kind, label in SIGMA_KINDS
            if kind in keep
        )  # fmt: skip
        return SigmaCurves(SIGMA_MULTIPLES.copy(), float(uncertainty.level), curves)

    def _relative_median(self) -> float:
        """The median of depth_sigma / depth over the scored pixels (the geometric middle of its 0.23 % bin)."""
        c = np.cumsum(self.relative)
        b = int(np.searchsorted(c, c[-1] / 2.0))
        return float(np.sqrt(_RELATIVE_EDGES[b] * _RELATIVE_EDGES[b + 1]))

    def result(self, uncertainty: DepthUncertainty | None) -> dict[str, float]:
        """``depth_sigma_within`` (and ``_confident`` / ``_holes`` where such pixels were scored),
        ``depth_sigma_level``, ``depth_sigma_relative_median`` and, where the fit kept its 95 % multiples,
        ``depth_sigma_within_95``; nothing where no render carried a sigma."""
        n = int(self.scored.sum())
        if uncertainty is None or n == 0:
            return {}
        out = {
            "depth_sigma_level": float(uncertainty.level),
            "depth_sigma_within": float(self.within.sum() / n),
            "depth_sigma_relative_median": self._relative_median(),
        }
        if np.isfinite(self.wide[self.scored > 0]).all():
            out["depth_sigma_within_95"] = float(self.within_95.sum() / n)
        for r, name in ((1, "confident"), (0, "holes")):
            if self.scored[r]:
                out[f"depth_sigma_within_{name}"] = float(self.within[r] / self.scored[r])
                out[f"depth_sigma_pixels_{name}"] = float(self.scored[r])
        if self.scored_far.all():  # both halves of the frames scored
            out["depth_sigma_within_near"] = float(self.within_far[0] / self.scored_far[0])
            out["depth_sigma_within_far"] = float(self.within_far[1] / self.scored_far[1])
        if self.unbounded:
            out["depth_sigma_unbounded_frames"] = float(self.unbounded)
        return out

    @staticmethod
    def describe(m: dict[str, float]) -> str:
        """One sentence for metrics.md from :meth:`result`'s values."""
        parts = [f"{100 * m[f'depth_sigma_within_{k}']:.1f} % with {label}" for k, label in SIGMA_KINDS
                 if f"depth_sigma_within_{k}" in m]  # fmt: skip
        wide = (f"; within its 95 % multiples on {100 * m['depth_sigma_within_95']:.1f} %"
                if "depth_sigma_within_95" in m else "")  # fmt: skip
        kinds = f" ({', '.join(parts)})" if len(parts) > 1 else ""  # one kind (a model without confidence): no split
        if "depth_sigma_within_far" in m:
            kinds += (f"; {100 * m['depth_sigma_within_near']:.1f} % on the nearer half of the frames (coverage "
                      f"distance) and {100 * m['depth_sigma_within_far']:.1f} % on the farther half")  # fmt: skip
        return (
            f"the depth's |error| was within the render's depth_sigma on {100 * m['depth_sigma_within']:.1f} % of "
            f"the scored test pixels{kinds}, against the {100 * m['depth_sigma_level']:.1f} % it was "
            f"fitted for on the validation frames{wide}; median depth_sigma "
            f"{100 * m['depth_sigma_relative_median']:.1f} % of the depth"
            + (
                f"; {m['depth_sigma_unbounded_frames']:.0f} test frame(s) flagged out of bounds carry no bound (+inf) "
                "and are not scored"
                if m.get("depth_sigma_unbounded_frames")
                else ""
            )
        )
