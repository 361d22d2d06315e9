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
    from pose2rgbd.dataset.summary import summarize_dataset

    s = summarize_dataset(args.path)
    ex, ey, ez = s.extent_m
    print(f"{s.path}: pose2rgbd dataset v1, valid")
    print(f"  name         {s.name}")
    print(f"  frames       {s.frames} over {s.duration_s:.1f} s, {s.sources} source(s)")
    print(f"  camera       {s.width}x{s.height} fx={s.fx:.1f} fy={s.fy:.1f}")
    print(f"  depth        {s.depth_kind}")
    print(f"  extent (m)   x {ex:.1f}  y {ey:.1f}  z {ez:.1f}")
    print(f"  fingerprint  {s.fingerprint}")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from pose2rgbd.dataset import build_cache

    c = build_cache(args.path, args.size)
    print(c.path)
    return 0
