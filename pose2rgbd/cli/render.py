"""``pose2rgbd render``: run the render node offline over a bag, or render a trajectory CSV to a video."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("pose2rgbd.render")


def _load_node_config(cls: type, path: Path | None) -> Any:
    """A node config from a YAML file (plain nested, or a ROS 2 params file of that node), or the defaults."""
    from pose2rgbd.config import load_yaml

    return cls() if path is None else load_yaml(cls, path)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (.pt) from `pose2rgbd train`")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: fp32 on CPU, bf16/fp16 on GPU; bf16 also on CPU (faster on CPUs with native bf16)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (0: one per core; 1 on a busy CPU)")
    p.add_argument("--lookahead", type=int, default=None, help="future poses rendered per batch (0: off)")


def apply_engine_args(eng: Any, args: argparse.Namespace) -> None:
    eng.checkpoint = str(args.checkpoint)
    if args.device:
        eng.device = args.device
    if args.precision:
        eng.precision = args.precision
    if getattr(args, "threads", None) is not None:
        eng.threads = args.threads
    if args.lookahead is not None:
        eng.lookahead = args.lookahead
    eng.__post_init__()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("render", help="render RGB + metric depth: over a bag (offline render node) or a trajectory")
    rsub = p.add_subparsers(dest="render_command", metavar="<source>", required=True)

    b = rsub.add_parser("bag", help="replay a bag through the render node; write its topics to a new bag")
    add_engine_args(b)
    b.add_argument("--bag", type=Path, required=True, help="input bag (rosbag2 dir, .mcap, .db3 or ROS 1 .bag)")
    b.add_argument("--out", type=Path, required=True, help="output bag directory")
    b.add_argument("--config", type=Path, default=None, help="render node YAML (e.g. config/render.yaml)")
    b.add_argument("--pose-source", choices=["tf", "topic"], default=None, help="camera pose from TF or a topic")
    b.add_argument("--pose-topic", default=None, help="PoseStamped topic (with --pose-source topic)")
    b.add_argument("--world-frame", default=None, help="world frame (default from config: map)")
    b.add_argument("--camera-frame", default=None, help="camera optical frame (default: camera_optical_frame)")
    b.add_argument("--rate-hz", type=float, default=None, help="render rate (topic source: 0 renders every pose)")
    b.add_argument("--rate", type=float, default=0.0, help="replay speed: 0 as fast as possible, 1.0 bag speed")
    b.add_argument("--namespace", default="pose2rgbd", help="prefix of the output topics")
    b.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    b.set_defaults(func=_bag)

    t = rsub.add_parser("trajectory", help="render a trajectory CSV (frame,time_s,tx,ty,tz,qx,qy,qz,qw)")
    add_engine_args(t)
    t.add_argument("--trajectory", type=Path, required=True, help="CSV of T_world_cam (the simulator's format)")
    t.add_argument("--out", type=Path, required=True, help="out.mp4 (RGB | depth side by side) or a directory")
    t.add_argument("--fps", type=float, default=0.0, help="video frame rate (0: from the CSV times, else 10)")
    t.add_argument("--batch", type=int, default=8, help="poses per forward pass")
    t.add_argument("--max-depth", type=float, default=0.0, help="depth colour scale (0: 99th percentile)")
    t.set_defaults(func=_trajectory)


def _bag(args: argparse.Namespace) -> int:
    from pose2rgbd.nodes.renderer import RendererConfig
    from pose2rgbd.runtime.offline import run_renderer_bag

    cfg = _load_node_config(RendererConfig, args.config)
    apply_engine_args(cfg.engine, args)
    if args.pose_source:
        cfg.pose_source = args.pose_source
    if args.pose_topic:
        cfg.topics.pose = args.pose_topic
    if args.world_frame:
        cfg.world_frame = args.world_frame
    if args.camera_frame:
        cfg.camera_frame = args.camera_frame
    if args.rate_hz is not None:
        cfg.rate_hz = args.rate_hz
    cfg.__post_init__()
    stats = run_renderer_bag(
        cfg,
        args.bag,
        args.out,
        rate=args.rate,
        namespace=args.namespace,
        storage=args.storage,
        overwrite=args.overwrite,
        progress=True,
    )
    c = stats.counters
    print(f"{args.out}: {c['frames']} frames in {stats.wall_s:.1f} s")
    for topic, n in sorted(stats.messages_out.items()):
        print(f"  {topic:<40} {n}")
    print(
        f"  pose-to-images latency p50 {stats.latency_percentile(50):.1f} ms, p99 {stats.latency_percentile(99):.1f} ms"
    )
    skipped = {k: v for k, v in c.items() if k not in ("frames", "cache_hits") and v}
    if skipped:
        print(f"  not rendered / flagged: {skipped}")
    return 0 if c["frames"] else 1


def read_trajectory_csv(path: Path) -> tuple[Any, Any]:
    """(time_s (N,), T_world_cam (N, 4, 4)) from ``frame,time_s,tx,ty,tz,qx,qy,qz,qw`` (header row required)."""
    import numpy as np

    from pose2rgbd.errors import ConfigError
    from pose2rgbd.geometry import T_from_tq

    cols = ("frame", "time_s", "tx", "ty", "tz", "qx", "qy", "qz", "qw")
    data: Any
    try:
        data = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read trajectory CSV: {e}") from e
    names = data.dtype.names or ()
    missing = [c for c in cols if c not in names]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; expected header {','.join(cols)}")
    data = np.atleast_1d(data)
    if len(data) == 0:
        raise ConfigError(f"{path}: no rows")
    t = np.stack([data["tx"], data["ty"], data["tz"]], axis=-1)
    q = np.stack([data["qx"], data["qy"], data["qz"], data["qw"]], axis=-1)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        bad = int(np.argmax(~(np.isfinite(t).all(1) & np.isfinite(q).all(1))))
        raise ConfigError(f"{path}: row {bad + 2} has NaN / inf")
    return np.asarray(data["time_s"]), T_from_tq(t, q)


def colorize_depth(depth: Any, max_depth: float) -> Any:
    """float32 metres -> uint8 RGB (turbo; NaN black, +inf / far white)."""
    import cv2
    import numpy as np

    d = np.nan_to_num(depth, nan=0.0, posinf=max_depth)
    u8 = np.clip(d / max(max_depth, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    rgb = cv2.applyColorMap(u8, cv2.COLORMAP_TURBO)[..., ::-1].copy()
    rgb[np.isnan(depth)] = 0
    rgb[~np.isnan(depth) & (depth >= max_depth)] = 255
    return rgb


def _trajectory(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm

    from pose2rgbd.errors import ConfigError
    from pose2rgbd.inference import EngineConfig, RenderEngine

    times, T = read_trajectory_csv(args.trajectory)
    cfg = EngineConfig()
    apply_engine_args(cfg, args)
    engine = RenderEngine.from_config(cfg)
    oob = engine.out_of_bounds(T)
    if oob.any():
        log.warning("%d of %d poses are outside the training poses (+ margin)", int(oob.sum()), len(T))
    fps = args.fps or (
        1.0 / float(np.median(np.diff(times))) if len(times) > 1 and np.all(np.diff(times) > 0) else 10.0
    )
    out: Path = args.out
    video = out.suffix.lower() in (".mp4", ".avi", ".mkv")
    writer = None
    if not video:
        out.mkdir(parents=True, exist_ok=True)
    max_depth = args.max_depth
    n = 0
    try:
        for s in tqdm(range(0, len(T), args.batch), desc="render", unit="batch"):
            res = engine.render(T[s : s + args.batch])
            for i in range(len(res)):
                k = s + i
                rgb = res.rgb[i] if res.rgb is not None else None
                depth = res.depth[i] if res.depth is not None else None
                if depth is not None and max_depth <= 0:
                    fin = depth[np.isfinite(depth)]
                    max_depth = float(np.percentile(fin, 99)) if fin.size else 1.0
                panels = [
                    p for p in (rgb, None if depth is None else colorize_depth(depth, max_depth)) if p is not None
                ]
                frame = np.concatenate(panels, axis=1)
                if video:
                    if writer is None:
                        out.parent.mkdir(parents=True, exist_ok=True)
                        h, w = frame.shape[:2]
                        writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
                        if not writer.isOpened():
                            raise ConfigError(f"{out}: OpenCV cannot open a video writer for this file type")
                    writer.write(np.ascontiguousarray(frame[..., ::-1]))
                else:
                    if rgb is not None:
                        cv2.imwrite(str(out / f"rgb_{k:06d}.png"), np.ascontiguousarray(rgb[..., ::-1]))
                    if depth is not None:
                        # 16-bit PNG in millimetres (0 = invalid / beyond 65.535 m), plus the float32 metres
                        mm = np.where(np.isfinite(depth), np.clip(depth * 1000.0, 0, 65535), 0).astype(np.uint16)
                        cv2.imwrite(str(out / f"depth_{k:06d}.png"), mm)
                        np.save(out / f"depth_{k:06d}.npy", depth.astype(np.float32))
                n += 1
    finally:
        if writer is not None:
            writer.release()
    print(f"{out}: {n} frames ({int(oob.sum())} out of bounds)")
    return 0
