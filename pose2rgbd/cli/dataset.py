"""``pose2rgbd dataset``: inspect, validate and cache format-v1 datasets."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dataset", help="inspect / validate / cache a dataset (format v1)")
    dsub = p.add_subparsers(dest="dataset_command", metavar="<action>", required=True)
    info = dsub.add_parser("info", help="validate a dataset and print a summary")
    info.add_argument("path", type=Path)
    info.set_defaults(func=_info)
    cache = dsub.add_parser("cache", help="build (or reuse) the training cache at a resolution")
    cache.add_argument("path", type=Path)
    cache.add_argument("--size", type=int, default=128, help="square output size in pixels")
    cache.set_defaults(func=_cache)


def _info(args: argparse.Namespace) -> int:
    import numpy as np

    from pose2rgbd.dataset import Dataset

    ds = Dataset(args.path)
    f = ds.frames
    dur = (f.stamp_ns[-1] - f.stamp_ns[0]) / 1e9
    ext = f.translation.max(0) - f.translation.min(0)
    print(f"{ds.path}: pose2rgbd dataset v1, valid")
    print(f"  name         {ds.manifest.name}")
    print(f"  frames       {len(ds)} over {dur:.1f} s, {len(np.unique(f.source_id))} source(s)")
    print(f"  camera       {ds.camera.width}x{ds.camera.height} fx={ds.camera.fx:.1f} fy={ds.camera.fy:.1f}")
    print(f"  depth        {ds.manifest.depth_kind}")
    print(f"  extent (m)   x {ext[0]:.1f}  y {ext[1]:.1f}  z {ext[2]:.1f}")
    print(f"  fingerprint  {ds.fingerprint()}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from pose2rgbd.dataset import build_cache

    c = build_cache(args.path, args.size)
    print(c.path)
    return 0
