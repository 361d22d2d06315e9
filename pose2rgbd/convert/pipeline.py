"""The one conversion pipeline: a :class:`Source` in, a format-v1 dataset out, in three steps.

1. **plan**: the source reads its input (pass 1) and runs its stages -- for a rosbag or a video, the time offset of
   Algorithm 1 and the frame poses (:mod:`pose2rgbd.convert.stages.time_offset`); for posed images, the pose check;
   for a flight's depth, the last stage of Algorithm 2 (:mod:`pose2rgbd.convert.stages.depth_export`: a trained
   model's depth scaled to metres) -- into a :class:`DatasetPlan`: the manifest, the kept frames' stamps and poses,
   the report's summary;
2. **write**: the source yields the kept frames (pass 2); the pipeline drops repeated frames
   (:mod:`pose2rgbd.dataset.repeats`), resizes to the manifest's camera and writes them through an atomic
   :class:`~pose2rgbd.dataset.DatasetWriter`, decoding ahead of writing on a thread;
3. **report**: the source draws its figures into ``report/``; the pipeline adds what it counted and writes
   ``report/summary.json``; the dataset appears at ``out`` only now, whole.

The output check (never an input, ``--overwrite`` only of an earlier dataset) runs once, when the writer opens,
before the long first pass. Every dataset a conversion makes is written here, also those of Algorithm 2's stages
(:mod:`pose2rgbd.convert.stages.depth_chain`: the frames, then the frames with depth). A new kind of input is one
module in :mod:`pose2rgbd.convert.sources` with a class that keeps this contract, plus one line in ``SOURCES``
there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

from pose2rgbd.convert.config import ConvertOutput
from pose2rgbd.dataset import DatasetWriter, Manifest
from pose2rgbd.errors import SyncError
from pose2rgbd.jsonio import json_text
from pose2rgbd.prefetch import prefetch

log = logging.getLogger(__name__)

_S = TypeVar("_S", bound="SourceBase")


class Frame(NamedTuple):
    """One kept frame of pass 2: ``k`` indexes the plan's arrays; ``label`` names it in messages. ``raw``: the image
    as stored, which the repeat check compares (default: ``rgb``); ``depth`` may be a function that reads it, called
    only for a frame that is written."""

    k: int
    rgb: np.ndarray
    depth: np.ndarray | Callable[[], np.ndarray] | None
    label: str
    raw: np.ndarray | None = None


@dataclass
class DatasetPlan:
    """What the write step writes: ``stamps_ns`` / ``T_world_cam`` / ``lla`` of the kept frames, in the order the
    source yields them; ``summary`` becomes ``report/summary.json`` (its ``frames`` dict gets ``written`` and
    ``repeats``); ``detail`` is the source's own record of planning, for its report. ``resize``: frames whose size
    differs from the manifest's camera are resized to it (the user's ``--size``); else such a frame is an error."""

    manifest: Manifest
    stamps_ns: np.ndarray
    T_world_cam: np.ndarray
    summary: dict[str, Any]
    lla: np.ndarray | None = None
    source_id: np.ndarray | None = None
    detail: Any = None
    resize: bool = False

    def __len__(self) -> int:
        return len(self.stamps_ns)


class Source(Protocol):
    """What can become a dataset. A context manager that opens its input once (``__enter__``) and closes it."""

    kind: str  # the manifest's ``sources[].kind`` and the report's ``input.kind``

    def inputs(self) -> list[Path]:
        """Every path it reads: the output may not be, hold or lie inside one."""

    def plan(self, *, progress: bool) -> DatasetPlan:
        """Pass 1 and the stages."""

    def frames(self, plan: DatasetPlan) -> Iterator[Frame]:
        """Pass 2: the kept frames, in order."""

    def report(self, plan: DatasetPlan, folder: Path) -> None:
        """Figures into ``folder`` (``report/``); may add to ``plan.summary`` and ``plan.manifest.extra``."""

    def __enter__(self) -> Source: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class SourceBase:
    """What the sources share: the paths they read in ``self._inputs``, and nothing held open between the passes (a
    source that holds its input open, as the bag does, overrides ``__enter__`` / ``__exit__``)."""

    kind = ""
    _inputs: list[Path]

    def inputs(self) -> list[Path]:
        return self._inputs

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def convert(
    source: Source,
    out: str | Path,
    output: ConvertOutput | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    repeats: bool = True,
) -> Path:
    """plan -> write -> report (see the module docstring); returns the dataset's path. ``repeats=False``: no repeat
    check at all (a stage that rewrites a dataset frame for frame)."""
    from pose2rgbd.dataset.repeats import RepeatFilter
    from pose2rgbd.progress import bar as progress_bar

    output = output or ConvertOutput()
    writer = DatasetWriter(out, None, mode="atomic", overwrite=overwrite, inputs=source.inputs())
    try:
        with source:
            plan = source.plan(progress=progress)
            writer.begin(plan.manifest)
            cam = plan.manifest.camera
            wh = (cam.width, cam.height)
            check = RepeatFilter(keep=output.keep_repeats) if repeats else None
            bar = progress_bar(total=len(plan), desc="writing frames", unit="frame", progress=progress)
            n_read = 0
            for k, rgb, depth, label, raw in prefetch(source.frames(plan), 8, name="pose2rgbd-decode"):
                bar.update(1)
                n_read += 1
                if check is not None and check.drop(rgb if raw is None else raw, label):
                    continue
                if callable(depth):
                    depth = depth()
                if plan.resize:
                    rgb = _resized(rgb, wh, False)
                    depth = None if depth is None else _resized(depth, wh, True)
                writer.add_frame(
                    int(plan.stamps_ns[k]), plan.T_world_cam[k], rgb, depth,
                    latlonalt=None if plan.lla is None else _lla(plan.lla[k]),
                    source_id=0 if plan.source_id is None else int(plan.source_id[k]),
                )  # fmt: skip
            bar.close()
            if n_read != len(plan):
                raise SyncError(f"{source.inputs()[0]}: expected {len(plan)} frames in pass 2, read {n_read}")
            frames = plan.summary.setdefault("frames", {})
            if check is not None:
                if check.repeats:
                    log.warning("%s: %s", source.inputs()[0], check.line())
                frames["repeats"] = check.to_dict()
            frames["written"] = len(writer)
            folder = writer.root / "report"
            folder.mkdir(exist_ok=True)
            source.report(plan, folder)
            dump_json(folder / "summary.json", plan.summary)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def _resized(img: np.ndarray, wh: tuple[int, int], nearest: bool) -> np.ndarray:
    """``img`` at the manifest's size: area-averaged RGB, nearest-neighbour depth (no blend across an edge)."""
    if (img.shape[1], img.shape[0]) == wh:
        return img
    import cv2

    return cv2.resize(img, wh, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _lla(v: np.ndarray) -> tuple[float, float, float] | None:
    return (float(v[0]), float(v[1]), float(v[2])) if np.all(np.isfinite(v)) else None


def dump_json(path: Path, obj: Any) -> None:
    """``obj`` as JSON, NumPy values as plain numbers and non-finite floats as null."""
    path.write_text(json_text(obj))
