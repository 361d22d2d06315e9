"""Video (+ GPS log) -> dataset with metric depth in one call (``pose2rgbd convert video ... --depth selfsup``):
Algorithm 2's stages (:mod:`pose2rgbd.convert.stages.depth_chain`) in a row,

    frames (the pipeline; Algorithm 1 with a GPS log) -> metric poses (structure from motion aligned to GPS; with
    a GPS log and ``depth_poses="metric"``) -> depth training -> depth export (the pipeline, into ``out``),

or, with ``--depth mvs``, frames -> metric poses -> multi-view stereo depth (no training:
:class:`pose2rgbd.convert.mvs_depth.MvsStage`), and with ``--depth selfsup+mvs`` the network's export combined
with stereo by the same stage;
the first three in a work folder beside the output (``.<out>.selfsup-work``), each cached by what it was made from
(:mod:`pose2rgbd.convert.stages.work`). The output is checked once, before the first stage (an existing one is
refused there unless ``overwrite``). The work folder is
deleted when the dataset is written. When a stage fails or the run is stopped after a stage finished, it is kept
and the error says so: the same command run again continues from the finished stages (and from the last
checkpoint of a stopped training); when the export fails (e.g. COLMAP registered too few frames), the error also
names the ``pose2rgbd depth export`` command that exports from it."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from pose2rgbd.config import to_dict
from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.mvs_depth import DEPTH_CHOICES, MvsStage
from pose2rgbd.convert.pipeline import Source
from pose2rgbd.convert.sources.video import VideoFramesSource, VideoSource
from pose2rgbd.convert.stages.depth_chain import ExportStage, FramesStage, MetricPosesStage, TrainStage
from pose2rgbd.convert.stages.depth_export import ExportResult, check_written_depth
from pose2rgbd.convert.stages.scale import ScaleConfig
from pose2rgbd.convert.stages.work import Product, Stage, finished_stages, run_stage
from pose2rgbd.errors import ConfigError, Pose2RGBDError
from pose2rgbd.geometry.mvs import MvsConfig
from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
from pose2rgbd.methods.selfsup_depth.metric import MetricPosesConfig
from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig
from pose2rgbd.output_guard import DATASET, check_output, refuse_existing
from pose2rgbd.training.config import TrainConfig

log = logging.getLogger(__name__)
DEPTH_POSES = ("metric", "posenet")


def _check_gps_scale_before_training(
    frames: Product, metric: Product | None, scale_cfg: ScaleConfig | None, own_gps: bool
) -> None:
    """Where no frame has a metric pose (structure from motion registered none, or ``--depth-poses posenet``) the
    depth's metres come from the GPS window fit at the export: a GPS track too short for it is refused here, before
    the training's minutes, not after them."""
    import numpy as np

    from pose2rgbd.convert.stages.scale import TooLittleGpsMotion, check_gps_windows
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.errors import SyncError
    from pose2rgbd.methods.selfsup_depth.metric import MetricPoses

    if metric is not None and MetricPoses.load(metric.path).n_metric > 0:
        return  # the metric poses give the scale; the fit only checks it
    ds = Dataset(frames.path)
    sid = ds.frames.source_id
    for s in np.unique(sid):
        idx = np.flatnonzero(sid == s)
        try:
            check_gps_windows(ds.frames.translation[idx], ds.frames.stamp_ns[idx], scale_cfg)
        except TooLittleGpsMotion as e:
            why = (
                "structure from motion gave no frame a metric pose"
                if metric is not None
                else "--depth-poses posenet: the scale comes from this fit"
            )
            way = (
                "this GoPro clip carries its own GPS, read where --gps is left out: record a longer path"
                if own_gps
                else "record a longer path, or leave out --gps: unscaled depth with the video's own poses"
            )
            raise SyncError(
                f"scale: {e.what}: the GPS shows too little motion to fit the metric scale the depth needs ({why}); "
                f"refused before the depth training; {way}"
            ) from e


def convert_video_with_depth(
    video: str | Path,
    gps_log: str | Path | None,
    out: str | Path,
    cfg: ConvertConfig | None = None,
    *,
    model_cfg: SelfSupDepthConfig | None = None,
    train_cfg: TrainConfig | None = None,
    minutes: float = 20.0,
    steps: int = 0,
    scale_cfg: ScaleConfig | None = None,
    trajectory_cfg: TrajectoryConfig | None = None,
    depth_poses: str = "metric",
    metric_cfg: MetricPosesConfig | None = None,
    depth: str = "selfsup",
    mvs_cfg: MvsConfig | None = None,
    check_depth: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    **convert_kw: Any,
) -> ExportResult:
    """Convert, train depth on the flight for ``minutes`` or ``steps``, whichever ends first (0: no limit of that
    kind; ``train_cfg`` instead sets the whole training), export. A step budget trains the same network on any CPU;
    a time budget buys steps in proportion to the CPU's speed.

    With a GPS log and ``depth_poses="metric"`` (default): metric poses first (COLMAP structure from motion aligned
    to the GPS positions by a robust Sim(3), :mod:`pose2rgbd.methods.selfsup_depth.metric`; the pose network where
    SfM has none, reported per segment), the depth trained against them (``pose_source: metric``) and written with
    them. ``depth_poses="posenet"``: the earlier path (the pose network for view synthesis, the GPS poses
    written, the scale fitted from GPS afterwards). Without a GPS log (``gps_log=None``): the video-only path,
    unscaled depth and pseudo-absolute poses from the video (``trajectory_cfg``: which back end makes them,
    default COLMAP structure from motion). ``depth``: ``selfsup`` (the network's depth), ``mvs`` (multi-view
    stereo from the metric poses instead: no training, the stage :class:`~pose2rgbd.convert.mvs_depth.MvsStage`
    after the metric poses; ``mvs_cfg`` its settings) or ``selfsup+mvs`` (the network exported into the work
    folder, then stereo where verified and the network elsewhere); both need GPS and metric poses.

    ``check_depth``: :func:`~pose2rgbd.convert.stages.depth_export.check_written_depth` on the written dataset.
    ``convert_kw``: :class:`~pose2rgbd.convert.sources.video.VideoSource`'s options (``lens_given`` also the
    video-only path's)."""
    if depth_poses not in DEPTH_POSES:
        raise ConfigError(f"depth poses {depth_poses!r} is not one of {list(DEPTH_POSES)}")
    if depth not in DEPTH_CHOICES:
        raise ConfigError(f"depth {depth!r} is not one of {list(DEPTH_CHOICES)}")
    if depth != "selfsup" and (gps_log is None or depth_poses != "metric"):
        raise ConfigError(f"--depth {depth} needs GPS and metric poses (--depth-poses metric): multi-view stereo "
                          "takes its scale from structure from motion aligned to the GPS")  # fmt: skip
    if depth != "mvs" and train_cfg is None and (minutes < 0 or steps < 0 or not (minutes > 0 or steps > 0)):
        raise ConfigError(f"depth training budget {minutes} min / {steps} steps: give a positive number of minutes "
                          "(--depth-minutes), of steps (--depth-steps) or both; the first reached ends it")  # fmt: skip
    out = Path(out)
    inputs = tuple(p for p in (video, gps_log, convert_kw.get("attitude")) if p is not None)
    check_output(out, DATASET, inputs=inputs, overwrite=overwrite)
    # an existing output is refused here, before minutes of frames, structure from motion and training (the export
    # that writes it would refuse it only at the end, with the work folder left beside it)
    refuse_existing(out, overwrite=overwrite)
    c = cfg or ConvertConfig()
    settings: dict[str, Any] = {"config": to_dict(c)}
    source: Source
    if gps_log is None:
        source = VideoFramesSource(video, c, lens_given=bool(convert_kw.get("lens_given", False)))
    else:
        source = VideoSource(video, gps_log, c, **convert_kw)
        settings["options"] = {k: str(v) if isinstance(v, Path) else v for k, v in sorted(convert_kw.items())}
    work = work_folder(out)
    stage = "frames"
    reached: list[Stage] = []  # this run's stages in the work folder: the only ones a failure note names

    def step(s: Stage) -> Product:
        reached.append(s)
        return run_stage(s, work, progress=progress)

    try:
        frames = step(FramesStage(source, c.output, settings))
        metric = None
        if gps_log is not None and depth_poses == "metric":
            stage = "metric poses"
            tcfg = trajectory_cfg if trajectory_cfg is not None and trajectory_cfg.backend == "colmap" else None
            metric = step(MetricPosesStage(frames, tcfg, metric_cfg))
        if depth == "mvs":  # no network: stereo from the metric poses alone, into the output
            assert metric is not None
            stage = "stereo"
            mvs = MvsStage(frames, metric, cfg=mvs_cfg, overwrite=overwrite, inputs=inputs)
            mvs.run(out, progress=progress)
            shutil.rmtree(work, ignore_errors=True)
            assert mvs.result is not None
            return check_written_depth(mvs.result, progress=progress) if check_depth else mvs.result
        if gps_log is not None:
            from pose2rgbd.convert.gopro import has_gpmf

            # a GoPro clip's own GPS is read where --gps is left out: leaving it out is no way to unscaled depth
            _check_gps_scale_before_training(frames, metric, scale_cfg, Path(video).is_file() and has_gpmf(video))
        tc = train_cfg or TrainConfig(epochs=1000, max_minutes=minutes, max_steps=steps, val_every=0,
                                      progress=progress, tensorboard=False)  # fmt: skip
        stage = "training"
        trained = step(TrainStage(frames, metric, model_cfg or SelfSupDepthConfig(), tc))
        pose_mode = "video" if gps_log is None else "metric" if metric is not None else "dataset"
        export = ExportStage(frames, trained, metric, gps="off" if gps_log is None else "on", poses=pose_mode,
                             scale_cfg=scale_cfg, trajectory_cfg=trajectory_cfg, overwrite=overwrite,
                             inputs=inputs, keep_network=True)  # fmt: skip
        stage = "export"
        if depth == "selfsup+mvs":  # the network's export in the work folder, combined with stereo into the output
            assert metric is not None
            export.overwrite = True  # a stopped run's own export in the work folder is made again
            export.run(work / "selfsup", progress=progress)
            stage = "stereo"
            mvs = MvsStage(Product(work / "selfsup", export.key()), metric, combine=True, cfg=mvs_cfg,
                           overwrite=overwrite, inputs=inputs)  # fmt: skip
            mvs.run(out, progress=progress)
            assert export.result is not None and mvs.result is not None  # the network's fits, spread, collapse kept
            export.result = dataclasses.replace(export.result, path=mvs.result.path)
        else:
            export.run(out, progress=progress)
    except BaseException as e:
        kept = finished_stages(work, reached)
        if not kept:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if not isinstance(e, Pose2RGBDError):  # Ctrl-C, an unexpected error: say where the finished stages are
            log.warning("%s stopped in its %s stage; the finished stages (%s) are kept in %s: run the same command "
                        "again to continue from them, or delete it", out, stage, ", ".join(kept), work)  # fmt: skip
            raise
        again = (
            "run the same command again to continue from them"
            + (" (with another --trajectory-backend only the export runs again)" if gps_log is None else "")
            + f", or delete {work}"
        )
        if stage == "export":  # e.g. COLMAP registered too few frames: the trained model is kept
            poses = (" --poses video --trajectory-backend compose" if gps_log is None
                     else " --poses metric" if metric is not None else "")  # fmt: skip
            alone = " (the network's depth alone, without stereo)" if depth == "selfsup+mvs" else ""
            note = (f"The trained depth model and the frames are kept in {work}: export again{alone} with `pose2rgbd "
                    f"depth export --dataset {work / 'frames'} --checkpoint {TrainStage.checkpoint(trained)} "
                    f"--out {out} --gps {'off' if gps_log is None else 'on'}{poses}` (or other settings), then delete "
                    f"{work}; or {again}")  # fmt: skip
        else:
            note = f"The finished stages ({', '.join(kept)}) are kept in {work}: {again}"
        raise _with_note(e, note) from e
    shutil.rmtree(work, ignore_errors=True)
    assert export.result is not None
    return check_written_depth(export.result, progress=progress) if check_depth else export.result


def work_folder(out: Path) -> Path:
    """Where the stages before the export keep their outputs: a hidden folder beside ``out``, the same for every
    run that writes ``out`` (so a stopped run continues)."""
    return out.parent / f".{out.name}.selfsup-work"


def _with_note(e: Pose2RGBDError, note: str) -> Pose2RGBDError:
    """``e`` with ``note`` added to its message, as the same error class where its constructor allows."""
    msg = f"{e}\n{note}"
    try:
        return type(e)(msg)
    except TypeError:  # an error class with another constructor
        return Pose2RGBDError(msg)
