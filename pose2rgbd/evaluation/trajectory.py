"""Render a camera trajectory (the simulator's poses CSV) through an engine into a video or a directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import T_from_tq

log = logging.getLogger(__name__)

TRAJECTORY_COLUMNS = ("frame", "time_s", "tx", "ty", "tz", "qx", "qy", "qz", "qw")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv")


def read_trajectory_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(time_s (N,), T_world_cam (N, 4, 4))`` from ``frame,time_s,tx,ty,tz,qx,qy,qz,qw`` (header row required)."""
    data: Any
    try:
        data = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read trajectory CSV: {e}") from e
    names = data.dtype.names or ()
    missing = [c for c in TRAJECTORY_COLUMNS if c not in names]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; expected header {','.join(TRAJECTORY_COLUMNS)}")
    data = np.atleast_1d(data)
    if len(data) == 0:
        raise ConfigError(f"{path}: no rows")
    t = np.stack([data["tx"], data["ty"], data["tz"]], axis=-1)
    q = np.stack([data["qx"], data["qy"], data["qz"], data["qw"]], axis=-1)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        bad = int(np.argmax(~(np.isfinite(t).all(1) & np.isfinite(q).all(1))))
        raise ConfigError(f"{path}: row {bad + 2} has NaN / inf")
    qn = np.linalg.norm(q, axis=-1)
    if np.any(qn < 1e-6):
        bad = int(np.argmax(qn < 1e-6))
        raise ConfigError(
            f"{path}: row {bad + 2} has a zero quaternion (qx, qy, qz, qw); an orientation needs a non-zero "
            "quaternion, e.g. 0,0,0,1 for no rotation"
        )
    return np.asarray(data["time_s"]), T_from_tq(t, q)


@dataclass
class TrajectoryRender:
    """What :func:`render_trajectory` wrote."""

    out: Path
    frames: int
    out_of_bounds: int


def render_trajectory(
    engine: Any,
    times: np.ndarray,
    T_world_cam: np.ndarray,
    out: str | Path,
    *,
    fps: float = 0.0,
    batch: int = 8,
    max_depth: float = 0.0,
    progress: bool = True,
) -> TrajectoryRender:
    """Render every pose with ``engine`` (an :class:`~pose2rgbd.inference.RenderEngine`).

    ``out`` ending in .mp4 / .avi / .mkv: one video, RGB | colourized depth side by side (``fps`` 0: from the
    times, else 10). Otherwise a directory of ``rgb_NNNNNN.png``, ``depth_NNNNNN.png`` (uint16 millimetres,
    0 invalid or beyond 65.535 m) and ``depth_NNNNNN.npy`` (float32 metres). ``max_depth`` 0: the colour scale
    ends at the 99th percentile of the first depth image.
    """
    import cv2

    from pose2rgbd.progress import bar
    from pose2rgbd.viz import colorize_depth

    out = Path(out)
    T = np.asarray(T_world_cam)
    oob = engine.out_of_bounds(T)
    if oob.any():
        log.warning("%d of %d poses are outside the training poses (+ margin)", int(oob.sum()), len(T))
    steps = np.diff(times)
    fps = fps or (1.0 / float(np.median(steps)) if len(times) > 1 and np.all(steps > 0) else 10.0)
    video = out.suffix.lower() in VIDEO_SUFFIXES
    if not video:
        out.mkdir(parents=True, exist_ok=True)
    writer = None
    n = 0
    try:
        for s in bar(range(0, len(T), batch), desc="render", unit="batch", progress=progress):
            res = engine.render(T[s : s + batch])
            for i in range(len(res)):
                k = s + i
                rgb = res.rgb[i] if res.rgb is not None else None
                depth = res.depth[i] if res.depth is not None else None
                if depth is not None and max_depth <= 0:
                    fin = depth[np.isfinite(depth)]
                    max_depth = float(np.percentile(fin, 99)) if fin.size else 1.0
                panels = [
                    p for p in (rgb, None if depth is None else colorize_depth(depth, 0.0, max_depth)) if p is not None
                ]
                if video:
                    frame = np.concatenate(panels, axis=1)
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
                        mm = np.where(np.isfinite(depth), np.clip(depth * 1000.0, 0, 65535), 0).astype(np.uint16)
                        cv2.imwrite(str(out / f"depth_{k:06d}.png"), mm)
                        np.save(out / f"depth_{k:06d}.npy", depth.astype(np.float32))
                n += 1
    finally:
        if writer is not None:
            writer.release()
    return TrajectoryRender(out, n, int(oob.sum()))
