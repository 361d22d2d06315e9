"""``pose2rgbd bag``: inspect ROS 1 / rosbag2 recordings without ROS."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bag", help="inspect a ROS 1 bag / rosbag2 recording (sqlite3, mcap, zstd)")
    bsub = p.add_subparsers(dest="bag_command", metavar="<action>", required=True)
    info = bsub.add_parser("info", help="storage, duration and per-topic type, count and rate")
    info.add_argument("path", type=Path, help=".bag file, rosbag2 directory, or .mcap/.db3 file")
    info.add_argument("--no-scan", action="store_true", help="skip reading messages (no per-topic rates)")
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from pose2rgbd.bags import open_bag

    with open_bag(args.path) as bag:
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        if not args.no_scan:
            readable = [t.name for t in bag.topics.values() if t.count]
            for topic, stamp, _mt, _data in bag.raw_messages(readable):
                first.setdefault(topic, stamp)
                last[topic] = stamp
        dur = bag.duration_ns / 1e9
        start = (
            datetime.fromtimestamp(bag.start_ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")
            if bag.message_count
            else "-"
        )
        print(f"{bag.path}")
        print(f"  storage   {bag.storage}")
        print(f"  start     {start} ({bag.start_ns} ns)")
        print(f"  duration  {dur:.3f} s")
        print(f"  messages  {bag.message_count} on {len(bag.topics)} topic(s)")
        if not bag.topics:
            return 0
        wn = max(len(t) for t in bag.topics)
        wt = max(len(t.msgtype) for t in bag.topics.values())
        for t in bag.topics.values():
            rate = ""
            if t.name in first and t.count > 1 and last[t.name] > first[t.name]:
                rate = f"{(t.count - 1) / ((last[t.name] - first[t.name]) / 1e9):9.2f} Hz"
            note = f"  [cannot decode: {t.error[:120]}]" if t.error else ""
            print(f"  {t.name:<{wn}}  {t.msgtype:<{wt}}  {t.count:>8}  {rate:>12}{note}")
    return 0
