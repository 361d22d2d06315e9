"""Video + GPS log -> dataset with metric depth in one call (``pose2rgbd convert video ... --depth selfsup``): the
pipeline with Algorithm 1 (:class:`pose2rgbd.convert.sources.video.VideoSource`) into a work folder, metric poses
(structure from motion aligned to GPS; :mod:`pose2rgbd.methods.selfsup_depth.metric`), self-supervised depth
trained against them on that flight, then the pipeline again with Algorithm 2
(:mod:`pose2rgbd.convert.stages.depth_export`) into the output, written atomically. The
work folder (frames-only dataset, training run) is deleted at the end, also on error or Ctrl-C, except when the
export fails after training (e.g. COLMAP registered too few frames): then it is kept and the error names the
command that exports from it."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.pipeline import convert
from pose2rgbd.convert.sources.video import convert_video
from pose2rgbd.convert.stages.depth_export import ExportResult, export_depth
from pose2rgbd.convert.stages.scale import ScaleConfig
from pose2rgbd.dataset import Dataset
from pose2rgbd.errors import ConfigError, Pose2RGBDError
from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
from pose2rgbd.methods.selfsup_depth.metric import MetricPosesConfig, compute_metric_poses
from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig
from pose2rgbd.output_guard import DATASET, check_output
from pose2rgbd.training.config import TrainConfig
from pose2rgbd.training.train import train

log = logging.getLogger(__name__)
DEPTH_POSES = ("metric", "posenet")


def video_frames_dataset(
    video: str | Path,
    out: str | Path,
    *,
    hfov_deg: float = 80.0,
    size_wh: tuple[int, int] | None = None,
    progress: bool = True,
) -> Path:
    """Every frame of ``video`` as a dataset without GPS: pinhole camera of ``hfov_deg`` (no calibration for a
    video), placeholder identity poses (``extra.poses.kind: placeholder``), no depth. The input of the
    video-only path: train depth on it, then export with ``poses="video"``."""
    import cv2
    import numpy as np

    from pose2rgbd.convert.sources.video import read_video_frames
    from pose2rgbd.dataset import DatasetWriter, Manifest
    from pose2rgbd.errors import SyncError
    from pose2rgbd.geometry.camera import PinholeCamera

    it = read_video_frames(video)
    first = next(it, None)
    if first is None:
        raise SyncError(f"{video}: no frame could be decoded (empty or corrupt video)")
    h, w = first[2].shape[:2]
    W, H = size_wh or (w, h)
    man = Manifest(name=Path(video).stem, camera=PinholeCamera.from_fov(W, H, hfov_deg), depth_kind="none",
                   sources=[{"id": 0, "kind": "video", "name": Path(video).name}],
                   extra={"poses": {"kind": "placeholder", "note": "video without GPS: identity poses"}})  # fmt: skip
    from itertools import chain

    from pose2rgbd.progress import bar

    with DatasetWriter(out, man, inputs=[video]) as wr:
        for _, t, bgr in bar(chain([first], it), desc="frames", unit="frame", progress=progress):
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if (w, h) != (W, H):
                rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)
            wr.add_frame(round(t * 1e9), np.eye(4), rgb)
    return Path(out)


def convert_video_with_depth(
    video: str | Path,
    gps_log: str | Path | None,
    out: str | Path,
    cfg: ConvertConfig | None = None,
    *,
    model_cfg: SelfSupDepthConfig | None = None,
    train_cfg: TrainConfig | None = None,
    minutes: float = 20.0,
    scale_cfg: ScaleConfig | None = None,
    trajectory_cfg: TrajectoryConfig | None = None,
    depth_poses: str = "metric",
    metric_cfg: MetricPosesConfig | None = None,
    depth: str = "selfsup",
    mvs_cfg: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    **convert_kw: Any,
) -> ExportResult:
    """Convert, train depth on the flight for ``minutes`` (unless ``train_cfg`` sets the budget), export.

    With a GPS log and ``depth_poses="metric"`` (default): metric poses first (COLMAP structure from motion aligned
    to the GPS positions by a robust Sim(3), :mod:`pose2rgbd.methods.selfsup_depth.metric`; the pose network where
    SfM has none, reported per segment), the depth trained against them (``pose_source: metric``) and written with
    them. ``depth_poses="posenet"``: the earlier path (the pose network for view synthesis, the GPS poses
    written, the scale fitted from GPS afterwards). Without a GPS log (``gps_log=None``): the video-only path,
    unscaled depth and pseudo-absolute poses from the video (``trajectory_cfg``: which back end makes them,
    default COLMAP structure from motion). ``depth``: ``selfsup`` (the network's depth), ``mvs`` (multi-view
    stereo from the metric poses instead, no training; :mod:`pose2rgbd.convert.mvs_depth`, ``mvs_cfg`` an
    :class:`~pose2rgbd.geometry.mvs.MvsConfig`) or ``selfsup+mvs`` (stereo where verified, the network elsewhere);
    both need GPS and metric poses."""
    from pose2rgbd.convert.mvs_depth import DEPTH_CHOICES, MvsDepthSource

    if depth_poses not in DEPTH_POSES:
        raise ConfigError(f"depth poses {depth_poses!r} is not one of {list(DEPTH_POSES)}")
    if depth not in DEPTH_CHOICES:
        raise ConfigError(f"depth {depth!r} is not one of {list(DEPTH_CHOICES)}")
    if depth != "selfsup" and (gps_log is None or depth_poses != "metric"):
        raise ConfigError(f"--depth {depth} needs GPS and metric poses (--depth-poses metric): multi-view stereo "
                          "takes its scale from structure from motion aligned to the GPS")  # fmt: skip
    out = Path(out)
    inputs = [video, gps_log, convert_kw.get("attitude")]
    check_output(out, DATASET, inputs=inputs, overwrite=overwrite)
    work = out.parent / f".{out.name}.selfsup-work-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    keep = False
    try:
        if gps_log is None:
            c = cfg or ConvertConfig()
            frames_ds = video_frames_dataset(video, work / "frames", hfov_deg=c.hfov_deg, size_wh=c.size_wh(),
                                             progress=progress)  # fmt: skip
        else:
            frames_ds = convert_video(video, gps_log, work / "frames", cfg, progress=progress, **convert_kw)
        mc = model_cfg or SelfSupDepthConfig()
        mp = None
        if gps_log is not None and depth_poses == "metric":
            tcfg = trajectory_cfg if trajectory_cfg is not None and trajectory_cfg.backend == "colmap" else None
            mp = compute_metric_poses(Dataset(frames_ds), tcfg, metric_cfg, progress=progress)
            path = mp.save(work / "metric_poses.npz")
            mc = replace(mc, pose_source="metric", metric_poses=str(path))
        srcs = tuple(p for p in inputs if p is not None)
        if depth == "mvs":  # no network: stereo from the metric poses alone
            assert mp is not None
            path = convert(MvsDepthSource(frames_ds, mp, cfg=mvs_cfg, inputs=srcs), out, overwrite=overwrite,
                           progress=progress, repeats=False)  # fmt: skip
            return ExportResult(path=path, depth_kind="metric", frames=len(Dataset(frames_ds)), metric=mp.info)
        tc = train_cfg or TrainConfig(epochs=1000, max_minutes=minutes, val_every=0, progress=progress,
                                      tensorboard=False)  # fmt: skip
        res = train("selfsup-depth", frames_ds, work / "run", mc, tc)
        log.info("depth trained: %d steps in %.1f min", res.steps, res.elapsed_s / 60)
        try:
            pose_mode = "video" if gps_log is None else "metric" if mp is not None else "dataset"
            net_out = work / "selfsup" if depth == "selfsup+mvs" else out
            er = export_depth(frames_ds, res.last, net_out, gps="off" if gps_log is None else "on",
                              poses=pose_mode, scale_cfg=scale_cfg, metric=mp,
                              trajectory_cfg=trajectory_cfg, overwrite=overwrite,
                              progress=progress, inputs=srcs)  # fmt: skip
            if depth == "selfsup+mvs":  # the network's export, its depth combined with stereo, into the output
                assert mp is not None
                er.path = convert(MvsDepthSource(net_out, mp, combine=True, cfg=mvs_cfg, inputs=srcs), out,
                                  overwrite=overwrite, progress=progress, repeats=False)  # fmt: skip
            return er
        except Pose2RGBDError as e:  # e.g. COLMAP registered too few frames: keep the trained model
            keep = True
            poses = (" --poses video --trajectory-backend compose" if gps_log is None
                     else " --poses metric" if mp is not None else "")  # fmt: skip
            msg = (
                f"{e}\nThe trained depth model and the frames are kept in {work}: export again with `pose2rgbd "
                f"depth export --dataset {work / 'frames'} --checkpoint {res.last} --out {out} "
                f"--gps {'off' if gps_log is None else 'on'}{poses}` (or other settings), then delete {work}"
            )
            try:
                err = type(e)(msg)
            except TypeError:  # an error class with another constructor
                err = Pose2RGBDError(msg)
            raise err from e
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
