"""``pose2rgbd convert``: rosbag or video + GPS log -> dataset, with Algorithm 1 time synchronization."""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output dataset directory (written atomically)")
    p.add_argument("--config", type=Path, help="YAML with ConvertConfig fields (command-line flags win)")
    p.add_argument("--size", help="output image size WxH (intrinsics scaled)")
    p.add_argument("--time-offset", type=float, dest="time_offset",
                   help="GPS offset d in s (fix stamped t measured at camera time t - d): the fallback when the "
                        "estimate is too weak, or THE offset with --no-estimate")  # fmt: skip
    p.add_argument("--no-estimate", action="store_true", help="do not estimate the offset; use --time-offset or 0")
    p.add_argument("--max-lag", type=float, dest="max_lag", help="search offsets within +-S seconds (default 5)")
    p.add_argument("--datum", help="ENU origin lat,lon,alt (default: first valid fix)")
    p.add_argument("--max-speed", type=float, dest="max_speed", help="drop GPS jumps faster than this (m/s)")
    p.add_argument("--orientation", choices=["auto", "imu", "odom", "tf", "attitude", "course"])
    p.add_argument("--mount-rpy", dest="mount_rpy", help="camera mount roll,pitch,yaw in degrees (pitch>0 looks down)")
    p.add_argument("--hfov", type=float, help="assumed horizontal FOV in degrees when there is no CameraInfo")
    p.add_argument("--jpg", action="store_true", help="store images as JPEG instead of PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("convert", help="rosbag or video + GPS -> dataset (with time synchronization)")
    csub = p.add_subparsers(dest="convert_command", metavar="<input>", required=True)
    b = csub.add_parser("bag", help="ROS 1 / rosbag2 (sqlite3, mcap) bag -> dataset")
    b.add_argument("bag", type=Path)
    _common(b)
    for t in ("image", "info", "gps", "odom", "imu", "depth"):
        b.add_argument(f"--{t}-topic", dest=f"{t}_topic", help=f"{t} topic (default: found by message type)")
    b.set_defaults(func=_bag)
    v = csub.add_parser("video", help="video file + GPS log (csv, gpx, gopro-gps5, karma) -> dataset")
    v.add_argument("video", type=Path)
    v.add_argument("--gps", type=Path, required=True, help="GPS log")
    v.add_argument("--gps-format", default="csv", choices=["csv", "gpx", "gopro-gps5", "karma"])
    v.add_argument("--video-start-utc", help="GPX only: UTC time of the first frame (ISO 8601); default: first point")
    v.add_argument("--attitude", type=Path, help="attitude log time_s,roll,pitch,yaw (or the karma ATTITUDE csv)")
    v.add_argument("--attitude-degrees", action="store_true", help="attitude angles are in degrees")
    _common(v)
    v.set_defaults(func=_video)
    s = csub.add_parser("gps-odom", help="align GPS to wheel odometry in a camera-less bag; write a report")
    s.add_argument("bag", type=Path)
    s.add_argument("--report", type=Path, required=True, help="directory for sync.png, track.png, summary.json")
    s.add_argument("--max-lag", type=float, dest="max_lag")
    s.set_defaults(func=_gps_odom)


def _config(args: argparse.Namespace):
    from pose2rgbd.config import load_yaml
    from pose2rgbd.convert.core import ConvertConfig

    cfg = load_yaml(ConvertConfig, args.config) if getattr(args, "config", None) else ConvertConfig()
    for flag, name in (("size", "size"), ("datum", "datum"), ("max_speed", "max_speed_mps"),
                       ("orientation", "orientation"), ("hfov", "hfov_deg")):  # fmt: skip
        v = getattr(args, flag, None)
        if v is not None:
            setattr(cfg, name, v)
    if getattr(args, "time_offset", None) is not None:
        cfg.time_offset_s = args.time_offset
    if getattr(args, "no_estimate", False):
        cfg.estimate_offset = False
    if getattr(args, "max_lag", None) is not None:
        cfg.sync.max_lag_s = args.max_lag
    if getattr(args, "mount_rpy", None):
        cfg.mount_rpy_deg = [float(x) for x in args.mount_rpy.split(",")]
    if getattr(args, "jpg", False):
        cfg.rgb_encoding = "jpg"
    for t in ("image", "info", "gps", "odom", "imu", "depth"):
        v = getattr(args, f"{t}_topic", None)
        if v:
            setattr(cfg, f"{t}_topic", v)
    cfg.__post_init__()
    cfg.sync.__post_init__()
    return cfg


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

    out = convert_bag(args.bag, args.out, _config(args), overwrite=args.overwrite, progress=not args.no_progress)
    _print_result(out)
    return 0


def _video(args: argparse.Namespace) -> int:
    from pose2rgbd.convert.video import convert_video

    out = convert_video(
        args.video, args.gps, args.out, _config(args), gps_format=args.gps_format, attitude=args.attitude,
        attitude_degrees=args.attitude_degrees, video_start_utc=args.video_start_utc, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    _print_result(out)
    return 0


def _gps_odom(args: argparse.Namespace) -> int:
    from pose2rgbd.convert.bag import align_gps_to_odometry

    a = align_gps_to_odometry(args.bag, _config(args), report_dir=args.report)
    print(f"{args.bag}: {a.result.describe()}")
    print(f"  report: {args.report}")
    return 0
