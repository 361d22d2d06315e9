"""Render a camera trajectory through an engine into a video or a directory (``pose2rgbd render trajectory``).

Input: a :class:`Trajectory` (poses in file order; :func:`pose2rgbd.convert.trajectories.read_trajectory` reads the
simulator's trajectory CSV and TUM trajectories into one).

Output (:func:`render_trajectory`): a video (RGB | colourized depth), or a directory of ``rgb_NNNNNN.png``,
``depth_NNNNNN.png`` (uint16 millimetres), ``depth_NNNNNN.npy`` (float32 metres) and, where the checkpoint carries a
depth uncertainty, ``depth_sigma_NNNNNN.npy`` (float32 metres, :mod:`pose2rgbd.models.depth_uncertainty`); and
beside them the pose
table (:data:`POSES_COLUMNS`: each pose rendered, whether it is outside the training poses and how far it is from
the nearest training camera), the renders' camera and, in a directory, a note of what each file holds and its units
(:data:`NOTE_NAME`, :func:`render_note`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.output_guard import VIDEO

log = logging.getLogger(__name__)

TRAJECTORY_COLUMNS = ("frame", "time_s", "tx", "ty", "tz", "qx", "qy", "qz", "qw")
VIDEO_SUFFIXES = VIDEO.suffixes  # .mp4, .avi, .mkv: what the output check takes for a video
# the pose table written beside the renders: one row per pose, in render order
POSES_COLUMNS = ("index", "frame", "line", "stamp_ns", "tx", "ty", "tz", "qx", "qy", "qz", "qw", "out_of_bounds",
                 "coverage_m", "coverage_deg")  # fmt: skip
LISTED = 10  # poses named in the out-of-bounds warning; the rest are counted
# the median angle to the nearest keyframe over which the unseen poses' warning suggests checking the orientations (a
# w-first quaternion read as x, y, z, w, or another camera-axes convention, turns every view away)
TURNED_DEG = 90.0
# in a folder of renders: its files and their units (render_note); not README.txt, which a user may keep there (an
# --overwrite would replace it with the folder)
NOTE_NAME = "README_pose2rgbd.txt"


@dataclass
class Trajectory:
    """Poses to render, in file order: ``T_world_cam`` (N, 4, 4) in the optical frame, their stamps (int ns; the
    CSV's ``time_s``, the TUM timestamp), the 1-based line of each in the file and, for the CSV, its ``frame``."""

    path: Path
    format: str  # "csv" or "tum"
    stamps_ns: np.ndarray  # (N,) int64
    T_world_cam: np.ndarray  # (N, 4, 4)
    lines: np.ndarray  # (N,) int64
    frames: np.ndarray | None = None  # (N,) float64, the CSV's frame column
    timed: bool = True  # False: the first column counts images (a `localize images` .tum), not seconds

    def __len__(self) -> int:
        return len(self.T_world_cam)

    def frame_text(self, i: int) -> str:
        """The CSV's frame number of pose ``i`` as written (integral -> no decimals); empty for TUM."""
        if self.frames is None:
            return ""
        f = float(self.frames[i])
        return str(int(f)) if f.is_integer() else repr(f)

    def label(self, i: int) -> str:
        """How messages name pose ``i``: ``frame 12`` (CSV), ``line 7 (t 1305031102.1753)`` (TUM)."""
        if self.frames is not None:
            return f"frame {self.frame_text(i)}"
        ns = int(self.stamps_ns[i])
        t = f"{'-' if ns < 0 else ''}{abs(ns) // 10**9}.{abs(ns) % 10**9:09d}".rstrip("0").rstrip(".")
        return f"line {int(self.lines[i])} (t {t})"


@dataclass
class TrajectoryRender:
    """What :func:`render_trajectory` wrote: the renders at ``out``, the pose table at ``poses``, and which poses
    (indices into the trajectory) are outside the training poses."""

    out: Path
    frames: int
    out_of_bounds: int
    poses: Path | None = None
    flagged: tuple[int, ...] = ()


PNG_DEPTH_MAX_MM = 65535  # a 16-bit depth PNG's farthest value (65.535 m at 1000 units per metre)


def depth_millimetres(depth: np.ndarray) -> np.ndarray:
    """Depth in metres (NaN / inf / <= 0: none) as a 16-bit PNG's millimetres: metres x 1000 rounded to the nearest
    millimetre, 0 where there is no depth, at least 1 where there is (0 would read as none), 65535 at 65.535 m and
    beyond (the TUM RGB-D / ROS ``16UC1`` convention, at 1000 units per metre)."""
    d = np.asarray(depth)
    ok = np.isfinite(d) & (d > 0)
    mm = np.clip(np.rint(np.where(ok, d, 0.0) * 1000.0), 1, PNG_DEPTH_MAX_MM)
    return np.where(ok, mm, 0).astype(np.uint16)


def _is_video(out: str | Path) -> bool:
    """Whether the renders go to one video file (by its suffix, as the output check decides) or to a directory."""
    return Path(out).suffix.lower() in VIDEO_SUFFIXES


def _with_output(out: str | Path, name: str) -> Path:
    """The file ``name`` that goes with the renders at ``out``: ``OUT/name`` in a directory, ``NAME.name`` beside a
    video ``NAME.mp4``."""
    p = Path(out)
    return p.with_suffix(f".{name}") if _is_video(p) else p / name


def poses_table_path(out: str | Path) -> Path:
    """Where the pose table of ``out`` goes: ``OUT/poses.csv`` for a directory, ``NAME.poses.csv`` beside a
    video ``NAME.mp4``."""
    return _with_output(out, "poses.csv")


def camera_file_path(out: str | Path) -> Path:
    """Where the renders' camera goes (a ROS camera calibration YAML): ``OUT/camera.yaml`` for a directory,
    ``NAME.camera.yaml`` beside a video ``NAME.mp4``."""
    return _with_output(out, "camera.yaml")


def _coverage(engine: object, T: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Metres and degrees to the nearest training camera (or keyframe), or ``(None, None)`` when the checkpoint
    carries none (:meth:`RenderEngine.coverage`)."""
    fn = getattr(engine, "coverage", None)
    if fn is None:
        return None, None
    m, d = fn(T)
    return (None, None) if m is None or d is None else (np.asarray(m, np.float64), np.asarray(d, np.float64))


def pose_unit_of(engine: object) -> str:
    """The unit of the positions a render engine's checkpoint was trained on: ``"m"``, or ``"units"`` for a dataset
    whose poses have no metric scale (structure from motion without depth: its manifest's ``pose_units``, which
    ``train`` keeps in the checkpoint); ``"m"`` for a checkpoint that states none."""
    extra = getattr(getattr(engine, "loaded", None), "extra", None)
    units = extra.get("pose_units") if isinstance(extra, dict) else None
    return "units" if units == "unscaled" else "m"


def out_of_bounds_message(traj: Trajectory, oob: np.ndarray, cov_m: np.ndarray | None, cov_deg: np.ndarray | None,
                          table: Path | None = None, unit: str = "m") -> str:  # fmt: skip
    """The warning for the poses outside the training poses: how many, the first :data:`LISTED` by name with their
    distance to the nearest training camera, how many more, and where every pose's flag is."""
    idx = np.flatnonzero(oob)
    named = []
    for i in idx[:LISTED]:
        far = "" if cov_m is None or cov_deg is None else f" ({cov_m[i]:.2f} {unit}, {cov_deg[i]:.1f} deg)"
        named.append(f"{traj.label(int(i))}{far}")
    more = f", and {len(idx) - LISTED} more" if len(idx) > LISTED else ""
    dist = (
        "distance to the nearest training camera in brackets"
        if cov_m is not None
        else "the checkpoint carries no training cameras, so no distances"
    )
    where = f"; every pose's flag and distance: {table}" if table is not None else ""
    return (
        f"{len(idx)} of {len(oob)} poses are outside the training poses (+ margin), renders there are unreliable "
        f"({dist}): {', '.join(named)}{more}{where}"
    )


def unseen_message(traj: Trajectory, unseen: np.ndarray, cov_deg: np.ndarray | None, table: Path | None = None) -> str:
    """The warning for the poses within the training poses' box whose views see almost nothing the keyframes saw
    (the render engine's ``min_seen``): flagged out of bounds in the pose table as well."""
    idx = np.flatnonzero(unseen)
    named = [f"{traj.label(int(i))}" + ("" if cov_deg is None else f" ({cov_deg[i]:.0f} deg)") for i in idx[:LISTED]]
    more = f", and {len(idx) - LISTED} more" if len(idx) > LISTED else ""
    where = f"; flagged out_of_bounds in {table}" if table is not None else ""
    turned = ""
    if cov_deg is not None and len(cov_deg) and float(np.median(cov_deg)) > TURNED_DEG:
        turned = (
            f". Half the trajectory's poses or more face over {TURNED_DEG:.0f} deg away from their nearest keyframe ("
            f"median {float(np.median(cov_deg)):.0f} deg): where that is not the plan, check its orientations -- the "
            "quaternion's order (x, y, z, w: w last) and the camera's axes (--camera-axes)"
        )
    return (
        f"{len(idx)} of {len(unseen)} poses look where no keyframe looked (keyframe points on fewer than "
        f"engine.min_seen of the pixels; angle to the nearest keyframe in brackets): their depth is the network's "
        f"guess, not a surface seen: {', '.join(named)}{more}{where}{turned}"
    )


def coverage_message(traj: Trajectory, cov_m: np.ndarray, cov_deg: np.ndarray, table: Path | None = None,
                     unit: str = "m") -> str:  # fmt: skip
    """How far the poses are from the training cameras, whether flagged or not (the flag is a box around the
    training poses; a pose inside it can still be metres from every camera): the median, and by name up to
    :data:`LISTED` of the farthest in position, those farther than the median (none where all are as near);
    ``unit``: the positions' (:func:`pose_unit_of`)."""
    median = float(np.median(cov_m))
    far = [i for i in np.argsort(-cov_m, kind="stable")[:LISTED] if cov_m[i] > median]
    named = ", ".join(f"{traj.label(int(i))} ({cov_m[i]:.2f} {unit}, {cov_deg[i]:.1f} deg)" for i in far)
    where = f"; every pose's: {table}" if table is not None else ""
    return (
        f"distance to the nearest training camera: median {median:.2f} {unit} / {float(np.median(cov_deg)):.1f} deg"
        + (f"; the farthest: {named}" if named else "")
        + where
    )


def poses_table(traj: Trajectory, oob: np.ndarray, cov_m: np.ndarray | None, cov_deg: np.ndarray | None) -> str:
    """The pose table (:data:`POSES_COLUMNS`): per pose in render order (``index``: the NNNNNN of its files) the
    CSV's frame (empty for TUM), its line in the trajectory file, its stamp, the pose rendered (``T_world_cam``,
    optical frame, quaternion x y z w), whether it is outside the training poses and its distance to the nearest
    training camera (metres, degrees; empty when the checkpoint carries no training cameras)."""
    from pose2rgbd.geometry.transforms import tq_from_T

    t, q = tq_from_T(traj.T_world_cam)
    rows = [",".join(POSES_COLUMNS)]
    for i in range(len(traj)):
        cov = ("", "") if cov_m is None or cov_deg is None else (f"{cov_m[i]:.6g}", f"{cov_deg[i]:.6g}")
        rows.append(",".join([str(i), traj.frame_text(i), str(int(traj.lines[i])), str(int(traj.stamps_ns[i])),
                              *(repr(float(v)) for v in (*t[i], *q[i])), str(bool(oob[i])).lower(), *cov]))  # fmt: skip
    return "\n".join(rows) + "\n"


def render_note(rgb: bool, depth: bool, sigma: bool, pose_unit: str = "m") -> str:
    """The note written as :data:`NOTE_NAME` into a folder of renders: each kind of file it holds (``rgb``,
    ``depth``, ``sigma``: whether the renders have one) and its units, so that the folder says it itself;
    ``pose_unit``: the positions' (:func:`pose_unit_of`)."""
    where = "METRES" if pose_unit == "m" else "the training dataset's own units: its poses have no metric scale"
    files = [
        ("rgb_NNNNNN.png", "8-bit colour image (RGB)", rgb),
        ("depth_NNNNNN.png", "16-bit depth in MILLIMETRES (metres x 1000) along the camera's optical axis (z); 0 = no "
         "depth, 65535 = 65.535 m or farther", depth),
        ("depth_NNNNNN.npy", "float32 depth in METRES along the optical axis (z), NumPy .npy; NaN = no depth", depth),
        ("depth_sigma_NNNNNN.npy", "float32 METRES per pixel, NumPy .npy: the depth's uncertainty, the bound its "
         "absolute error stayed within on 68.3 % of the held-out pixels it was fitted on (by `pose2rgbd train`), "
         "larger the farther the pose is from what the model saw (its coverage distance); NaN where there is no "
         "depth; +inf over a render the engine flagged out of bounds (no bound was measured there)", sigma),
        ("poses.csv", "one row per pose rendered: index (the NNNNNN of its files), frame (the trajectory CSV's, "
         f"empty for TUM), line (in the trajectory file), stamp_ns (nanoseconds), tx ty tz ({where}) qx qy qz qw: "
         "the pose T_world_cam, camera frame optical (x right, y down, z forward), quaternion x y z w; out_of_bounds "
         "(true: outside the training poses), "
         f"coverage_m / coverage_deg (distance to the nearest training camera, {where} / DEGREES; empty where the "
         "checkpoint carries no training cameras)", True),
        ("camera.yaml", "the renders' pinhole camera (a ROS camera calibration YAML, pixels): back-project the "
         "depth with it", True),
    ]  # fmt: skip
    width = max(len(name) for name, _, kept in files if kept)
    lines = [f"{name:<{width}}  {what}" for name, what, kept in files if kept]
    return (
        "Written by `pose2rgbd render trajectory`. NNNNNN is the pose's place in the trajectory file, from 0.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def check_render_output(out: str | Path, overwrite: bool) -> None:
    """Refuse an output of :func:`render_trajectory` that would lose something: an existing folder or file that is
    not an earlier render (with or without ``overwrite``; a video without the pose table a render writes beside it
    is not one), or an earlier render without ``overwrite``. An empty folder is used. For a video, the pose table and
    camera file beside it are checked too. Then an output that cannot be written where it is to go (a read-only
    folder, a file where a folder should be: :func:`~pose2rgbd.output_guard.check_writable`), which would fail only
    once the model is loaded or every pose is rendered."""
    from pose2rgbd.output_guard import FILE, RENDERS, OutputError, check_replaced_whole, check_writable

    out = Path(out)
    video = _is_video(out)
    if video and (out.exists() or out.is_symlink()) and not poses_table_path(out).is_file():
        # a video's name says nothing of who made it: an earlier render has its pose table beside it, the user's own
        # clip (the flight the dataset came from) has not
        raise OutputError(
            f"{out} exists and is no video that `render trajectory` wrote (those have their pose table "
            f"{poses_table_path(out).name} beside them): it may be a recording of yours; --overwrite only replaces an "
            f"earlier render. Choose another output path or move {out} away yourself (nothing was written)"
        )
    for p, kind in (
        ((out, VIDEO), (poses_table_path(out), FILE), (camera_file_path(out), FILE)) if video else ((out, RENDERS),)
    ):
        check_replaced_whole(p, kind, overwrite=overwrite, holds="an earlier render" if p == out else "")
    check_writable(out)  # the pose table and camera file of a video go into the same folder


def render_trajectory(
    engine: Any,
    traj: Trajectory,
    out: str | Path,
    *,
    fps: float = 0.0,
    batch: int = 8,
    max_depth: float = 0.0,
    progress: bool = True,
    overwrite: bool = False,
) -> TrajectoryRender:
    """Render every pose of ``traj`` with ``engine`` (an :class:`~pose2rgbd.inference.RenderEngine`).

    ``out`` ending in .mp4 / .avi / .mkv: one video, RGB | colourized depth side by side (``fps`` 0: from the
    stamps, else 10). Otherwise a directory of ``rgb_NNNNNN.png``, ``depth_NNNNNN.png`` (uint16 millimetres:
    :func:`depth_millimetres`) and ``depth_NNNNNN.npy``
    (float32 metres along the optical axis, NaN where there is no depth), with ``depth_sigma_NNNNNN.npy`` (the
    depth's uncertainty in metres) where the checkpoint carries one; NNNNNN is the pose's place in the file
    from 0. ``max_depth`` 0: the colour scale ends at
    the 99th percentile of the first depth image. The pose table (:func:`poses_table`) is written atomically to
    :func:`poses_table_path` once every pose is rendered, with the renders' camera (``engine.camera``; depth is
    back-projected with it) as a ROS camera calibration YAML at :func:`camera_file_path`; the poses outside the
    training poses are named in a warning (:func:`out_of_bounds_message`). A directory gets the note of its files and
    their units (:func:`render_note`). An existing output (a directory with the
    user's other files, a video, or the pose table or camera file beside one) is refused unless ``overwrite``: it is
    replaced whole (:func:`check_render_output`).
    """
    import cv2

    from pose2rgbd.atomic import StagedOutputs
    from pose2rgbd.progress import bar
    from pose2rgbd.viz import colorize_depth

    out = Path(out)
    T = np.asarray(traj.T_world_cam)
    table, camera_file = poses_table_path(out), camera_file_path(out)
    video = _is_video(out)
    check_render_output(out, overwrite)
    oob = np.asarray(engine.out_of_bounds(T), dtype=bool).reshape(len(T))
    cov_m, cov_deg = _coverage(engine, T)
    unit = pose_unit_of(engine)
    if oob.any():
        log.warning("%s", out_of_bounds_message(traj, oob, cov_m, cov_deg, table, unit))
    if cov_m is not None and cov_deg is not None and len(T):
        log.info("%s", coverage_message(traj, cov_m, cov_deg, table, unit))
    steps = np.diff(traj.stamps_ns) / 1e9
    timed = traj.timed and len(T) > 1 and bool(np.all(steps > 0))
    fps = fps or (1.0 / float(np.median(steps)) if timed else 10.0)
    # written beside the output and put in place whole at the end (an error or Ctrl-C leaves an earlier output as it
    # was and no half-written one); the pose table goes with it
    staged = StagedOutputs()
    dest = staged.stage(out)
    if not video:
        dest.mkdir()

    def write_png(path: Path, img: np.ndarray) -> None:
        if not cv2.imwrite(str(path), img):
            raise ConfigError(f"{out / path.name}: OpenCV could not write the image (disk full, or no PNG support?)")

    writer = None
    n = 0
    unseen = np.zeros(len(T), dtype=bool)
    wrote = {"rgb": False, "depth": False, "sigma": False}  # the kinds of file in the folder (its note names them)
    beyond = answered = 0  # depth pixels at the PNGs' farthest value, and with a depth at all
    try:
        for s in bar(range(0, len(T), batch), desc="render", unit="batch", progress=progress):
            res = engine.render(T[s : s + batch])
            for i in range(len(res)):
                k = s + i
                flags = getattr(res, "out_of_bounds", None)  # an engine is duck-typed here (as its depth_sigma)
                unseen[k] = flags is not None and bool(flags[i]) and not oob[k]  # a view no keyframe saw (min_seen)
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
                        h, w = frame.shape[:2]
                        writer = cv2.VideoWriter(str(dest), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
                        if not writer.isOpened():
                            raise ConfigError(f"{out}: OpenCV cannot open a video writer for this file type")
                    writer.write(np.ascontiguousarray(frame[..., ::-1]))
                else:
                    if rgb is not None:
                        write_png(dest / f"rgb_{k:06d}.png", np.ascontiguousarray(rgb[..., ::-1]))
                        wrote["rgb"] = True
                    if depth is not None:
                        mm = depth_millimetres(depth)
                        write_png(dest / f"depth_{k:06d}.png", mm)
                        beyond += int(np.count_nonzero(mm == PNG_DEPTH_MAX_MM))
                        answered += int(np.count_nonzero(mm))
                        np.save(dest / f"depth_{k:06d}.npy", depth.astype(np.float32))
                        wrote["depth"] = True
                    sigma = getattr(res, "depth_sigma", None)  # an engine is duck-typed here: it may give none
                    if sigma is not None:
                        np.save(dest / f"depth_sigma_{k:06d}.npy", sigma[i])
                        wrote["sigma"] = True
                n += 1
        if writer is not None:
            writer.release()
            writer = None
        if unseen.any():
            log.warning("%s", unseen_message(traj, unseen, cov_deg, table))
            oob = oob | unseen
        if beyond:
            log.warning(
                "%.1f %% of the rendered depth lies at %.3f m or farther: the 16-bit depth PNGs (millimetres) hold "
                "%d there, the farthest they can; the depth_NNNNNN.npy files have the metres",
                100.0 * beyond / max(answered, 1), PNG_DEPTH_MAX_MM / 1000.0, PNG_DEPTH_MAX_MM,
            )  # fmt: skip
        text = poses_table(traj, oob, cov_m, cov_deg)
        cam = engine.camera.camera_info_yaml()
        if video:
            staged.commit({table: text, camera_file: cam})
        else:
            (dest / table.name).write_text(text)
            (dest / camera_file.name).write_text(cam)
            (dest / NOTE_NAME).write_text(render_note(**wrote, pose_unit=unit))  # put in place with the folder
            staged.commit()
    except BaseException:
        if writer is not None:
            writer.release()
        staged.discard()
        raise
    return TrajectoryRender(out, n, int(oob.sum()), table, tuple(int(i) for i in np.flatnonzero(oob)))
