"""A format-v1 dataset at a glance (``pose2rgbd dataset info`` prints it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pose2rgbd.dataset.format import Dataset


@dataclass(frozen=True)
class DatasetSummary:
    """``duration_s``: first to last frame stamp; ``extent_m``: size (x, y, z) of the box around the camera
    positions, metres in the world frame; ``sources``: how many distinct source ids the frames carry."""

    path: Path
    name: str
    frames: int
    duration_s: float
    sources: int
    width: int
    height: int
    fx: float
    fy: float
    depth_kind: str
    extent_m: tuple[float, float, float]
    fingerprint: str


def summarize_dataset(dataset: Dataset | str | Path) -> DatasetSummary:
    """Summarize ``dataset`` (opened and validated first when given as a path)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    f = ds.frames
    n = len(f)
    duration = (int(f.stamp_ns[-1]) - int(f.stamp_ns[0])) / 1e9 if n else 0.0
    ext = f.translation.max(0) - f.translation.min(0) if n else np.zeros(3)
    cam = ds.camera
    return DatasetSummary(
        path=ds.path,
        name=ds.manifest.name,
        frames=n,
        duration_s=duration,
        sources=len(np.unique(f.source_id)),
        width=cam.width,
        height=cam.height,
        fx=float(cam.fx),
        fy=float(cam.fy),
        depth_kind=ds.manifest.depth_kind,
        extent_m=(float(ext[0]), float(ext[1]), float(ext[2])),
        fingerprint=ds.fingerprint(),
    )
