"""Figures and videos: the qualitative grid (paper Fig. 6), training curves, and the fly-through."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose2rgbd.evaluation.metrics import SigmaCurves
from pose2rgbd.viz import INVALID_RGB, SKY_RGB, colorize_depth, depth_norm

log = logging.getLogger(__name__)


def _gray(x: np.ndarray, hi: float) -> np.ndarray:
    g = (np.clip(np.asarray(x, dtype=np.float64) / max(hi, 1e-9), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def dataset_depth_name(estimated_by: str | None, depth_unit: str = "", *, short: bool = False) -> str:
    """The dataset's depth as a figure names it: ``GT depth`` where it is measured (a sensor, a simulator, or a
    dataset that does not say), ``dataset depth`` with the method that estimated it where ``convert`` estimated it
    (``estimated_by``: :func:`~pose2rgbd.evaluation.point_depth.estimated_depth_source`, e.g. ``selfsup-depth``):
    an estimate is not the ground truth. ``depth_unit`` is added in brackets; ``short`` drops the method (a video
    tile's label)."""
    unit = f" ({depth_unit})" if depth_unit else ""
    if estimated_by is None:
        return f"GT depth{unit}"
    if short:
        return f"dataset depth{unit} (estimated)"
    return f"dataset depth{unit}\n(estimated: {estimated_by})"


def depth_bar_ticks(lo: float, hi: float) -> list[float]:
    """Labelled ticks for a log-scale depth colour bar over ``[lo, hi]``: the 1-2-5 values of each decade inside it
    (the powers of ten alone over more than three decades; 1-2-3-5, then every integer multiple of a power of ten, on
    a range too short for three ticks; within one such step, four geometrically spaced values to as few digits as
    keep them apart and inside); ``[]`` for a linear bar (``lo <= 0``), whose own ticks read well."""
    if not (lo > 0 and hi > lo):
        return []
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)

    def within(subs: Sequence[float]) -> list[float]:
        ticks = [float(f"{m * 10.0**e:.6g}") for e in decades for m in subs]
        return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]

    if len(within((1.0,))) >= 4:  # over three decades: 1-2-5 would crowd the bar
        return within((1.0,))
    for subs in ((1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), tuple(float(i) for i in range(1, 10))):
        if len(ticks := within(subs)) >= 3:
            return ticks
    for digits in range(2, 7):
        ticks = sorted({float(f"{t:.{digits}g}") for t in np.geomspace(lo, hi, 4)})
        if len(ticks) == 4 and lo * (1 - 1e-6) <= ticks[0] and ticks[-1] <= hi * (1 + 1e-6):
            break
    return ticks


def qualitative_grid(
    path: str | Path,
    gt_rgb: np.ndarray,
    pred_rgb: np.ndarray | None,
    gt_depth: np.ndarray | None,
    pred_depth: np.ndarray | None,
    confidence: np.ndarray | None,
    *,
    depth_range: tuple[float, float],
    depth_unit: str = "m",
    title: str = "",
    row_labels: Sequence[str] = (),
    baseline_rgb: np.ndarray | None = None,
    baseline_depth: np.ndarray | None = None,
    depth_estimated_by: str | None = None,
) -> Path:
    """Paper Fig. 6, one row per frame: GT RGB | predicted RGB | baseline RGB | GT depth | predicted depth |
    baseline depth | confidence. A column with nothing to show (no depth in an RGB-only evaluation, no slices,
    no baseline) is left out; ``baseline_*`` are the nearest-pose baseline's answers (the training frame it
    returns). ``depth_estimated_by``: the method that estimated the dataset's depth (None: measured), which then
    heads its column instead of "GT" (:func:`dataset_depth_name`).

    Confidence = sum of slice probabilities shown in [0, 2]: black = no slice fired, grey (1) = exactly one
    slice (the ideal), white = several slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(gt_rgb)
    lo, hi = depth_range
    unit = f" ({depth_unit})" if depth_unit else ""

    def depth(a: np.ndarray | None) -> list[np.ndarray] | None:
        return None if a is None else [colorize_depth(a[i], lo, hi) for i in range(n)]

    columns = [
        ("GT RGB", list(gt_rgb)),
        ("predicted RGB", None if pred_rgb is None else list(pred_rgb)),
        ("nearest-pose baseline RGB", None if baseline_rgb is None else list(baseline_rgb)),
        (dataset_depth_name(depth_estimated_by, depth_unit), depth(gt_depth)),
        (f"predicted depth{unit}", depth(pred_depth)),
        (f"baseline depth{unit}", depth(baseline_depth)),
        ("confidence", None if confidence is None else [_gray(confidence[i], 2.0) for i in range(n)]),
    ]
    shown = [(t, c) for t, c in columns if c is not None]
    depth_cols = [j for j, (t, _) in enumerate(shown) if "depth" in t]
    tall = 2.5 * n + 0.6 + (0.7 if depth_cols else 0.0)  # room for the depth colour bar
    fig, axes = plt.subplots(n, len(shown), figsize=(2.5 * len(shown), tall), squeeze=False, layout="constrained")
    for i in range(n):
        for j, (name, cells) in enumerate(shown):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(cells[i], interpolation="nearest")
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=8)
    if depth_cols:  # one scale for every depth image (viz.colorize_depth's), under the whole grid: rows stay aligned
        from matplotlib.cm import ScalarMappable
        from matplotlib.patches import Patch
        from matplotlib.ticker import NullFormatter

        scale = "log scale" if lo > 0 and hi > lo else "linear"
        bar = fig.colorbar(
            ScalarMappable(norm=depth_norm(lo, hi), cmap="turbo"),  # type: ignore[arg-type]
            ax=axes.ravel().tolist(), location="bottom", shrink=min(0.9, 0.25 + 0.15 * len(depth_cols)), aspect=40,
        )  # fmt: skip
        bar.set_label(f"depth{unit}, {scale}", fontsize=8)
        ticks = depth_bar_ticks(lo, hi)
        if ticks:  # a log bar's own locator labels only the powers of ten: one label, or none, on most ranges
            bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
            bar.ax.xaxis.set_minor_formatter(NullFormatter())
        bar.ax.tick_params(labelsize=7, which="both")
        # the two colours that are not depths, as swatches: a word ("light blue") would name a colour of the map too
        off_scale = ((SKY_RGB, "sky (+inf), off the scale"), (INVALID_RGB, "no depth (NaN)"))
        swatches = [Patch(facecolor=(c[0] / 255, c[1] / 255, c[2] / 255), edgecolor="black", linewidth=0.5, label=name)
                    for c, name in off_scale]  # fmt: skip
        bar.ax.legend(handles=swatches, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_figure(fig, path, tight=False)


def _save_figure(fig: Any, path: str | Path, *, tight: bool = True) -> Path:
    """Lay out (``tight``), write ``path`` (its folder made) at 100 dpi and close ``fig``."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def read_log(path: str | Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """``log.csv`` -> ``{(phase, name): (steps, values)}``.

    A resumed run appends to the log from the step of its checkpoint; rows the interrupted run wrote after that
    step belong to weights that were lost, so a series whose step goes back keeps only the resumed rows there.
    """
    series: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["phase"], row["name"])
            s, v = series.setdefault(key, ([], []))
            step = float(row["step"])
            if s and step <= s[-1]:  # the step went back: a resume; drop the lost rows from this step on
                while s and s[-1] >= step:
                    s.pop()
                    v.pop()
            s.append(step)
            v.append(float(row["value"]))
    return {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in series.items()}


def training_curves(log_csv: str | Path, path: str | Path, *, title: str = "", depth_unit: str = "m") -> Path:
    """Loss (train and validation) and the validation RGB / depth errors against the step, each in its own panel
    (on twin axes of one panel the two error curves, both falling, lay on top of each other)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = read_log(log_csv)
    errors = [
        (key, label, colour, marker)
        for key, label, colour, marker in (
            (("val", "rgb_mae_px"), "val RGB MAE (px, 0-255)", "C2", "o-"),
            (("val", "depth_mae"), f"val depth MAE ({depth_unit})", "C3", "s-"),
        )
        if key in s
    ]
    fig, axes = plt.subplots(1, 1 + max(1, len(errors)), figsize=(5.2 * (1 + max(1, len(errors))), 3.8))
    ax = axes[0]
    for key, style in ((("train", "loss"), "-"), (("val", "loss"), "o-")):
        if key in s:
            ax.plot(*s[key], style, label=f"{key[0]} loss", ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (normalized units)")
    ax.legend()
    ax.grid(alpha=0.3)
    for ax, (key, label, colour, marker) in zip(axes[1:], errors, strict=False):
        ax.plot(*s[key], marker, color=colour, ms=3)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if not errors:
        axes[1].set_axis_off()
        axes[1].text(0.5, 0.5, "no validation RGB / depth errors in the log", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_figure(fig, path)


def validation_curves(
    runs: Sequence[tuple[str, str | Path]], path: str | Path, *, title: str = "", monitor: str = "loss"
) -> Path | None:
    """Validation ``monitor`` against the step for several runs in one figure: ``runs`` is ``(label, log.csv)``;
    runs with one label (seeds of one setting) share a colour, and a dot marks each run's best validation.
    Returns ``None`` when no run has a validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for label, log_csv in runs:
        if Path(log_csv).exists():
            steps, values = read_log(log_csv).get(("val", monitor), (np.zeros(0), np.zeros(0)))
            if len(steps):
                curves.append((label, steps, values))
    if not curves:
        return None
    colours = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(c[0] for c in curves))}
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    drawn: set[str] = set()
    for label, steps, values in curves:
        ax.plot(steps, values, "-", color=colours[label], alpha=0.8, lw=1.2, label=None if label in drawn else label)
        b = int(np.argmin(values))
        ax.plot(steps[b], values[b], "o", color=colours[label], ms=5)
        drawn.add(label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {monitor} (dots: best)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save_figure(fig, path)


def coverage_plot(
    path: str | Path, per_frame: dict[str, np.ndarray], depth_unit: str = "m", sigma_level: float | None = None
) -> Path:
    """Per test frame: the model's RGB (and depth) error against the distance to the nearest training camera
    (position gap on x, colour = viewing-direction gap): where the model can be trusted; with a depth uncertainty
    (``per_frame["depth_sigma_within"]``), the share of each frame's pixels within its ``depth_sigma`` beside them,
    the level it was fitted for (``sigma_level``) marked: an honest bound keeps to it at every distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = (("rgb_mae", "RGB MAE (0-255)"), ("depth_mae", f"depth MAE ({depth_unit})"),
             ("depth_sigma_within", "share of the frame's depth within depth_sigma"))  # fmt: skip
    panels = [(k, lab) for k, lab in named if k in per_frame and np.isfinite(per_frame[k]).any()]
    fig, axes = plt.subplots(
        1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 3.8), squeeze=False, layout="constrained"
    )  # laid out with the colour bar: nothing cut at the edges
    sc = None
    for ax, (key, label) in zip(axes[0], panels):
        sc = ax.scatter(per_frame["coverage_m"], per_frame[key], c=per_frame["coverage_deg"], s=10, cmap="viridis")
        ax.set_xlabel("distance to the nearest training camera (m)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key == "depth_sigma_within":
            ax.set_ylim(0.0, 1.02)
            if sigma_level is not None:
                ax.axhline(sigma_level, color="k", ls="--", lw=1, label=f"fitted for {100 * sigma_level:.1f} %")
                ax.legend(fontsize=8, loc="lower left")
    if sc is not None:
        fig.colorbar(sc, ax=axes[0].tolist(), label="angle to that camera (deg)")
    fig.suptitle("test-frame error against coverage", fontsize=10)
    return _save_figure(fig, path, tight=False)


def depth_sigma_legend(curves: SigmaCurves) -> dict[str, str]:
    """The legend of ``depth_sigma.png`` per kind of pixel (``all``, ``confident``, ``holes``): its name and share
    within ``depth_sigma`` as metrics.md states them (:meth:`~pose2rgbd.evaluation.metrics.SigmaAccumulator.
    describe`: the same pixels, the same rounding), and how many pixels it counts (metrics.json
    ``depth_sigma_pixels_*``)."""
    return {c.kind: f"{c.label}: {100 * c.share_at_one:.1f} % within 1 sigma ({c.pixels} px)" for c in curves.curves}


def depth_sigma_plot(path: str | Path, curves: SigmaCurves) -> Path:
    """How honest the renders' depth uncertainty was on the test frames: per kind of pixel the share whose
    ``|error|`` is at most ``k`` times the render's ``depth_sigma``, against ``k``, counted over every scored pixel
    (:meth:`~pose2rgbd.evaluation.metrics.SigmaAccumulator.curves`: at ``k = 1`` the shares of metrics.md); the
    bound was fitted so that at ``k = 1`` the validation frames' share is ``curves.level`` (marked). A normal error
    whose standard deviation is ``depth_sigma`` would follow the dashed curve; a curve above it at ``k = 1`` is a
    bound wider than needed, below it a bound too narrow."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = curves.k
    level = curves.level
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    legend = depth_sigma_legend(curves)
    for c in curves.curves:
        if c.kind == "all":  # dotted grey: the kinds below pool into it
            ax.plot(k, c.share, ":", color="0.35", lw=1.0, label=legend[c.kind])
        else:
            ax.plot(k, c.share, label=legend[c.kind])
    ax.plot(k, [math.erf(x / math.sqrt(2.0)) for x in k], "k--", lw=1, label="a normal error with that sigma")
    ax.axhline(level, color="grey", lw=0.8)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("|depth error| / depth_sigma")
    ax.set_ylabel("share of the scored test pixels within")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"depth uncertainty on the test frames (fitted for {100 * level:.1f} % at 1 sigma)", fontsize=9)
    return _save_figure(fig, path)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def flythrough_frames(
    gt_rgb: np.ndarray,
    pred_rgb: np.ndarray | None,
    gt_depth: np.ndarray | None,
    pred_depth: np.ndarray | None,
    *,
    depth_range: tuple[float, float],
    tile: int = 256,
    depth_estimated_by: str | None = None,
) -> list[np.ndarray]:
    """Side-by-side frames: top GT RGB | predicted RGB, bottom GT depth | predicted depth (uint8 RGB); the dataset's
    depth is labelled as :func:`dataset_depth_name` names it (``depth_estimated_by``: None where it is measured)."""
    lo, hi = depth_range
    blank = np.full((tile, tile, 3), 240, np.uint8)

    def up(img: np.ndarray | None) -> np.ndarray:
        if img is None:
            return blank
        return cv2.resize(img, (tile, tile), interpolation=cv2.INTER_NEAREST)

    truth = dataset_depth_name(depth_estimated_by, short=True)
    frames = []
    for i in range(len(gt_rgb)):
        top = [_label(up(gt_rgb[i]), "GT RGB"), _label(up(None if pred_rgb is None else pred_rgb[i]), "predicted RGB")]
        gd = None if gt_depth is None else colorize_depth(gt_depth[i], lo, hi)
        pd = None if pred_depth is None else colorize_depth(pred_depth[i], lo, hi)
        bottom = [_label(up(gd), truth), _label(up(pd), "predicted depth")]
        frames.append(np.vstack([np.hstack(top), np.hstack(bottom)]))
    return frames


def write_video(frames: Sequence[np.ndarray], path: str | Path, *, fps: float = 10.0) -> Path:
    """MP4 (OpenCV, mp4v) when ``path`` ends in .mp4 and the codec works, else an animated GIF (imageio)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError("write_video: no frames")
    h, w = frames[0].shape[:2]
    if p.suffix.lower() == ".mp4":
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]
        vw = cv2.VideoWriter(str(p), fourcc, float(fps), (w, h))
        if vw.isOpened():
            for f in frames:
                vw.write(np.ascontiguousarray(f[..., ::-1]))
            vw.release()
            if p.exists() and p.stat().st_size > 0:
                return p
        log.warning("OpenCV cannot write %s (no mp4v encoder); writing a GIF instead", p)
        p = p.with_suffix(".gif")
    import imageio.v2 as imageio

    imageio.mimsave(p, list(frames), duration=1.0 / fps, loop=0)
    return p


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """``k`` indices spread over ``range(n)`` (all of them when ``k >= n``)."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


__all__ = [
    "dataset_depth_name",
    "depth_bar_ticks",
    "depth_sigma_legend",
    "depth_sigma_plot",
    "evenly_spaced",
    "flythrough_frames",
    "qualitative_grid",
    "read_log",
    "training_curves",
    "write_video",
]
