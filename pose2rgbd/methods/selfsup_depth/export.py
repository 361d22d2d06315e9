"""A trained self-supervised depth model -> a dataset with depth (Algorithm 2, lines 1-4).

:func:`export_depth` predicts depth for every frame and the relative pose between consecutive frames, fits the
metric scale per source (flight) from the dataset's GPS poses (:func:`pose2rgbd.convert.scale.fit_scale`) and
writes a format-v1 copy of the dataset (atomic) with float32 depth: ``depth.kind: metric`` and
``extra.depth.scaled_from: gps`` with the scale and its uncertainty per source, or ``depth.kind: unscaled`` when
there is no GPS. A ``report/`` folder holds sample depth maps beside the frames, the scale over time with its
uncertainty, the trajectory plot and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pose2rgbd.convert.scale import ScaleConfig, ScaleFit, fit_scale, segment_scales
from pose2rgbd.dataset.format import Dataset, DatasetWriter, Manifest
from pose2rgbd.dataset.sequences import SequenceFrames, load_sequence_frames
from pose2rgbd.errors import ConfigError, SyncError
from pose2rgbd.methods.selfsup_depth.metric import MetricPoses, MetricPosesConfig, compute_metric_poses
from pose2rgbd.methods.selfsup_depth.net import SelfSupDepthNet, collapse_message, depth_spread, is_collapsed
from pose2rgbd.methods.selfsup_depth.recipe import has_gps_poses
from pose2rgbd.methods.selfsup_depth.trajectory import (
    TrajectoryConfig,
    compose_poses,
    fill_gaps,
    fill_unregistered,
    pose_graph,
    umeyama_sim3,
)
from pose2rgbd.models import load_checkpoint

log = logging.getLogger(__name__)

GPS_MODES = ("auto", "on", "off")
POSE_MODES = ("dataset", "video", "metric")
CHECK_TOLERANCE = 0.05  # the GPS window fit and the sparse points must agree with the metric scale within 5 %


@dataclass
class Prediction:
    """Network outputs for every frame of a dataset: ``depth`` (N, h, w) network units, ``T_rel[k]`` =
    ``T_{k+1}_k`` (N-1, 4, 4; identity across a change of source, where ``same_source[k]`` is False)."""

    depth: np.ndarray
    T_rel: np.ndarray
    same_source: np.ndarray


@dataclass
class ExportResult:
    path: Path
    depth_kind: str
    fits: dict[int, ScaleFit] = field(default_factory=dict)  # source id -> fit (metric depth only)
    frames: int = 0
    spread: dict[str, float] = field(default_factory=dict)  # net.depth_spread of the predicted depth
    collapsed: bool = False  # the depth is (nearly) constant: net.is_collapsed
    warning: str = ""  # the collapse warning, when collapsed
    metric: dict[str, Any] = field(default_factory=dict)  # poses metric: registered frames, Sim(3), segments, check


@torch.no_grad()
def predict(
    model: SelfSupDepthNet, frames: SequenceFrames, *, batch_size: int = 16, progress: bool = False
) -> Prediction:
    """Depth of every frame and the pose network's relative pose between consecutive frames."""
    from pose2rgbd.progress import bar

    model.eval()
    dev = next(model.parameters()).device
    n = len(frames)
    h, w = frames.rgb.shape[1:3]
    depth = np.empty((n, h, w), np.float32)
    T_rel = np.tile(np.eye(4), (max(n - 1, 0), 1, 1))
    same = frames.source_id[1:] == frames.source_id[:-1]

    def img(a: int, b: int) -> torch.Tensor:
        return torch.from_numpy(np.array(frames.rgb[a:b])).to(dev).permute(0, 3, 1, 2).float().div_(255.0)

    for a in bar(range(0, n, batch_size), desc="depth", unit="batch", progress=progress):
        b = min(n, a + batch_size)
        depth[a:b] = model.depth(img(a, b))[:, 0].cpu().numpy()
    # the pose network saw frames ``stride`` apart in training: ask it for T_{k+g}_k with g = stride (less at the
    # end of a run of one source) and take the g-th root (rotation vector / g, translation / g) as T_{k+1}_k
    s = model.used_stride
    end = np.arange(n)  # last index of the contiguous run of each frame's source
    for k in range(n - 2, -1, -1):
        if same[k]:
            end[k] = end[k + 1]
    ks = np.flatnonzero(same)
    js = np.minimum(ks + s, end[ks])
    for a in bar(range(0, len(ks), batch_size), desc="pose", unit="batch", progress=progress):
        kb, jb = ks[a : a + batch_size], js[a : a + batch_size]
        x = torch.from_numpy(np.array(frames.rgb[kb])).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(np.array(frames.rgb[jb])).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        T = model.relative_pose(x, y).double().cpu().numpy()
        T_rel[kb] = _root(T, (jb - kb).astype(np.float64))
    T_rel[~same] = np.eye(4)
    return Prediction(depth, T_rel, same)


def _root(T: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The ``g``-th root of rigid transforms (B, 4, 4): ``expm(logm(T) / g)`` (SciPy), the per-frame motion of a
    camera moving with constant velocity (screw motion) over ``g`` frames."""
    from scipy.linalg import expm, logm

    out = np.array(T, dtype=np.float64, copy=True)
    for i in np.flatnonzero(g != 1):
        out[i] = expm(np.real(logm(T[i])) / g[i])
    out[:, 3] = (0.0, 0.0, 0.0, 1.0)
    return out


@torch.no_grad()
def check_trained_depth(
    dataset: str | Path | Dataset, checkpoint: str | Path, *, frames: int = 32
) -> tuple[dict[str, float], bool]:
    """``(spread, collapsed)`` of the depth the model in ``checkpoint`` predicts on ``frames`` evenly spread frames
    of ``dataset`` (:func:`~pose2rgbd.methods.selfsup_depth.net.depth_spread`, :func:`~.net.is_collapsed`)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    model = load_checkpoint(checkpoint).model
    if not isinstance(model, SelfSupDepthNet):
        raise ConfigError(f"{checkpoint}: holds a {type(model).__name__}, not a selfsup-depth model")
    mc = model.config
    model.eval()
    pick = np.unique(np.linspace(0, len(ds) - 1, min(frames, len(ds))).round().astype(int))
    rgb = np.stack([cv2.resize(ds.read_rgb(int(i)), (mc.width, mc.height), interpolation=cv2.INTER_AREA) for i in pick])
    depth = model.depth(torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0))
    spread = depth_spread(depth, mc.min_depth, mc.max_depth)
    return spread, is_collapsed(spread)


@torch.no_grad()
def video_trajectory(
    model: SelfSupDepthNet,
    frames: SequenceFrames,
    pred: Prediction,
    cfg: TrajectoryConfig | None = None,
    *,
    read_rgb: Callable[[int], np.ndarray] | None = None,
    K: np.ndarray | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Pseudo-absolute ``T_world_cam`` (N, 4, 4) from video alone, per source, relative to the source's first
    frame (the key frame, at the identity; network units, up to scale), by ``cfg.backend``
    (:class:`~pose2rgbd.methods.selfsup_depth.trajectory.TrajectoryConfig`): the consecutive relative poses
    composed; or refined by a pose graph over those and skip edges ``(i, i + k)`` predicted by the pose network
    (:func:`~pose2rgbd.methods.selfsup_depth.trajectory.pose_graph`); or COLMAP structure from motion on the frames
    ``read_rgb(i)`` (default: ``frames.rgb``) with intrinsics ``K`` (default: ``frames.camera.K``), its
    unregistered frames filled from the composed chain
    (:func:`~pose2rgbd.methods.selfsup_depth.trajectory.fill_unregistered`). Also returns what was done per source
    (``{"backend", "sources": {id: {"frames", "registered", "tried", "models", "seconds"}}}``)."""
    cfg = cfg or TrajectoryConfig()
    dev = next(model.parameters()).device
    out = np.empty((len(frames), 4, 4))
    info: dict[str, Any] = {"backend": cfg.backend, "sources": {}}
    for sid in np.unique(frames.source_id):
        idx = np.flatnonzero(frames.source_id == sid)
        t0 = time.monotonic()
        T = compose_poses(pred.T_rel[idx[:-1]])
        entry: dict[str, Any] = {"frames": len(idx)}
        if cfg.backend == "pose-graph" and len(idx) > 2:
            edges = [(k, k + 1) for k in range(len(idx) - 1)]
            meas = [pred.T_rel[idx[k]] for k in range(len(idx) - 1)]
            for s in cfg.skips:
                a = np.arange(0, len(idx) - s, max(1, s // 2))
                for b0 in range(0, len(a), batch_size):
                    ks = a[b0 : b0 + batch_size]
                    x = torch.from_numpy(np.array(frames.rgb[idx[ks]])).to(dev).permute(0, 3, 1, 2).float() / 255.0
                    y = torch.from_numpy(np.array(frames.rgb[idx[ks + s]])).to(dev).permute(0, 3, 1, 2).float() / 255.0
                    Tm = model.relative_pose(x, y).double().cpu().numpy()
                    edges += [(int(k), int(k + s)) for k in ks]
                    meas += list(Tm)
            T = pose_graph(T, edges, np.stack(meas))
        elif cfg.backend == "colmap" and len(idx) < 3:  # sfm.MIN_REGISTERED: COLMAP can never register enough
            entry.update(registered=0, tried=0, models=0)
            log.info("source %d: %d frame(s), too few for structure from motion: composed network poses", sid,
                     len(idx))  # fmt: skip
        elif cfg.backend == "colmap":
            from pose2rgbd.methods.selfsup_depth.sfm import colmap_poses

            rd = read_rgb or (lambda i: np.asarray(frames.rgb[i]))
            sfm = colmap_poses(rd, idx, frames.camera.K if K is None else K, cfg, progress=progress)
            T = fill_unregistered(sfm.T_world_cam, sfm.registered, T, model=sfm.model)
            entry.update(registered=sfm.n_registered, tried=sfm.tried, models=int(sfm.model.max()) + 1)
            log.info("source %d: COLMAP registered %d of %d frames given (%d in the source; the rest filled from "
                     "the composed network poses)", sid, sfm.n_registered, sfm.tried, len(idx))  # fmt: skip
        entry["seconds"] = round(time.monotonic() - t0, 2)
        info["sources"][str(int(sid))] = entry
        out[idx] = T
    return out, info


def video_poses(
    model: SelfSupDepthNet,
    frames: SequenceFrames,
    pred: Prediction,
    *,
    refine: bool = False,
    cfg: TrajectoryConfig | None = None,
    **kw: Any,
) -> np.ndarray:
    """:func:`video_trajectory`'s poses; ``refine=True`` is ``backend: pose-graph``, else ``cfg`` (default
    ``compose``)."""
    cfg = TrajectoryConfig(backend="pose-graph") if refine else (cfg or TrajectoryConfig(backend="compose"))
    return video_trajectory(model, frames, pred, cfg, **kw)[0]


def export_depth(
    dataset: str | Path | Dataset,
    checkpoint: str | Path,
    out: str | Path,
    *,
    gps: str = "auto",
    poses: str = "dataset",
    trajectory_cfg: TrajectoryConfig | None = None,
    refine_poses: bool = False,
    scale_cfg: ScaleConfig | None = None,
    metric: MetricPoses | None = None,
    metric_cfg: MetricPosesConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    inputs: tuple[str | Path, ...] = (),
) -> ExportResult:
    """Write ``dataset`` with the depth of the model in ``checkpoint`` to ``out`` (see the module docstring).

    ``gps``: ``auto`` scales to metres when every frame has a GPS position (lat / lon), ``on`` requires it,
    ``off`` writes unscaled depth. ``poses``: ``dataset`` keeps the dataset's poses; ``video`` replaces them by
    pseudo-absolute poses from the video alone (:func:`video_poses`, relative to each source's first frame, up to
    scale: in network units, or in metres when the depth is scaled from GPS) made by ``trajectory_cfg.backend``
    (default ``colmap``: structure from motion; ``compose`` / ``pose-graph`` use the pose network alone; measured
    in docs/results.md). ``metric``: metric poses (structure from motion aligned to GPS by a Sim(3),
    :mod:`pose2rgbd.methods.selfsup_depth.metric`; ``metric`` or the model's ``metric_poses`` file, else computed
    now with ``metric_cfg``) where they exist, the pose network's composed poses (scaled to metres) between them,
    the dataset's poses for a source without any; the depth scale is the model's metres per unit when it was
    trained against metric poses, checked against the GPS window fit and the triangulated points (both
    reported). ``refine_poses=True`` is the older spelling of ``backend: pose-graph``."""
    if gps not in GPS_MODES:
        raise ConfigError(f"gps {gps!r} is not one of {list(GPS_MODES)}")
    if poses not in POSE_MODES:
        raise ConfigError(f"poses {poses!r} is not one of {list(POSE_MODES)}")
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    ck = load_checkpoint(checkpoint)
    if not isinstance(ck.model, SelfSupDepthNet):
        raise ConfigError(f"{checkpoint}: holds a {ck.kind!r} model, not a selfsup-depth one")
    use_gps = gps == "on" or (gps == "auto" and has_gps_poses(ds))
    if gps == "on" and not has_gps_poses(ds):
        raise ConfigError(f"{ds.path}: --gps on, but not every frame has a GPS position (lat / lon)")
    if poses == "metric" and not (use_gps and has_gps_poses(ds)):
        raise ConfigError(f"{ds.path}: --poses metric needs GPS poses (lat / lon on every frame) and --gps auto / on; "
                          "use --poses video for a video without GPS")  # fmt: skip
    mc = ck.model.config
    frames = load_sequence_frames(ds, mc.width, mc.height, progress=progress)
    pred = predict(ck.model, frames, progress=progress)
    spread = depth_spread(torch.from_numpy(pred.depth), mc.min_depth, mc.max_depth)
    collapsed = is_collapsed(spread)
    warning = collapse_message(spread, str(checkpoint)) if collapsed else ""
    if collapsed:
        log.warning("%s", warning)
    fits: dict[int, ScaleFit] = {}
    scale_of = {int(s): 1.0 for s in np.unique(frames.source_id)}
    mp = None
    unit = ck.model.metric_unit
    if poses == "metric":
        mp = metric if metric is not None else _metric_poses_for(ds, mc, metric_cfg, progress)
        if len(mp.label) != len(ds):
            raise ConfigError(f"metric poses of {len(mp.label)} frames for the {len(ds)} frames of {ds.path}")
    T_rel_fit = pred.T_rel
    if mp is not None and unit > 0:  # the trajectory the depth was trained with: metric poses / unit
        T_rel_fit = _metric_relative(mp, pred, unit)
    unchecked: dict[int, str] = {}  # source -> why its GPS window fit could not be made (metric scale: a check)
    if use_gps:
        for sid in scale_of:
            idx = np.flatnonzero(frames.source_id == sid)
            try:
                fits[sid] = fit_scale(ds.frames.translation[idx], ds.frames.stamp_ns[idx], T_rel_fit[idx[:-1]],
                                      scale_cfg)  # fmt: skip
            except SyncError as e:
                if not (mp is not None and unit > 0):
                    raise  # the fit is the scale itself: without it there is no metric depth
                unchecked[sid] = str(e)  # the metric poses give the scale; the fit was only its check
                scale_of[sid] = unit
                log.warning("source %d: the GPS window fit, a check of the metric scale, is not possible: %s", sid, e)
                continue
            scale_of[sid] = unit if unit > 0 else fits[sid].scale
            fit = fits[sid]
            log.info("source %d: GPS window fit %.4f +- %.4f m per unit (%d windows)%s", sid, fit.scale, fit.sigma,
                     fit.n_windows, f"; metric poses: {unit:.4f}" if unit > 0 else "")  # fmt: skip
    metric_info: dict[str, Any] = {}
    if mp is not None:
        metric_info = _metric_report(mp, pred, frames, fits, unit, scale_of, unchecked)
        if metric_info["check"].get("agree") is False:
            log.warning("%s", metric_info["check"]["message"])
    kind = "metric" if use_gps else "unscaled"
    T_out = ds.frames.T_world_cam
    extra = dict(ds.manifest.extra)
    if poses == "video":
        tcfg = TrajectoryConfig(backend="pose-graph") if refine_poses else (trajectory_cfg or TrajectoryConfig())
        T_out, tinfo = video_trajectory(ck.model, frames, pred, tcfg, read_rgb=ds.read_rgb, K=ds.camera.K,
                                        progress=progress)  # fmt: skip
        for sid in scale_of:
            m = frames.source_id == sid
            T_out[m, :3, 3] *= scale_of[sid]
        extra["poses"] = {
            "kind": "pseudo-absolute",
            "from": {
                "compose": "video: composed relative poses of the pose network",
                "pose-graph": "video: composed relative poses of the pose network, refined by a pose graph with "
                "skip edges",
                "colmap": "video: COLMAP structure from motion (intrinsics fixed); frames it did not register "
                "filled from the composed pose-network poses",
            }[tcfg.backend],
            "backend": tcfg.backend,
            "per_source": tinfo["sources"],
            "key_frame": "the first frame of each source, at the identity",
            "units": "metres (scaled from GPS)" if use_gps else "up to scale (network units)",
        }
    if mp is not None:
        T_out = _metric_trajectory(mp, pred, frames, ds.frames.T_world_cam, scale_of)
        extra["poses"] = {
            "kind": "metric",
            "from": "structure from motion (COLMAP) aligned to the GPS positions by a robust Sim(3); where it has "
            "no pose, the pose network's composed poses (scaled to metres) carried from the nearest SfM poses; a "
            "source without any SfM pose keeps the GPS poses",
            **metric_info,
        }
    extra["depth"] = {
        "source": "selfsup-depth",
        "checkpoint": str(Path(checkpoint).resolve()),
        "scaled_from": ("metric poses (SfM + GPS Sim(3)) and triangulated points" if unit > 0 else "gps")
        if use_gps
        else "none",
        "metres_per_unit": unit,
        "scale_check": metric_info.get("check", {}),
        "units": "metres" if use_gps else "network units (unscaled)",
        "scale": {str(s): fits[s].summary() for s in fits},
        "model": {"width": mc.width, "height": mc.height, "pose_source": mc.pose_source},
        "spread": {**spread, "collapsed": collapsed},
    }
    man = Manifest(
        name=ds.manifest.name, camera=ds.camera, depth_kind=kind, rgb_encoding=ds.manifest.rgb_encoding,
        world_frame=ds.manifest.world_frame, camera_frame=ds.manifest.camera_frame, datum=ds.manifest.datum,
        sources=ds.manifest.sources, extra=extra,
    )  # fmt: skip
    from pose2rgbd.progress import bar

    W, H = ds.camera.width, ds.camera.height
    writer = DatasetWriter(out, man, mode="atomic", overwrite=overwrite, inputs=(ds.path, checkpoint, *inputs))
    try:
        f = ds.frames
        for i in bar(range(len(ds)), desc="writing frames", unit="frame", progress=progress):
            d = pred.depth[i]
            if d.shape != (H, W):
                d = cv2.resize(d, (W, H), interpolation=cv2.INTER_LINEAR)
            d = (d * scale_of[int(f.source_id[i])]).astype(np.float32)
            ll = f.latlonalt[i]
            lla = (float(ll[0]), float(ll[1]), float(ll[2])) if np.all(np.isfinite(ll)) else None
            writer.add_frame(int(f.stamp_ns[i]), T_out[i], ds.read_rgb(i), d, latlonalt=lla,
                             source_id=int(f.source_id[i]))  # fmt: skip
        rep = writer.root / "report"
        rep.mkdir(exist_ok=True)
        write_report(rep, ds, frames, pred, fits, scale_of, kind, video=T_out if poses != "dataset" else None,
                     poses_info=extra.get("poses") if poses != "dataset" else None,
                     spread={**spread, "collapsed": collapsed})  # fmt: skip
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    return ExportResult(path=path, depth_kind=kind, fits=fits, frames=len(ds), spread=spread, collapsed=collapsed,
                        warning=warning, metric=metric_info)  # fmt: skip


def _metric_poses_for(ds: Dataset, mc: Any, cfg: MetricPosesConfig | None, progress: bool) -> MetricPoses:
    """The model's metric poses file when it still exists and fits ``ds``, else computed now (COLMAP)."""
    p = Path(mc.metric_poses) if getattr(mc, "metric_poses", "") else None
    if p is not None and p.is_file():
        mp = MetricPoses.load(p)
        if len(mp.label) == len(ds):
            return mp
    return compute_metric_poses(ds, cfg=cfg, progress=progress)


def _metric_relative(mp: MetricPoses, pred: Prediction, unit: float) -> np.ndarray:
    """``T_{k+1}_k`` from the metric poses (translation / ``unit``) where both frames of one source have one, else
    the pose network's."""
    out = np.array(pred.T_rel, dtype=np.float64, copy=True)
    k = np.flatnonzero(mp.ok[:-1] & mp.ok[1:] & pred.same_source)
    rel = np.linalg.inv(mp.T_world_cam[k + 1]) @ mp.T_world_cam[k]
    rel[:, :3, 3] /= unit
    out[k] = rel
    return out


def _metric_trajectory(
    mp: MetricPoses, pred: Prediction, frames: SequenceFrames, T_dataset: np.ndarray, scale_of: dict[int, float]
) -> np.ndarray:
    """Metric poses, their gaps filled from the composed pose-network poses (metres), per source; a source
    without any metric pose keeps ``T_dataset`` (the GPS poses)."""
    out = np.array(T_dataset, dtype=np.float64, copy=True)
    for sid, u in scale_of.items():
        idx = np.flatnonzero(frames.source_id == sid)
        ok = mp.ok[idx]
        if not ok.any():
            continue
        T_c = compose_poses(pred.T_rel[idx[:-1]])
        T_c[:, :3, 3] *= u
        out[idx] = fill_gaps(mp.T_world_cam[idx], ok, T_c)
    return out


def _metric_report(
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
) -> None:
    """samples.png, scale.png (metric only), trajectory.png and summary.json (with the depth ``spread``) into
    ``rep``; with ``video`` (the video-only poses written) its trajectory is drawn too, and ``poses_info`` goes
    into the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pose2rgbd.viz import colorize_depth

    n = len(frames)
    pick = np.unique(np.linspace(0, n - 1, min(6, n)).round().astype(int))
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
            s, R, t = umeyama_sim3(net, ref)
            net = (s * (R @ net.T)).T + t
        ax.plot(ref[:, 0], ref[:, 1], "k-", lw=1, label=f"source {sid}: dataset poses")
        ax.plot(net[:, 0], net[:, 1], "-", lw=1, label=f"source {sid}: composed network poses (Sim(3)-aligned)")
        if video is not None and len(idx) >= 3:
            v = video[idx, :3, 3]
            s, R, t = umeyama_sim3(v, ref)
            v = (s * (R @ v.T)).T + t
            ax.plot(v[:, 0], v[:, 1], "--", lw=1, label=f"source {sid}: written poses (Sim(3)-aligned)")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(rep / "trajectory.png", dpi=80)
    plt.close(fig)

    summary: dict[str, Any] = {
        "frames": n,
        "depth_kind": kind,
        "scale": {str(s): {**fits[s].summary(), "segments": segment_scales(fits[s], 30.0)} for s in fits},
        "depth_spread": spread or {},
    }
    if poses_info is not None:
        summary["poses"] = poses_info
    (rep / "summary.json").write_text(json.dumps(summary, indent=2))
