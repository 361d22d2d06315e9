"""Dataset format v1 (docs/dataset-format.md), its training cache, and (lazily) the torch Dataset."""

from pose2rgbd.dataset.cache import TrainingCache, build_cache, load_cache
from pose2rgbd.dataset.format import (
    DEPTH_KINDS,
    FORMAT_VERSION,
    FRAME_COLUMNS,
    Dataset,
    Frames,
    Manifest,
)
from pose2rgbd.dataset.writer import DatasetWriter

__all__ = [
    "DEPTH_KINDS",
    "FORMAT_VERSION",
    "FRAME_COLUMNS",
    "Dataset",
    "DatasetWriter",
    "Frames",
    "Manifest",
    "TrainingCache",
    "build_cache",
    "load_cache",
]
