"""``pose2rgbd record``: run the record node offline over a bag into a dataset (and/or a SyncedFrame bag)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pose2rgbd.cli.render import add_bag_input, input_bag
from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args

# Shared with `convert bag` (pose2rgbd/cli/convert.py): --datum, --size, --mount, --mount-rpy, --mount-xyz, --jpg and
# the --*-topic spellings, setting the same keys (datum, size, mount.*, topics.*, output.rgb_encoding).
ALIASES = (
    Alias("--out", "output.dataset", metavar="DIR", help="dataset directory (appended to / resumed if it exists)"),
    Alias("--datum", "datum", metavar="LAT,LON,ALT"),
    Alias("--size", "size", metavar="WIDTHxHEIGHT"),
    Alias("--mount", "mount.source", choices=("auto", "tf_static", "config")),
    Alias("--mount-rpy", "mount.rpy_deg", metavar="R,P,Y"),
    Alias("--mount-xyz", "mount.translation", metavar="X,Y,Z"),
    Alias("--image-topic", "topics.image"),
    Alias(("--camera-info-topic", "--info-topic"), "topics.camera_info"),
    Alias("--gps-topic", "topics.gps"),
    Alias("--odom-topic", "topics.odom"),
    Alias("--jpg", "output.rgb_encoding", const="jpg", help="store images as JPEG instead of PNG"),
    Alias("--policy", "sync.policy", choices=("interpolate", "approximate")),
    Alias("--max-gap", "sync.max_gap_s"),
    Alias("--slop", "sync.slop_s"),
)


def _schema() -> Schema:
    from pose2rgbd.nodes.recorder import RecorderConfig

    return Schema(RecorderConfig)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("record", help="synchronize camera + GPS + odometry into a dataset (offline record node)")
    rsub = p.add_subparsers(dest="record_command", metavar="<source>", required=True)
    b = rsub.add_parser(
        "bag",
        help="replay a bag through the record node",
        description="Replays a bag whose camera, NavSatFix and Odometry share one clock through the record node "
        "(the same node as `ros2 run pose2rgbd record_node`). For a recording whose GPS clock may be offset from "
        "the camera's, use `pose2rgbd convert bag` (it estimates the offset).",
        allow_abbrev=False,
    )
    add_bag_input(b, "input bag")
    b.add_argument(
        "--out-bag",
        type=Path,
        default=None,
        help="also write pose2rgbd/msg/SyncedFrame to this bag (offline, output.publish_synced follows this flag)",
    )
    b.add_argument("--rate", type=float, default=0.0, help="replay speed: 0 as fast as possible, 1.0 bag speed")
    b.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out-bag")
    add_config_flags(b, _schema, ALIASES, config_help="record node YAML (e.g. config/record.yaml); flags override it")
    b.set_defaults(func=_bag)


def _bag(args: argparse.Namespace) -> int:
    from pose2rgbd.runtime.offline import run_recorder_bag

    # offline there is nowhere to publish: SyncedFrame messages are made only for --out-bag
    cfg = config_from_args(args, extra={"output.publish_synced": args.out_bag is not None})
    stats = run_recorder_bag(
        cfg,
        input_bag(args),
        out_bag=args.out_bag,
        rate=args.rate,
        storage=args.storage,
        overwrite=args.overwrite,
        progress=True,
    )
    c = stats.counters
    print(f"recorded {c['frames']} frames from {c['images']} images in {stats.wall_s:.1f} s ({c['fixes']} GPS fixes "
          f"and {c['odometry']} odometry messages received)")  # fmt: skip
    if c.get("repeated_images"):
        what = "kept (output.keep_repeats)" if cfg.output.keep_repeats else "dropped (output.keep_repeats keeps them)"
        print(f"  {c['repeated_images']} of {c['images']} images repeat the previous image byte for byte (a camera "
              f"re-sending a frame), {what}")  # fmt: skip
    if c.get("images_lost_upstream"):
        print(f"  at least {c['images_lost_upstream']} of the camera's frames are missing between its {c['images']} "
              "images (gaps in their stamps, counted once the camera's period is known; `convert bag` counts them "
              "all): lost before the bag was written (docs/ros.md, \"Large images over DDS\")")  # fmt: skip
    skip = ("frames", "images", "fixes", "odometry", "repeated_images", "images_lost_upstream",
            "skipped_already_recorded")  # fmt: skip  # (said on a line of its own below)
    dropped = {k: v for k, v in c.items() if k not in skip and v}
    if dropped:
        print(f"  dropped / skipped: {dropped}")
    if c["images"] and c["skipped_already_recorded"] == c["images"]:  # (so no frame was recorded)
        print(f"  every image lies at or before the last frame of the dataset {cfg.output.dataset}: an earlier run "
              "recorded them, nothing was new. Another flight of the same stamps and place (a simulator's export of "
              "another seed, a bag re-stamped) cannot be told from such a resume: record it into a new dataset "
              "(another --out), then join the two with `pose2rgbd dataset merge`")  # fmt: skip
    elif c["skipped_already_recorded"]:
        print(f"  {c['skipped_already_recorded']} images at or before the last frame of the dataset "
              f"{cfg.output.dataset} were skipped as recorded by an earlier run (a resume; the image at its last "
              "frame's stamp is checked against the one recorded there, where the recording has it)")  # fmt: skip
    if cfg.output.dataset:
        made = (Path(cfg.output.dataset) / "manifest.yaml").is_file()
        print(f"  dataset: {cfg.output.dataset}" if made else f"  no dataset was written at {cfg.output.dataset}")
    if args.out_bag is not None:
        print(f"  synced frames bag: {args.out_bag} {stats.messages_out}")
        if stats.dataset_frames_before:
            print(f"  the bag starts after the dataset's first {stats.dataset_frames_before} frames (recorded by an "
                  "earlier run, not again: the bag of that run holds them, where it was kept)")  # fmt: skip
    return 0 if c["frames"] or c["skipped_already_recorded"] else 1
