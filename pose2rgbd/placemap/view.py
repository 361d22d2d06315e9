"""A place map's keyframes held in memory, with the read interface the structure localizer uses
(:class:`~pose2rgbd.placemap.PlaceMap`'s index and ``features(i)``): what ``map build`` hands to its self-calibration
before the map is written, and the leave-out maps made from it (:meth:`MapView.without`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.placemap.features import KeyframeFeatures
from pose2rgbd.placemap.place import GlobalDescriber


@dataclass
class MapView:
    """Keyframes ``(N)``: poses, intrinsics, local features (``offsets`` ``(N + 1,)`` into ``xy``, ``desc``,
    ``xyz``; NaN points allowed), global descriptors and the describer that makes a query's."""

    T_world_cam: np.ndarray  # (N, 4, 4)
    intrinsics: np.ndarray  # (N, 4) fx fy cx cy
    image_hw: tuple[int, int]
    offsets: np.ndarray
    xy: np.ndarray
    desc: np.ndarray
    xyz: np.ndarray
    global_desc: np.ndarray  # (N, D)
    describer: GlobalDescriber
    rot_weight_m: float
    world_frame: str = "map"
    datum: Datum | None = None
    triangulate_neighbours: int = 0  # > 0: the points were triangulated with this many neighbours (see without)
    # keyframe row -> uint8 RGB (the build's dataset); None in a leave-out map
    read_rgb: Callable[[int], np.ndarray] | None = None
    # per keyframe: its flight (source) and time; None when unknown (the self-calibration's windows then take the
    # rows' order as one flight's time order)
    source_id: np.ndarray | None = None
    stamp_ns: np.ndarray | None = None
    # per keyframe: its row in ``offsets`` (a leave-out map reads its parent's features where they are, no copy);
    # None: keyframe i is row i
    feature_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.poses = PoseSet(self.T_world_cam, rot_weight_m=self.rot_weight_m)

    def __len__(self) -> int:
        return len(self.T_world_cam)

    @property
    def positions(self) -> np.ndarray:
        return self.T_world_cam[:, :3, 3]

    @property
    def path(self) -> Path | None:
        """None: the map is in memory, not yet written."""
        return None

    @property
    def manifest(self) -> dict[str, Any]:
        """Empty: the manifest (the map's own calibration, its source cameras) is written after the view is used."""
        return {}

    def camera(self, i: int = 0) -> PinholeCamera:
        h, w = self.image_hw
        return PinholeCamera(w, h, *(float(v) for v in self.intrinsics[i]))

    def features(self, i: int) -> KeyframeFeatures:
        r = int(i) if self.feature_rows is None else int(self.feature_rows[i])
        a, b = int(self.offsets[r]), int(self.offsets[r + 1])
        ok = np.all(np.isfinite(self.xyz[a:b]), axis=1)
        return KeyframeFeatures(self.xy[a:b][ok], self.desc[a:b][ok], self.xyz[a:b][ok])

    def without(self, held: np.ndarray) -> MapView:
        """The map of every keyframe but ``held`` (rows). Its features are this map's own arrays, read through
        :attr:`feature_rows` (a copy of every feature for each leave-out map held 185 MB at 2,161 keyframes, two of
        them while the next was made). When the points were triangulated (:attr:`triangulate_neighbours` > 0) the
        rest's points are triangulated again without the held-out keyframes (a point triangulated with a held-out
        keyframe's observation would know where that keyframe is: its localization would look better than a
        query's): then its features are copied, with their new points."""
        keep = np.setdiff1d(np.arange(len(self)), np.asarray(held, np.int64))
        rows = keep if self.feature_rows is None else self.feature_rows[keep]
        offsets, xy, desc, xyz = self.offsets, self.xy, self.desc, self.xyz
        feature_rows: np.ndarray | None = rows
        if self.triangulate_neighbours > 0:
            from pose2rgbd.placemap.triangulate import triangulate

            counts = self.offsets[rows + 1] - self.offsets[rows]
            parts = [np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]
            sel = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            xy, desc = self.xy[sel], self.desc[sel]
            K = self.camera(int(keep[0])).K
            xyz = triangulate(offsets, xy, desc, self.T_world_cam[keep], K, neighbours=self.triangulate_neighbours,
                              rot_weight_m=self.rot_weight_m)  # fmt: skip
            feature_rows = None
        return MapView(self.T_world_cam[keep], self.intrinsics[keep], self.image_hw, offsets, xy, desc, xyz,
                       self.global_desc[keep], self.describer, self.rot_weight_m, self.world_frame, self.datum,
                       self.triangulate_neighbours, None,
                       None if self.source_id is None else self.source_id[keep],
                       None if self.stamp_ns is None else self.stamp_ns[keep], feature_rows)  # fmt: skip
