"""``pose2rgbd evaluate``: metrics, qualitative grid, curves and fly-through of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args

# The spellings users and docs rely on; each feeds the same keys as the generated --<key> flags and --set.
ALIASES = (
    Alias("--split", "split", metavar="{random,route,blocks,every-nth,all,null}"),
    Alias("--max-frames", "max_frames"),
    Alias("--no-baseline", "baseline", const=False, help="skip all three baselines"),
    Alias("--rot-weight", "rot_weight_m", metavar="X"),
    Alias("--fly-frames", "fly_frames"),
    Alias("--fps", "fps"),
    Alias("--device", "device"),
    Alias("--allow-other-dataset", "allow_other_dataset", const=True),
    Alias("--no-progress", "progress", const=False, help="no progress bars"),
)


def _schema() -> Schema:
    from pose2rgbd.evaluation.config import EvaluateConfig

    return Schema(EvaluateConfig)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint: metrics table, grid, curves, fly-through video",
        description="Evaluates a checkpoint on the test frames of a split, beside three training-free baselines on "
        "the same frames, each a row of the table: the nearest-pose baseline (the nearest training frame); where the "
        "dataset has depth, the reprojection baseline (the nearest training RGB-D frames warped into the test pose; "
        "--reprojection_frames 0: off) and the fused-geometry baseline (the training frames' depth fused into one "
        "surface and ray-cast; needs Open3D; --fused_baseline false: off). The baselines need the training frames "
        "of the checkpoint's own dataset (none with --allow-other-dataset); --no-baseline skips all three. Where the "
        "dataset's depth was estimated, depth is also scored at points triangulated among the test frames "
        "(--point_depth). Writes OUT/metrics.md, OUT/metrics.json, OUT/per_frame.csv, OUT/grid.png, "
        "OUT/coverage.png (with a baseline), OUT/depth_sigma.png (when the checkpoint carries a depth "
        "uncertainty), OUT/curves.png (when log.csv sits next to the checkpoint) and OUT/flythrough.mp4, beside what "
        "OUT holds: an earlier evaluation's files are replaced; files of those names in a folder without one (the "
        "user's) are refused.",
        allow_abbrev=False,
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True, help="the dataset it was trained on")
    p.add_argument("--out", type=Path, help="output directory (default CHECKPOINT_DIR/eval-SPLIT)")
    p.add_argument("--cache-root", type=Path, help="where training caches live (default DATASET/cache)")
    p.add_argument(
        "--fit-depth-uncertainty",
        action="store_true",
        help="first fit the checkpoint's depth uncertainty on its own validation frames and write it into the "
        "checkpoint (atomically, the rest of it kept): what `train` does at its end, for a checkpoint written "
        "before it did",
    )
    add_config_flags(p, _schema, ALIASES, config_help="YAML with EvaluateConfig keys; flags and --set override it")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose2rgbd.evaluation import evaluate

    cfg = config_from_args(args)
    if args.fit_depth_uncertainty and args.out is not None:  # refused before the fit writes the checkpoint
        from pose2rgbd.evaluation.evaluate import refuse_the_users_files

        refuse_the_users_files(args.out)
    if args.fit_depth_uncertainty:
        from pose2rgbd.models.device import resolve_device
        from pose2rgbd.training import fit_checkpoint_depth_uncertainty

        fitted = fit_checkpoint_depth_uncertainty(
            args.checkpoint,
            args.dataset,
            batch_size=cfg.batch_size,
            device=str(resolve_device(cfg.device)),
            cache_root=args.cache_root,
        )
        if fitted is None:
            print(f"{args.checkpoint}: no depth uncertainty fitted (a model without depth, or no validation frames "
                  "with depth in its split); the checkpoint is unchanged")  # fmt: skip
        else:
            print(f"{args.checkpoint}: depth uncertainty written: {fitted.describe()}")
    res = evaluate(args.checkpoint, args.dataset, config=cfg, out_dir=args.out,
                   cache_root=args.cache_root)  # fmt: skip
    print((res.out_dir / "metrics.md").read_text())
    for name, path in res.files.items():
        print(f"{name:13s} {path}")
    return 0
