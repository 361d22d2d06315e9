"""``pose2rgbd dataset``: inspect, validate and cache format-v1 datasets."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pose2rgbd.dataset import Dataset


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dataset", help="inspect / validate / cache a dataset (format v1)")
    dsub = p.add_subparsers(dest="dataset_command", metavar="<action>", required=True)
    info = dsub.add_parser(
        "info",
        help="validate a dataset and print a summary",
        description="Validate a dataset (manifest, frames.csv, every listed file exists) and print a summary. "
        "--deep also reads every image and depth map and lists each bad one (exit 1 if any).",
    )
    info.add_argument("path", type=Path)
    info.add_argument(
        "--deep",
        action="store_true",
        help="read every image and depth file (decodes, 8-bit, camera size, depth float32 HxW) and "
        "report each bad file; costs a full read of the dataset",
    )
    info.add_argument("--no-progress", action="store_true", help="no progress bar for --deep")
    info.set_defaults(func=_info)
    cache = dsub.add_parser("cache", help="build (or reuse) the training cache at a resolution")
    cache.add_argument("path", type=Path)
    cache.add_argument("--size", type=int, default=128, help="square output size in pixels")
    cache.add_argument("--cache-root", type=Path, help="where training caches live (default DATASET/cache)")
    cache.add_argument(
        "--deep",
        action="store_true",
        help="reuse an existing cache only if the content (SHA-256) of every image and depth file is unchanged; "
        "by default their size and modification time are compared",
    )
    cache.set_defaults(func=_cache)
    merge = dsub.add_parser(
        "merge",
        help="join datasets of one place (several flights) into one training dataset",
        description="Join datasets of one place -- flights or recordings converted one by one -- into one dataset "
        "that a model trains on. They must share the camera, depth kind and image codec; the first one's world "
        "frame is the merged one's, and a dataset with a GPS datum in another frame (converted with its own datum, "
        "its first fix by default) has its poses moved into it through the GPS. Each dataset's sources are numbered "
        "apart (`train --split blocks` trains on every flight, holding out time blocks of each); a view an earlier "
        "dataset holds already is kept once. Images and depth are hard-linked (copied across file systems), not "
        'encoded again; the result appears whole or not at all. docs/dataset-format.md, "Merging datasets".',
    )
    merge.add_argument("datasets", type=Path, nargs="+", metavar="DATASET", help="two datasets or more")
    merge.add_argument("--out", type=Path, required=True, help="the merged dataset's folder (a new one)")
    merge.add_argument("--overwrite", action="store_true", help="replace an earlier dataset at --out")
    merge.add_argument(
        "--same-frame",
        action="store_true",
        help="datasets without a GPS datum share one world frame (motion capture of one room, one SLAM map): "
        "their poses are kept as they are; without it such datasets are refused",
    )
    merge.add_argument("--name", default="", help="the merged dataset's name (default: 'merged from N datasets')")
    merge.add_argument("--no-progress", action="store_true", help="no progress bar")
    merge.set_defaults(func=_merge)


def _info(args: argparse.Namespace) -> int:
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.summary import import_pose_check, summarize_dataset

    ds = Dataset(args.path)
    s = summarize_dataset(ds)
    check = ds.verify_files(progress=not args.no_progress) if args.deep else None
    if check is None:
        verdict = "valid (files present; --deep reads every image and depth map)"
    elif check.ok:
        verdict = f"valid (all {check.frames_checked} frames' files read)"
    else:
        verdict = f"INVALID: {len(check.bad)} bad file(s)"
    print(f"{s.path}: pose2rgbd dataset v1, {verdict}")
    print(f"  name         {s.name}")
    apart = ""
    if s.sources > 1 and s.within_sources_s < 0.5 * s.duration_s:  # flights hours apart: the span says little
        apart = f" ({s.within_sources_s:.1f} s within its sources: they lie apart in time)"
    print(f"  frames       {s.frames} over {s.duration_s:.1f} s, {s.sources} source(s){apart}")
    for line in _merge_lines(ds):
        print(line)
    print(f"  camera       {s.width}x{s.height} fx={s.fx:.1f} fy={s.fy:.1f}")
    for c in ds.manifest.source_cameras:
        lens = f"{c['model']} {', '.join(f'{v:.4g}' for v in c['distortion'])}" if c.get("distortion") else "pinhole"
        print(f"  source lens  {c['width']}x{c['height']} fx={c['fx']:.1f} {lens}: the images were undistorted from it")
    print(f"  depth        {s.depth_kind}{_depth_values(ds)}")
    print(extent_line(s.extent_m, ds.manifest.resolved_pose_units))
    print(f"  fingerprint  {s.fingerprint}")
    if check is not None and check.negative_depth_pixels:
        print(
            f"  depth < 0    {check.negative_depth_pixels} pixel(s) in {check.negative_depth_files} file(s), "
            "read as invalid (NaN)"
        )
    from pose2rgbd.convert.posed_images.depth import depth_import_lines

    for line in depth_import_lines((ds.manifest.extra.get("conversion") or {}).get("depth_import")):
        print(f"  import       {line}")
    found = import_pose_check(ds)
    if found is not None:  # convert images checked the poses when it imported them
        verdict, mistakes = found
        print(f"  pose check   {verdict.upper()} at import" + (f" ({ds.path / 'report'})" if mistakes else ""))
        for m in mistakes:
            print(f"  WARNING      {m}")
    if check is not None and check.saturated_depth_pixels:
        vals = ", ".join(f"{v:g}" for v in check.saturated_depth_values)
        print(
            f"  WARNING      depth = {vals}: {check.saturated_depth_pixels} pixel(s) in {check.saturated_depth_files} "
            "file(s) sit at a 16-bit sensor's maximum code (65535) over a usual depth scale: a saturated / "
            "'no return' value imported as a distance. Import the source again (16-bit codes are invalid by "
            "default: --depth-invalid-codes), or set them to NaN"
        )
    if check is not None and check.bad:
        for rel, why in check.bad:
            print(f"  bad file     {rel}: {why}")
        return 1
    return 0


def _depth_values(ds: Dataset, frames: int = 16) -> str:
    """``: p5 / median / p95 of the valid depth`` of up to ``frames`` frames spread over the dataset (a wrong depth
    scale shows as metres off by 10x or 1000x), or "" without depth."""
    import numpy as np

    if not ds.has_depth or not len(ds):
        return ""
    pick = np.unique(np.linspace(0, len(ds) - 1, min(frames, len(ds))).round().astype(int))
    from pose2rgbd.errors import DatasetError

    try:
        step = max(1, round((ds.camera.width * ds.camera.height / 65536) ** 0.5))  # about 64k pixels per frame
        d = np.concatenate([ds.read_depth(int(i))[::step, ::step].ravel() for i in pick])
    except DatasetError as e:  # a damaged file: --deep lists every bad one
        return f" (depth values not read: {e})"
    d = d[np.isfinite(d) & (d > 0)]
    if not d.size:
        return f": no valid depth in {len(pick)} frames sampled"
    unit = " m" if ds.manifest.depth_kind == "metric" else ""
    p5, p50, p95 = (float(v) for v in np.percentile(d, [5, 50, 95]))
    return f", values p5 {p5:.3g} / median {p50:.3g} / p95 {p95:.3g}{unit} ({len(pick)} frames sampled)"


def extent_line(extent: Any, units: str) -> str:
    """The summary line of the box around the camera positions, in the units the poses have: metres, or the
    source's own when the poses are unscaled (structure from motion without a scale)."""
    ex, ey, ez = (float(v) for v in extent)
    label = "extent (m)  " if units == "m" else "extent      "
    note = {"m": "", "unscaled": " (the poses' own units, not metres: unscaled)"}.get(units, f" (units {units})")
    return f"  {label} x {ex:.1f}  y {ey:.1f}  z {ez:.1f}{note}"


def _cache(args: argparse.Namespace) -> int:
    from pose2rgbd.dataset import build_cache

    c = build_cache(args.path, args.size, cache_root=args.cache_root, deep=args.deep)
    print(c.path)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from pose2rgbd.dataset.merge import merge_datasets

    r = merge_datasets(args.datasets, args.out, overwrite=args.overwrite, same_frame=args.same_frame,
                       name=args.name, progress=not args.no_progress)  # fmt: skip
    print(f"{r.path}: {r.frames} frames merged from {len(r.inputs)} datasets")
    for d in r.inputs:
        moved = f", poses moved {d.shift_m:.2f} m / {d.turn_deg:.4f} deg" if d.shift_m is not None else ""
        print(f"  {d.path}: {d.kept} of {d.frames} frames{moved}")
    for note in r.notes:
        print(f"  note: {note}")
    print(f"  report: {r.path / 'report' / 'merge.png'} (the flights from above, in one frame)")
    out = shlex.quote(f"runs/{r.path.name}")
    # the hybrid (the best renderer on real data) needs metric depth; without it the default kind, RGB-only
    method = "--method hybrid " if r.depth_kind == "metric" else ""
    print(f"Train on it: `pose2rgbd train {method}--dataset {shlex.quote(str(r.path))} --split blocks --out {out}` "
          "(time blocks of every flight held out; --split route trains on source 0 alone and holds out the others: "
          "how well a model of one flight renders another)")  # fmt: skip
    return 0


def _merge_lines(ds: Dataset) -> list[str]:
    """`dataset info`'s lines of a dataset made by `dataset merge`: each input (frames kept, the move) and each
    source (which input it came from, its frames: source 0 is the one `--split route` trains on)."""
    import numpy as np

    rec = ds.manifest.extra.get("merge")
    if not isinstance(rec, dict):
        return []
    lines = []
    for d in rec.get("datasets") or []:
        moved = d.get("moved") or {}
        how = f", moved {moved['shift_m']:.2f} m / {moved['turn_deg']:.4f} deg into the first's frame" if moved else ""
        lines.append(f"  merged from  {d.get('path')}: {d.get('kept')} of {d.get('frames')} frames{how}")
    counts = dict(zip(*np.unique(ds.frames.source_id, return_counts=True), strict=True))
    for src in ds.manifest.sources:
        sid = int(src["id"])
        name = src.get("name") or src.get("kind") or "?"
        lines.append(f"  source {sid:<5} {name} ({src.get('dataset', '?')}): {counts.get(sid, 0)} frames")
    return lines
