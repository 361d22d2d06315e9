"""View synthesis and frame interpolation (PoseGAN paper Sec. 5.3 and 6.2) with any pose -> image checkpoint.

Render along a virtual route between two camera poses, or between the poses of two real dataset frames:

* position: ``linear`` (straight line) or ``parabolic`` (the straight line plus a parabola ``4 s (1 - s) b``
  whose peak offset ``b`` is horizontal, perpendicular to the straight line, ``bulge`` times its length, to the
  left of the direction of travel for a positive ``bulge``; the paper's virtual routes A and B);
* orientation: spherical linear interpolation (SciPy ``Slerp`` through
  :func:`pose2rgbd.geometry.interpolation.interpolate_poses`).

Each route becomes an MP4 (OpenCV ``mp4v``; written to a hidden temporary file, then renamed; an animated GIF
when OpenCV has no MP4 encoder) and a contact sheet PNG (evenly spaced frames; for dataset frames the real start
and end images frame the row). Frames show RGB, and colourized depth beside it when the model predicts depth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.interpolation import interpolate_poses
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw
from pose2rgbd.geometry.transforms import T_from_tq, tq_from_T
from pose2rgbd.jsonio import json_text
from pose2rgbd.output_guard import OutputKind, check_not_foreign_dir, check_output, refuse_existing

log = logging.getLogger(__name__)

MODES = ("linear", "parabolic")
VIEW_SYNTHESIS = OutputKind("view synthesis", True, ("interpolation.json",))


def interpolate_route(
    T_from: np.ndarray, T_to: np.ndarray, n: int, *, mode: str = "linear", bulge: float = 0.25
) -> np.ndarray:
    """``n`` poses ``(n, 4, 4)`` from ``T_from`` to ``T_to`` (both included); see the module docstring."""
    if mode not in MODES:
        raise ConfigError(f"interpolation mode {mode!r} is not one of {list(MODES)}")
    if n < 2:
        raise ConfigError(f"a route needs at least 2 frames, got {n}")
    A = np.asarray(T_from, dtype=np.float64).reshape(4, 4)
    B = np.asarray(T_to, dtype=np.float64).reshape(4, 4)
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        raise ConfigError("interpolation: a pose contains NaN or inf")
    stamps = np.array([0, 1_000_000_000], dtype=np.int64)
    q = matrix_to_quat_xyzw(np.stack([A[:3, :3], B[:3, :3]]))
    query = np.linspace(0, 1_000_000_000, n).round().astype(np.int64)
    t, qi = interpolate_poses(stamps, np.stack([A[:3, 3], B[:3, 3]]), q, query)
    if mode == "parabolic":
        chord = B[:3, 3] - A[:3, 3]
        horiz = np.array([-chord[1], chord[0], 0.0])  # left of the direction of travel, horizontal
        if np.linalg.norm(horiz) < 1e-9:  # vertical (or no) motion: bulge along world x
            horiz = np.array([1.0, 0.0, 0.0])
        offset = bulge * np.linalg.norm(chord) * horiz / np.linalg.norm(horiz)
        s = (query / 1e9)[:, None]
        t = t + 4.0 * s * (1.0 - s) * offset[None]
    return T_from_tq(t, qi)


def pose_from_values(values: list[float] | tuple[float, ...], what: str = "pose") -> np.ndarray:
    """``x y z qx qy qz qw`` (metres, unit quaternion) -> ``(4, 4)`` ``T_world_cam``."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (7,) or not np.all(np.isfinite(v)):
        raise ConfigError(f"{what}: expected 7 finite numbers x y z qx qy qz qw, got {list(values)}")
    nq = np.linalg.norm(v[3:])
    if abs(nq - 1.0) > 1e-3:
        raise ConfigError(f"{what}: the quaternion (qx qy qz qw) must have unit norm, it has {nq:.4f}")
    return T_from_tq(v[:3][None], (v[3:] / nq)[None])[0]


@dataclass
class RouteFiles:
    mode: str
    video: Path
    sheet: Path
    frames: int
    out_of_bounds: int


@dataclass
class ViewSynthesisResult:
    out_dir: Path
    routes: list[RouteFiles] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _tile(rgb: np.ndarray, depth: np.ndarray | None, depth_range: tuple[float, float], size: int) -> np.ndarray:
    from pose2rgbd.viz import colorize_depth

    parts = [cv2.resize(rgb, (size, size), interpolation=cv2.INTER_NEAREST)]
    if depth is not None:
        parts.append(cv2.resize(colorize_depth(depth, *depth_range), (size, size), interpolation=cv2.INTER_NEAREST))
    return np.hstack(parts)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_mp4(frames: list[np.ndarray], path: str | Path, *, fps: float = 10.0) -> Path:
    """Write uint8 RGB frames as an MP4, atomically (hidden temporary file, then rename); when OpenCV has no MP4
    encoder, an animated GIF next to it (returned path ends in .gif)."""
    from pose2rgbd.atomic import sibling_prefix

    p = Path(path)
    if not frames:
        raise ConfigError("write_mp4: no frames")
    p.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    tmp = p.with_name(f"{sibling_prefix(p, 'partial')}.mp4")  # OpenCV picks the container by the suffix
    try:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))  # type: ignore[attr-defined]
        if vw.isOpened():
            for f in frames:
                vw.write(np.ascontiguousarray(f[..., ::-1]))
            vw.release()
            if tmp.exists() and tmp.stat().st_size > 0:
                tmp.replace(p)
                return p
        log.warning("OpenCV cannot write %s (no mp4v encoder); writing a GIF instead", p)
    finally:
        tmp.unlink(missing_ok=True)
    import imageio.v2 as imageio

    gif = p.with_suffix(".gif")
    tmp_gif = gif.with_name(f"{sibling_prefix(gif, 'partial')}.gif")
    try:
        imageio.mimsave(tmp_gif, list(frames), duration=1.0 / fps, loop=0)
        tmp_gif.replace(gif)
    finally:
        tmp_gif.unlink(missing_ok=True)
    return gif


def write_png(img: np.ndarray, path: str | Path) -> Path:
    """uint8 RGB image -> PNG, atomically."""
    from pose2rgbd.atomic import sibling_prefix

    p = Path(path)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
    if not ok:
        raise ConfigError(f"cannot encode {p} as PNG")
    tmp = p.with_name(f"{sibling_prefix(p, 'partial')}.png")
    try:
        tmp.write_bytes(buf.tobytes())
        tmp.replace(p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def contact_sheet(tiles: list[np.ndarray], labels: list[str], *, cols: int = 6, gap: int = 4) -> np.ndarray:
    """Tiles (same size, uint8 RGB) in a grid on white, each labelled."""
    if not tiles:
        raise ConfigError("contact_sheet: no tiles")
    h, w = tiles[0].shape[:2]
    cols = max(1, min(cols, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, np.uint8)
    for k, (t, lab) in enumerate(zip(tiles, labels, strict=False)):
        r, c = divmod(k, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y : y + h, x : x + w] = _label(t, lab)
    return sheet


def synthesize_views(
    engine: Any,
    T_from: np.ndarray,
    T_to: np.ndarray,
    out_dir: str | Path,
    *,
    frames: int = 30,
    modes: tuple[str, ...] = MODES,
    bulge: float = 0.25,
    fps: float = 10.0,
    sheet_frames: int = 8,
    real_from: np.ndarray | None = None,
    real_to: np.ndarray | None = None,
    real_depth: tuple[np.ndarray, np.ndarray] | None = None,
    tile: int = 0,
    overwrite: bool = False,
    inputs: tuple[str | Path, ...] = (),
    info: dict[str, Any] | None = None,
) -> ViewSynthesisResult:
    """Render the routes from ``T_from`` to ``T_to`` with ``engine`` (a
    :class:`~pose2rgbd.inference.render.RenderEngine`) into ``out_dir``: ``route_<mode>.mp4``,
    ``sheet_<mode>.png``, ``poses_<mode>.csv`` (frame, tx, ty, tz, qx, qy, qz, qw) and ``interpolation.json``.
    ``real_from`` / ``real_to``: the real images at the end points (dataset frames), shown on the sheets, with
    ``real_depth`` (their depth maps, metres, NaN invalid) beside them in the renders' colour scale.
    An existing ``out_dir`` of an earlier run is replaced only with ``overwrite``; any other non-empty folder is
    refused."""
    out = Path(out_dir)
    check_output(out, VIEW_SYNTHESIS, inputs=list(inputs), overwrite=overwrite)
    check_not_foreign_dir(out, VIEW_SYNTHESIS, what_to_do="choose an empty or new folder for --out")
    if VIEW_SYNTHESIS.matches(out):
        refuse_existing(out, overwrite=overwrite, holds="an earlier interpolation", renamed_into_place=False)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"interpolation modes {list(modes)}: use {' and/or '.join(MODES)}")
    out.mkdir(parents=True, exist_ok=True)
    size = int(engine.camera.width)
    tile_px = tile or max(256, size)
    depth_range = engine.depth_range_m or (0.0, 1.0)
    res = ViewSynthesisResult(out, info=dict(info or {}))
    for mode in modes:
        T = interpolate_route(T_from, T_to, frames, mode=mode, bulge=bulge)
        rgbs, depths, oob = [], [], 0
        for s in range(0, len(T), 16):
            r = engine.render(T[s : s + 16])
            if r.rgb is None:
                raise ConfigError("view synthesis shows RGB: this model has no RGB output")
            rgbs.append(r.rgb)
            if r.depth is not None:
                depths.append(r.depth)
            oob += int(np.sum(r.out_of_bounds))
        rgb = np.concatenate(rgbs)
        depth = np.concatenate(depths) if depths else None
        if depth is not None and engine.depth_range_m is None:  # no stated range: the route's own depths
            fin = depth[np.isfinite(depth)]
            if fin.size:
                depth_range = (float(fin.min()), float(np.percentile(fin, 99)) + 1e-6)
        tiles = [_tile(rgb[i], None if depth is None else depth[i], depth_range, tile_px) for i in range(len(T))]
        video = write_mp4([_label(t, f"{mode} {i + 1}/{len(T)}") for i, t in enumerate(tiles)],
                          out / f"route_{mode}.mp4", fps=fps)  # fmt: skip
        pick = np.unique(np.linspace(0, len(T) - 1, min(sheet_frames, len(T))).round().astype(int))
        sheet_tiles = [tiles[i] for i in pick]
        labels = [f"{mode} {i + 1}/{len(T)}" for i in pick]
        if real_from is not None and real_to is not None:
            blank = np.full_like(tiles[0], 255)
            real = [blank.copy(), blank.copy()]
            for k, img in enumerate((real_from, real_to)):
                real[k][:, :tile_px] = cv2.resize(img, (tile_px, tile_px), interpolation=cv2.INTER_AREA)
                if real_depth is not None and depth is not None:  # the recorded depth in the renders' colours
                    real[k][:, tile_px:] = _tile(img, real_depth[k], depth_range, tile_px)[:, tile_px:]
            sheet_tiles = [real[0], *sheet_tiles, real[1]]
            labels = ["real start", *labels, "real end"]
        sheet = write_png(contact_sheet(sheet_tiles, labels, cols=min(len(sheet_tiles), 5)), out / f"sheet_{mode}.png")
        t, q = tq_from_T(T)
        rows = ["frame,tx,ty,tz,qx,qy,qz,qw"] + [
            f"{i}," + ",".join(f"{v:.6f}" for v in (*t[i], *q[i])) for i in range(len(T))
        ]
        (out / f"poses_{mode}.csv").write_text("\n".join(rows) + "\n")
        res.routes.append(RouteFiles(mode, video, sheet, len(T), oob))
    res.info.update(
        {
            "frames": frames,
            "modes": list(modes),
            "bulge": bulge,
            "fps": fps,
            "routes": [
                {"mode": r.mode, "video": r.video.name, "sheet": r.sheet.name, "out_of_bounds": r.out_of_bounds}
                for r in res.routes
            ],
        }
    )
    (out / "interpolation.json").write_text(json_text(res.info, default=str))
    return res


def interpolate_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    from_pose: np.ndarray | None = None,
    to_pose: np.ndarray | None = None,
    dataset: str | Path | None = None,
    from_frame: int | None = None,
    to_frame: int | None = None,
    device: str = "auto",
    **kwargs: Any,
) -> ViewSynthesisResult:
    """:func:`synthesize_views` for a checkpoint, between two poses or two frames of a dataset."""
    from pose2rgbd.inference import EngineConfig, RenderEngine

    by_pose = from_pose is not None or to_pose is not None
    by_frame = dataset is not None or from_frame is not None or to_frame is not None
    if by_pose == by_frame:
        raise ConfigError(
            "give either two poses (--from-pose, --to-pose) or --dataset with --from-frame and --to-frame"
        )
    engine = RenderEngine.from_config(EngineConfig(checkpoint=str(checkpoint), device=device, warmup=0).as_batch_job())
    info: dict[str, Any] = {"checkpoint": str(checkpoint)}
    real_from = real_to = None
    inputs: tuple[str | Path, ...] = (checkpoint,)
    if by_pose:
        if from_pose is None or to_pose is None:
            raise ConfigError("give both --from-pose and --to-pose")
        A, B = np.asarray(from_pose, np.float64), np.asarray(to_pose, np.float64)
    else:
        from pose2rgbd.dataset import Dataset

        if dataset is None or from_frame is None or to_frame is None:
            raise ConfigError("with --dataset give both --from-frame and --to-frame")
        ds = Dataset(dataset)
        for name, i in (("--from-frame", from_frame), ("--to-frame", to_frame)):
            if not 0 <= i < len(ds):
                raise ConfigError(f"{name} {i}: the dataset has frames 0..{len(ds) - 1}")
        T_all = ds.frames.T_world_cam
        A, B = T_all[from_frame], T_all[to_frame]
        real_from, real_to = ds.read_rgb(from_frame), ds.read_rgb(to_frame)
        if ds.manifest.depth_kind != "none":
            kwargs["real_depth"] = (ds.read_depth(from_frame), ds.read_depth(to_frame))
        info.update({"dataset": str(ds.path), "from_frame": from_frame, "to_frame": to_frame})
        inputs = (checkpoint, ds.path)
    info.update({"from_pose": A.tolist(), "to_pose": B.tolist()})
    # the same two poses as --from-pose / --to-pose take them (x y z qx qy qz qw): a route to render again by pose
    info.update({f"{k}_xyz_qxyzw": [float(v) for v in (*t, *q)] for k, (t, q) in
                 (("from_pose", tq_from_T(A)), ("to_pose", tq_from_T(B)))})  # fmt: skip
    return synthesize_views(
        engine, A, B, out_dir, real_from=real_from, real_to=real_to, inputs=inputs, info=info, **kwargs
    )
