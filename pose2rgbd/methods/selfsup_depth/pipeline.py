"""Video + GPS log -> dataset with metric depth in one call (``pose2rgbd convert video ... --depth selfsup``):
Algorithm 1 (:func:`pose2rgbd.convert.video.convert_video`) into a work folder, self-supervised training on that
flight, then the depth export scaled from the GPS poses (Algorithm 2) into the output, written atomically. The
work folder (frames-only dataset, training run) is deleted at the end, also on error or Ctrl-C."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pose2rgbd.convert.core import ConvertConfig
from pose2rgbd.convert.scale import ScaleConfig
from pose2rgbd.convert.video import convert_video
from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
from pose2rgbd.methods.selfsup_depth.export import ExportResult, export_depth
from pose2rgbd.output_guard import DATASET, check_output
from pose2rgbd.training.config import TrainConfig
from pose2rgbd.training.train import train

log = logging.getLogger(__name__)


def convert_video_with_depth(
    video: str | Path,
    gps_log: str | Path,
    out: str | Path,
    cfg: ConvertConfig | None = None,
    *,
    model_cfg: SelfSupDepthConfig | None = None,
    train_cfg: TrainConfig | None = None,
    minutes: float = 20.0,
    scale_cfg: ScaleConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **convert_kw: Any,
) -> ExportResult:
    """Convert, train depth on the flight for ``minutes`` (unless ``train_cfg`` sets the budget), export."""
    out = Path(out)
    inputs = [video, gps_log, convert_kw.get("attitude")]
    check_output(out, DATASET, inputs=inputs, overwrite=overwrite)
    work = out.parent / f".{out.name}.selfsup-work-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    try:
        frames_ds = convert_video(video, gps_log, work / "frames", cfg, progress=progress, **convert_kw)
        tc = train_cfg or TrainConfig(epochs=1000, max_minutes=minutes, val_every=0, progress=progress,
                                      tensorboard=False)  # fmt: skip
        res = train("selfsup-depth", frames_ds, work / "run", model_cfg or SelfSupDepthConfig(), tc)
        log.info("depth trained: %d steps in %.1f min", res.steps, res.elapsed_s / 60)
        return export_depth(frames_ds, res.last, out, gps="on", scale_cfg=scale_cfg, overwrite=overwrite,
                            progress=progress, inputs=tuple(p for p in inputs if p is not None))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
