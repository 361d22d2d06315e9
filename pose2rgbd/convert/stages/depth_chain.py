"""Algorithm 2 as four stages, each a :class:`~pose2rgbd.convert.stages.work.Stage` (``key()``, ``run(dest)``):

1. :class:`FramesStage` -- the recording -> a dataset of its frames, through the conversion pipeline (with a GPS
   log: Algorithm 1's time offset and GPS poses; without: placeholder poses);
2. :class:`MetricPosesStage` -- structure from motion on those frames, aligned to their GPS positions by a robust
   Sim(3) (:mod:`pose2rgbd.methods.selfsup_depth.metric`) -> ``metric_poses.npz``;
3. :class:`TrainStage` -- the self-supervised depth network trained on the frames (against the metric poses when
   there are any) -> a training run (resumable: it continues from its last checkpoint);
4. :class:`ExportStage` -- the frames with the trained model's depth in metres, through the conversion pipeline
   (:mod:`.depth_export`).

Stages 1-3 run in a work folder through :func:`~pose2rgbd.convert.stages.work.run_stage` (cached by their keys);
each takes the :class:`~pose2rgbd.convert.stages.work.Product` of the stages before it, whose key is part of its own,
so a change upstream makes everything after it again. :mod:`pose2rgbd.convert.video_depth` chains them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pose2rgbd.config import to_dict
from pose2rgbd.convert.config import ConvertOutput
from pose2rgbd.convert.pipeline import Source, convert
from pose2rgbd.convert.stages.depth_export import ExportResult, export_depth
from pose2rgbd.convert.stages.scale import ScaleConfig
from pose2rgbd.convert.stages.work import Product, file_fingerprint
from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
from pose2rgbd.methods.selfsup_depth.metric import MetricPoses, MetricPosesConfig
from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig
from pose2rgbd.training.config import TrainConfig

log = logging.getLogger(__name__)

# TrainConfig fields that change how a run is shown, not what it makes: left out of the training stage's key
_DISPLAY_ONLY = ("progress", "tensorboard", "log_every")


@dataclass
class FramesStage:
    """Stage 1: ``source`` (a video and its GPS log, or a video alone) -> a frames dataset, written by the
    pipeline (:func:`pose2rgbd.convert.pipeline.convert`: repeated frames dropped, ``--size``, the report).
    ``settings``: everything besides the input files that decides the dataset (the conversion config, the source's
    options)."""

    source: Source
    output: ConvertOutput
    settings: dict[str, Any]
    name: str = "frames"
    resumable: bool = False

    def key(self) -> dict[str, Any]:
        return {"source": self.source.kind, "inputs": [file_fingerprint(p) for p in self.source.inputs()],
                "settings": self.settings}  # fmt: skip

    def run(self, dest: Path, *, progress: bool) -> None:
        convert(self.source, dest, self.output, progress=progress)


@dataclass
class MetricPosesStage:
    """Stage 2: the frames' metric poses (COLMAP structure from motion aligned to GPS; the pose network where SfM
    has none is decided in training and export). ``trajectory_cfg``: COLMAP's settings (None: the defaults)."""

    frames: Product
    trajectory_cfg: TrajectoryConfig | None = None
    cfg: MetricPosesConfig | None = None
    name: str = "metric_poses.npz"
    resumable: bool = False

    def key(self) -> dict[str, Any]:
        # COLMAP's settings as compute_metric_poses uses them (None: the defaults, the back end always COLMAP)
        colmap = replace(self.trajectory_cfg or TrajectoryConfig(), backend="colmap")
        metric = to_dict(self.cfg or MetricPosesConfig())
        return {"frames": self.frames.key, "colmap": to_dict(colmap), "metric": metric}

    def run(self, dest: Path, *, progress: bool) -> None:
        from pose2rgbd.dataset import Dataset
        from pose2rgbd.methods.selfsup_depth.metric import compute_metric_poses

        compute_metric_poses(Dataset(self.frames.path), self.trajectory_cfg, self.cfg, progress=progress).save(dest)


@dataclass
class TrainStage:
    """Stage 3: the depth network trained on the frames (``model.pose_source: metric`` against the metric poses
    when given). Resumable: a stopped run continues from its ``last.pt``, its time budget counted across runs."""

    frames: Product
    metric: Product | None
    model_cfg: SelfSupDepthConfig
    train_cfg: TrainConfig
    name: str = "run"
    resumable: bool = True

    def model_config(self) -> SelfSupDepthConfig:
        if self.metric is None:
            return self.model_cfg
        return replace(self.model_cfg, pose_source="metric", metric_poses=str(self.metric.path))

    def key(self) -> dict[str, Any]:
        tc = {k: v for k, v in to_dict(self.train_cfg).items() if k not in _DISPLAY_ONLY}
        return {"frames": self.frames.key, "metric": None if self.metric is None else self.metric.key,
                "model": to_dict(self.model_config()), "train": tc}  # fmt: skip

    def run(self, dest: Path, *, progress: bool) -> None:
        from pose2rgbd.training.graceful_stop import interrupted, pass_on_the_stop
        from pose2rgbd.training.train import train

        # Ctrl-C / SIGTERM ends the training after its step with last.pt (the same command continues from it; before,
        # a stop in the first checkpoint interval, 5 minutes, kept nothing), then stops the chain as a whole
        res = train("selfsup-depth", self.frames.path, dest, self.model_config(), self.train_cfg, resume=True,
                    stop_on_ctrl_c=True)  # fmt: skip
        log.info("depth trained: %d steps in %.1f min (%s)", res.steps, res.elapsed_s / 60, res.stop_reason)
        if interrupted(res.stop_reason):
            pass_on_the_stop(res.stop_reason)

    @staticmethod
    def checkpoint(run: Product) -> Path:
        """The model a finished run of this stage wrote."""
        return run.path / "last.pt"

    def resumes_from(self, dest: Path) -> bool:
        """Whether a stopped run at ``dest`` wrote a checkpoint to continue from (else it starts again)."""
        return (dest / "last.pt").is_file()


@dataclass
class ExportStage:
    """Stage 4: the frames with the trained model's depth, scaled to metres (:func:`.depth_export.export_depth`:
    the pipeline with :class:`.depth_export.DepthSource`). ``gps``: ``on`` / ``off`` (no GPS log); ``poses``:
    ``metric`` (with ``metric``), ``dataset`` (the GPS poses) or ``video`` (pseudo-absolute poses from the video).
    ``inputs``: the recording's files, which the output may not replace. Its output is the dataset itself, so it is
    not run in the work folder; :attr:`result` is what :func:`export_depth` returned."""

    frames: Product
    trained: Product
    metric: Product | None
    gps: str
    poses: str
    scale_cfg: ScaleConfig | None = None
    trajectory_cfg: TrajectoryConfig | None = None
    overwrite: bool = False
    inputs: tuple[str | Path, ...] = ()
    keep_network: bool = False  # a copy of the trained network in the output (the chain's work folder goes)
    name: str = "export"
    resumable: bool = False
    result: ExportResult | None = field(default=None, repr=False)

    def key(self) -> dict[str, Any]:
        return {"frames": self.frames.key, "run": self.trained.key, "metric": None if self.metric is None else
                self.metric.key, "gps": self.gps, "poses": self.poses,
                "scale": to_dict(self.scale_cfg or ScaleConfig()),
                "trajectory": None if self.trajectory_cfg is None else to_dict(self.trajectory_cfg)}  # fmt: skip

    def run(self, dest: Path, *, progress: bool) -> None:
        mp = None if self.metric is None else MetricPoses.load(self.metric.path)
        self.result = export_depth(self.frames.path, TrainStage.checkpoint(self.trained), dest, gps=self.gps,
                                   poses=self.poses, scale_cfg=self.scale_cfg, metric=mp,
                                   trajectory_cfg=self.trajectory_cfg, overwrite=self.overwrite, progress=progress,
                                   inputs=self.inputs, keep_network=self.keep_network)  # fmt: skip
