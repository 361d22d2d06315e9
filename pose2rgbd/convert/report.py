"""Report beside every converted dataset: sync figure, camera-path figure, summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pose2rgbd.convert.stages.time_offset import PosePlan, Streams
    from pose2rgbd.convert.stages.world_frame import WorldFit
    from pose2rgbd.sync.estimator import SyncResult


def _z(x: np.ndarray, robust: bool = False) -> np.ndarray:
    """Scale to the 2-98 % range (of the non-outlier samples when ``robust``: the estimator's mask)."""
    from pose2rgbd.sync.estimator import _robust_mask

    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return x
    ref = x[ok]
    if robust:
        ref = ref[_robust_mask(ref, 6.0)]
    lo, hi = np.percentile(ref, [2, 98])
    out: np.ndarray = (x - lo) / max(hi - lo, 1e-12)
    return out


def aligned_title(offset_s: float) -> str:
    """The title of the sync figure's aligned panel: the GPS stamps are drawn ``offset_s`` earlier (a fix stamped t
    was measured at camera time t - offset), said as the signed shift itself."""
    shift = round(-offset_s, 3) + 0.0  # + 0.0: a shift that rounds to zero reads +0.000, not -0.000
    return f"after alignment (GPS stamps shifted by {shift:+.3f} s)"


def plot_sync(
    path: Path,
    t_ref: np.ndarray,
    x_ref: np.ndarray,
    t_other: np.ndarray,
    y_other: np.ndarray,
    result: SyncResult | None,
    offset_used: float,
    *,
    ref_label: str = "optical-flow magnitude",
    other_label: str = "GPS speed",
    title: str = "",
    ref_masked: np.ndarray | None = None,
) -> None:
    """Figure: signals before / after alignment (each scaled to its 2-98 % range) and NCC vs lag.

    ``ref_masked`` (bool per reference sample): samples the estimator left out (camera turning); shaded.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import medfilt

    fig, ax = plt.subplots(3, 1, figsize=(10, 8.5), gridspec_kw={"height_ratios": [1, 1, 1.1]})
    xr = np.asarray(x_ref, dtype=np.float64)
    ok = np.isfinite(xr)
    k = max(1, round(0.3 / max(float(np.median(np.diff(t_ref))), 1e-6))) // 2 * 2 + 1
    xs = np.full_like(xr, np.nan)
    if ok.sum() > k:
        xs[ok] = medfilt(xr[ok], k)
    # clip display to the robust range so one whip pan does not flatten the plot
    for a, shift, lab in ((ax[0], 0.0, "before alignment (stamps as recorded)"),
                          (ax[1], offset_used, aligned_title(offset_used))):  # fmt: skip
        a.plot(t_ref, np.clip(_z(xr, True), -0.2, 1.6), color="0.75", lw=0.7, label=f"{ref_label} (raw)")
        a.plot(
            t_ref, np.clip(_z(xs, True), -0.2, 1.6), color="tab:green", lw=1.8, label=f"{ref_label} (median filtered)"
        )
        a.plot(np.asarray(t_other) - shift, _z(y_other), color="tab:red", lw=1.8, marker=".", ms=3, label=other_label)
        if ref_masked is not None and np.any(ref_masked):
            m = np.asarray(ref_masked, dtype=bool)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], m.astype(np.int8), [0]])))
            for j, (i0, i1) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
                a.axvspan(t_ref[i0], t_ref[i1 - 1], color="tab:purple", alpha=0.15, lw=0,
                          label="left out: camera turning" if j == 0 else None)  # fmt: skip
        a.set_title(lab, fontsize=11, loc="left")
        a.set_ylabel("scaled (2-98 %)")
        a.set_ylim(-0.25, 1.65)
        a.set_xlim(min(t_ref[0], t_other[0] - shift), max(t_ref[-1], t_other[-1] - shift))
        a.grid(alpha=0.3)
    ax[0].legend(loc="lower right", fontsize=8, ncol=3)
    ax[1].set_xlabel("time on the camera clock (s)")
    a = ax[2]
    if result is not None and np.isfinite(result.ncc).any():
        a.plot(result.lags_s, result.ncc, color="tab:blue", lw=1.8, label="NCC(lag)")
        a.axvline(result.estimate_s, color="tab:orange", lw=2, label=f"peak {result.estimate_s:+.3f} s")
        if np.isfinite(result.uncertainty_s):
            a.axvspan(result.estimate_s - result.uncertainty_s, result.estimate_s + result.uncertainty_s,
                      color="tab:orange", alpha=0.15, label=f"jackknife +-{result.uncertainty_s:.2f} s")  # fmt: skip
        if np.isfinite(result.second_lag_s):
            a.plot([result.second_lag_s], [result.peak_ncc - result.margin], "kx", ms=9, mew=2,
                   label=f"best other peak {result.second_lag_s:+.2f} s")  # fmt: skip
        if result.verdict != "ok":
            a.axvline(offset_used, color="k", ls="--", lw=1.2, label=f"used {offset_used:+.3f} s")
        a.set_xlabel("offset d (s): a GPS fix stamped t was measured at camera time t - d")
        a.set_ylabel("normalized cross-correlation")
        a.legend(loc="lower right", fontsize=8)
        a.grid(alpha=0.3)
        color = "tab:green" if result.verdict == "ok" else "tab:red"
        msg = (f"verdict: {result.verdict.upper()}   confidence {result.confidence:.2f}   peak NCC "
               f"{result.peak_ncc:.2f}   margin {result.margin:.2f}   p {result.p_value:.3f}")  # fmt: skip
        a.set_title(msg, fontsize=11, loc="left", color=color)
        if result.reasons:
            a.text(0.01, 0.03, "\n".join(_wrap(r) for r in result.reasons), transform=a.transAxes, fontsize=7.5,
                   va="bottom", color="tab:red", bbox={"fc": "white", "alpha": 0.8, "ec": "none"})  # fmt: skip
    else:
        a.text(0.5, 0.5, "offset not estimated (given by the user)" if result is None else "no overlap to correlate",
               ha="center", va="center", transform=a.transAxes)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _wrap(s: str, n: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(s, n))


def plot_track(path: Path, enu: np.ndarray, t: np.ndarray, kept_pos: np.ndarray | None, dropped: np.ndarray,
               title: str = "") -> None:  # fmt: skip
    """Figure: ENU track of kept fixes coloured by time, dropped fixes, frame positions, start marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6.5))
    sc = ax.scatter(enu[:, 0], enu[:, 1], c=t, s=8, cmap="viridis", label="GPS fixes (kept)")
    ax.plot(enu[:, 0], enu[:, 1], color="0.6", lw=0.6, zorder=0)
    if kept_pos is not None and len(kept_pos):
        ax.plot(kept_pos[:, 0], kept_pos[:, 1], color="tab:orange", lw=1.5, label="camera (dataset frames)")
    if len(dropped):
        ax.plot(dropped[:, 0], dropped[:, 1], "rx", ms=6, label=f"dropped fixes ({len(dropped)})")
    ax.plot(enu[0, 0], enu[0, 1], "k^", ms=9, label="start")
    fig.colorbar(sc, ax=ax, label="time (s)", shrink=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "camera path (local ENU about the datum)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_world_fit(path: Path, fit: WorldFit, title: str = "") -> None:
    """Figure: the body's track in the robot's TF frame and its GPS track moved into it by the fit (top view), and
    the distance between the two at each frame fitted: how well the GPS poses sit in the robot's frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gps = fit.p_world - fit.residuals  # the GPS positions as the fit moved them
    d = np.linalg.norm(fit.residuals, axis=1)
    fig, ax = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1.1, 1]})
    ax[0].plot(fit.p_world[:, 0], fit.p_world[:, 1], color="tab:blue", lw=1.5, label=f"TF ({fit.chain})")
    ax[0].plot(gps[:, 0], gps[:, 1], color="tab:orange", lw=1.0, ls="--", label="GPS, turned and shifted (written)")
    ax[0].plot(fit.p_world[0, 0], fit.p_world[0, 1], "k^", ms=9, label="start")
    ax[0].set_aspect("equal", adjustable="datalim")
    ax[0].set_xlabel(f"{fit.frame} x (m)")
    ax[0].set_ylabel(f"{fit.frame} y (m)")
    ax[0].grid(alpha=0.3)
    ax[0].legend(fontsize=8, loc="best")
    ax[0].set_title(f"the body in '{fit.frame}': turn {fit.yaw_deg:+.2f} deg (+-{fit.yaw_sigma_deg:.2g})", fontsize=11)
    ax[1].plot(np.arange(len(d)), d, color="tab:red", lw=1.0)
    ax[1].set_xlabel("frame fitted")
    ax[1].set_ylabel("TF - GPS distance (m)")
    ax[1].grid(alpha=0.3)
    ax[1].set_title(f"RMS {fit.rms_horizontal_m:.2f} m horizontal, {fit.rms_vertical_m:.2f} m vertical; max "
                    f"{fit.max_m:.2f} m", fontsize=11)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(rep: Path, s: Streams, plan: PosePlan) -> None:
    """sync.png and track.png of a time-synchronized conversion (the pipeline writes summary.json)."""
    off = float(plan.summary["time_offset"]["offset_s"])
    name = Path(s.input_path).name
    ok = np.isfinite(s.flow)
    if ok.sum() >= 2:
        from pose2rgbd.sync.flow import flow_times

        cfg_flow = plan.summary.get("config", {}).get("sync", {}).get("flow", {})
        tflow = flow_times(s.frame_t, int(cfg_flow.get("frame_step", 1)))  # the flow's own stamps (midpoints)
        plot_sync(rep / "sync.png", tflow[ok], s.flow[ok], plan.gps_t_corr + off, plan.gps_speed, plan.sync, off,
                  title=f"Time synchronization: {name}", ref_masked=plan.flow_masked[ok])  # fmt: skip
    pos = plan.T_world_cam[plan.keep, :3, 3]
    plot_track(rep / "track.png", plan.enu, plan.gps_t_corr, pos, plan.dropped_fixes_enu,
               title=f"Camera path: {name} (ENU about the datum)")  # fmt: skip
