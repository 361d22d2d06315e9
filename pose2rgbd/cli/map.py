"""``pose2rgbd map``: build and inspect place maps (the keyframe store the structure localizer and the renderers
read; docs/place-map.md).

* ``map build --dataset D --out M [--split KIND | --sources 0,2] [--stride N] [--workers N] [--piece K/N]``
* ``map build ... --dask SCHEDULER [--pieces N]``: the pieces as tasks on a Dask cluster, merged
* ``map merge A B ... --out M``: maps built separately, joined (one world frame, one vocabulary)
* ``map fuse --map M``: the fused geometry of the place, stored with the map (``map build --fuse`` does both)
* ``map info M [--verify]``
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
    Alias("--piece", "selection.piece"),
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
    from pose2rgbd.placemap.build import MapBuildConfig

    return Schema(MapBuildConfig)


def _fuse_schema() -> Schema:
    from pose2rgbd.placemap.fused import FusionConfig

    return Schema(FusionConfig)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("map", help="build / merge / inspect a place map (keyframes, features, place recognition)")
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
    b.add_argument("--fuse", action="store_true", help="then fuse its depth (`map fuse` with its defaults)")
    b.add_argument(
        "--dask",
        default="",
        metavar="SCHEDULER",
        help="build in pieces on this Dask cluster (tcp://host:8786; needs pose2rgbd[distributed] and a file "
        "system every worker shares at the same paths) and merge them here",
    )
    b.add_argument("--pieces", type=int, default=0, help="with --dask: this many pieces (0: one per worker thread)")
    add_config_flags(b, _schema, BUILD_ALIASES, config_help="YAML with MapBuildConfig keys; flags override it")
    b.set_defaults(func=_build)
    f = msub.add_parser(
        "fuse",
        help="fuse a map's keyframe depth into one surface (TSDF), stored with the map",
        description="Fuse the depth of every keyframe of a place map into a TSDF (Open3D), keep its surface as a "
        "triangle mesh and each keyframe's exposure (gain and offset per channel, fitted on co-visible pixels) in "
        "<map>/fused/. The fused-geometry renderer ray-casts it for the depth of any pose and colours it from the "
        "keyframes that see each point. The voxel size follows the place unless given (--voxel-size).",
        allow_abbrev=False,
    )
    f.add_argument("--map", type=Path, required=True, help="the place map folder (with depth)")
    f.add_argument("--overwrite", action="store_true", help="replace an earlier fused geometry of this map")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(f, _fuse_schema, (Alias("--voxel-size", "voxel_size"),),
                     config_help="YAML with FusionConfig keys; flags override it")  # fmt: skip
    f.set_defaults(func=_fuse)
    g = msub.add_parser(
        "merge",
        help="maps built separately (pieces, other flights, other machines) -> one place map",
        description="Join place maps into one: their keyframes copied as stored and numbered anew (pieces of one "
        "dataset in its frame order, a keyframe in two pieces once), the place-recognition vocabulary learned "
        "again on the union and every keyframe described over it, written atomically. The maps must share one "
        "world frame: the same frame name and datum (GPS origin), or, without a datum, the same dataset; "
        "anything else is refused. Images and depth are kept when every map has them.",
        allow_abbrev=False,
    )
    g.add_argument("maps", type=Path, nargs="+", help="the map folders (at least two)")
    g.add_argument("--out", type=Path, required=True, help="the map folder to write")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier map at --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--seed", type=int, default=0, help="seed of the vocabulary's k-means")
    g.set_defaults(func=_merge)
    k = msub.add_parser(
        "link",
        help="a copy of a hybrid checkpoint that reads its keyframes from another map of its training dataset",
        description="Write a copy of a hybrid checkpoint that names the given place map of its training dataset "
        "(path relative to the new checkpoint, the dataset fingerprint and the map's keyframes digest, checked at "
        "load) instead of the keyframes it had: the map it was trained with, or keyframes it carries (a bundle, or "
        "a checkpoint of an older version). A render node serving it keeps only the keyframes near the poses it "
        "renders in memory. The original checkpoint is not changed. Optimizer state is not copied: the result "
        "serves, it does not resume training.",
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
    i.add_argument(
        "--verify",
        action="store_true",
        help="read every file and compare its SHA-256 with the manifest's (opening a map checks only the sizes)",
    )
    i.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    from pose2rgbd.inference.self_calibration import self_calibrate
    from pose2rgbd.placemap import PlaceMap, build_map

    cfg = config_from_args(args)
    if args.dask:
        from pose2rgbd.placemap.pieces import build_in_pieces

        build_in_pieces(args.dataset, args.out, cfg, scheduler=args.dask, pieces=args.pieces,
                        overwrite=args.overwrite, progress=not args.no_progress, calibrate=self_calibrate)  # fmt: skip
    elif args.pieces:
        from pose2rgbd.errors import ConfigError

        raise ConfigError("--pieces goes with --dask; on one machine use --workers N (or --piece K/N per machine)")
    else:
        build_map(args.dataset, args.out, cfg, overwrite=args.overwrite, progress=not args.no_progress,
                  calibrate=self_calibrate)  # fmt: skip
    _print_info(PlaceMap(args.out).info())
    if args.fuse:
        from pose2rgbd.placemap.fused import fuse_map

        _print_fused(args.out, fuse_map(args.out, progress=not args.no_progress).meta)
    return 0


def _fuse(args: argparse.Namespace) -> int:
    from pose2rgbd.placemap.fused import fuse_map

    geo = fuse_map(args.map, config_from_args(args), overwrite=args.overwrite, progress=not args.no_progress)
    _print_fused(args.map, geo.meta)
    return 0


def _print_fused(path: Path, m: dict[str, Any]) -> None:
    e = m.get("exposure") or {}
    from pose2rgbd.placemap.fused import voxel_words

    print(f"{path}/fused: {m['keyframes']} keyframes fused at {voxel_words(m['voxel_size_m'])} voxels (depth up to "
          f"{m['depth_max_m']:.1f} m): {m['triangles']} triangles in {m['build_s']:.1f} s")  # fmt: skip
    if m.get("tiles", 1) > 1:  # a geometry fused before tiles existed has no count: one grid
        print(f"  tiles        {m['voxel_blocks']} voxel blocks fused in {m['tiles']} tiles (memory: `tile_blocks`)")
    if e.get("pairs"):
        print(f"  exposure     {e['keyframes_fitted']} keyframes fitted on {e['pairs']} co-visible samples; "
              f"colour mismatch {e['rms_before']:.1f} -> {e['rms_after']:.1f} grey levels (RMS)")  # fmt: skip


def _merge(args: argparse.Namespace) -> int:
    from pose2rgbd.inference.self_calibration import self_calibrate
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.merge import merge_maps

    merge_maps(args.maps, args.out, overwrite=args.overwrite, progress=not args.no_progress, seed=args.seed,
               calibrate=self_calibrate)  # fmt: skip
    _print_info(PlaceMap(args.out).info())  # its notes too (the manifest's merge_notes)
    return 0


def _link(args: argparse.Namespace) -> int:
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd.methods.hybrid import HybridNet
    from pose2rgbd.models import load_checkpoint, save_loaded
    from pose2rgbd.output_guard import OutputError, check_checkpoint_output

    if not args.out.name.endswith(".pt"):
        raise OutputError(f"--out {args.out}: a checkpoint file ends in .pt")
    check_checkpoint_output(args.out, inputs=[args.checkpoint, args.map], overwrite=args.overwrite)
    # the one mechanism: loaded with the map instead of its keyframes (dataset checked; a model that reads no
    # keyframes refuses a map), saved naming the map
    loaded = load_checkpoint(args.checkpoint, map_location="cpu", place_map=args.map)
    model = loaded.model
    if not isinstance(model, HybridNet) or model.keyframes is None:
        raise CheckpointError(f"{args.checkpoint}: a {loaded.kind!r} model reads no keyframes; nothing to link")
    save_loaded(loaded, args.out)
    rel = model.checkpoint_extra(args.out)["place_map"]["path"]
    mb_in, mb_out = args.checkpoint.stat().st_size / 1e6, args.out.stat().st_size / 1e6
    print(f"{args.out}: {loaded.kind} checkpoint reading its {model.n_keyframes} keyframes from {args.map} "
          f"(path {rel} relative to the checkpoint); {mb_out:.1f} MB instead of {mb_in:.1f} MB")  # fmt: skip
    return 0


def _info(args: argparse.Namespace) -> int:
    from pose2rgbd.placemap import PlaceMap

    pm = PlaceMap(args.path, verify=args.verify)
    info = pm.info()
    if args.verify:
        info["verified"] = pm.verified.line()
    # the dataset at the folder the map was built from, where it is still there: changed since (frames appended)?
    info["dataset_now"] = pm.dataset_now()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def _print_info(s: dict) -> None:  # type: ignore[type-arg]
    import re

    from pose2rgbd.cli.dataset import extent_line
    from pose2rgbd.config import ordinal

    ds = s["dataset"]
    # a map built by an older pose2rgbd stored "every 2th"
    sel = re.sub(r"\bevery (\d+)th\b", lambda m: f"every {ordinal(int(m[1]))}", s["selection"].get("description", ""))
    n_kf, total, with_pt = s["keyframes"], s["features"], s["features_with_point"]
    print(f"{s['path']}: pose2rgbd place map")
    print(f"  keyframes    {n_kf} ({sel}) of {ds.get('frames')} frames")
    # a map merged from several datasets: how many, then each (counted here: the name the merge stored counts its
    # input maps, two for a merged map merged again with a third dataset, three for A B A)
    leaves = [d for d in ds.get("datasets") or [] if isinstance(d, dict)]
    where = f"merged from {len(leaves)} datasets" if leaves else ds.get("path") or ds.get("name")
    print(f"  dataset      {where} (fingerprint {ds.get('fingerprint')}, world frame {ds.get('world_frame')})")
    for d in leaves:
        named = f"{d['name']}: " if d.get("path") and d.get("name") else ""
        print(f"               - {d.get('path') or d.get('name')} ({named}{d.get('frames')} frames, fingerprint "
              f"{d.get('fingerprint')})")  # fmt: skip
    now = s.get("dataset_now") or {}
    for d in now.get("datasets") or [now]:  # a merged map: each of its datasets
        if d.get("status") == "changed":
            print(f"  dataset now  {d.get('note')}")
    print(f"  images       {s['image']}; depth {s['depth']}")
    how = {"depth": "lifted from the depth", "triangulated": "triangulated across keyframes"}.get(s["points"], "")
    share = 100.0 * with_pt / total if total else 0.0
    print(f"  features     {total} SIFT ({total / n_kf:.0f} per keyframe); {with_pt} ({share:.1f} %, "
          f"{with_pt / n_kf:.0f} per keyframe) with a world point{' ' + how if how else ''}")  # fmt: skip
    dropped = s.get("features_extracted", total) - total
    if dropped > 0:
        why = "no valid depth at the keypoint, or on a depth edge"
        print(f"               ({dropped} more extracted and not stored: {why})")
    print(f"  places       {s['global']}")
    print(extent_line(s["extent"], s["pose_units"]))
    print(f"  size         {_size_words(s)}")
    if s.get("build_s") is not None:
        print(f"  built in     {s['build_s']:.1f} s ({s['build_s_per_1000_keyframes']:.0f} s per 1,000 keyframes)")
    c = s.get("calibration") or {}
    if c.get("status") == "calibrated":
        print(f"  calibration  calibrated at build: {c.get('fixes')} fixes of {c.get('held_out')} held-out keyframes "
              "(the localizer's covariance and out-of-distribution gate)")  # fmt: skip
    elif c:
        why = f" ({c['reason']})" if c.get("reason") else ""
        note = f"; {c['note']}" if c.get("note") else ""
        print(f"  calibration  {c['status']}{why}: fixes get their inliers' raw covariance (too small) and none is "
              f"flagged{note}")  # fmt: skip
    for note in s.get("merge_notes") or []:
        print(f"  note         {note}")
    if s.get("verified"):
        print(f"  verified     {s['verified']}")


def _size_words(s: dict) -> str:  # type: ignore[type-arg]
    """The ``size`` line of :func:`_print_info`: what the map folder holds on disk, and what is what where it holds
    more than the keyframe store (the fused geometry in fused/, anything else)."""
    per = s["size_mb_per_1000_keyframes"]
    parts = s["size_parts"]
    store = f"({per:.0f} MB per 1,000 keyframes)"
    if not parts.get("fused") and not parts.get("other"):
        return f"{s['size_bytes'] / 1e6:.1f} MB {store}"
    words = [f"{parts['keyframe_store'] / 1e6:.1f} MB keyframe store {store}"]
    if parts.get("fused"):
        words.append(f"{parts['fused'] / 1e6:.1f} MB fused geometry (fused/)")
    if parts.get("other"):
        names = s.get("size_other_names") or []
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        # the hidden siblings of fused/ a killed `map fuse` leaves (pose2rgbd.atomic.siblings): a new one never put
        # in place (partial, tmp: to remove), or the earlier one moved aside (old: the next `map fuse` puts it back
        # where fused/ is absent, so it is not to be removed by hand)
        left = [n for n in names if n.startswith((".fused.partial-", ".fused.tmp-"))]
        aside = [n for n in names if n.startswith(".fused.old-")]
        why = "; a hidden .fused.partial- folder is what an interrupted `map fuse` left: remove it" if left else ""
        if aside:
            why += ("; a hidden .fused.old- folder is the earlier fused geometry an interrupted `map fuse` moved "
                    "aside: keep it, the next `map fuse` of this map puts it back where fused/ is missing")  # fmt: skip
        words.append(f"{parts['other'] / 1e6:.1f} MB in other files ({shown}: not part of the map{why})")
    return f"{s['size_bytes'] / 1e6:.1f} MB on disk: " + ", ".join(words)
