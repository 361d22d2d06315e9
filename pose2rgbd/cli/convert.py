"""``pose2rgbd convert``: rosbag or video + GPS log -> dataset, with Algorithm 1 time synchronization."""

from __future__ import annotations

import argparse
from pathlib import Path

from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args
from pose2rgbd.convert.logs import GPS_FORMATS

# Shared with `record bag` (pose2rgbd/cli/record.py): --datum, --size, --mount, --mount-rpy, --mount-xyz and the
# --*-topic spellings, setting the same keys (datum, size, mount.*, topics.*).
COMMON_ALIASES = (
    Alias("--datum", "datum", metavar="LAT,LON,ALT"),
    Alias("--size", "size", metavar="WIDTHxHEIGHT"),
    Alias("--mount", "mount.source", choices=("auto", "tf_static", "config")),
    Alias("--mount-rpy", "mount.rpy_deg", metavar="R,P,Y"),
    Alias("--mount-xyz", "mount.translation", metavar="X,Y,Z"),
    Alias("--time-offset", "time_offset_s"),
    Alias("--no-estimate", "estimate_offset", const=False, help="do not estimate the offset; use --time-offset or 0"),
    Alias("--max-lag", "sync.max_lag_s"),
    Alias("--max-speed", "max_speed_mps"),
    Alias("--orientation", "orientation", choices=("auto", "imu", "odom", "tf", "attitude", "course")),
    Alias("--hfov", "hfov_deg"),
    Alias("--jpg", "output.rgb_encoding", const="jpg", help="store images as JPEG instead of PNG"),
)
BAG_ALIASES = (
    *COMMON_ALIASES,
    Alias("--image-topic", "topics.image"),
    Alias(("--camera-info-topic", "--info-topic"), "topics.camera_info"),
    Alias("--gps-topic", "topics.gps"),
    Alias("--odom-topic", "topics.odom"),
    Alias("--imu-topic", "topics.imu"),
    Alias("--depth-topic", "topics.depth"),
)
GPS_ODOM_ALIASES = (Alias("--max-lag", "sync.max_lag_s"),)
CONFIG_HELP = "YAML with ConvertConfig keys (plain nested, or a ROS 2 params file); flags and --set override it"


def _schema() -> Schema:
    from pose2rgbd.convert.core import ConvertConfig

    return Schema(ConvertConfig)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output dataset directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("convert", help="rosbag or video + GPS -> dataset (with time synchronization)")
    csub = p.add_subparsers(dest="convert_command", metavar="<input>", required=True)
    b = csub.add_parser(
        "bag",
        help="ROS 1 / rosbag2 (sqlite3, mcap) bag -> dataset",
        description="Converts a recording whose camera and GPS clocks may differ: the GPS time offset is estimated "
        "from optical flow vs GPS speed (Algorithm 1, docs/convert.md). For topics already synchronized on one "
        "clock, `pose2rgbd record bag` runs the record node (the same as online).",
        allow_abbrev=False,
    )
    b.add_argument("bag", type=Path)
    _common(b)
    add_config_flags(b, _schema, BAG_ALIASES, config_help=CONFIG_HELP)
    b.set_defaults(func=_bag)
    v = csub.add_parser("video", help="video file + GPS log (csv, gpx, gopro-gps5, karma) -> dataset",
                        allow_abbrev=False)  # fmt: skip
    v.add_argument("video", type=Path)
    v.add_argument("--gps", type=Path, help="GPS log (required unless --depth selfsup: then the video-only path)")
    v.add_argument("--gps-format", default="csv", choices=GPS_FORMATS, help="GPS log format (docs/convert.md)")
    v.add_argument("--video-start-utc", help="GPX only: UTC time of the first frame (ISO 8601); default: first point")
    v.add_argument("--attitude", type=Path, help="attitude log time_s,roll,pitch,yaw (or the karma ATTITUDE csv)")
    v.add_argument("--attitude-degrees", action="store_true", help="attitude angles are in degrees")
    v.add_argument("--depth", choices=("none", "selfsup"), default="none",
                   help="selfsup: train self-supervised depth on the flight and write it scaled to metres from the GPS "
                   "(Algorithm 2; `pose2rgbd depth train|export` for the steps one by one)")  # fmt: skip
    v.add_argument("--depth-minutes", type=float, default=20.0, help="--depth selfsup: training time budget, minutes")
    _common(v)
    add_config_flags(v, _schema, COMMON_ALIASES, config_help=CONFIG_HELP)
    v.set_defaults(func=_video)
    s = csub.add_parser("gps-odom", help="align GPS to wheel odometry in a camera-less bag; write a report",
                        allow_abbrev=False)  # fmt: skip
    s.add_argument("bag", type=Path)
    s.add_argument("--report", type=Path, required=True, help="directory for sync.png, track.png, summary.json")
    add_config_flags(s, _schema, GPS_ODOM_ALIASES, config_help=CONFIG_HELP)
    s.set_defaults(func=_gps_odom)


def _print_result(out: Path) -> None:
    import json

    s = json.loads((out / "report" / "summary.json").read_text())
    to = s["time_offset"]
    print(f"{out}: {s['frames']['kept']}/{s['frames']['total']} frames kept; time offset {to['offset_s']:+.3f} s "
          f"({to['source']})")  # fmt: skip
    est = to.get("estimator")
    if est and est["verdict"] != "ok":
        print("  WARNING: the flow/speed signal was too weak to estimate the offset: " + "; ".join(est["reasons"]))
    print(f"  report: {out / 'report'}")


def _bag(args: argparse.Namespace) -> int:
    from pose2rgbd.convert.bag import convert_bag

    cfg = config_from_args(args)
    out = convert_bag(args.bag, args.out, cfg, overwrite=args.overwrite, progress=not args.no_progress)
    _print_result(out)
    return 0


def _video(args: argparse.Namespace) -> int:
    from pose2rgbd.convert.video import convert_video

    if args.gps is None and args.depth != "selfsup":
        from pose2rgbd.errors import ConfigError

        raise ConfigError("convert video needs --gps LOG (or --depth selfsup for video-only pseudo-absolute poses)")
    if args.depth == "selfsup":
        import sys

        from pose2rgbd.cli.depth import print_export
        from pose2rgbd.methods.selfsup_depth.pipeline import convert_video_with_depth

        res = convert_video_with_depth(
            args.video, args.gps, args.out, config_from_args(args), minutes=args.depth_minutes,
            overwrite=args.overwrite, progress=not args.no_progress and sys.stderr.isatty(),
            gps_format=args.gps_format, attitude=args.attitude, attitude_degrees=args.attitude_degrees,
            video_start_utc=args.video_start_utc,
        )  # fmt: skip
        print_export(res)
        return 0

    out = convert_video(
        args.video, args.gps, args.out, config_from_args(args), gps_format=args.gps_format, attitude=args.attitude,
        attitude_degrees=args.attitude_degrees, video_start_utc=args.video_start_utc, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    _print_result(out)
    return 0


def _gps_odom(args: argparse.Namespace) -> int:
    from pose2rgbd.convert.bag import align_gps_to_odometry

    a = align_gps_to_odometry(args.bag, config_from_args(args), report_dir=args.report)
    print(f"{args.bag}: {a.result.describe()}")
    print(f"  report: {args.report}")
    return 0
