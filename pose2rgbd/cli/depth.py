"""``pose2rgbd depth``: self-supervised depth from a dataset's video frames (Algorithm 2).

``depth train`` trains the ``selfsup-depth`` model on a dataset with frame sequences (the same as ``pose2rgbd
train --method selfsup-depth``); ``depth export`` writes a copy of the dataset with its depth, scaled to metres
from the GPS poses when every frame has one (or unscaled), plus a report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pose2rgbd.config_cli import FILES, Alias, Schema, add_config_flags, config_from_args

TRAIN_ALIASES = (
    Alias("--pose-source", "model.pose_source", choices=("posenet", "essential", "metric")),
    Alias("--velocity-weight", "model.velocity_weight"),
    Alias("--width", "model.width"),
    Alias("--height", "model.height"),
    Alias("--batch-size", "train.batch_size"),
    Alias("--lr", "train.lr"),
    Alias(("--minutes", "--max-minutes"), "train.max_minutes"),
    Alias("--epochs", "train.epochs"),
    Alias("--split", "train.split"),
    Alias("--no-progress", "train.progress", const=False, help="no progress bar"),
)
EXPORT_ALIASES = (
    Alias("--min-baseline", "scale.min_baseline_m"),
    Alias("--trajectory-backend", "trajectory.backend", choices=("compose", "pose-graph", "colmap")),
)


def _train_schema() -> Schema:
    from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
    from pose2rgbd.training.config import TrainConfig

    return Schema({"model": SelfSupDepthConfig, "train": TrainConfig})


def _export_schema() -> Schema:
    from pose2rgbd.convert.stages.scale import ScaleConfig
    from pose2rgbd.methods.selfsup_depth.metric import MetricPosesConfig
    from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig

    return Schema({"scale": ScaleConfig, "trajectory": TrajectoryConfig, "metric": MetricPosesConfig})


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("depth", help="self-supervised depth from video frames: train, export (Algorithm 2)")
    dsub = p.add_subparsers(dest="depth_command", metavar="<action>", required=True)
    t = dsub.add_parser(
        "train",
        help="train depth + ego-motion on a dataset's frame sequences (view synthesis)",
        description="Trains the selfsup-depth model (a depth network and a relative-pose source) on the time-ordered "
        "frames of a dataset, e.g. one made by `pose2rgbd convert video`. Writes OUT/last.pt, OUT/log.csv, "
        "OUT/config.yaml. Then `pose2rgbd depth export`.",
        allow_abbrev=False,
    )
    t.add_argument("--dataset", type=Path, required=True, help="format-v1 dataset with frame sequences")
    t.add_argument("--out", type=Path, required=True, help="training run directory")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run in OUT")
    add_config_flags(t, _train_schema, TRAIN_ALIASES, config_help="YAML with 'model:' and/or 'train:' sections")
    t.set_defaults(func=_train)
    e = dsub.add_parser(
        "export",
        help="dataset + trained depth model -> dataset with depth (metric from GPS, or unscaled) and a report",
        allow_abbrev=False,
    )
    e.add_argument("--dataset", type=Path, required=True, help="the dataset the model was trained on (or another)")
    e.add_argument("--checkpoint", type=Path, required=True, help="OUT/last.pt of `depth train`")
    e.add_argument("--out", type=Path, required=True, help="output dataset (written atomically)")
    e.add_argument("--gps", choices=("auto", "on", "off"), default="auto",
                   help="metres from the GPS poses: auto (every frame has lat/lon), on, off (unscaled)")  # fmt: skip
    e.add_argument("--poses", choices=("dataset", "video", "metric"), default="dataset",
                   help="dataset: keep the dataset's poses; video: pseudo-absolute poses from the video alone "
                   "(relative to each source's first frame, up to scale; made by --trajectory-backend); metric: "
                   "structure from motion aligned to the GPS poses by a robust Sim(3) (the model's metric poses "
                   "file, or computed), the pose network between")  # fmt: skip
    e.add_argument("--overwrite", action="store_true", help="replace an earlier output dataset")
    e.add_argument("--no-depth-check", action="store_true",
                   help="metric depth: skip scoring it at points triangulated among runs of 32 frames (as `convert "
                   "video`: report/summary.json's depth_at_points, a warning where it is far)")  # fmt: skip
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(e, _export_schema, EXPORT_ALIASES, config_help="YAML with 'scale:' / 'trajectory:' sections")
    e.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    from pose2rgbd.training.train import train

    cfg = config_from_args(args)
    res = train("selfsup-depth", args.dataset, args.out, cfg["model"], cfg["train"], resume=args.resume,
                overwrite=args.overwrite, inputs=getattr(args, FILES, None) or [])  # fmt: skip
    print(f"trained selfsup-depth ({res.parameters:,} parameters): {res.steps} steps, {res.elapsed_s / 60:.1f} min "
          f"({res.stop_reason})")  # fmt: skip
    print(f"  checkpoint: {res.last}")
    from pose2rgbd.convert.stages.depth_predict import check_trained_depth
    from pose2rgbd.methods.selfsup_depth.net import collapse_message

    spread, collapsed = check_trained_depth(args.dataset, res.last)
    print(f"  depth spread: per-image log-depth std {spread['log_std']:.3g}, {spread['at_max']:.0%} of pixels at the "
          f"far plane")  # fmt: skip
    if collapsed:
        print(f"WARNING: {collapse_message(spread, str(res.last))}", file=sys.stderr)
    return 0


def print_export(res: object) -> None:
    path, kind, fits = res.path, res.depth_kind, res.fits  # type: ignore[attr-defined]
    print(f"{path}: {res.frames} frames with {kind} depth")  # type: ignore[attr-defined]
    unit = float(getattr(res, "metres_per_unit", 0.0))
    for sid, f in fits.items():  # with metric poses a check of their scale; without, the scale written
        what = "GPS window fit (checks the scale used, below)" if unit > 0 else "scale"
        print(f"  source {sid}: {what} {f.scale:.4g} +- {f.sigma:.2g} m per network unit ({f.n_windows} windows, "
              f"{f.n_hover} hover windows rejected)")  # fmt: skip
    print_metric(getattr(res, "metric", {}))
    stereo = _stereo_of(path)
    if unit > 0 and stereo is None:
        print(f"  depth written at {unit:.4g} m per network unit (from the metric poses; manifest "
              "extra.depth.metres_per_unit)")  # fmt: skip
    elif stereo is not None:
        print_stereo(stereo, unit)
    checked = getattr(res, "depth_at_points", None)
    if checked is not None:  # convert video: the warning, where it is far, was logged with what to do
        print(f"  depth check: {checked.describe()}" + ("  (FAR: see the warning above)" if checked.far else ""))
    print(f"  report: {path / 'report'}")
    if getattr(res, "collapsed", False):
        print(f"WARNING: {res.warning}", file=sys.stderr)  # type: ignore[attr-defined]


def _stereo_of(path: Path) -> dict[str, object] | None:
    """The written dataset's ``extra.depth`` where its depth is multi-view stereo (``convert video --depth mvs`` /
    ``selfsup+mvs``) with ``scale``, the median network-to-stereo scale of its ``report/summary.json``; else None."""
    from pose2rgbd.dataset import Dataset

    if not (path / "manifest.yaml").is_file():
        return None
    depth = Dataset(path, check_files=False).manifest.extra.get("depth")
    if not isinstance(depth, dict) or depth.get("source") not in ("mvs", "selfsup+mvs"):
        return None
    out: dict[str, object] = dict(depth)
    try:
        summary = json.loads((path / "report" / "summary.json").read_text())
        out["scale"] = float(summary["network_to_stereo_scale"]["median"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return out


def print_stereo(depth: dict[str, object], unit: float) -> None:
    """What the written depth is, where multi-view stereo made it: the share of the pixels that is verified stereo,
    the share that is the network's depth (``selfsup+mvs``: at ``unit`` m per network unit, then scaled per frame
    to the stereo) and the share without depth."""
    mvs = depth.get("mvs")
    mvs = mvs if isinstance(mvs, dict) else {}
    share = mvs.get("written_share")
    combined = depth.get("source") == "selfsup+mvs"
    if combined and unit > 0:
        scale = depth.get("scale")
        then = f" (median x {scale:.3g})" if isinstance(scale, float) else ""
        print(f"  network depth at {unit:.4g} m per network unit (from the metric poses; manifest "
              f"extra.depth.network.metres_per_unit), then scaled per frame to the stereo{then}")  # fmt: skip
    if isinstance(share, dict):
        net = f", the network's depth (scaled to the stereo) on {share['network']:.1%}" if combined else ""
        why = (
            "the network's depth beyond the stereo's far bound; the sky is written as a surface"
            if combined
            else "sky, far field, no texture"
        )
        print(f"  depth written: multi-view stereo verified across views on {share['stereo']:.1%} of the pixels"
              f"{net}, none (NaN: {why}) on {share['none']:.1%} (manifest extra.depth.mvs.written_share; "
              "report/samples.png)")  # fmt: skip
    elif "verified_share" in mvs:  # written before the shares were recorded
        rest = "the network's depth or none" if combined else "none (NaN)"
        print(f"  depth written: multi-view stereo verified across views on {mvs['verified_share']:.1%} of the "
              f"pixels, elsewhere {rest}")  # fmt: skip


def print_metric(m: dict) -> None:
    """The metric-pose lines of an export: registered frames, Sim(3) per model, segments, the scale check."""
    from pose2rgbd.methods.selfsup_depth.metric import track_turn_words

    if not m:
        return
    print(f"  metric poses: {m['metric_frames']} of {m['frames']} frames")
    for sid, src in m.get("per_source", {}).items():
        line = f"    source {sid}: structure from motion registered {src['registered']} of {src['tried']} frames given"
        print(line + (f"; FELL BACK to the pose network: {src['fallback']}" if "fallback" in src else ""))
        for mo in src.get("models", []):
            if mo.get("used"):
                print(f"      model {mo['model']}: Sim(3) to GPS: {mo['scale']:.4g} m per SfM unit +- "
                      f"{mo['scale_rel_sigma']:.2%}, residual RMS {mo['residual_rms_m']:.2f} m (median "
                      f"{mo['residual_median_m']:.2f} m), {mo['inliers']} of {mo['points']} frames within "
                      f"{mo['threshold_m']:g} m")  # fmt: skip
                turn = track_turn_words(mo)
                if turn:
                    print(f"        {turn}")
            else:
                print(f"      model {mo['model']}: not used ({mo.get('why', '')})")
    segs = m.get("segments", [])
    print("    segments: " + ", ".join(f"{s['start']}-{s['end']} {s['pose_source']}" for s in segs))
    chk = m.get("check", {})
    if chk.get("message"):
        print(f"  scale check: {chk['message']}", file=sys.stdout if chk.get("agree", True) else sys.stderr)


def _export(args: argparse.Namespace) -> int:
    from pose2rgbd.convert.stages.depth_export import check_written_depth, export_depth

    cfg = config_from_args(args)
    res = export_depth(args.dataset, args.checkpoint, args.out, gps=args.gps, poses=args.poses,
                       scale_cfg=cfg["scale"], trajectory_cfg=cfg["trajectory"], metric_cfg=cfg["metric"],
                       overwrite=args.overwrite,
                       progress=not args.no_progress)  # fmt: skip
    if not args.no_depth_check:
        res = check_written_depth(res, progress=not args.no_progress)
    print_export(res)
    return 0
