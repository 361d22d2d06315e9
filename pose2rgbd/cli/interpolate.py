"""``pose2rgbd interpolate``: view synthesis / frame interpolation along a virtual route (MP4 + contact sheet)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "interpolate",
        help="render a virtual route between two poses or two dataset frames (MP4 + contact sheet)",
        description="View synthesis and frame interpolation with any pose -> image checkpoint: linear and "
        "parabolic routes (orientation by slerp) between two poses (--from-pose / --to-pose: x y z qx qy qz qw, "
        "T_world_cam) or between the poses of two real frames of a dataset. Writes OUT/route_<mode>.mp4, "
        "OUT/sheet_<mode>.png, OUT/poses_<mode>.csv and OUT/interpolation.json.",
        allow_abbrev=False,
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="pose -> image checkpoint (.pt)")
    p.add_argument("--from-pose", type=float, nargs=7, metavar="V", help="start pose: x y z qx qy qz qw")
    p.add_argument("--to-pose", type=float, nargs=7, metavar="V", help="end pose: x y z qx qy qz qw")
    p.add_argument("--dataset", type=Path, help="dataset whose frames --from-frame / --to-frame name")
    p.add_argument("--from-frame", type=int, help="start frame index (with --dataset)")
    p.add_argument("--to-frame", type=int, help="end frame index (with --dataset)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--frames", type=int, default=30, help="frames per route, end points included")
    p.add_argument("--mode", choices=("linear", "parabolic", "both"), default="both", help="position interpolation")
    p.add_argument(
        "--bulge", type=float, default=0.25, help="parabolic: peak sideways offset / start-end distance (sign: side)"
    )
    p.add_argument("--fps", type=float, default=10.0, help="video frame rate")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier interpolation in --out")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose2rgbd.evaluation.view_synthesis import MODES, interpolate_checkpoint, pose_from_values

    res = interpolate_checkpoint(
        args.checkpoint,
        args.out,
        from_pose=None if args.from_pose is None else pose_from_values(args.from_pose, "--from-pose"),
        to_pose=None if args.to_pose is None else pose_from_values(args.to_pose, "--to-pose"),
        dataset=args.dataset,
        from_frame=args.from_frame,
        to_frame=args.to_frame,
        device=args.device,
        frames=args.frames,
        modes=MODES if args.mode == "both" else (args.mode,),
        bulge=args.bulge,
        fps=args.fps,
        overwrite=args.overwrite,
    )
    for r in res.routes:
        oob = f" ({r.out_of_bounds} poses outside the training range)" if r.out_of_bounds else ""
        print(f"{r.mode}: {r.frames} frames -> {r.video}, {r.sheet}{oob}")
    return 0
