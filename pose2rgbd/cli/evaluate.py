"""``pose2rgbd evaluate``: metrics, qualitative grid, curves and fly-through of a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint: metrics table, grid, curves, fly-through video",
        description="Evaluates a checkpoint and the nearest-pose baseline on the test frames of a split, and writes "
        "OUT/metrics.md, OUT/metrics.json, OUT/grid.png, OUT/curves.png and OUT/flythrough.mp4.",
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True, help="the dataset it was trained on")
    p.add_argument("--split", choices=("random", "route", "all"), help="default: the split used in training")
    p.add_argument("--out", type=Path, help="output directory (default CHECKPOINT_DIR/eval-SPLIT)")
    p.add_argument("--max-frames", type=int, default=0, help="evaluate at most N test frames (0: all)")
    p.add_argument("--no-baseline", action="store_true", help="skip the nearest-pose baseline")
    p.add_argument("--rot-weight", type=float, help="baseline metres per radian (default: median scene depth)")
    p.add_argument("--fly-frames", type=int, default=120, help="frames in the fly-through video")
    p.add_argument("--fps", type=float, default=10.0, help="fly-through frame rate")
    p.add_argument("--device", default="auto")
    p.add_argument("--allow-other-dataset", action="store_true", help="evaluate on a dataset it was not trained on")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose2rgbd.evaluation import evaluate

    res = evaluate(
        args.checkpoint,
        args.dataset,
        args.split,
        out_dir=args.out,
        baseline=not args.no_baseline,
        rot_weight_m=args.rot_weight,
        max_frames=args.max_frames,
        fly_frames=args.fly_frames,
        fps=args.fps,
        device=args.device,
        allow_other_dataset=args.allow_other_dataset,
        progress=not args.no_progress,
    )
    print((res.out_dir / "metrics.md").read_text())
    for name, path in res.files.items():
        print(f"{name:13s} {path}")
    return 0
