"""``pose2rgbd localize``: camera images -> camera poses with an image -> pose checkpoint.

* ``localize bag``: replay a bag through the localize node (offline; the same node as ``ros2 run pose2rgbd
  localize_node``) and write what it publishes (poses with covariance, OOD flags, status) to a new bag;
* ``localize images DIR``: every image of a folder -> one pose + confidence per image (CSV or TUM);
* ``localize calibrate``: the covariance and out-of-distribution threshold of a checkpoint, from its errors
  on a dataset's validation frames -> a YAML sidecar for the node's ``covariance_file``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pose2rgbd.cli.render import add_bag_replay_args, engine_aliases, input_bag, need_checkpoint
from pose2rgbd.config import SPLIT_KINDS
from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args

if TYPE_CHECKING:
    from pose2rgbd.inference.focal_check import FocalCheck

CHECKPOINT_GROUP = "checkpoint localizer (PoseGAN)"
# pose2rgbd.inference.image_sequence.IMAGE_SUFFIXES (test_image_sequence.py pins them equal): the parser is built
# without importing the inference layer
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

BAG_ALIASES = (
    *engine_aliases(needed="needed without --map"),
    Alias("--image-topic", "topics.image"),
    Alias("--image-type", "image_type", choices=("raw", "compressed")),
    Alias("--world-frame", "world_frame"),
    Alias("--covariance-file", "covariance_file"),
    Alias("--crop-scale", "crop_scale"),
    Alias("--map", "map"),
    Alias("--method", "method", choices=("auto", "structure", "posegan", "structure+posegan")),
    Alias("--gps-topic", "topics.gps"),
    Alias("--odometry-topic", "topics.odometry"),
    Alias("--camera-info-topic", "topics.camera_info"),
)


def __getattr__(name: str) -> Any:
    """The names that moved to :mod:`pose2rgbd.inference.image_sequence`, imported when asked for (the command
    module stays light to import)."""
    if name in ("CSV_STRUCTURE", "list_images", "read_rgb_image"):
        from pose2rgbd.inference import image_sequence

        return getattr(image_sequence, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _images_schema() -> Schema:
    from pose2rgbd.inference.common import EngineConfig
    from pose2rgbd.inference.structure import StructureConfig

    return Schema({"engine": EngineConfig, "structure": StructureConfig})


def _localizer_schema() -> Schema:
    from pose2rgbd.nodes.localizer import LocalizerConfig

    return Schema(LocalizerConfig)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("localize", help="camera images -> camera poses: over a bag (offline node), a folder, calibrate")
    lsub = p.add_subparsers(dest="localize_command", metavar="<source>", required=True)

    b = lsub.add_parser("bag", help="replay a bag through the localize node; write its topics to a new bag",
                        allow_abbrev=False)  # fmt: skip
    add_bag_replay_args(b)
    add_config_flags(
        b, _localizer_schema, BAG_ALIASES,
        config_help="localize node YAML (e.g. config/localize.yaml); flags override it",
    )  # fmt: skip
    b.set_defaults(func=_bag)

    i = lsub.add_parser(
        "images",
        help="a folder of images -> poses with confidence (.csv or TUM .tum/.txt)",
        description="Localize every image of a folder against a place map (--map, the structure localizer), with "
        "an image -> pose checkpoint (--checkpoint, PoseGAN), or both (--method structure+posegan: the model's "
        "estimate is the prior of images without a better one).",
        allow_abbrev=False,
    )
    i.add_argument("dir", type=Path, metavar="DIR", help=f"folder of images ({', '.join(IMAGE_SUFFIXES)}), name order")
    i.add_argument("--map", default="", metavar="MAP",
                   help="place map folder (`pose2rgbd map build`): the structure localizer")  # fmt: skip
    i.add_argument("--out", type=Path, required=True,
                   help="poses.csv (image,tx,ty,tz,qx,qy,qz,qw,confidence,out_of_distribution; with --map also "
                   "fix,reason,inliers, confidence_bound_m, the six standard deviations, flag: docs/ros.md, "
                   "'localize images') or poses.tum / .txt (TUM: index tx ty tz qx qy qz qw)")  # fmt: skip
    i.add_argument("--method", default="auto", choices=("auto", "structure", "posegan", "structure+posegan"),
                   help="structure (against --map) | posegan (--checkpoint) | structure+posegan (the model's estimate "
                   "as the prior) | auto: structure when --map is given, else posegan")  # fmt: skip
    i.add_argument("--camera", default="", metavar="FX,FY,CX,CY[,K1,K2,P1,P2[,K3]]",
                   help="structure: the images' camera at their own size, OpenCV pixel convention, with OpenCV "
                   "distortion when the lens has any (query keypoints are undistorted); "
                   "fisheye:FX,FY,CX,CY,K1,K2,K3,K4 for OpenCV's fisheye model; 'map': the camera the map's images "
                   "were taken with (its dataset import's, distortion included); 'exif': each photo's focal "
                   "length from its EXIF (uncropped photos of many cameras; one without: the default). Default: the "
                   "map's (pinhole) camera scaled, with a warning")  # fmt: skip
    i.add_argument("--no-sequence", action="store_true",
                   help="structure: unordered photos, not a sequence (the previous fix is no prior)")  # fmt: skip
    i.add_argument(
        "--bit-depth",
        type=int,
        default=0,
        help="significant bits of 16-bit images (10 for 10-bit data in a 16-bit PNG / TIFF); 0: inferred per image "
        "from its largest value (10, 12, 14 or 16 bits)",
    )
    i.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="calibration YAML (`localize calibrate`): its threshold sets the out_of_distribution column; with "
        "--map it replaces the map's own calibration (covariance, gate, confidence)",
    )
    i.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    ck = i.add_argument_group(
        CHECKPOINT_GROUP, "an image -> pose checkpoint: --method posegan, or structure+posegan (its estimate as the "
        "structure localizer's prior); not needed with --map alone"
    )  # fmt: skip
    ck.add_argument("--batch", type=int, default=8, help="images per forward pass")
    ck.add_argument(
        "--crop-scale",
        type=float,
        default=0.0,
        help="0 (auto): the model's own preparation of a frame, as trained; 1-4: resize to cover crop_scale x the "
        "model input keeping the aspect ratio, then centre-crop",
    )
    add_config_flags(
        i, _images_schema, engine_aliases(group=CHECKPOINT_GROUP, needed="needed without --map"),
        config_help="YAML with 'engine:' and 'structure:' sections; flags override it",
        section_titles={"engine": CHECKPOINT_GROUP, "structure": "structure localizer (--map)"},
    )  # fmt: skip
    i.set_defaults(func=_images)

    c = lsub.add_parser("calibrate", help="covariance + OOD threshold from a checkpoint's validation errors -> YAML",
                        allow_abbrev=False)  # fmt: skip
    c.add_argument("--checkpoint", type=Path, default=None, help="image -> pose checkpoint (.pt)")
    c.add_argument("--map", type=Path, default=None,
                   help="or a place map: calibrate the structure localizer (frames outside the map only)")  # fmt: skip
    c.add_argument("--dataset", type=Path, required=True, help="the dataset (format v1) with ground-truth poses")
    c.add_argument("--split", choices=[*SPLIT_KINDS, "all"], default=None,
                   help="frames to calibrate on (default: the validation frames of the split the checkpoint was "
                   "trained with / the map was selected with)")  # fmt: skip
    c.add_argument("--out", type=Path, required=True, help="calibration YAML to write (for covariance_file)")
    c.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")
    c.add_argument("--batch", type=int, default=16, help="images per forward pass")
    c.add_argument("--max-frames", type=int, default=0, help="at most this many frames, evenly spaced (0: all)")
    c.add_argument("--crop-scale", type=float, default=0.0, help="as the node's crop_scale (0: auto)")
    c.add_argument("--ood-quantile", type=float, default=0.05,
                   help="OOD threshold: this quantile of the validation confidences")  # fmt: skip
    c.add_argument("--bins", type=int, default=4, help="confidence bins for the covariance scaling (1: none)")
    c.add_argument("--scale-level", type=float, default=None,
                   help="--map: the covariance scale is the upper one-sided confidence bound of the frames' "
                   "median at this level (default 0.8, as map build; 0.5: the median; docs/place-map.md)")  # fmt: skip
    c.add_argument("--overwrite", action="store_true", help="replace an existing calibration file")
    c.set_defaults(func=_calibrate)


def _check_file_out(
    out: Path, suffixes: tuple[str, ...], what: str, inputs: list[Any], overwrite: bool, first_lines: tuple[str, ...]
) -> None:
    """Refuse ``out`` as a ``what`` file where it could destroy an input or a file of the user's (``--overwrite``
    replaces only an earlier one: its first line one of ``first_lines``, the headers pose2rgbd writes), or where it
    cannot be written (:func:`~pose2rgbd.output_guard.check_writable`); before the work."""
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.output_guard import OutputError, OutputKind, check_output, check_writable, refuse_existing

    if not out.name.lower().endswith(suffixes):
        raise ConfigError(f"--out {out}: a {what} file ends in {', '.join(suffixes)}")
    kind = OutputKind(f"{what} file", False, suffixes=tuple(suffixes), first_lines=first_lines)
    check_output(out, kind, inputs=inputs, overwrite=overwrite)
    refuse_existing(out, overwrite=overwrite)
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give a file name (nothing was written)")
    check_writable(out)  # a read-only folder, or a file where a folder should be: now, not after the work
    out.parent.mkdir(parents=True, exist_ok=True)


def _camera_info_topic(bag: Path, image_topic: str) -> str:
    """The bag's CameraInfo of ``image_topic``: the one beside it (``<its namespace>/camera_info``, the ROS camera
    convention), else the bag's only one; "" where neither (the node then takes the map's camera, and says so)."""
    from pose2rgbd.bags import open_bag

    with open_bag(bag) as b:
        infos = [t for t in b.topics_of_type("sensor_msgs/msg/CameraInfo") if b.topics[t].count]
    beside = image_topic.rsplit("/", 1)[0] + "/camera_info"
    if beside in infos:
        return beside
    return infos[0] if len(infos) == 1 else ""


def _bag(args: argparse.Namespace) -> int:
    from pose2rgbd.inference.structure_load import resolve_method
    from pose2rgbd.nodes.localizer import LOCALIZER
    from pose2rgbd.nodes.spec import check_ranges
    from pose2rgbd.runtime.offline import run_node_bag

    cfg = config_from_args(args)
    method = resolve_method(cfg.method, cfg.map, cfg.engine.checkpoint)
    check_ranges(cfg)
    bag = input_bag(args)
    if "structure" in method and not cfg.topics.camera_info and not cfg.camera:
        cfg.topics.camera_info = _camera_info_topic(bag, cfg.topics.image)
        if cfg.topics.camera_info:
            print(f"query camera: the CameraInfo on {cfg.topics.camera_info} (--camera-info-topic to take another)")
    inputs = [p for p in (cfg.engine.checkpoint, cfg.covariance_file, cfg.map) if p]
    stats = run_node_bag(
        LOCALIZER, cfg, bag, args.out, rate=args.rate, namespace=args.namespace, storage=args.storage,
        overwrite=args.overwrite, progress=not args.no_progress, inputs=inputs,
    )  # fmt: skip
    c = stats.counters
    done = c.get("fixes", c["frames"])  # the structure localizer may answer "no fix"
    print(f"{args.out}: {done} of {c['images']} images localized in {stats.wall_s:.1f} s")
    for topic, n in sorted(stats.messages_out.items()):
        print(f"  {topic:<40} {n}")
    if c["frames"]:
        p50, p99 = stats.latency_percentile(50), stats.latency_percentile(99)
        print(f"  image-to-pose latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"  out of distribution: {c['out_of_distribution']}")
    if "no_fix" in c:
        why = {k[len("no_fix_") :].replace("_", " "): v for k, v in c.items() if k.startswith("no_fix_") and v}
        print(f"  fixes: {c['fixes']}; no fix: {c['no_fix']}" + (f" {why}" if why else ""))
    rejected = {k: v for k, v in c.items() if k.startswith("rejected_") and v}
    if c["rejected"] or c["localize_errors"]:
        print(f"  rejected: {c['rejected']} {rejected}; localization errors: {c['localize_errors']}")
    return 0 if done else 1


def _images(args: argparse.Namespace) -> int:
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.inference.image_sequence import list_images
    from pose2rgbd.inference.structure_load import resolve_method

    cfgs = config_from_args(args)
    cfg = cfgs["engine"]
    method = resolve_method(args.method, args.map, cfg.checkpoint)
    if args.batch < 1:
        raise ConfigError("--batch must be >= 1")
    from pose2rgbd.inference.image_sequence import POSES_FIRST_LINES

    inputs = [args.dir, cfg.checkpoint, args.calibration, args.map]
    _check_file_out(args.out, (".csv", ".tum", ".txt"), "poses", inputs, args.overwrite, POSES_FIRST_LINES)
    files = list_images(args.dir)
    if method == "posegan":
        return _images_model(args, cfg, files)
    return _images_structure(args, cfgs, method, files)


def _images_structure(args: argparse.Namespace, cfgs: Any, method: str, files: list[Path]) -> int:
    """The structure localizer over the folder (:func:`pose2rgbd.inference.image_sequence.run_sequence`): a
    sequence in name order unless --no-sequence; rows without a fix keep their place (empty pose fields, the reason),
    an image the localizer cannot take (another aspect ratio without --camera) too."""
    import dataclasses

    from pose2rgbd.inference import load_engine
    from pose2rgbd.inference.calibration import load_calibration
    from pose2rgbd.inference.image_sequence import run_sequence
    from pose2rgbd.inference.query_camera import no_exif_note, query_camera, wants_exif
    from pose2rgbd.inference.structure_load import load_structure_localizer
    from pose2rgbd.placemap import PlaceMap

    scfg = cfgs["structure"]
    if args.no_sequence:
        scfg = dataclasses.replace(scfg, use_previous_fix=False)
    prior_engine = load_engine(cfgs["engine"].as_batch_job()) if "posegan" in method else None  # a batch job
    loc = load_structure_localizer(args.map, scfg, prior_engine=prior_engine)
    loc.query_lens = query_camera(args.camera, loc.map)
    loc.use_exif = wants_exif(args.camera)
    threshold = None
    if args.calibration:
        cal = load_calibration(args.calibration)
        loc.use_calibration(cal)
        threshold = cal.ood_threshold if cal.ood_threshold > 0 else None
    elif loc.calibration is None:
        print(f"  note: the map {args.map} holds no calibration{_uncalibrated_why(loc.map)}: covariances are the "
              f"inliers' raw information (too small) and nothing is flagged")  # fmt: skip
    s = run_sequence(loc, files, args.out, threshold=threshold, bit_depth=args.bit_depth,
                     progress=not args.no_progress)  # fmt: skip
    print(f"{args.out}: {s.poses(args.out)} poses from {len(files)} images in {args.dir} against the map {args.map} "
          f"({method}; {'unordered' if args.no_sequence else 'a sequence in name order'}; world frame "
          f"{loc.world_frame})")  # fmt: skip
    datum = loc.map.datum if isinstance(loc.map, PlaceMap) else None
    if datum is not None:  # what turns the poses into latitude, longitude and altitude
        about = f"lat {datum.lat_deg:.9g}, lon {datum.lon_deg:.9g}, alt {datum.alt_m:.6g} m"
        if datum.world_from_enu is None:
            print(f"  world frame {loc.world_frame}: ENU metres about {about} (the map's datum)")
        else:
            print(f"  world frame {loc.world_frame}: placed against ENU about {about} by the map's datum "
                  "(`map info --json`: dataset.datum.world_from_enu)")  # fmt: skip
    print(f"  time per image: p50 {s.percentile_ms(50):.0f} ms, p99 {s.percentile_ms(99):.0f} ms")
    if scfg.focal_tolerance > 0 and loc.focal.cameras > 1:  # inference/focal_check.py: photos' own cameras
        print(f"  camera: {loc.focal.cameras} cameras; {loc.focal.flagged} fix(es) flagged because their matches do "
              "not fit their camera's focal length")  # fmt: skip
    elif scfg.focal_tolerance > 0 and loc.focal.scales:
        print(f"  camera: {_focal_line(loc.focal, scfg.focal_tolerance)}")
    cal_name = {"map": "the map's own calibration", "file": f"{args.calibration}"}.get(loc.calibration_source, "none")
    print(f"  covariance calibration: {cal_name}; out of distribution: {s.flagged} fix(es) flagged"
          + (f" (policy {scfg.ood_policy})" if loc.calibration is not None else ""))  # fmt: skip
    if loc.calibration is not None and loc.calibration.confidence_model:
        from pose2rgbd.placemap.place_map import pose_units_of

        units = "m" if pose_units_of(loc.map.manifest) == "m" else "map units"
        print(f"  confidence: P(position error < {loc.calibration.confidence_model['bound_m']:.4g} {units})")
    for line in s.left_out_lines(args.out):  # the images without a pose in the file, why, and where they are
        print(line)
    if s.no_exif:
        print(f"  {no_exif_note(s.no_exif, len(files))}")
    if sum(s.no_fix.values()) == len(files):
        print(f"  no image got a fix (exit status 1): where the reasons above are too few matches or inliers for every "
              f"one, the images are likely of another place than the map {args.map}'s, or of a part of it its "
              "keyframes do not see")  # fmt: skip
    return 0 if s.poses(args.out) else 1  # a trajectory without a pose (a TUM file's flagged fixes are comments)


def _focal_line(focal: FocalCheck, tolerance: float) -> str:
    """What the run's fixes say of the query camera's focal length (:class:`~pose2rgbd.inference.focal_check.
    FocalCheck`): the median factor their matches fit and whether it is off -- judged wrong (its fixes flagged),
    within the tolerance, or further off than it but not significant (too few fixes, or too scattered) yet."""
    m = focal.median
    head = f"the last {len(focal.scales)} fixes' matches fit {m:.3f} x its focal length"
    if focal.verdict():
        return (f"{head} (OFF by more than {tolerance:.0%}); its fixes are flagged: give the images' camera, "
                "--camera FX,FY,CX,CY")  # fmt: skip
    if abs(m - 1.0) <= tolerance:
        return f"{head} (within {tolerance:.0%})"
    from pose2rgbd.inference.focal_check import MIN_FIXES

    n = len(focal.scales)
    why = f"too few fixes to judge ({MIN_FIXES} needed)" if n < MIN_FIXES else "the fixes scatter too much to judge"
    return (f"{head} ({abs(m - 1.0):.1%} off: more than {tolerance:.0%}, but not significant yet -- {why}; none is "
            "flagged. If the images' camera is not the map's, give it: --camera FX,FY,CX,CY)")  # fmt: skip


def _uncalibrated_why(place_map: object) -> str:
    """`` (why; what to do)`` for a map on disk without a calibration (its manifest's reason), else ""."""
    from pose2rgbd.placemap import PlaceMap

    if not isinstance(place_map, PlaceMap):
        return ""
    c = place_map.calibration_status()
    return f" ({'; '.join(str(v) for v in (c.get('reason'), c.get('note')) if v)})"


def _images_model(args: argparse.Namespace, cfg: Any, files: list[Path]) -> int:
    from pose2rgbd.errors import CheckpointError, ConfigError
    from pose2rgbd.inference import LocalizeEngine, load_engine
    from pose2rgbd.inference.calibration import load_calibration
    from pose2rgbd.inference.image_sequence import ModelRows, keep_interrupted, localize_batches

    need_checkpoint(cfg)
    if args.batch < 1:
        raise ConfigError("--batch must be >= 1")
    if args.bit_depth and not 8 <= args.bit_depth <= 16:
        raise ConfigError(f"--bit-depth {args.bit_depth}: expected 0 (inferred per image) or 8 to 16")
    threshold = load_calibration(args.calibration).ood_threshold if args.calibration else None
    engine = load_engine(cfg.as_batch_job())  # a folder of images: a batch job, not a serving process
    if not isinstance(engine, LocalizeEngine):
        raise CheckpointError(
            f"{cfg.checkpoint}: a {engine.loaded.kind!r} model does not localize images (it renders them); localize "
            "against a place map (--map M, `pose2rgbd map build`) or with an image -> pose model (`pose2rgbd train "
            "--method posegan`)"
        )
    rows = ModelRows(args.out, engine.world_frame, threshold)
    skipped: list[str] = []
    try:
        for pose in localize_batches(engine, files, batch=args.batch, crop_scale=args.crop_scale,
                                     bit_depth=args.bit_depth, progress=not args.no_progress,
                                     skipped=skipped):  # fmt: skip
            rows.add(pose)
    except KeyboardInterrupt:
        keep_interrupted(rows, rows.count + len(skipped), len(files))
        raise
    rows.write()
    print(f"{args.out}: {rows.poses} poses from {len(files)} images in {args.dir} (world frame {engine.world_frame})")
    if rows.left_out_line():
        print(rows.left_out_line())
    if skipped:
        print(f"  skipped {len(skipped)} file(s) that are not usable images (no pose written for them):")
        for why in skipped[:20]:
            print(f"    {why}")
        if len(skipped) > 20:
            print(f"    ... and {len(skipped) - 20} more")
    return 0 if rows.poses else 1


# the span of the covariance factor (variance) within which a calibration is honest (docs/results.md, "Honest
# uncertainty by default"), and how far the mean confidence may lie from the share of fixes within its bound
HONEST_FACTOR = (0.5, 2.0)
HONEST_CONFIDENCE_GAP = 0.2


def honesty_warnings(default: dict[str, float]) -> list[str]:
    """What ``localize calibrate`` warns of when the map's own calibration is not honest on the frames it measured
    (``default``: :func:`~pose2rgbd.evaluation.calibration.calibrate_map`'s measurement of it): a covariance factor
    outside :data:`HONEST_FACTOR`, a mean confidence more than :data:`HONEST_CONFIDENCE_GAP` from the share within
    its bound."""
    out = []
    f = default.get("factor")
    if f is not None and not math.isnan(f) and f > 0 and not HONEST_FACTOR[0] <= f <= HONEST_FACTOR[1]:
        narrow = f > HONEST_FACTOR[1]
        out.append(
            f"the map's own covariance is not honest on these frames: factor {f:.3g}, so its standard deviations are "
            f"{math.sqrt(f) if narrow else 1 / math.sqrt(f):.2g} times too {'narrow' if narrow else 'wide'} "
            f"(honest: {HONEST_FACTOR[0]:g}-{HONEST_FACTOR[1]:g}). The file written here rescales them to these "
            "frames' errors: check first that the dataset's poses are good enough to score against (a video's GPS "
            'track, with no SfM, can be off by more than the localizer; docs/results.md, "Held-out blocks of a '
            'walking clip: the GPS track as the yardstick")'
        )
    m, share = default.get("mean_confidence"), default.get("share_within_bound")
    if m is not None and share is not None and abs(m - share) > HONEST_CONFIDENCE_GAP:
        out.append(
            f"the confidence is {'optimistic' if m > share else 'pessimistic'} on these frames: mean {m:.2f} "
            f"against {share:.2f} of the fixes within its bound"
        )
    return out


def _calibrate(args: argparse.Namespace) -> int:
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.evaluation.calibration import calibrate
    from pose2rgbd.inference.calibration import SCALE_LEVEL, save_calibration

    if not (args.crop_scale == 0.0 or 1.0 <= args.crop_scale <= 4.0) or args.batch < 1 or args.max_frames < 0:
        raise ConfigError("--crop-scale in [1, 4], --batch >= 1, --max-frames >= 0")
    args.scale_level = SCALE_LEVEL if args.scale_level is None else args.scale_level
    if not 0.5 <= args.scale_level < 1.0:
        raise ConfigError(f"--scale-level {args.scale_level}: must be in [0.5, 1)")
    if (args.checkpoint is None) == (args.map is None):
        raise ConfigError("give --checkpoint (an image -> pose model) or --map (the structure localizer), not both")
    from pose2rgbd.inference.calibration import FILE_FIRST_LINE

    _check_file_out(args.out, (".yaml", ".yml"), "calibration", [args.checkpoint, args.map, args.dataset],
                    args.overwrite, (FILE_FIRST_LINE,))  # fmt: skip
    if args.map is not None:
        from pose2rgbd.evaluation.calibration import calibrate_map

        cal, notes, default = calibrate_map(args.map, args.dataset, split=args.split, max_frames=args.max_frames,
                                            ood_quantile=args.ood_quantile, scale_level=args.scale_level,
                                            progress=True)  # fmt: skip
        save_calibration(cal, args.out)
        print(f"{args.out}: calibrated the structure localizer of {args.map} on {cal.n_frames} frames with a fix")
        e = cal.errors
        print(f"  position error median {e['position_median_m']:.3f} m, p90 {e['position_p90_m']:.3f} m; "
              f"orientation median {e['orientation_median_deg']:.2f} deg")  # fmt: skip
        b = cal.information_scale_bound
        print(
            f"  raw information covariance x {cal.information_scale:.3g} (position block x "
            f"{cal.information_scale_position:.3g}, orientation x {cal.information_scale_orientation:.3g}): the "
            f"upper {b['level']:.0%} confidence bound of the median over {b['n']:.0f} fixes (the median itself: x "
            f"{b['median']:.3g}, position x {b['median_position']:.3g}, orientation x {b['median_orientation']:.3g})"
        )
        if "factor" in default:
            print(f"  the map's own calibration on these frames: covariance factor {default['factor']:.3g} (position "
                  f"{default['factor_position']:.3g}, orientation {default['factor_orientation']:.3g}; variance, "
                  f"1 = calibrated) over {cal.n_frames - int(default.get('flagged', 0))} unflagged fixes; "
                  f"{int(default.get('flagged', 0))} flagged out of distribution")  # fmt: skip
            if "mean_confidence" in default:
                print(f"  confidence: mean {default['mean_confidence']:.2f}, share within its bound "
                      f"{default['share_within_bound']:.2f}")  # fmt: skip
            for line in honesty_warnings(default):
                print(f"  WARNING: {line}")
        elif not default.get("source"):
            print("  the map holds no calibration of its own (built without one): rebuild it with `map build`")
        for n in notes:
            print(f"  note: {n}")
        return 0
    cal, notes = calibrate(
        args.checkpoint, args.dataset, split=args.split, device=args.device, batch_size=args.batch,
        crop_scale=args.crop_scale, max_frames=args.max_frames, ood_quantile=args.ood_quantile,
        confidence_bins=args.bins, progress=True,
    )  # fmt: skip
    save_calibration(cal, args.out)
    sd = [math.sqrt(v) for v in cal.covariance.diagonal()]
    e = cal.errors
    print(f"{args.out}: calibrated on {cal.n_frames} frames ({cal.source.get('split')} split)")
    print(
        f"  position error median {e['position_median_m']:.3f} m, p90 {e['position_p90_m']:.3f} m; "
        f"orientation median {e['orientation_median_deg']:.2f} deg, p90 {e['orientation_p90_deg']:.2f} deg"
    )
    rot = " ".join(f"{math.degrees(v):.2f}" for v in sd[3:])
    print(f"  standard deviations x y z {sd[0]:.3f} {sd[1]:.3f} {sd[2]:.3f} m, rotX rotY rotZ {rot} deg (world axes)")
    print(f"  out-of-distribution threshold: confidence < {cal.ood_threshold:.4f} ({cal.ood_quantile:.0%} quantile)")
    for n in notes:
        print(f"  note: {n}")
    return 0
