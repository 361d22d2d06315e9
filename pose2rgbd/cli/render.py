"""``pose2rgbd render``: run the render node offline over a bag, or render a trajectory (CSV, TUM or a dataset's
frames.csv) to a video or images."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera_axes import CAMERA_AXES

if TYPE_CHECKING:
    from pose2rgbd.inference.common import EngineConfig


def engine_aliases(prefix: str = "engine.", *, group: str | None = None, needed: str = "required") -> tuple[Alias, ...]:
    """The short engine flags shared by ``render bag``, ``render trajectory`` and the localize commands; ``group``:
    the --help section they are listed in (default: the common options); ``needed``: when --checkpoint is needed,
    as its help says it."""
    return tuple(
        dataclasses.replace(a, group=group)
        for a in (
            Alias(
                "--checkpoint",
                f"{prefix}checkpoint",
                metavar="PATH",
                help=f"model checkpoint (.pt) from `pose2rgbd train`, or .onnx from `pose2rgbd export` ({needed})",
            ),
            Alias("--backend", f"{prefix}backend", choices=("auto", "torch", "onnxruntime")),
            Alias("--device", f"{prefix}device"),
            Alias("--precision", f"{prefix}precision", choices=("auto", "fp32", "bf16", "fp16")),
            Alias("--threads", f"{prefix}threads"),
            Alias("--lookahead", f"{prefix}lookahead"),
        )
    )


BAG_ALIASES = (
    *engine_aliases(),
    Alias("--pose-source", "pose_source", choices=("tf", "topic")),
    Alias("--pose-topic", "topics.pose"),
    Alias("--world-frame", "world_frame"),
    Alias("--camera-frame", "camera_frame"),
    Alias("--rate-hz", "rate_hz"),
)


def _renderer_schema() -> Schema:
    from pose2rgbd.nodes.renderer import RendererConfig

    return Schema(RendererConfig)


def engine_schema() -> Schema:
    from pose2rgbd.inference.common import EngineConfig

    return Schema({"engine": EngineConfig})


def add_bag_input(b: argparse.ArgumentParser, what: str = "input bag (rosbag2 dir, .mcap, .db3 or ROS 1 .bag)") -> None:
    """The input bag of a ``<command> bag``: positional, as ``convert bag BAG`` takes it, or ``--bag BAG``
    (:func:`input_bag` reads either)."""
    b.add_argument("bag_positional", nargs="?", type=Path, default=None, metavar="BAG", help=f"{what} (or --bag)")
    b.add_argument("--bag", type=Path, default=None, help=what)


def input_bag(args: argparse.Namespace) -> Path:
    """The bag of :func:`add_bag_input`: given once, positional or ``--bag``."""
    pos, flag = getattr(args, "bag_positional", None), getattr(args, "bag", None)
    if pos is not None and flag is not None and Path(pos) != Path(flag):
        raise ConfigError(f"two bags given: {pos} and --bag {flag}; give one")
    bag = flag if flag is not None else pos
    if bag is None:
        raise ConfigError("no input bag: give it as BAG or --bag BAG")
    return Path(bag)


def add_bag_replay_args(b: argparse.ArgumentParser) -> None:
    """The flags of every ``<command> bag`` replay through a node: input and output bag, rate, namespace."""
    add_bag_input(b)
    b.add_argument("--out", type=Path, required=True, help="output bag directory")
    b.add_argument("--rate", type=float, default=0.0,
                   help="replay speed: 0 as fast as possible (default), 1.0 bag speed (real time, as a live node is "
                   "fed)")  # fmt: skip
    b.add_argument("--namespace", default="pose2rgbd", help="prefix of the output topics")
    b.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")


def need_checkpoint(engine_cfg: Any) -> None:
    from pose2rgbd.errors import ConfigError

    if not engine_cfg.checkpoint:
        raise ConfigError("engine.checkpoint is not set: pass --checkpoint PATH (or set it in --config)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("render", help="render RGB + metric depth: over a bag (offline render node) or a trajectory")
    rsub = p.add_subparsers(dest="render_command", metavar="<source>", required=True)

    b = rsub.add_parser("bag", help="replay a bag through the render node; write its topics to a new bag",
                        allow_abbrev=False)  # fmt: skip
    add_bag_replay_args(b)
    add_config_flags(
        b, _renderer_schema, BAG_ALIASES, config_help="render node YAML (e.g. config/render.yaml); flags override it"
    )
    b.set_defaults(func=_bag)

    t = rsub.add_parser(
        "trajectory",
        help="render a trajectory (CSV frame,time_s,tx,ty,tz,qx,qy,qz,qw, TUM timestamp tx ty tz qx qy qz qw, or a "
        "dataset's frames.csv)",
        description="Renders RGB + metric depth at every pose of a trajectory file, in file order. The format is told "
        "by the content: the trajectory CSV (header row frame,time_s,tx,ty,tz,qx,qy,qz,qw; the simulator's ground "
        "truth), a TUM trajectory (lines 'timestamp tx ty tz qx qy qz qw', whitespace separated, '#' comments: "
        "TUM RGB-D groundtruth.txt, `localize images --out poses.tum`) or a pose2rgbd dataset's frames.csv (header "
        "index,stamp_ns,tx,ty,tz,qx,qy,qz,qw,...; what `convert` writes, read with the manifest.yaml beside it; the "
        "dataset folder itself is read as its frames.csv). All are T_world_cam in metres, quaternion x y z w "
        "(Hamilton); the CSV and TUM camera frame is optical unless --camera-axes says otherwise (as `convert images "
        "--camera-axes`: pass the same value the dataset was imported with), a dataset's is optical. Outputs: a "
        "video (RGB | colourized depth), or a directory of rgb_NNNNNN.png, depth_NNNNNN.png (16-bit, MILLIMETRES: "
        "metres x 1000, 0 = no depth, 65535 = 65.535 m or farther), depth_NNNNNN.npy (float32 METRES, NaN = no "
        "depth) and, where the checkpoint carries a depth uncertainty (fitted by `train`), depth_sigma_NNNNNN.npy "
        "(float32 METRES per pixel: the bound the depth's absolute error stayed within on 68.3 % of the held-out "
        "pixels it was fitted on; NaN where there is no depth), NNNNNN the pose's place in the file from 0; and the "
        "pose table (OUT/poses.csv, or NAME.poses.csv beside a video): each pose rendered, out_of_bounds (outside "
        "the training poses) and coverage_m / coverage_deg (distance to the nearest training camera); a directory "
        "also gets OUT/README_pose2rgbd.txt, a note of its files and their units. docs/ros.md, 'Offline runtime'.",
        allow_abbrev=False,
    )
    t.add_argument("--trajectory", type=Path, required=True,
                   help="trajectory CSV, TUM file or dataset frames.csv of T_world_cam, or a dataset folder "
                   "(see above)")  # fmt: skip
    t.add_argument("--out", type=Path, required=True,
                   help="out.mp4 (RGB | depth side by side) or a directory (depth PNGs in mm, .npy in m, "
                   "depth_sigma .npy in m)")  # fmt: skip
    t.add_argument("--camera-axes", choices=CAMERA_AXES, default="optical",
                   help="axes of the trajectory's camera frame: optical (x right, y down, z forward; TUM RGB-D, "
                   "KITTI, the simulator), opengl (x right, y up, z back) or flu (x forward, y left, z up); as "
                   "`convert images --camera-axes`; a dataset's frames.csv is optical (only that is "
                   "accepted)")  # fmt: skip
    t.add_argument("--fps", type=float, default=0.0, help="video frame rate (0: from the file's times, else 10)")
    t.add_argument("--batch", type=int, default=8, help="poses per forward pass")
    t.add_argument("--max-depth", type=float, default=0.0, help="depth colour scale (0: 99th percentile)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an earlier render at --out (a folder of rgb_/depth_ files is replaced whole, "
                   "refused while it holds other files; any other folder is refused)")  # fmt: skip
    add_config_flags(t, engine_schema, engine_aliases(),
                     config_help="YAML with an 'engine:' section (EngineConfig); flags override it")  # fmt: skip
    t.set_defaults(func=_trajectory)


def _bag(args: argparse.Namespace) -> int:
    from pose2rgbd.runtime.offline import run_renderer_bag

    cfg = config_from_args(args)
    need_checkpoint(cfg.engine)
    stats = run_renderer_bag(
        cfg,
        input_bag(args),
        args.out,
        rate=args.rate,
        namespace=args.namespace,
        storage=args.storage,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    c = stats.counters
    print(f"{args.out}: {c['frames']} frames in {stats.wall_s:.1f} s")
    for topic, n in sorted(stats.messages_out.items()):
        print(f"  {topic:<40} {n}")
    if c["frames"]:
        p50, p99 = stats.latency_percentile(50), stats.latency_percentile(99)
        print(f"  pose-to-images latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        pose_oob = c.get("out_of_bounds", 0) - c.get("gps_out_of_place", 0)  # the GPS's are counted on their line
        besides = " (besides those flagged for the GPS, below)" if c.get("gps_out_of_place", 0) else ""
        print(f"  out of the training poses' bounds: {pose_oob} of {c['frames']} frames{besides}")
        gps = gps_line(c, cfg.topics.gps, stats.absent.get("topics.gps"))
        if gps:
            print(gps)
        for line in frame_lines(stats.frame_stats):
            print(line)
        if cfg.engine.lookahead > 0:
            print(lookahead_line(cfg.engine, c, args.rate))
    said = ("frames", "cache_hits", "out_of_bounds", "gps_fixes", "gps_checked", "gps_out_of_place")
    skipped = {k: v for k, v in c.items() if k not in said and v}
    if skipped:
        print(f"  not rendered / flagged: {skipped}")
    if not c["frames"]:
        held = sum(stats.messages_out.values())
        why = no_frame_reason(cfg, c, stats.world_frame)
        print(f"  no frame was rendered: {why}. The output bag {args.out} holds only the node's diagnostics "
              f"({held} messages); delete it or run again with --overwrite")  # fmt: skip
    return 0 if c["frames"] else 1


def frame_lines(fs: dict[str, list[float]]) -> list[str]:
    """The summary of a render run's frames (``RunStats.frame_stats``, one value per frame): how far its poses were
    from the nearest training camera, and the depth's uncertainty (``depth_sigma``: the median pixel's bound per
    frame, then over the frames with one; how many frames had none, flagged out of bounds)."""
    import numpy as np

    lines = []
    m, deg = np.asarray(fs.get("coverage_m", []), float), np.asarray(fs.get("coverage_deg", []), float)
    known = np.isfinite(m) & np.isfinite(deg) if len(m) == len(deg) else np.zeros(0, bool)
    if known.any():
        m, deg = m[known], deg[known]
        lines.append(
            f"  from the nearest training camera: median {np.median(m):.2f} m / {np.median(deg):.1f} deg, 95th "
            f"percentile {np.percentile(m, 95):.2f} m / {np.percentile(deg, 95):.1f} deg, farthest {m.max():.2f} m / "
            f"{deg.max():.1f} deg ({int(known.sum())} frames)"
        )
    sig = np.asarray(fs.get("depth_sigma_median_m", []), float)
    if sig.size:
        bounded, unbounded = sig[np.isfinite(sig)], int(np.isposinf(sig).sum())
        head = "  depth_sigma (the depth's error bound; each frame's median pixel): "
        parts = []
        if bounded.size:
            parts.append(
                f"median {np.median(bounded):.3g} m, 95th percentile {np.percentile(bounded, 95):.3g} m over "
                f"{bounded.size} frames"
            )
        if unbounded:
            parts.append(f"+inf (no bound) on {unbounded} frames flagged out of bounds")
        if parts:
            lines.append(head + "; ".join(parts))
    return lines


def gps_line(c: dict[str, int], topic: str, absent: tuple[str, list[str]] | None = None) -> str:
    """What the GPS check did in a render run over a bag (docs/ros.md, "Wrong place"): how many frames were flagged
    out of bounds because the bag's fixes lie far from the model's place, or why its fixes were not checked; where
    ``topics.gps`` is not in the bag (``absent``: the topic looked for, the bag's NavSatFix topics) but the bag has
    others, that it was not made and the flag that names one ("" for a bag without NavSatFix)."""
    fixes, checked, far = c.get("gps_fixes", 0), c.get("gps_checked", 0), c.get("gps_out_of_place", 0)
    if absent is not None and absent[1]:
        return (
            f"  GPS check not made: no {absent[0]} in the bag, whose NavSatFix is on {', '.join(absent[1])}; give it "
            'with --topics.gps TOPIC (docs/ros.md, "Wrong place")'
        )
    if not fixes:
        return ""
    if not checked:
        return (
            f"  GPS: {fixes} fixes on {topic}, none checked against the model's place (the model has no GPS datum, "
            "or no fix had a valid status)"
        )
    where = "the bag's GPS puts it far from the model's place: check that the model matches" if far else "within it"
    return (
        f"  flagged out of bounds for the GPS fix's distance from the model's place: {far} of {c['frames']} frames "
        f"({checked} of {fixes} fixes on {topic} checked; {where})"
    )


def lookahead_line(engine_cfg: EngineConfig, c: dict[str, int], rate: float) -> str:
    """What look-ahead did in a render run over a bag: how many frames came from its cache (rendered for a
    predicted pose within the tolerance of the requested one), and why none do when the bag is replayed as fast as
    possible."""
    hits, frames = c.get("cache_hits", 0), c["frames"]
    line = (f"  look-ahead: {hits} of {frames} frames from its cache (each rendered for a predicted pose within "
            f"{engine_cfg.tolerance_m:g} m / {engine_cfg.tolerance_deg:g} deg of the requested one)")  # fmt: skip
    if rate <= 0:
        line += ("; at --rate 0 the poses come back to back and leave the look-ahead thread no time to render ahead: "
                 "replay at --rate 1 to see it as a live node would")  # fmt: skip
    return line


def no_frame_reason(cfg: Any, c: dict[str, int], world_frame: str = "") -> str:
    """Why a render run over a bag rendered nothing, from its settings, counters and the world frame the node
    looked poses up in (``world_frame``; default the setting's)."""
    stale = c.get("stale_poses", 0)
    if stale and stale >= c.get("tf_failures", 0):
        return (
            f"{stale} pose(s) were older than max_pose_age_s ({cfg.max_pose_age_s:g} s) against the bag's clock, its "
            "log time: a bag recorded with simulated time (use_sim_time) stamps its messages with the simulator's "
            "clock, far from the time it was logged at; pass --max_pose_age_s 0 to render every pose whatever its "
            "age"
        )
    if cfg.pose_source == "tf":
        world = world_frame or cfg.world_frame or "the model's world frame"
        if c.get("tf_failures"):
            return (
                f"no transform {world} -> {cfg.camera_frame} could be looked up in the bag's TF "
                f"({c['tf_failures']} tries failed); check --world-frame and --camera-frame against the bag's /tf and "
                "/tf_static, or use --pose-source topic"
            )
        return f"the bag's TF never gave a pose of {cfg.camera_frame} in {world} (no /tf messages?)"
    why = [f"{c[k]} {k.replace('_', ' ')}" for k in ("rejected_poses", "stale_poses", "render_errors") if c.get(k)]
    if why:
        return f"every pose on {cfg.topics.pose} was refused ({', '.join(why)})"
    return f"no pose message on {cfg.topics.pose} (check --pose-topic; the bag's topics: `pose2rgbd bag info`)"


def _trajectory(args: argparse.Namespace) -> int:
    from pose2rgbd.convert.trajectories import format_title, read_trajectory
    from pose2rgbd.evaluation.trajectory import (
        camera_file_path,
        check_render_output,
        poses_table_path,
        render_trajectory,
    )
    from pose2rgbd.inference import RenderEngine
    from pose2rgbd.output_guard import FILE, VIDEO, check_output

    cfg = config_from_args(args)["engine"]
    need_checkpoint(cfg)
    check_output(args.out, VIDEO, inputs=[args.trajectory, cfg.checkpoint])
    check_output(poses_table_path(args.out), FILE, inputs=[args.trajectory, cfg.checkpoint])
    check_output(camera_file_path(args.out), FILE, inputs=[args.trajectory, cfg.checkpoint])
    check_render_output(args.out, args.overwrite)  # before the checkpoint is loaded
    traj = read_trajectory(args.trajectory, args.camera_axes)
    engine = RenderEngine.from_config(cfg.as_batch_job())  # a video, not a serving process
    res = render_trajectory(engine, traj, args.out, fps=args.fps, batch=args.batch, max_depth=args.max_depth,
                            overwrite=args.overwrite)  # fmt: skip
    print(f"{res.out}: {res.frames} frames from {format_title(traj.format)} ({res.out_of_bounds} out of bounds); "
          f"per pose: {res.poses}")  # fmt: skip
    squeeze = squeeze_note(engine.camera)
    if squeeze:
        print(f"  {squeeze}")
    return 0


def squeeze_note(cam: object) -> str:
    """What to know of renders whose pixels are not square (``fx != fy`` by more than 2 %): the training frames of
    another aspect ratio were resized to the model's size; the camera file describes the renders as they are."""
    fx, fy = float(getattr(cam, "fx", 0.0)), float(getattr(cam, "fy", 0.0))
    if fx <= 0 or fy <= 0 or abs(fx / fy - 1.0) <= 0.02:
        return ""
    w, h = int(getattr(cam, "width", 0)), int(getattr(cam, "height", 0))
    src = w * fy / fx / h if h else 0.0
    return (f"the renders are {w}x{h} with pixels {fy / fx:.2f} times as wide as tall (fx {fx:.1f}, fy {fy:.1f}): the "
            f"training frames (aspect {src:.2f}:1) were squeezed into the model's size; the camera file holds these "
            "intrinsics, and stretching a render back to that aspect shows the scene undistorted")  # fmt: skip
