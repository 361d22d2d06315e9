"""The plan and report steps of every source whose camera and GPS clocks differ (a rosbag, a video + GPS log):
pass 1 reads :class:`~pose2rgbd.convert.stages.time_offset.Streams`, the time-offset stage (Algorithm 1) makes
the frame poses, the report draws the synchronization and the camera path."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pose2rgbd.config import size_warning
from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.pipeline import DatasetPlan, Frame, SourceBase
from pose2rgbd.convert.stages.time_offset import PosePlan, Streams, plan_poses
from pose2rgbd.dataset import Manifest


class ClockOffsetSource(SourceBase):
    """Base of the sources whose camera and GPS clocks differ (Algorithm 1 finds the offset): a subclass reads
    the streams (:meth:`read`) and the kept frames (:meth:`kept_frames`); this class plans, builds the manifest and
    reports."""

    def __init__(self, path: str | Path, cfg: ConvertConfig | None = None) -> None:
        self.path = Path(path)
        self.cfg = cfg or ConvertConfig()
        self.streams: Streams | None = None
        self._inputs = [self.path]

    def read(self, *, progress: bool) -> Streams:
        """Pass 1: frame stamps, optical flow, GPS, camera, mount, orientation source."""
        raise NotImplementedError

    def kept_frames(self, keep: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Pass 2: ``(frame index, rgb, depth or None)`` of the frames where ``keep`` is true, in order."""
        raise NotImplementedError

    def plan(self, *, progress: bool) -> DatasetPlan:
        s = self.streams = self.read(progress=progress)
        pose = plan_poses(s, self.cfg)
        wh = self.cfg.size_wh()
        doubt = size_warning(wh, s.camera.width, s.camera.height)
        if doubt:  # under the source's own module (convert.sources.bag, .video), as convert images and video say it
            logging.getLogger(type(self).__module__).warning(doubt)
        keep = np.flatnonzero(pose.keep)
        summary = pose.summary
        if s.lens is not None:
            summary["lens"] = s.lens
        man = Manifest(
            name=self.cfg.output.name or Path(s.input_path).stem,
            camera=s.camera if wh is None else s.camera.scaled(*wh),
            depth_kind="metric" if s.has_depth else "none",
            rgb_encoding=self.cfg.output.rgb_encoding,
            datum=pose.datum,
            sources=[{"id": 0, "kind": s.input_kind, "name": Path(s.input_path).name}],
            source_cameras=list(s.source_cameras),
            **({"camera_frame": s.camera_frame} if s.camera_frame else {}),  # a bag's images' frame id
            pose_error=dict(s.pose_error),  # the poses are the GPS's: off the true ones by its error
            # the same dicts as the summary's: what the write step adds to "frames" is in both
            extra={"conversion": {k: summary[k] for k in ("time_offset", "frames", "fixes", "assumptions")}},
        )
        stamps = s.t0_ns + np.round(s.frame_t[keep] * 1e9).astype(np.int64)
        return DatasetPlan(man, stamps, pose.T_world_cam[keep], summary, lla=pose.lla[keep], detail=pose,
                           resize=wh is not None)  # fmt: skip

    def frames(self, plan: DatasetPlan) -> Iterator[Frame]:
        pose: PosePlan = plan.detail
        slot = np.cumsum(pose.keep) - 1  # frame index -> its row in the plan's arrays
        for i, rgb, depth in self.kept_frames(pose.keep):
            yield Frame(int(slot[i]), rgb, depth, f"frame {i}")

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        from pose2rgbd.convert.report import write_report

        assert self.streams is not None
        write_report(folder, self.streams, plan.detail)
