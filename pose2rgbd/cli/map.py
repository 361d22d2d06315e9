"""``pose2rgbd map``: build and inspect place maps (the keyframe store the structure localizer and the renderers
read; docs/place-map.md).

* ``map build --dataset D --out M [--split KIND | --sources 0,2] [--stride N]``
* ``map info M``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args

BUILD_ALIASES = (
    Alias("--split", "selection.split"),
    Alias("--sources", "selection.sources"),
    Alias("--stride", "selection.stride"),
    Alias("--seed", "selection.seed"),
    Alias("--max-features", "features.max_features"),
    Alias("--image-codec", "image_codec", choices=("jpg", "png")),
    Alias(
        "--localization-only",
        "keyframe_images",
        const=False,
        help="store no keyframe images or depth: the structure localizer only, about half the size",
    ),
)


def _schema() -> Schema:
    from pose2rgbd.map.build import MapBuildConfig

    return Schema(MapBuildConfig)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("map", help="build / inspect a place map (keyframes, features, place recognition)")
    msub = p.add_subparsers(dest="map_command", metavar="<action>", required=True)
    b = msub.add_parser(
        "build",
        help="a dataset's frames -> a place map folder",
        description="Build a place map from a dataset: per keyframe the pose, image, metric depth, SIFT features "
        "with world points (from the depth, or triangulated across keyframes without it), a global descriptor "
        "for place recognition, and a spatial index. Select the keyframes so that the frames you evaluate on "
        "stay out: --split KIND takes that split's training frames (as `pose2rgbd train` makes it), --sources "
        "takes some sources, --stride N every N-th of them.",
        allow_abbrev=False,
    )
    b.add_argument("--dataset", type=Path, required=True, help="the dataset (format v1)")
    b.add_argument("--out", type=Path, required=True, help="the map folder to write")
    b.add_argument("--overwrite", action="store_true", help="replace an earlier map at --out")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(b, _schema, BUILD_ALIASES, config_help="YAML with MapBuildConfig keys; flags override it")
    b.set_defaults(func=_build)
    k = msub.add_parser(
        "link",
        help="a hybrid checkpoint that reads its keyframes from a map instead of carrying them",
        description="Write a copy of a hybrid checkpoint without its embedded keyframe store, naming the place map "
        "of its training dataset instead (path relative to the new checkpoint, and the dataset fingerprint, checked "
        "at load). A render node serving it keeps only the keyframes near the poses it renders in memory. The "
        "original checkpoint (one file with its keyframes) is not changed. Optimizer state is not copied: the "
        "result serves, it does not resume training.",
        allow_abbrev=False,
    )
    k.add_argument("--checkpoint", type=Path, required=True, help="a hybrid checkpoint (.pt)")
    k.add_argument("--map", type=Path, required=True, help="the place map of the checkpoint's training dataset")
    k.add_argument("--out", type=Path, required=True, help="the checkpoint to write (.pt)")
    k.add_argument("--overwrite", action="store_true", help="replace an earlier checkpoint at --out")
    k.set_defaults(func=_link)
    i = msub.add_parser("info", help="summary of a place map", allow_abbrev=False)
    i.add_argument("path", type=Path, help="the map folder")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    from pose2rgbd.map import PlaceMap, build_map

    cfg = config_from_args(args)
    build_map(args.dataset, args.out, cfg, overwrite=args.overwrite, progress=not args.no_progress)
    _print_info(PlaceMap(args.out).info())
    return 0


def _link(args: argparse.Namespace) -> int:
    import os

    from pose2rgbd.errors import CheckpointError
    from pose2rgbd.map import PlaceMap
    from pose2rgbd.models import load_checkpoint, save_checkpoint
    from pose2rgbd.output_guard import OutputError, OutputKind, check_output, refuse_existing

    if not args.out.name.endswith(".pt"):
        raise OutputError(f"--out {args.out}: a checkpoint file ends in .pt")
    check_output(args.out, OutputKind("checkpoint", False, suffixes=(".pt",)), inputs=[args.checkpoint, args.map],
                 overwrite=args.overwrite)  # fmt: skip
    refuse_existing(args.out, overwrite=args.overwrite)
    loaded = load_checkpoint(args.checkpoint, map_location="cpu")
    model = loaded.model
    attach: Any = getattr(model, "attach_map", None)
    if not callable(attach):
        raise CheckpointError(f"{args.checkpoint}: a {loaded.kind!r} model reads no keyframes; nothing to link")
    pm = PlaceMap(args.map)
    pm.check_dataset(loaded.dataset_fingerprint, str(args.checkpoint))
    attach(pm)  # checks the camera; drops the embedded store
    model.__dict__.pop("_map_keyframes", None)  # the reference, not the map, goes into the file
    rel = os.path.relpath(args.map.resolve(), args.out.resolve().parent)
    extra = {**loaded.extra, "place_map": {"path": rel, "fingerprint": pm.fingerprint, "keyframes": len(pm)}}
    save_checkpoint(args.out, model, dataset_fingerprint=loaded.dataset_fingerprint, camera=loaded.camera,
                    depth_kind=loaded.depth_kind, world_frame=loaded.world_frame, train_config=loaded.train_config,
                    step=loaded.step, epoch=loaded.epoch, extra=extra)  # fmt: skip
    mb_in, mb_out = args.checkpoint.stat().st_size / 1e6, args.out.stat().st_size / 1e6
    print(f"{args.out}: {loaded.kind} checkpoint reading its {len(pm)} keyframes from {args.map} "
          f"(path {rel} relative to the checkpoint); {mb_out:.1f} MB instead of {mb_in:.1f} MB")  # fmt: skip
    return 0


def _info(args: argparse.Namespace) -> int:
    from pose2rgbd.map import PlaceMap

    info = PlaceMap(args.path).info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def _print_info(s: dict) -> None:  # type: ignore[type-arg]
    ds = s["dataset"]
    ex, ey, ez = s["extent_m"]
    print(f"{s['path']}: pose2rgbd place map")
    print(f"  keyframes    {s['keyframes']} ({s['selection'].get('description', '')}) of {ds.get('frames')} frames")
    print(f"  dataset      {ds.get('path')} (fingerprint {ds.get('fingerprint')}, world frame {ds.get('world_frame')})")
    print(f"  images       {s['image']}; depth {s['depth']}")
    print(f"  features     {s['features']} SIFT with world points ({s['features_per_keyframe']:.0f} per keyframe, "
          f"{s['points']})")  # fmt: skip
    print(f"  places       {s['global']}")
    print(f"  extent (m)   x {ex:.1f}  y {ey:.1f}  z {ez:.1f}")
    per = s["size_mb_per_1000_keyframes"]
    print(f"  size         {s['size_bytes'] / 1e6:.1f} MB ({per:.0f} MB per 1,000 keyframes)")
    if s.get("build_s") is not None:
        print(f"  built in     {s['build_s']:.1f} s ({s['build_s_per_1000_keyframes']:.0f} s per 1,000 keyframes)")
