"""Algorithm 2 as a stage of the conversion pipeline: a dataset and a trained self-supervised depth model -> the
same frames with depth in metres (lines 1-4).

:func:`export_depth` predicts depth for every frame and the relative pose between consecutive frames
(:mod:`.depth_predict`), fits the metric scale per source (flight) from the dataset's GPS poses
(:func:`pose2rgbd.convert.stages.scale.fit_scale`) and writes, through the conversion pipeline
(:mod:`pose2rgbd.convert.pipeline`: atomic, ``report/``), a format-v1 copy of the dataset with float32 depth:
``depth.kind: metric`` and ``extra.depth.scaled_from: gps`` with the scale and its uncertainty per source, or
``depth.kind: unscaled`` when there is no GPS. ``report/`` holds sample depth maps beside the frames, the scale over
time with its uncertainty, the trajectory plot (:mod:`.depth_report`) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.convert.pipeline import DatasetPlan, Frame, SourceBase, convert
from pose2rgbd.convert.stages.depth_predict import Prediction, predict, video_trajectory
from pose2rgbd.convert.stages.depth_report import metric_report, write_report
from pose2rgbd.convert.stages.orientation import replaced_orientation
from pose2rgbd.convert.stages.scale import ScaleConfig, ScaleFit, TooLittleGpsMotion, fit_scale
from pose2rgbd.dataset import Dataset, Manifest
from pose2rgbd.dataset.sequences import SequenceFrames, load_sequence_frames
from pose2rgbd.errors import ConfigError, SyncError
from pose2rgbd.evaluation.point_depth import CHECK_WARN_RELATIVE, DepthAtPoints, dataset_depth_at_points
from pose2rgbd.jsonio import json_text
from pose2rgbd.methods.selfsup_depth.metric import MetricPoses, MetricPosesConfig, compute_metric_poses
from pose2rgbd.methods.selfsup_depth.net import SelfSupDepthNet, collapse_message, depth_spread, is_collapsed
from pose2rgbd.methods.selfsup_depth.recipe import has_gps_poses
from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig, compose_poses, fill_gaps
from pose2rgbd.models import LoadedCheckpoint, load_checkpoint, save_for_inference

log = logging.getLogger(__name__)

GPS_MODES = ("auto", "on", "off")
POSE_MODES = ("dataset", "video", "metric")
KEPT_NETWORK = "depth_network.pt"  # the depth network inside a dataset whose conversion made it (keep_network)


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
    depth_at_points: DepthAtPoints | None = None  # check_written_depth: the written depth at triangulated points
    metres_per_unit: float = 0.0  # the scale the depth was written at, from the metric poses (0: the GPS fits')


class DepthSource(SourceBase):
    """A dataset with the depth of a self-supervised model as a conversion source: the plan predicts and scales
    (see :func:`export_depth` for the options), pass 2 yields every frame with its depth, the report draws the
    scale and the trajectories."""

    kind = "selfsup-depth"

    def __init__(
        self,
        dataset: str | Path | Dataset,
        checkpoint: str | Path,
        *,
        gps: str = "auto",
        poses: str = "dataset",
        trajectory_cfg: TrajectoryConfig | None = None,
        refine_poses: bool = False,
        scale_cfg: ScaleConfig | None = None,
        metric: MetricPoses | None = None,
        metric_cfg: MetricPosesConfig | None = None,
        inputs: tuple[str | Path, ...] = (),
        keep_network: bool = False,
    ) -> None:
        if gps not in GPS_MODES:
            raise ConfigError(f"gps {gps!r} is not one of {list(GPS_MODES)}")
        if poses not in POSE_MODES:
            raise ConfigError(f"poses {poses!r} is not one of {list(POSE_MODES)}")
        self.ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        self.checkpoint = checkpoint
        self.gps, self.poses, self.scale_cfg = gps, poses, scale_cfg
        self.trajectory_cfg, self.refine_poses = trajectory_cfg, refine_poses
        self.metric, self.metric_cfg = metric, metric_cfg
        self._inputs = [Path(p) for p in (self.ds.path, checkpoint, *inputs)]
        self.keep_network = keep_network
        self._loaded: LoadedCheckpoint | None = None  # the checkpoint as plan() loaded it
        self.result: ExportResult | None = None

    def plan(self, *, progress: bool) -> DatasetPlan:
        ds, checkpoint = self.ds, self.checkpoint
        model, use_gps = self._model_and_gps()
        mc, unit = model.config, model.metric_unit
        # Algorithm 2, line 1: the depth of every frame and the relative pose between consecutive frames
        frames = load_sequence_frames(ds, mc.width, mc.height, progress=progress)
        pred = predict(model, frames, progress=progress)
        spread = depth_spread(torch.from_numpy(pred.depth), mc.min_depth, mc.max_depth)
        collapsed = is_collapsed(spread)
        warning = collapse_message(spread, str(checkpoint)) if collapsed else ""
        if collapsed:
            log.warning("%s", warning)
        mp = None
        if self.poses == "metric":
            mp = self.metric if self.metric is not None else _metric_poses_for(ds, mc, self.metric_cfg, progress)
            if len(mp.label) != len(ds):
                raise ConfigError(f"metric poses of {len(mp.label)} frames for the {len(ds)} frames of {ds.path}")
        # lines 2-3: the scale per source from the GPS baselines (only a check when the model learned metric units)
        T_rel_fit = pred.T_rel
        if mp is not None and unit > 0:  # the trajectory the depth was trained with: metric poses / unit
            T_rel_fit = _metric_relative(mp, pred, unit)
        # a model trained against metric poses carries its scale (metres per unit): the GPS fit is no condition of the
        # export, with or without the metric poses at hand (an export again over a converted clip whose GPS is short);
        # where it cannot be made, the manifest says why (scale_unchecked)
        fits, scale_of, unchecked = _fit_scales(ds, frames.source_id, T_rel_fit, use_gps, unit, unit > 0,
                                                self.scale_cfg)  # fmt: skip
        metric_info: dict[str, Any] = {}
        if mp is not None:
            metric_info = metric_report(mp, pred, frames, fits, unit, scale_of, unchecked)
            if metric_info["check"].get("agree") is False:
                log.warning("%s", metric_info["check"]["message"])
        kind = "metric" if use_gps else "unscaled"
        T_out = ds.frames.T_world_cam
        extra = dict(ds.manifest.extra)
        if self.poses == "video":
            T_out, extra["poses"] = self._video_poses(model, frames, pred, scale_of, use_gps, progress)
        if mp is not None:
            T_out = _metric_trajectory(mp, pred, frames, ds.frames.T_world_cam, scale_of)
            extra["poses"] = {
                "kind": "metric",
                "from": "structure from motion (COLMAP) aligned to the GPS positions by a robust Sim(3); where it has "
                "no pose, the pose network's composed poses (scaled to metres) carried from the nearest SfM poses; a "
                "source without any SfM pose keeps the GPS poses",
                **metric_info,
            }
            # frames of a source without any SfM pose keep the GPS poses (_metric_trajectory), and their orientation
            sid = frames.source_id
            gps_frames = int((~np.isin(sid, np.unique(sid[mp.ok]))).sum())
            written = ("structure from motion (COLMAP) aligned to the GPS positions by a Sim(3), its gaps filled "
                       "from the pose network (extra.poses)")  # fmt: skip
            replace_orientation(extra, written, gps_frames, len(ds))
        elif self.poses == "video":
            replace_orientation(extra, f"the video's own trajectory ({extra['poses']['from']})", 0, len(ds))
        # line 4: the depth scaled (written in pass 2); the manifest says how
        extra["depth"] = {
            "source": "selfsup-depth",
            "checkpoint": str(Path(checkpoint).resolve()),
            "scaled_from": ("metric poses (SfM + GPS Sim(3)) and triangulated points" if unit > 0 else "gps")
            if use_gps
            else "none",
            "metres_per_unit": unit,
            "scale_check": metric_info.get("check", {}),
            **({"scale_unchecked": {str(k): v for k, v in unchecked.items()}} if unchecked else {}),
            "units": "metres" if use_gps else "network units (unscaled)",
            "scale": {str(s): fits[s].summary() for s in fits},
            "model": {"width": mc.width, "height": mc.height, "pose_source": mc.pose_source},
            "spread": {**spread, "collapsed": collapsed},
        }
        # the video's own poses without GPS are up to the scale of the depth: no metres (dataset info, evaluate,
        # render and the localizer say "units"); otherwise the poses' units stay the dataset's
        units = "unscaled" if self.poses == "video" and not use_gps else ds.manifest.resolved_pose_units
        man = Manifest(
            name=ds.manifest.name, camera=ds.camera, depth_kind=kind, rgb_encoding=ds.manifest.rgb_encoding,
            world_frame=ds.manifest.world_frame, camera_frame=ds.manifest.camera_frame, datum=ds.manifest.datum,
            sources=ds.manifest.sources, extra=extra, pose_units=units,
        )  # fmt: skip
        self._frames, self._pred, self._fits, self._scale_of = frames, pred, fits, scale_of
        self._kind, self._spread, self._collapsed = kind, spread, collapsed
        self.result = ExportResult(path=Path(), depth_kind=kind, fits=fits, frames=len(ds), spread=spread,
                                   collapsed=collapsed, warning=warning, metric=metric_info,
                                   metres_per_unit=float(unit) if use_gps and unit > 0 else 0.0)  # fmt: skip
        f = ds.frames
        written_poses = extra.get("poses") if self.poses != "dataset" else None
        return DatasetPlan(man, f.stamp_ns, T_out, {"frames": {"total": len(ds)}}, lla=f.latlonalt,
                           source_id=f.source_id, detail=written_poses)  # fmt: skip

    def _model_and_gps(self) -> tuple[SelfSupDepthNet, bool]:
        """The trained model, and whether the depth is scaled from the GPS (the options checked against the
        dataset)."""
        ds, gps = self.ds, self.gps
        ck = self._loaded = load_checkpoint(self.checkpoint)
        if not isinstance(ck.model, SelfSupDepthNet):
            raise ConfigError(f"{self.checkpoint}: holds a {ck.kind!r} model, not a selfsup-depth one")
        use_gps = gps == "on" or (gps == "auto" and has_gps_poses(ds))
        if gps == "on" and not has_gps_poses(ds):
            raise ConfigError(f"{ds.path}: --gps on, but not every frame has a GPS position (lat / lon)")
        if self.poses == "metric" and not (use_gps and has_gps_poses(ds)):
            raise ConfigError(f"{ds.path}: --poses metric needs GPS poses (lat / lon on every frame) and --gps auto / "
                              "on; use --poses video for a video without GPS")  # fmt: skip
        return ck.model, use_gps

    def _video_poses(
        self,
        model: SelfSupDepthNet,
        frames: SequenceFrames,
        pred: Prediction,
        scale_of: dict[int, float],
        use_gps: bool,
        progress: bool,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """``poses: video``: the pseudo-absolute trajectory of each source (scaled by its depth scale) and what
        the manifest says of it."""
        tcfg = self.trajectory_cfg or TrajectoryConfig()
        if self.refine_poses:
            tcfg = TrajectoryConfig(backend="pose-graph")
        T_out, tinfo = video_trajectory(model, frames, pred, tcfg, read_rgb=self.ds.read_rgb, K=self.ds.camera.K,
                                        progress=progress)  # fmt: skip
        for sid in scale_of:
            m = frames.source_id == sid
            T_out[m, :3, 3] *= scale_of[sid]
        return T_out, {
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

    def frames(self, plan: DatasetPlan) -> Iterator[Frame]:
        ds, pred = self.ds, self._pred
        W, H = ds.camera.width, ds.camera.height
        sid = ds.frames.source_id
        for i in range(len(ds)):
            d = pred.depth[i]
            if d.shape != (H, W):
                d = cv2.resize(d, (W, H), interpolation=cv2.INTER_LINEAR)
            d = (d * self._scale_of[int(sid[i])]).astype(np.float32)
            yield Frame(i, ds.read_rgb(i), d, f"frame {i}")

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        """The depth's figures and numbers, and the report of the dataset whose frames this one rewrites (after
        `convert video`: the time sync's ``sync.png`` and ``track.png``, its offset, frame and fix counts, datum and
        assumptions), which is in the conversion's work folder and goes once the output is in place."""
        earlier = carry_report(self.ds.path / "report", folder, skip=DEPTH_REPORT_FIGURES)
        written = plan.summary["frames"]["written"]
        video = plan.T_world_cam if self.poses != "dataset" else None
        plan.summary.update(write_report(folder, self.ds, self._frames, self._pred, self._fits, self._scale_of,
                                         self._kind, video=video, poses_info=plan.detail,
                                         spread={**self._spread, "collapsed": self._collapsed}))  # fmt: skip
        # the frames by reason from the earlier report (its `written` is this dataset's too: one frame each), or
        # the count; the earlier entries this report has none of come along as they are
        frames = earlier.get("frames") if earlier else None
        plan.summary["frames"] = {**frames, "written": written} if isinstance(frames, dict) else written
        for key, value in (earlier or {}).items():
            if key not in DEPTH_REPORT_ENTRIES:  # an earlier depth's numbers would describe depth no longer there
                plan.summary.setdefault(key, value)
        if self.keep_network:  # the network goes with its depth: `depth export` can run it again later
            assert self._loaded is not None  # plan() loaded it
            save_for_inference(self._loaded, folder.parent / KEPT_NETWORK)  # without the optimizers' state
            plan.manifest.extra["depth"]["checkpoint"] = KEPT_NETWORK


def keep_file(src: Path, root: Path, name: str) -> str:
    """Copy ``src`` to ``root / name`` (a temporary name first, then renamed) and return ``name``: what a manifest
    records of a file kept inside its own dataset (a path relative to the dataset's folder)."""
    tmp = root / f".{name}.tmp"
    shutil.copyfile(src, tmp)
    tmp.replace(root / name)
    return name


# what a report of written depth holds of the depth itself (depth_report.write_report, check_written_depth, the
# stereo stage, an import's depth): not carried from a dataset whose depth is written anew
DEPTH_REPORT_FIGURES = frozenset({"samples.png", "scale.png", "trajectory.png"})
DEPTH_REPORT_ENTRIES = frozenset(
    {"depth", "depth_kind", "scale", "depth_spread", "depth_at_points", "before_stereo", "mvs",
     "network_to_stereo_scale", "depth_import"}
)  # fmt: skip


def carry_report(earlier: Path, folder: Path, *, skip: frozenset[str] = frozenset()) -> dict[str, object] | None:
    """Copy the files of the report folder ``earlier`` (another dataset's ``report/``) that ``folder`` does not
    have yet into it, but those named in ``skip``, and return that report's ``summary.json`` (None where it has
    none or it cannot be read): a stage that writes a dataset anew from another keeps what the other's report said
    of the recording."""
    if not earlier.is_dir():
        return None
    summary: dict[str, object] | None = None
    for f in sorted(earlier.iterdir()):
        if f.name == "summary.json":
            try:
                loaded = json.loads(f.read_text())
            except (OSError, ValueError):
                log.warning("%s could not be read: the new report goes on without it", f)
                continue
            summary = loaded if isinstance(loaded, dict) else None
        elif f.is_file() and not f.name.startswith(".") and f.name not in skip and not (folder / f.name).exists():
            keep_file(f, folder, f.name)
    return summary


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
    keep_network: bool = False,
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
    reported). ``refine_poses=True`` is the older spelling of ``backend: pose-graph``. ``keep_network``: a copy of
    the checkpoint without its optimizers' state goes into the dataset as :data:`KEPT_NETWORK`, and
    ``extra.depth.checkpoint`` names it relative to the dataset (else it is the checkpoint's absolute path): for a
    checkpoint that will not outlive the call."""
    src = DepthSource(dataset, checkpoint, gps=gps, poses=poses, trajectory_cfg=trajectory_cfg,
                      refine_poses=refine_poses, scale_cfg=scale_cfg, metric=metric, metric_cfg=metric_cfg,
                      inputs=inputs, keep_network=keep_network)  # fmt: skip
    # every frame is written, index-aligned with the input dataset (its repeats were dropped when it was made)
    path = convert(src, out, overwrite=overwrite, progress=progress, repeats=False)
    assert src.result is not None
    src.result.path = path
    return src.result


def _fit_scales(
    ds: Dataset,
    source_id: np.ndarray,
    T_rel: np.ndarray,
    use_gps: bool,
    unit: float,
    metric_scaled: bool,
    cfg: ScaleConfig | None,
) -> tuple[dict[int, ScaleFit], dict[int, float], dict[int, str]]:
    """``(fits, scale, unchecked)`` per source: the GPS window fit of ``T_rel`` (:func:`.scale.fit_scale`), the
    metres per network unit the depth is multiplied by (the model's ``unit`` when it has one, else the fit; 1 without
    GPS) and, when ``metric_scaled`` (the model's metres per unit is the scale, the fit only checks it), why a
    source's fit could not be made."""
    fits: dict[int, ScaleFit] = {}
    scale_of = {int(s): 1.0 for s in np.unique(source_id)}
    unchecked: dict[int, str] = {}
    if not use_gps:
        return fits, scale_of, unchecked
    for sid in scale_of:
        idx = np.flatnonzero(source_id == sid)
        try:
            fits[sid] = fit_scale(ds.frames.translation[idx], ds.frames.stamp_ns[idx], T_rel[idx[:-1]], cfg)
        except SyncError as e:
            if not metric_scaled:
                raise  # the fit is the scale itself: without it there is no metric depth
            # the depth is metric all the same: the fit's conclusion ("too little motion to fit a metric scale") and
            # advice (a longer path, or unscaled depth) are not for here; only its check of the scale is skipped
            why = f"{e.reason}; {e.what}" if isinstance(e, TooLittleGpsMotion) else str(e)
            unchecked[sid] = f"GPS window check of the metric scale skipped: {why}"
            scale_of[sid] = unit
            log.warning("source %d: %s. The metric scale is not affected: it comes from the structure-from-motion "
                        "poses aligned to the GPS by a Sim(3) (%.4g m per network unit), which this check would only "
                        "confirm; nothing to do", sid, unchecked[sid], unit)  # fmt: skip
            continue
        scale_of[sid] = unit if unit > 0 else fits[sid].scale
        fit = fits[sid]
        log.info("source %d: GPS window fit %.4f +- %.4f m per unit (%d windows)%s", sid, fit.scale, fit.sigma,
                 fit.n_windows, f"; metric poses: {unit:.4f}" if unit > 0 else "")  # fmt: skip
    return fits, scale_of, unchecked


def replace_orientation(extra: dict[str, object], written: str, gps_frames: int, frames: int) -> None:
    """``extra.conversion.assumptions`` (a conversion's, when ``extra`` has them) with the orientation of the GPS
    poses said to be replaced by ``written`` (:func:`.orientation.replaced_orientation`); a new dict, the dataset's
    own manifest is left as it is."""
    conv = extra.get("conversion")
    if not isinstance(conv, dict) or not isinstance(conv.get("assumptions"), list):
        return
    extra["conversion"] = {**conv, "assumptions": replaced_orientation(conv["assumptions"], written, gps_frames,
                                                                       frames)}  # fmt: skip


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


def check_written_depth(res: ExportResult, *, progress: bool = False) -> ExportResult:
    """``res`` with its written metric depth scored at points triangulated among runs of its frames
    (:func:`~pose2rgbd.evaluation.point_depth.dataset_depth_at_points`): logged, added to the dataset's
    ``report/summary.json`` as ``depth_at_points``, and a warning where it is far from them. Unscaled depth is not
    checked (its scale is not the poses')."""
    ds = Dataset(res.path)
    if ds.manifest.depth_kind != "metric":
        return res
    found = dataset_depth_at_points(ds, progress=progress)
    log.debug("%s", found.describe())  # the CLI prints it (print_export); where it is far, the warning below
    if found.far:
        far_runs = sum(1 for r in found.relative_per_run if r is not None and r > CHECK_WARN_RELATIVE)
        log.warning("the converted depth is far from the points triangulated among its own frames (median relative "
                    "error %.3f > %.2f; %d of %d runs of frames): train the depth longer (--depth-minutes, "
                    "--depth-steps: docs/results.md, \"hero7 on a CPU with AVX2 alone\"). Or the points are wrong: "
                    "a camera turning in place, a rolling shutter or a time offset between poses and frames "
                    "mis-triangulates them (a few runs far off: look at depth_at_points in %s and the poses in the "
                    "report)", found.median_relative, CHECK_WARN_RELATIVE, far_runs, len(found.relative_per_run),
                    res.path / "report" / "summary.json")  # fmt: skip
    summary = res.path / "report" / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        data["depth_at_points"] = found.as_dict()
        write_text_atomic(summary, json_text(data))
    return dataclasses.replace(res, depth_at_points=found)
