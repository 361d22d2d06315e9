"""Recordings -> format-v1 datasets (docs/convert.md, docs/byod.md).

One pipeline, :func:`pose2rgbd.convert.pipeline.convert` (plan -> write -> report; the output check, atomic
writing and ``report/`` for every input), fed by one source per kind of input (:mod:`.sources`), listed in
:data:`SOURCES`; the stages a source plans with are in :mod:`.stages` (Algorithm 1: the time offset and the frame
poses; Algorithm 2: self-supervised depth scaled to metres). Readers of GPS / attitude logs (:mod:`.logs`), GoPro
telemetry (:mod:`.gopro`) and posed-image formats (:mod:`.posed_images`) serve the sources; :mod:`.gps_odom` aligns
GPS to wheel odometry in a camera-less bag (a report, no dataset).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from pose2rgbd.convert.config import ConvertConfig

# what can become a dataset: name -> "module:class" keeping the Source contract (pose2rgbd.convert.pipeline);
# imported when used, so the CLI's start-up does not load OpenCV, rosbags or torch for a source it does not use
SOURCES = {
    "bag": "pose2rgbd.convert.sources.bag:BagSource",
    "video": "pose2rgbd.convert.sources.video:VideoSource",
    "images": "pose2rgbd.convert.sources.images:PosedImagesSource",
    "selfsup-depth": "pose2rgbd.convert.stages.depth_export:DepthSource",
}


def source_class(name: str) -> Any:
    """The source class registered as ``name`` in :data:`SOURCES`."""
    from pose2rgbd.errors import ConfigError

    if name not in SOURCES:
        raise ConfigError(f"no conversion source {name!r}; known: {sorted(SOURCES)}")
    module, cls = SOURCES[name].split(":")
    return getattr(import_module(module), cls)


__all__ = ["SOURCES", "ConvertConfig", "source_class"]
