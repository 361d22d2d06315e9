"""``pose2rgbd bag``: inspect ROS 1 / rosbag2 recordings without ROS."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bag", help="inspect a ROS 1 bag / rosbag2 recording (sqlite3, mcap, zstd)")
    bsub = p.add_subparsers(dest="bag_command", metavar="<action>", required=True)
    info = bsub.add_parser("info", help="storage, duration and per-topic type, count and rate")
    info.add_argument("path", type=Path, help=".bag file, rosbag2 directory, or .mcap/.db3 file")
    info.add_argument("--no-scan", action="store_true", help="skip reading messages (no per-topic rates)")
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from pose2rgbd.bags.summary import summarize_bag

    s = summarize_bag(args.path, scan=not args.no_scan)
    print(f"{s.path}")
    print(f"  storage   {s.storage}")
    print(f"  start     {s.start_utc or '-'} ({s.start_ns} ns)")
    print(f"  duration  {s.duration_s:.3f} s")
    print(f"  messages  {s.message_count} on {len(s.topics)} topic(s)")
    if not s.topics:
        return 0
    wn = max(len(t.name) for t in s.topics)
    wt = max(len(t.msgtype) for t in s.topics)
    for t in s.topics:
        rate = "" if t.rate_hz is None else f"{t.rate_hz:9.2f} Hz"
        note = f"  [cannot decode: {t.error[:120]}]" if t.error else ""
        print(f"  {t.name:<{wn}}  {t.msgtype:<{wt}}  {t.count:>8}  {rate:>12}{note}")
    return 0
