"""Pass 2 of a conversion: write the kept frames as a dataset plus its report.

Separate from :mod:`.core` (config, streams, pose planning) and :mod:`.report` (plots) so that imports run one
way: core <- report <- output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from pose2rgbd.convert.core import ConvertConfig, Plan, Streams
from pose2rgbd.convert.repeats import RepeatFilter
from pose2rgbd.errors import SyncError
from pose2rgbd.prefetch import prefetch

log = logging.getLogger(__name__)


def write_dataset(
    out: Path,
    s: Streams,
    plan: Plan,
    cfg: ConvertConfig,
    frames: Iterator[tuple[int, np.ndarray, np.ndarray | None]],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    progress: bool = True,
    report_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Pass 2: ``frames`` yields ``(frame_index, rgb, depth|None)`` for kept frames, in order. ``inputs``: the
    files read (the recording; :func:`pose2rgbd.output_guard.check_output` keeps ``out`` away from them)."""
    from pose2rgbd.convert import report
    from pose2rgbd.dataset import DatasetWriter, Manifest
    from pose2rgbd.progress import bar as progress_bar

    wh = cfg.size_wh()
    cam = s.camera if wh is None else s.camera.scaled(*wh)
    man = Manifest(
        name=cfg.output.name or Path(s.input_path).stem,
        camera=cam,
        depth_kind="metric" if s.has_depth else "none",
        rgb_encoding=cfg.output.rgb_encoding,
        datum=plan.datum,
        sources=[{"id": 0, "kind": s.input_kind, "name": Path(s.input_path).name}],
        extra={"conversion": {k: plan.summary[k] for k in ("time_offset", "frames", "fixes", "assumptions")}},
    )
    import cv2

    writer = DatasetWriter(out, man, mode="atomic", overwrite=overwrite, inputs=(s.input_path, *inputs))
    try:
        bar = progress_bar(total=int(plan.keep.sum()), desc="writing frames", unit="frame", progress=progress)
        repeats = RepeatFilter(keep=cfg.output.keep_repeats)
        for i, rgb, depth in prefetch(frames, 8, name="pose2rgbd-decode"):  # decoding ahead of writing
            bar.update(1)
            if repeats.drop(rgb, f"frame {i}"):
                continue
            if wh is not None and (rgb.shape[1], rgb.shape[0]) != wh:
                rgb = cv2.resize(rgb, wh, interpolation=cv2.INTER_AREA)
                if depth is not None:
                    depth = cv2.resize(depth, wh, interpolation=cv2.INTER_NEAREST)
            writer.add_frame(
                int(s.t0_ns + round(s.frame_t[i] * 1e9)), plan.T_world_cam[i], rgb, depth,
                latlonalt=tuple(plan.lla[i]), source_id=0,
            )  # fmt: skip
        bar.close()
        n_read = len(writer) + (0 if repeats.keep else repeats.repeats)
        if n_read != int(plan.keep.sum()):
            raise SyncError(f"{s.input_path}: expected {int(plan.keep.sum())} frames in pass 2, read {n_read}")
        if repeats.repeats:
            log.warning("%s: %s", s.input_path, repeats.line())
        # the manifest's conversion record holds this same dict: it is written at close
        plan.summary["frames"]["repeats"] = repeats.to_dict()
        plan.summary["frames"]["written"] = len(writer)
        rep = writer.root / "report"
        rep.mkdir(exist_ok=True)
        report.write_report(rep, s, plan)
        if report_extra is not None:
            report_extra(rep)
        return writer.close()
    except BaseException:
        writer.abort()
        raise
