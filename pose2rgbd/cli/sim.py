"""``pose2rgbd sim``: generate the synthetic UAV world's dataset, rosbag2 bag(s), video + GPS CSV, previews."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sim",
        help="render the synthetic city: dataset / rosbag2 / video exports (deterministic per seed)",
        description="Fly the synthetic UAV over a seeded procedural city and export what you ask for. "
        "Options override --config (a YAML SimConfig); see docs/sim.md.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--config", type=Path, help="YAML file with SimConfig fields")
    p.add_argument("--seed", type=int, help="world / flight / noise seed")
    p.add_argument("--size", type=int, nargs="+", metavar="PX", help="image size: W [H] (default 256)")
    p.add_argument("--hfov", type=float, help="horizontal field of view, degrees")
    p.add_argument("--rate", type=int, choices=(24, 30), help="camera rate, Hz")
    p.add_argument("--frames", type=int, help="frames per route (overrides durations)")
    p.add_argument("--duration", type=float, help="survey duration, s")
    p.add_argument("--route-duration", type=float, help="duration of each held-out route, s")
    p.add_argument(
        "--routes", help="comma-separated routes to fly: survey,orbit,crossing,figure8 (default) or transect"
    )
    p.add_argument(
        "--stabilized",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gimbal-stabilized camera (no tilt into accelerations); default off",
    )
    p.add_argument("--stride", type=int, help="dataset keeps every k-th camera frame")
    p.add_argument("--world-size", type=float, help="city side, metres")
    p.add_argument("--dataset", action=argparse.BooleanOptionalAction, default=True, help="write out/dataset")
    p.add_argument("--bag", action=argparse.BooleanOptionalAction, default=True, help="write out/bags/<route>")
    p.add_argument("--bag-routes", help="comma-separated routes written as bags (default survey)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), help="rosbag2 storage plugin")
    p.add_argument("--compressed", action=argparse.BooleanOptionalAction, default=None, help="jpeg images in the bag")
    p.add_argument("--gps-rate", type=float, help="GPS rate, Hz")
    p.add_argument("--gps-noise", type=float, help="GPS horizontal noise std, m (vertical = 1.6x)")
    p.add_argument(
        "--gps-offset",
        type=float,
        help="GPS clock offset d, s: a fix stamped t was measured at camera time t - d",
    )
    p.add_argument("--gps-dropouts", type=int, help="number of 1 s GPS outages (NO_FIX)")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=False, help="write out/video/*.mp4 + CSV")
    p.add_argument("--preview", action="store_true", help="also write a contact sheet and a flight-path plot (PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pose2rgbd.config import from_dict, load_yaml, to_dict
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.sim import SimConfig

    cfg = load_yaml(SimConfig, args.config) if args.config else SimConfig()
    d = to_dict(cfg)
    sets = {
        "seed": args.seed,
        "hfov_deg": args.hfov,
        "camera_rate_hz": args.rate,
        "frames": args.frames,
        "survey_duration_s": args.duration,
        "route_duration_s": args.route_duration,
        "dataset_stride": args.stride,
        "world_size_m": args.world_size,
        "bag_storage": args.storage,
        "compressed": args.compressed,
        "gps_rate_hz": args.gps_rate,
        "gps_time_offset_s": args.gps_offset,
        "gps_dropouts": args.gps_dropouts,
        "stabilized": args.stabilized,
    }
    d.update({k: v for k, v in sets.items() if v is not None})
    if args.size:
        if len(args.size) > 2:
            raise ConfigError("--size takes W or W H")
        d["width"], d["height"] = args.size[0], args.size[-1]
    if args.gps_noise is not None:
        d["gps_noise_h_m"], d["gps_noise_v_m"] = args.gps_noise, 1.6 * args.gps_noise
    for key, val in (("routes", args.routes), ("bag_routes", args.bag_routes)):
        if val:
            d[key] = [r.strip() for r in val.split(",") if r.strip()]
    if args.video:
        d["video_routes"] = [r for r in d["video_routes"] if r in d["routes"]] or d["routes"][:1]
    return from_dict(SimConfig, d, where="sim options")


def _run(args: argparse.Namespace) -> int:
    import time

    from pose2rgbd.sim import simulate
    from pose2rgbd.sim.preview import contact_sheet, flight_paths_plot

    cfg = _config(args)
    t = time.perf_counter()
    res = simulate(
        cfg,
        args.out,
        dataset=args.dataset,
        bag=args.bag,
        video=args.video,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"sim: seed {cfg.seed}, {cfg.width}x{cfg.height} @ {cfg.camera_rate_hz} Hz, routes {','.join(cfg.routes)}")
    print(f"  config   {res['config']}")
    if res["dataset"]:
        print(f"  dataset  {res['dataset']}")
    for b in res["bags"]:
        print(f"  bag      {b}")
    for mp4, csvp in res["videos"]:
        print(f"  video    {mp4}  (GPS log {csvp})")
    if args.preview:
        print(f"  preview  {contact_sheet(cfg, Path(args.out) / 'sim_contact_sheet.png')}")
        print(f"  preview  {flight_paths_plot(cfg, Path(args.out) / 'sim_flight_paths.png')}")
    print(f"  done in {time.perf_counter() - t:.1f} s")
    return 0
