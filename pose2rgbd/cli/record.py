"""``pose2rgbd record``: run the record node offline over a bag into a dataset (and/or a SyncedFrame bag)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("record", help="synchronize camera + GPS + odometry into a dataset (offline record node)")
    rsub = p.add_subparsers(dest="record_command", metavar="<source>", required=True)
    b = rsub.add_parser("bag", help="replay a bag through the record node")
    b.add_argument("--bag", type=Path, required=True, help="input bag")
    b.add_argument("--out", type=Path, default=None, help="dataset directory (appended to / resumed if it exists)")
    b.add_argument("--out-bag", type=Path, default=None, help="also write pose2rgbd/msg/SyncedFrame to this bag")
    b.add_argument("--config", type=Path, default=None, help="record node YAML (e.g. config/record.yaml)")
    b.add_argument("--image-topic", default=None)
    b.add_argument("--camera-info-topic", default=None)
    b.add_argument("--gps-topic", default=None)
    b.add_argument("--odom-topic", default=None)
    b.add_argument("--policy", choices=["interpolate", "approximate"], default=None, help="synchronization")
    b.add_argument("--max-gap", type=float, default=None, help="interpolate: max seconds between samples")
    b.add_argument("--slop", type=float, default=None, help="approximate: max stamp spread (s)")
    b.add_argument("--mount", choices=["tf_static", "config"], default=None, help="camera mount source")
    b.add_argument("--datum", default=None, help="lat,lon,alt of the ENU origin (default: first fix)")
    b.add_argument("--size", default=None, help="resize images, WIDTHxHEIGHT")
    b.add_argument("--rate", type=float, default=0.0, help="replay speed: 0 as fast as possible, 1.0 bag speed")
    b.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out-bag")
    b.set_defaults(func=_bag)


def _bag(args: argparse.Namespace) -> int:
    from pose2rgbd.cli.render import _load_node_config
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.nodes.recorder import RecorderConfig
    from pose2rgbd.runtime.offline import run_recorder_bag

    cfg = _load_node_config(RecorderConfig, args.config)
    if args.out is not None:
        cfg.output.dataset = str(args.out)
    cfg.output.publish_synced = args.out_bag is not None
    t = cfg.topics
    for attr, val in (("image", args.image_topic), ("camera_info", args.camera_info_topic),
                      ("gps", args.gps_topic), ("odom", args.odom_topic)):  # fmt: skip
        if val:
            setattr(t, attr, val)
    if args.policy:
        cfg.sync.policy = args.policy
    if args.max_gap is not None:
        cfg.sync.max_gap_s = args.max_gap
    if args.slop is not None:
        cfg.sync.slop_s = args.slop
    if args.mount:
        cfg.mount.source = args.mount
    if args.datum:
        try:
            lat, lon, alt = (float(x) for x in args.datum.split(","))
        except ValueError as e:
            raise ConfigError(f"--datum: expected lat,lon,alt, got {args.datum!r}") from e
        cfg.datum.use_first_fix = False
        cfg.datum.lat_deg, cfg.datum.lon_deg, cfg.datum.alt_m = lat, lon, alt
    if args.size:
        try:
            w, h = (int(x) for x in args.size.lower().split("x"))
        except ValueError as e:
            raise ConfigError(f"--size: expected WIDTHxHEIGHT, got {args.size!r}") from e
        cfg.output.width, cfg.output.height = w, h
    cfg.__post_init__()
    stats = run_recorder_bag(
        cfg,
        args.bag,
        out_bag=args.out_bag,
        rate=args.rate,
        storage=args.storage,
        overwrite=args.overwrite,
        progress=True,
    )
    c = stats.counters
    print(f"recorded {c['frames']} frames from {c['images']} images in {stats.wall_s:.1f} s")
    dropped = {k: v for k, v in c.items() if k not in ("frames", "images") and v}
    if dropped:
        print(f"  dropped / skipped: {dropped}")
    if args.out is not None:
        print(f"  dataset: {args.out}")
    if args.out_bag is not None:
        print(f"  synced frames bag: {args.out_bag} {stats.messages_out}")
    return 0 if c["frames"] or c["skipped_already_recorded"] else 1
