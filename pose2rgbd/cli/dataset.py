"""``pose2rgbd dataset``: inspect, validate and cache format-v1 datasets."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pose2rgbd.dataset import Dataset

# the cache size without --size: the model.size `train` trains at by default (its default method, pose2rgbd;
# Pose2RGBDConfig.size, which imports torch, so it is not read here: test_cli_commands checks the two agree)
DEFAULT_CACHE_SIZE = 128


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
    cache.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"square output size in pixels: the size the model trains at (`train --size`); default "
        f"{DEFAULT_CACHE_SIZE}, what `train` uses by default (method pose2rgbd, model.size {DEFAULT_CACHE_SIZE})",
    )
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
    depth_values, sample_bad = _depth_values(ds)
    if check is None:
        sample_bad = _first_image_problem(ds) or sample_bad
    if check is None and sample_bad:  # what the shallow check read disagrees with the manifest
        verdict = (
            f"INVALID: {sample_bad} (found in a sample: the first image and the depth maps of "
            f"{_sampled(ds)} frame(s); --deep reads every image and depth map and lists each bad one)"
        )
    elif check is None:
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
    if ds.frames.torn_row:
        torn = ds.frames.torn_row
        shown = torn if len(torn) <= 40 else torn[:37] + "..."
        print(
            f"  note         frames.csv ends in a torn row (cut mid-line, no line end: {shown!r}), ignored: a "
            f"recording stopped while writing it; the {s.frames} full rows before it are the dataset"
        )
    for line in _merge_lines(ds):
        print(line)
    print(f"  camera       {s.width}x{s.height} fx={s.fx:.1f} fy={s.fy:.1f}")
    for c in ds.manifest.source_cameras:
        lens = f"{c['model']} {', '.join(f'{v:.4g}' for v in c['distortion'])}" if c.get("distortion") else "pinhole"
        print(f"  source lens  {c['width']}x{c['height']} fx={c['fx']:.1f} {lens}: the images were undistorted from it")
    print(f"  depth        {s.depth_kind}{depth_values}")
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
            "file(s) sit at a 16-bit sensor's maximum code (65535) over the depth scale, in depth maps of whole "
            f"codes (imported from 16-bit depth): a saturated / 'no return' value imported as a distance. "
            f"{_saturation_advice(ds)}"
        )
    if check is not None and check.bad:
        for rel, why in check.bad:
            print(f"  bad file     {rel}: {why}")
        return 1
    return 1 if check is None and sample_bad else 0


def _saturation_advice(ds: Dataset) -> str:
    """What to do about 16-bit maximum codes kept as distances, for how the dataset was made: only `convert
    images` reads 16-bit depth images with a choice of codes (--depth-invalid-codes); `convert bag` and `record bag`
    always read a 16UC1 image's 0 and 65535 as invalid, and other sources give float depth."""
    di = (ds.manifest.extra.get("conversion") or {}).get("depth_import")
    if isinstance(di, dict):
        used = ",".join(di.get("invalid_codes") or []) or "none"
        return (
            f"`pose2rgbd convert images` imported it with --depth-invalid-codes {used}: import the source again "
            "with the default (zero,max: 0 and 65535 invalid), or set these pixels to NaN in depth/*.npy"
        )
    return (
        "Set these pixels to NaN (invalid) in depth/*.npy, or write the depth maps again with that code read as "
        "invalid: this dataset records no `convert images` depth import (the one pose2rgbd import that can keep the "
        "code), and `convert bag` / `record bag` always read a 16-bit depth image's 65535 as invalid, so another "
        "tool wrote or changed these maps"
    )


def _sampled(ds: Dataset, frames: int = 16) -> int:
    """How many frames the shallow `dataset info` reads the depth of (:func:`_depth_values`)."""
    return min(frames, len(ds)) if ds.has_depth else 0


def _first_image_problem(ds: Dataset) -> str:
    """Why the first image cannot be read as the manifest describes it (another size, not 8-bit, damaged), as
    ``rel: reason``; "" when it can (or the dataset has no frames)."""
    from pose2rgbd.errors import DatasetError

    if not len(ds):
        return ""
    try:
        ds.read_rgb(0)
    except DatasetError as e:
        return _bad_file(ds, ds.frames.rgb[0], e)
    return ""


def _bad_file(ds: Dataset, rel: str, e: Exception) -> str:
    """``rel: reason`` of a file a read refused (the reason without the file's full path)."""
    msg, full = str(e), f"{ds.path / rel}: "
    return f"{rel}: {msg[len(full) :] if msg.startswith(full) else msg}"


def _depth_values(ds: Dataset, frames: int = 16) -> tuple[str, str]:
    """``(text, bad)``: text ``: p5 / median / p95 of the valid depth`` of up to ``frames`` frames spread over the
    dataset (a wrong depth scale shows as metres off by 10x or 1000x), "" without depth; ``bad``: ``rel: reason`` of
    a sampled depth map that cannot be read as the manifest describes it, "" when all can."""
    import numpy as np

    if not ds.has_depth or not len(ds):
        return "", ""
    pick = np.unique(np.linspace(0, len(ds) - 1, _sampled(ds, frames)).round().astype(int))
    from pose2rgbd.errors import DatasetError

    step = max(1, round((ds.camera.width * ds.camera.height / 65536) ** 0.5))  # about 64k pixels per frame
    parts = []
    for i in pick:
        try:
            parts.append(ds.read_depth(int(i))[::step, ::step].ravel())
        except DatasetError as e:  # a damaged file: --deep lists every bad one
            bad = _bad_file(ds, ds.frames.depth[int(i)], e)
            return f" (depth values not read: {bad})", bad
    d = np.concatenate(parts)
    d = d[np.isfinite(d) & (d > 0)]
    if not d.size:
        return f": no valid depth in {len(pick)} frames sampled", ""
    unit = " m" if ds.manifest.depth_kind == "metric" else ""
    p5, p50, p95 = (float(v) for v in np.percentile(d, [5, 50, 95]))
    return f", values p5 {p5:.3g} / median {p50:.3g} / p95 {p95:.3g}{unit} ({len(pick)} frames sampled)", ""


def extent_line(extent: Any, units: str) -> str:
    """The summary line of the box around the camera positions, in the units the poses have: metres, or the
    source's own when the poses are unscaled (structure from motion without a scale)."""
    ex, ey, ez = (float(v) for v in extent)
    label = "extent (m)  " if units == "m" else "extent      "
    note = {"m": "", "unscaled": " (the poses' own units, not metres: unscaled)"}.get(units, f" (units {units})")
    return f"  {label} x {ex:.1f}  y {ey:.1f}  z {ez:.1f}{note}"


def _cache(args: argparse.Namespace) -> int:
    import sys

    from pose2rgbd.dataset import Dataset, build_cache

    ds = Dataset(args.path)
    size = args.size
    if size is None:  # say which size, and why: a cache at another size than the model's is never used
        size = DEFAULT_CACHE_SIZE
        cam = ds.camera
        how = "resized to it"
        if (cam.width, cam.height) == (size, size):
            how = "that size already"
        elif max(cam.width, cam.height) < size:
            how = "upscaled to it"
        elif min(cam.width, cam.height) > size:
            how = "downscaled to it"
        print(
            f"dataset cache: no --size: the cache is {size}x{size}, the size `pose2rgbd train` trains at by default "
            f"(method pose2rgbd, model.size {size}); the dataset's {cam.width}x{cam.height} images are {how}. Give "
            "--size the size your model trains at (`train --size`; --method hybrid: 64 by default)",
            file=sys.stderr,
        )
    c = build_cache(ds, size, cache_root=args.cache_root, deep=args.deep)
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
