"""``pose2rgbd sim``: generate the synthetic UAV world's dataset, rosbag2 bag(s), video + GPS CSV, previews."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args

if TYPE_CHECKING:
    from pose2rgbd.sim.config import SimConfig

log = logging.getLogger(__name__)


def _size(values: list[int]) -> dict[str, int]:
    from pose2rgbd.errors import ConfigError

    if len(values) > 2:
        raise ConfigError("--size takes W or W H")
    return {"width": values[0], "height": values[-1]}


def _gps_noise(value: float) -> dict[str, float]:
    return {"gps_noise_h_m": value, "gps_noise_v_m": 1.6 * value}


ALIASES = (
    Alias(
        "--size",
        nargs="+",
        type=int,
        to=_size,
        metavar="PX",
        help="image size: W [H] (default 256) [= --width W --height H]",
    ),
    Alias("--hfov", "hfov_deg"),
    Alias("--rate", "camera_rate_hz", choices=("24", "30")),
    Alias("--duration", "survey_duration_s"),
    Alias("--route-duration", "route_duration_s"),
    Alias("--no-stabilized", "stabilized", const=False, help="body-fixed camera (the default)"),
    Alias("--stride", "dataset_stride"),
    Alias("--world-size", "world_size_m"),
    Alias("--bag-routes", "bag_routes"),
    Alias("--storage", "bag_storage", choices=("mcap", "sqlite3")),
    Alias("--no-compressed", "compressed", const=False, help="raw rgb8 images in the bag (the default)"),
    Alias("--gps-rate", "gps_rate_hz"),
    Alias(
        "--gps-noise",
        type=float,
        to=_gps_noise,
        metavar="M",
        help="GPS horizontal noise std, m (vertical = 1.6x) [= --gps_noise_h_m M --gps_noise_v_m 1.6M]",
    ),
    Alias("--gps-offset", "gps_time_offset_s"),
    Alias("--gps-dropouts", "gps_dropouts"),
)


def _schema() -> Schema:
    from pose2rgbd.sim.config import SimConfig

    return Schema(SimConfig)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "sim",
        help="render the synthetic city: dataset / rosbag2 / video exports (deterministic per seed)",
        description="Fly the synthetic UAV over a seeded procedural city and export what you ask for. "
        "Options override --config (a YAML SimConfig); see docs/sim.md.",
        allow_abbrev=False,
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--dataset", action=argparse.BooleanOptionalAction, default=True, help="write out/dataset")
    p.add_argument("--bag", action=argparse.BooleanOptionalAction, default=True, help="write out/bags/<route>")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=False, help="write out/video/*.mp4 + CSV")
    p.add_argument(
        "--posed-images",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="write out/posed_images/<route>: transforms.json + images + 16-bit depth (for `convert images`)",
    )
    p.add_argument(
        "--realism",
        action="store_true",
        help="real-sensor effects on the dataset and posed images: depth holes and saturation codes, repeated "
        "frames, exposure changes, JPEG (= --set realism.enabled=true; realism.* below; docs/sim.md)",
    )
    p.add_argument("--preview", action="store_true", help="also write a contact sheet and a flight-path plot (PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(p, _schema, ALIASES, config_help="YAML file with SimConfig fields; flags and --set override it")
    p.set_defaults(func=_run)


def _config(args: argparse.Namespace) -> SimConfig:
    from dataclasses import replace

    cfg = config_from_args(args)
    if args.video:  # video of the flown routes only (the default video route may not be flown)
        cfg = config_from_args(
            args, extra={"video_routes": [r for r in cfg.video_routes if r in cfg.routes] or cfg.routes[:1]}
        )
    if args.realism:
        cfg = replace(cfg, realism=replace(cfg.realism, enabled=True))
    return cfg


def _realism_scope(res: Mapping[str, object]) -> str:
    """What realism was applied to among the outputs ``res`` of :func:`~pose2rgbd.sim.simulate` (the dataset, the
    posed images), and what is the clean render (the bags, the videos: realism does not apply to them)."""
    took = [w for w, k in (("the dataset", "dataset"), ("the posed images", "posed_images")) if res.get(k)]
    bags, videos = (len(v) if isinstance(v := res.get(k), (list, tuple)) else 0 for k in ("bags", "videos"))
    clean = [w for w, n in (("the bag" if bags == 1 else "the bags", bags),
                            ("the video" if videos == 1 else "the videos", videos)) if n]  # fmt: skip
    text = f"applied to {' and '.join(took)}" if took else "applied to nothing written"
    if clean:
        text += f"; {' and '.join(clean)} {'is' if len(clean) == 1 and bags + videos == 1 else 'are'} the clean render"
    return f"on ({text})"


def _run(args: argparse.Namespace) -> int:
    import time

    from pose2rgbd.sim import simulate
    from pose2rgbd.sim.preview import contact_sheet, flight_paths_plot

    cfg = _config(args)
    if cfg.realism.enabled and not (args.dataset or args.posed_images):
        # said before the minutes of rendering: realism is on, and nothing written takes it
        clean = [w for w, on in (("the bag", args.bag), ("the video", args.video)) if on]
        what = f"{' and '.join(clean)} will be the clean render, as without it" if clean else "nothing it changes"
        log.warning(
            "realism is on, but it applies only to the dataset and the posed images, and neither is written "
            f"(--no-dataset, no --posed-images): {what}. For sensor effects write the dataset (drop --no-dataset) or "
            '--posed-images (docs/sim.md, "Sensor realism")'
        )
    t = time.perf_counter()
    res = simulate(
        cfg,
        args.out,
        dataset=args.dataset,
        bag=args.bag,
        video=args.video,
        posed_images=args.posed_images,
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
    for pi in res["posed_images"]:
        print(f"  posed    {pi}  (transforms.json; `pose2rgbd convert images {pi} --out DS`)")
    if cfg.realism.enabled:
        print(f"  realism  {_realism_scope(res)}: "
              + ", ".join(f"{k} {v}" for k, v in vars(cfg.realism).items() if k != "enabled"))  # fmt: skip
    if args.preview:
        print(f"  preview  {contact_sheet(cfg, Path(args.out) / 'sim_contact_sheet.png')}")
        print(f"  preview  {flight_paths_plot(cfg, Path(args.out) / 'sim_flight_paths.png')}")
    print(f"  done in {time.perf_counter() - t:.1f} s")
    return 0
