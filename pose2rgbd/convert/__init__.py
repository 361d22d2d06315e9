"""Recordings -> format-v1 datasets (docs/convert.md, docs/byod.md).

One pipeline, :func:`pose2rgbd.convert.pipeline.convert` (plan -> write -> report; the output check, atomic
writing and ``report/`` for every input), fed by one source per kind of input (:mod:`.sources`), listed in
:data:`SOURCES`; the stages are in :mod:`.stages` (Algorithm 1: the time offset and the frame poses; Algorithm 2:
frames -> metric poses -> depth training -> depth export, chained by :mod:`.video_depth`). Readers of GPS / attitude
logs (:mod:`.gps_logs`), GoPro telemetry (:mod:`.gopro`) and posed-image formats (:mod:`.posed_images`) serve the
sources; :mod:`.gps_odom` aligns GPS to wheel odometry in a camera-less bag (a report, no dataset).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pose2rgbd.convert.config import ConvertConfig

if TYPE_CHECKING:
    from pose2rgbd.convert.pipeline import Source

# A source class: its constructor's arguments differ from source to source (a bag path, a video and a GPS log, ...),
# what it makes keeps the Source contract; mypy checks each entry below against it.
SourceClass = Callable[..., "Source"]

# Each source is imported when used (a function per entry), so the CLI's start-up does not load OpenCV, rosbags or
# torch for a source it does not use; the function names the class, so a reader and mypy can follow it.


def _bag() -> SourceClass:
    from pose2rgbd.convert.sources.bag import BagSource

    return BagSource


def _video() -> SourceClass:
    from pose2rgbd.convert.sources.video import VideoSource

    return VideoSource


def _video_frames() -> SourceClass:
    from pose2rgbd.convert.sources.video import VideoFramesSource

    return VideoFramesSource


def _images() -> SourceClass:
    from pose2rgbd.convert.sources.images import PosedImagesSource

    return PosedImagesSource


def _selfsup_depth() -> SourceClass:
    from pose2rgbd.convert.stages.depth_export import DepthSource

    return DepthSource


# what can become a dataset: name -> the class keeping the Source contract (pose2rgbd.convert.pipeline)
SOURCES: dict[str, Callable[[], SourceClass]] = {
    "bag": _bag,
    "video": _video,
    "video-frames": _video_frames,
    "images": _images,
    "selfsup-depth": _selfsup_depth,
}


def source_class(name: str) -> SourceClass:
    """The source class registered as ``name`` in :data:`SOURCES`."""
    from pose2rgbd.errors import ConfigError

    if name not in SOURCES:
        raise ConfigError(f"no conversion source {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]()


__all__ = ["SOURCES", "ConvertConfig", "source_class"]
