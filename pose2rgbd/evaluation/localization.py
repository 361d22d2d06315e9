"""Localization metrics and baselines: how well a :class:`~pose2rgbd.inference.localize.Localizer` finds the camera.

* :func:`pose_errors`: per frame, the position error (metres, Euclidean distance of the camera centres) and the
  orientation error (degrees, geodesic angle of the relative rotation), as in the PoseGAN paper's Table 1.
* :class:`LocalizationReport`: one method on one set of frames: the per-frame arrays (kept for plots) and their
  median (the paper's number), mean and 90th percentile.
* :class:`RetrievalLocalizer`: the image-retrieval baseline -- answer with the pose of the training image whose
  global descriptor is most similar. Descriptor: the image as a small grayscale thumbnail (``thumb`` x ``thumb``
  pixels, OpenCV area resampling), made zero-mean and unit-norm, compared by cosine similarity (one matrix
  product). Why this one: it is the classic "tiny image" descriptor, needs no training and no extra dependency,
  is exact and deterministic, and at the small resolutions the models see (32-128 px) it carries about as much
  as the image does; zero mean / unit norm make it blind to global brightness and contrast. Grayscale on purpose:
  the same descriptor is used for the colour and the grayscale (Table 2) test, so retrieval is not hurt by the
  colour change -- it is a strong, honest baseline there.
* :func:`to_grayscale`: test images turned grayscale, kept 3-channel (Table 2 of the paper).
* Figures (matplotlib, Agg): :func:`error_cdf_figure`, :func:`trajectory_figure`, :func:`real_vs_generated_grid`.

Every method of a report is evaluated on the same frames (:func:`evaluate_localizers`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.rotations import rotation_angle_between

if TYPE_CHECKING:
    from pose2rgbd.inference.localize import Localizer, LocalizeResult

STATS = ("median", "mean", "p90")


def pose_errors(T_est: np.ndarray, T_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(position error m (N,), orientation error deg (N,))`` of ``(N, 4, 4)`` estimates against the truth."""
    a = np.asarray(T_est, dtype=np.float64).reshape(-1, 4, 4)
    b = np.asarray(T_true, dtype=np.float64).reshape(-1, 4, 4)
    if a.shape != b.shape:
        raise ConfigError(f"pose_errors: {len(a)} estimates for {len(b)} true poses")
    pos = np.linalg.norm(a[:, :3, 3] - b[:, :3, 3], axis=1)
    rot = np.degrees(rotation_angle_between(a[:, :3, :3], b[:, :3, :3]))
    return pos, rot


def summarize(values: np.ndarray) -> dict[str, float]:
    """``{"median", "mean", "p90"}`` of a 1-D array (NaN for an empty one)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {k: math.nan for k in STATS}
    return {"median": float(np.median(v)), "mean": float(np.mean(v)), "p90": float(np.percentile(v, 90))}


@dataclass
class LocalizationReport:
    """One method on one set of frames."""

    name: str
    T_est: np.ndarray  # (N, 4, 4)
    T_true: np.ndarray  # (N, 4, 4)
    seconds: float = 0.0  # wall time of localizing all frames
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.position_error_m, self.orientation_error_deg = pose_errors(self.T_est, self.T_true)

    @property
    def frames(self) -> int:
        return len(self.T_true)

    def summary(self) -> dict[str, Any]:
        """Plain numbers: ``position_m`` / ``orientation_deg`` -> median, mean, p90; frames; ms per frame."""
        return {
            "name": self.name,
            "frames": self.frames,
            "position_m": summarize(self.position_error_m),
            "orientation_deg": summarize(self.orientation_error_deg),
            "ms_per_frame": 1000.0 * self.seconds / max(self.frames, 1),
            **self.extra,
        }


def localize_frames(localizer: Localizer, images: np.ndarray, *, batch_size: int = 32) -> tuple[np.ndarray, float]:
    """``(T_world_cam (N, 4, 4), seconds)`` of ``localizer`` on uint8 ``(N, H, W, 3)`` images, in batches."""
    imgs = np.asarray(images)
    h, w = localizer.input_hw
    if imgs.ndim != 4 or imgs.shape[1:3] != (h, w):
        raise ConfigError(f"images {imgs.shape}: the localizer takes (N, {h}, {w}, 3)")
    t0 = time.perf_counter()
    parts = [localizer.localize(imgs[s : s + batch_size]).T_world_cam for s in range(0, len(imgs), batch_size)]
    T = np.concatenate(parts) if parts else np.zeros((0, 4, 4))
    return T, time.perf_counter() - t0


def evaluate_localizers(
    localizers: Mapping[str, Localizer], images: np.ndarray, T_true: np.ndarray, *, batch_size: int = 32
) -> dict[str, LocalizationReport]:
    """Every localizer on the same frames: ``{name: LocalizationReport}``."""
    out = {}
    for name, loc in localizers.items():
        T, sec = localize_frames(loc, images, batch_size=batch_size)
        out[name] = LocalizationReport(name, T, T_true, sec)
    return out


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` RGB -> the same images in grayscale, still 3 channels (OpenCV luma weights)."""
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ConfigError(f"to_grayscale: expected uint8 (N, H, W, 3), got {a.dtype} {a.shape}")
    g = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in a]) if len(a) else a[..., 0]
    return np.repeat(g[..., None], 3, axis=-1)


class RetrievalLocalizer:
    """Image retrieval baseline (see the module docstring): the pose of the most similar training image.

    Implements the :class:`~pose2rgbd.inference.localize.Localizer` interface; the confidence is the cosine
    similarity mapped to [0, 1].
    """

    def __init__(
        self,
        images: np.ndarray,
        T_world_cam: np.ndarray,
        *,
        thumb: int = 16,
        camera: PinholeCamera | None = None,
        world_frame: str = "map",
    ) -> None:
        imgs = np.asarray(images)
        T = np.asarray(T_world_cam, dtype=np.float64).reshape(-1, 4, 4)
        if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8 or len(imgs) == 0:
            raise ConfigError(f"retrieval: training images must be a non-empty uint8 (N, H, W, 3), got {imgs.shape}")
        if len(T) != len(imgs):
            raise ConfigError(f"retrieval: {len(imgs)} training images but {len(T)} poses")
        if thumb < 2:
            raise ConfigError(f"retrieval: thumb must be >= 2, got {thumb}")
        self.thumb = int(thumb)
        self._hw = (int(imgs.shape[1]), int(imgs.shape[2]))
        self.T_train = T
        self.camera = camera
        self.world_frame = world_frame
        self.db = np.concatenate([self.descriptors(imgs[s : s + 512]) for s in range(0, len(imgs), 512)])

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._hw

    def descriptors(self, images: np.ndarray) -> np.ndarray:
        """``(N, thumb * thumb)`` float32 zero-mean unit-norm grayscale thumbnails."""
        g = to_grayscale(np.asarray(images))[..., 0]
        d = np.stack([cv2.resize(im, (self.thumb, self.thumb), interpolation=cv2.INTER_AREA) for im in g])
        d = d.reshape(len(d), -1).astype(np.float32)
        d -= d.mean(axis=1, keepdims=True)
        n = np.linalg.norm(d, axis=1, keepdims=True)
        return d / np.where(n > 1e-6, n, 1.0)  # a flat image has no direction: a zero descriptor

    def query(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(training indices (N,), cosine similarities (N,))`` of the best matches."""
        sim = self.descriptors(images) @ self.db.T
        j = np.argmax(sim, axis=1)
        return j, sim[np.arange(len(j)), j]

    def localize(self, images: np.ndarray) -> LocalizeResult:
        from pose2rgbd.inference.localize import LocalizeResult, check_image_batch

        t0 = time.perf_counter()
        batch = check_image_batch(images)
        j, s = self.query(batch)
        conf = np.clip((s + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
        return LocalizeResult(self.T_train[j].copy(), conf, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------- tables
def _f(v: object, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def summary_markdown(rows: Sequence[dict[str, Any]], *, title_col: str = "method") -> str:
    """A Markdown table of :meth:`LocalizationReport.summary` dicts: median (the paper's number), mean, p90."""
    head = (
        f"| {title_col} | frames | median pos (m) | median rot (deg) | mean pos (m) | mean rot (deg) "
        "| p90 pos (m) | p90 rot (deg) | ms / frame |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        p, o = r["position_m"], r["orientation_deg"]
        lines.append(
            f"| {r['name']} | {r['frames']} | {_f(p['median'], '.2f')} | {_f(o['median'], '.2f')} "
            f"| {_f(p['mean'], '.2f')} | {_f(o['mean'], '.2f')} | {_f(p['p90'], '.2f')} | {_f(o['p90'], '.2f')} "
            f"| {_f(r.get('ms_per_frame'), '.1f')} |"
        )
    return head + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------- figures
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    from pose2rgbd.atomic import sibling_prefix

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f"{sibling_prefix(p, 'partial')}{p.suffix}")
    try:
        fig.savefig(tmp, dpi=100)
        tmp.replace(p)
    finally:
        tmp.unlink(missing_ok=True)
        _plt().close(fig)
    return p


def error_cdf_figure(reports: Sequence[LocalizationReport], path: str | Path, *, title: str = "") -> Path:
    """Cumulative distribution of the position and orientation errors, one curve per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(reports):
        for ax, v in zip(axes, (r.position_error_m, r.orientation_error_deg), strict=True):
            x = np.sort(v)
            ax.plot(x, np.arange(1, len(x) + 1) / max(len(x), 1), label=r.name, color=f"C{i % 10}")
    for ax, unit in zip(axes, ("position error (m)", "orientation error (deg)"), strict=True):
        ax.set_xlabel(unit)
        ax.set_ylabel("fraction of frames")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def trajectory_figure(
    T_true: np.ndarray, estimates: Mapping[str, np.ndarray], path: str | Path, *, title: str = ""
) -> Path:
    """Top view (world x, y) of the true trajectory and each method's estimates, in time order."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    t = np.asarray(T_true)[:, :3, 3]
    ax.plot(t[:, 0], t[:, 1], "k-", lw=2, label="true")
    ax.plot(t[:1, 0], t[:1, 1], "ko", ms=6)
    for i, (name, T) in enumerate(estimates.items()):
        e = np.asarray(T)[:, :3, 3]
        ax.plot(e[:, 0], e[:, 1], ".-", lw=0.8, ms=3, color=f"C{i % 10}", label=name, alpha=0.8)
    ax.set_xlabel("x (m, east)")
    ax.set_ylabel("y (m, north)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def real_vs_generated_grid(
    real: np.ndarray, generated: np.ndarray, path: str | Path, *, labels: Sequence[str] = (), title: str = ""
) -> Path:
    """Two rows per column block: real images on top, ``G(y)`` at their poses below (uint8 ``(N, H, W, 3)``)."""
    plt = _plt()
    n = len(real)
    if n == 0 or len(generated) != n:
        raise ConfigError(f"real_vs_generated_grid: {n} real and {len(generated)} generated images")
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.6, 3.6), squeeze=False)
    for j in range(n):
        for i, (img, what) in enumerate(((real[j], "real"), (generated[j], "G(y)"))):
            ax = axes[i, j]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(what, fontsize=9)
        if j < len(labels):
            axes[0, j].set_title(labels[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


__all__ = [
    "LocalizationReport",
    "RetrievalLocalizer",
    "error_cdf_figure",
    "evaluate_localizers",
    "localize_frames",
    "pose_errors",
    "real_vs_generated_grid",
    "summarize",
    "summary_markdown",
    "to_grayscale",
    "trajectory_figure",
]
