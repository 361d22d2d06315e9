"""The report of a depth export (Algorithm 2): the scale check of the metric-pose path, and the figures --
sample depth maps, the scale over the flight with its uncertainty, the trajectories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.convert.stages.depth_predict import Prediction
from pose2rgbd.convert.stages.scale import ScaleFit, segment_scales
from pose2rgbd.dataset import Dataset
from pose2rgbd.dataset.sequences import SequenceFrames
from pose2rgbd.geometry.similarity import apply_sim3
from pose2rgbd.methods.selfsup_depth.metric import MetricPoses
from pose2rgbd.methods.selfsup_depth.trajectory import compose_poses, umeyama_sim3

CHECK_TOLERANCE = 0.05  # the GPS window fit and the sparse points must agree with the metric scale within 5 %


def metric_report(
    mp: MetricPoses,
    pred: Prediction,
    frames: SequenceFrames,
    fits: dict[int, ScaleFit],
    unit: float,
    scale_of: dict[int, float],
    unchecked: dict[int, str] | None = None,
) -> dict[str, Any]:
    """What the metric-pose path did (registered frames, Sim(3) per model, segments and their pose source) and the
    scale check: the GPS window fit (``unchecked``: sources where it could not be made, and why) and the median
    ratio of the depth to the triangulated points' depth."""
    info: dict[str, Any] = {
        "metric_frames": mp.n_metric,
        "frames": len(mp.label),
        "per_source": mp.info.get("sources", {}),
        "segments": mp.info.get("segments", []),
    }
    check: dict[str, Any] = {"metres_per_unit": unit}
    if unit <= 0:
        check["message"] = ("the depth model was not trained against metric poses (every frame fell back to the "
                            "pose network, or pose_source is not metric): its scale is the GPS window fit")  # fmt: skip
        info["check"] = check
        return info
    h, w = pred.depth.shape[1:]
    K = frames.camera.K
    ratios = []
    for k, p in mp.points.items():
        uv = p[:, :3] @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
        if inside.any():
            d = pred.depth[k][uv[inside, 1].round().astype(int), uv[inside, 0].round().astype(int)]
            ratios.append(np.median(d * scale_of[int(frames.source_id[k])] / p[inside, 2]))
    if ratios:
        check["depth_to_points"] = float(np.median(ratios))
    for sid, f in fits.items():
        check[f"gps_fit_source_{sid}"] = {"scale": f.scale, "sigma": f.sigma, "rel_diff": f.scale / unit - 1.0}
    bad = [
        f"GPS window fit of source {sid}: {f.scale:.4g} +- {f.sigma:.2g} m per unit"
        for sid, f in fits.items()
        if abs(f.scale / unit - 1.0) > max(CHECK_TOLERANCE, 3 * f.sigma / unit)
    ]
    if ratios and abs(check["depth_to_points"] - 1.0) > CHECK_TOLERANCE:
        bad.append(f"depth / triangulated points: {check['depth_to_points']:.3f}")
    for sid, why in (unchecked or {}).items():
        check[f"gps_fit_source_{sid}"] = {"not_possible": why}
    checked = ("the GPS window fit" if fits else "") + (" and " if fits and ratios else "") + (
        "the triangulated points" if ratios else "")  # fmt: skip
    check["agree"] = not bad
    check["message"] = (
        (f"the metric scale agrees with {checked}" if checked else "the metric scale could not be checked")
        if not bad
        else f"the metric scale ({unit:.4g} m per network unit, from the metric poses) disagrees with: "
        + "; ".join(bad)
        + ". The depth may be mis-scaled: check the Sim(3) residual and the GPS in the report"
    )
    if unchecked:
        check["message"] += "; no GPS window fit for source(s) " + ", ".join(str(k) for k in unchecked) + (
            " (too little GPS motion for its windows: the metric poses' Sim(3) gives the scale)")  # fmt: skip
    info["check"] = check
    return info


SAMPLE_FRAMES = 6  # frames in a depth report's samples.png


def sample_frames(n: int) -> list[int]:
    """The frames of ``n`` that ``samples.png`` shows: up to :data:`SAMPLE_FRAMES`, evenly spaced (this report's and
    the stereo conversion's, :mod:`pose2rgbd.convert.mvs_depth`)."""
    return [int(i) for i in np.unique(np.linspace(0, n - 1, min(SAMPLE_FRAMES, n)).round().astype(int))]


def write_report(
    rep: Path,
    ds: Dataset,
    frames: SequenceFrames,
    pred: Prediction,
    fits: dict[int, ScaleFit],
    scale_of: dict[int, float],
    kind: str,
    *,
    video: np.ndarray | None = None,
    poses_info: dict[str, Any] | None = None,
    spread: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """samples.png, scale.png (metric only) and trajectory.png into ``rep``; returns the summary's depth entries
    (with the depth ``spread``). With ``video`` (the video-only poses written) its trajectory is drawn too, and
    ``poses_info`` goes into the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pose2rgbd.viz import colorize_depth

    pick = sample_frames(len(frames))
    fig, axes = plt.subplots(2, len(pick), figsize=(2.6 * len(pick), 4.4), squeeze=False)
    for c, i in enumerate(pick):
        d = pred.depth[i] * scale_of[int(frames.source_id[i])]
        lo, hi = np.percentile(d, [2, 98])
        axes[0, c].imshow(frames.rgb[i])
        axes[1, c].imshow(colorize_depth(d, float(lo), float(max(hi, lo * 1.01))))
        axes[0, c].set_title(f"frame {i}", fontsize=8)
        axes[1, c].set_title(f"{lo:.1f}-{hi:.1f} {'m' if kind == 'metric' else 'units'}", fontsize=8)
        for a in axes[:, c]:
            a.axis("off")
    fig.tight_layout()
    fig.savefig(rep / "samples.png", dpi=80)
    plt.close(fig)

    if fits:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for sid, fit in fits.items():
            ax.plot(fit.window_t_s, fit.ratios, ".", alpha=0.4, label=f"source {sid}: windows")
            seg = segment_scales(fit, 30.0)
            if seg:
                ax.errorbar([s["t_s"] for s in seg], [s["scale"] for s in seg], yerr=[s["sigma"] for s in seg],
                            fmt="o-", capsize=3, label=f"source {sid}: per 30 s")  # fmt: skip
            ax.axhspan(fit.scale - fit.sigma, fit.scale + fit.sigma, alpha=0.2)
            ax.axhline(fit.scale, lw=1)
        ax.set_xlabel("time in flight (s)")
        ax.set_ylabel("scale (m per network unit)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(rep / "scale.png", dpi=80)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for sid in np.unique(frames.source_id):
        idx = np.flatnonzero(frames.source_id == sid)
        net = compose_poses(pred.T_rel[idx[:-1]])[:, :3, 3]
        ref = ds.frames.translation[idx]
        if len(idx) >= 3:
            net = apply_sim3(*umeyama_sim3(net, ref), net)
        ax.plot(ref[:, 0], ref[:, 1], "k-", lw=1, label=f"source {sid}: dataset poses")
        ax.plot(net[:, 0], net[:, 1], "-", lw=1, label=f"source {sid}: composed network poses (Sim(3)-aligned)")
        if video is not None and len(idx) >= 3:
            v = video[idx, :3, 3]
            v = apply_sim3(*umeyama_sim3(v, ref), v)
            ax.plot(v[:, 0], v[:, 1], "--", lw=1, label=f"source {sid}: written poses (Sim(3)-aligned)")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    fig.tight_layout()
    ax.apply_aspect()  # the axes' drawn box (equal aspect), to put the legend under its x label: never over the track
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="upper center",
               bbox_to_anchor=(0.5, ax.get_position().y0 - 0.55 / fig.get_figheight()))  # fmt: skip
    fig.savefig(rep / "trajectory.png", dpi=80, bbox_inches="tight")  # grown or cropped to what is drawn
    plt.close(fig)

    summary: dict[str, Any] = {
        "depth_kind": kind,
        "scale": {str(s): {**fits[s].summary(), "segments": segment_scales(fits[s], 30.0)} for s in fits},
        "depth_spread": spread or {},
    }
    if poses_info is not None:
        summary["poses"] = poses_info
    return summary
