"""What the structure localizer reads of a map (:class:`StructureMap`). The 2-D/3-D correspondences of a query
against its candidate keyframes are the map layer's answer: :class:`~pose2rgbd.placemap.features.CandidateMatcher`
(re-exported here with its :class:`~pose2rgbd.placemap.features.Correspondences`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.placemap.features import CandidateMatcher as CandidateMatcher
from pose2rgbd.placemap.features import Correspondences as Correspondences
from pose2rgbd.placemap.features import KeyframeFeatureSource
from pose2rgbd.placemap.place import GlobalDescriber


class StructureMap(KeyframeFeatureSource, Protocol):
    """What the structure localizer reads of a map (a :class:`~pose2rgbd.placemap.PlaceMap`, or the build's in-memory
    :class:`~pose2rgbd.placemap.view.MapView`; mypy checks both where they are handed to the localizer): the pose index,
    per-keyframe intrinsics, the global descriptors with the describer that makes a query's, local features, and
    the manifest (empty for a map in memory) with the map's own calibration and source cameras."""

    T_world_cam: np.ndarray  # (N, 4, 4)
    poses: PoseSet  # the nearest-keyframe index
    global_desc: np.ndarray  # (N, D) float32
    describer: GlobalDescriber

    def __len__(self) -> int: ...

    @property
    def image_hw(self) -> tuple[int, int]: ...

    @property
    def world_frame(self) -> str: ...

    @property
    def positions(self) -> np.ndarray: ...  # (N, 3)

    @property
    def path(self) -> Path | None: ...  # None: a map in memory

    @property
    def manifest(self) -> Mapping[str, Any]: ...  # map.json (JSON); empty for a map in memory

    def camera(self, i: int = 0) -> PinholeCamera: ...
