"""A format-v1 dataset at a glance (``pose2rgbd dataset info`` prints it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pose2rgbd.dataset.format import Dataset


@dataclass(frozen=True)
class DatasetSummary:
    """``duration_s``: first to last frame stamp; ``within_sources_s``: the same within each source, summed (less
    where sources lie apart in time: flights merged into one dataset); ``extent_m``: size (x, y, z) of the box
    around the camera positions, metres in the world frame; ``sources``: how many distinct source ids the frames
    carry."""

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
    within_sources_s: float = 0.0


def summarize_dataset(dataset: Dataset | str | Path) -> DatasetSummary:
    """Summarize ``dataset`` (opened and validated first when given as a path)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    f = ds.frames
    n = len(f)
    duration = (int(f.stamp_ns.max()) - int(f.stamp_ns.min())) / 1e9 if n else 0.0
    within = sum(float(np.ptp(f.stamp_ns[f.source_id == s])) for s in np.unique(f.source_id)) / 1e9
    ext = f.translation.max(0) - f.translation.min(0) if n else np.zeros(3)
    cam = ds.camera
    return DatasetSummary(
        path=ds.path,
        name=ds.manifest.name,
        frames=n,
        duration_s=duration,
        within_sources_s=within,
        sources=len(np.unique(f.source_id)),
        width=cam.width,
        height=cam.height,
        fx=float(cam.fx),
        fy=float(cam.fy),
        depth_kind=ds.manifest.depth_kind,
        extent_m=(float(ext[0]), float(ext[1]), float(ext[2])),
        fingerprint=ds.fingerprint(),
    )


def import_pose_check(ds: Dataset) -> tuple[str, list[str]] | None:
    """What the pose check of the dataset's import found (``convert images``: :mod:`pose2rgbd.convert.pose_check`):
    its verdict (``ok``, ``check``, ``suspect``) and its warnings, the latter from the import's report
    (``report/summary.json``; none where it is gone); None for a dataset no pose check ran on."""
    import json

    verdict = ds.manifest.extra.get("pose_check")
    if not isinstance(verdict, str):
        return None
    mistakes: list[str] = []
    report = ds.path / "report" / "summary.json"
    try:
        pc = json.loads(report.read_text()).get("pose_check") or {}
        mistakes = [str(m) for m in pc.get("mistakes") or []]
    except (OSError, ValueError, AttributeError):
        pass  # the verdict alone: the report was removed or is not the import's
    return verdict, mistakes


def suspect_import_warning(ds: Dataset) -> str | None:
    """A warning for a dataset whose import's pose check found a likely mistake (verdict ``suspect``): what it found
    and what to do, for the commands that build on the poses (``train``, ``map build``); None otherwise."""
    found = import_pose_check(ds)
    if found is None or found[0] != "suspect":
        return None
    first = f": {found[1][0]}" if found[1] else ""
    more = f" (and {len(found[1]) - 1} more)" if len(found[1]) > 1 else ""
    return (
        f"{ds.path}: its import's pose check found a likely mistake in the poses (SUSPECT){first}{more}. Whatever is "
        f"built on these poses inherits it: see {ds.path / 'report'} (poses.png), convert again with the fix, or "
        "check one frame by hand if the check is wrong"
    )
