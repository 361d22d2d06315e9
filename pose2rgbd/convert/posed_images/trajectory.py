"""An image folder + a trajectory file (KITTI odometry poses, TUM) -> :class:`PosedImages`.

KITTI odometry (``poses/XX.txt``): one pose per line, 12 numbers, the 3x4 row-major ``T_world_cam`` of the left
grey camera (camera 0), whose frame is already optical; the world is camera 0's frame at the first pose (so
world up is -y). Poses are matched to the sorted images by index (the counts must agree). Intrinsics: the
``P<N>`` line of ``calib.txt`` (``--calib``; N from an ``image_N`` folder or ``--kitti-camera``; a camera other
than 0 gets its baseline from ``P<N>``; a calib.txt without ``P0:`` labels is read by row, in KITTI's order), or
flags. Stamps: ``times.txt`` when present, else index x interval.

TUM (``timestamp tx ty tz qx qy qz qw``, seconds, ``T_world_cam``): images are matched by time. Each image's
time is its file name (``1305031102.175304.png``) or comes from a ``timestamp filename`` list (``rgb.txt``).
Matching rule: an image needs a pose within ``tolerance_s`` of its time; its pose is interpolated (position
linear, rotation slerp) between the two poses around the image time, or is the nearest pose at either end of
the trajectory. Intrinsics from flags. The camera frame is optical unless ``--camera-axes`` says otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pose2rgbd.convert.posed_images.common import (
    ImagesConfig,
    PosedImages,
    SourceCamera,
    axes_matrix,
    check_rotations,
    image_files,
    image_size,
    missing_images,
    stamps_from_interval,
)
from pose2rgbd.convert.posed_images.errors import PoseImportError
from pose2rgbd.geometry.transforms import T_from_tq


def read_table(path: Path, what: str) -> tuple[np.ndarray, list[int]]:
    """Numbers of a whitespace (or comma) separated text file, skipping blank and ``#`` lines; the line numbers."""
    if not path.is_file():
        raise PoseImportError(f"{path}: {what} not found")
    rows, lines = [], []
    width = None
    for ln, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.replace(",", " ").split()
        try:
            vals = [float(x) for x in parts]
        except ValueError:
            raise PoseImportError(f"{path}:{ln}: not a line of numbers: {s[:60]!r}") from None
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise PoseImportError(f"{path}:{ln}: {len(vals)} numbers, the first line had {width}")
        rows.append(vals)
        lines.append(ln)
    if not rows:
        raise PoseImportError(f"{path}: no data lines ({what})")
    return np.asarray(rows, dtype=np.float64), lines


def columns(path: Path) -> int | None:
    """The number of columns of the first data line of a text file (for format detection), or None."""
    try:
        with open(path, errors="replace") as f:
            for raw in f:
                s = raw.strip()
                if s and not s.startswith("#"):
                    parts = s.replace(",", " ").split()
                    try:
                        [float(x) for x in parts]
                    except ValueError:
                        return None
                    return len(parts)
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------------------- KITTI
def _kitti_calib(cfg: ImagesConfig, poses: Path, img_dir: Path) -> Path | None:
    if cfg.calib:
        if not Path(cfg.calib).is_file():
            raise PoseImportError(f"{cfg.calib}: calib file not found")
        return Path(cfg.calib)
    for d in (poses.parent, img_dir.parent, img_dir):
        if (d / "calib.txt").is_file():
            return d / "calib.txt"
    return None


def _kitti_P(calib: Path, n: int) -> tuple[np.ndarray, str]:
    """The 3x4 projection matrix of camera ``n`` and which line it came from: the ``P<n>:`` line, or -- in a file
    without labels (four bare 3x4 rows, as tutorials ship it) -- row ``n`` in KITTI's order P0 P1 P2 P3."""
    text = [ln.strip() for ln in calib.read_text(errors="replace").splitlines()]
    text = [ln for ln in text if ln and not ln.startswith("#")]

    def numbers(rest: str, what: str) -> np.ndarray:
        try:
            v = np.asarray([float(x) for x in rest.split()], dtype=np.float64)
        except ValueError:
            raise PoseImportError(f"{calib}: {what} is not 12 numbers") from None
        if v.size != 12:
            raise PoseImportError(f"{calib}: {what} has {v.size} numbers, expected 12 (3x4 row-major)")
        return v.reshape(3, 4)

    if any(":" in ln for ln in text):
        for ln in text:
            key, _, rest = ln.partition(":")
            if key.strip() == f"P{n}":
                return numbers(rest, f"line P{n}"), f"line P{n}"
        raise PoseImportError(f"{calib}: no 'P{n}:' line; pick the camera with --kitti-camera or give --fx ...")
    if n >= len(text):
        raise PoseImportError(
            f"{calib}: no labels (P0: ...) and {len(text)} row(s), so there is no row for camera {n} (rows are "
            "taken in KITTI's order P0 P1 P2 P3); pick the camera with --kitti-camera or give --fx ..."
        )
    what = f"row {n + 1} of {len(text)} (no 'P0:' labels: rows taken in KITTI's order P0 P1 P2 P3, so P{n})"
    return numbers(text[n], what), what


def read_kitti(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    poses = Path(path)
    if not cfg.images:
        raise PoseImportError(f"{poses}: a KITTI pose file needs the image folder: --images DIR (e.g. image_0)")
    img_dir = Path(cfg.images)
    rows, lines = read_table(poses, "KITTI pose file")
    if rows.shape[1] != 12:
        raise PoseImportError(
            f"{poses}: {rows.shape[1]} numbers per line; KITTI poses have 12 (3x4 row-major T_world_cam)"
        )
    images = image_files(img_dir, "KITTI images")
    if len(images) != len(rows):
        raise PoseImportError(
            f"{poses}: {len(rows)} poses but {len(images)} images in {img_dir}; KITTI poses are matched to the "
            "sorted images by index, so the counts must agree (remove the extra images or poses)"
        )
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    T[:, :3, :4] = rows.reshape(-1, 3, 4)
    T = check_rotations(T, [f"{poses}:{ln}" for ln in lines])
    notes = ["KITTI poses: 3x4 row-major T_world_cam of camera 0, camera frame optical, matched to images by index"]
    n = cfg.kitti_camera
    if n < 0:
        m = re.fullmatch(r"image_(\d)", img_dir.name)
        n = int(m.group(1)) if m else 0
    w, h = image_size(images[0])
    calib = _kitti_calib(cfg, poses, img_dir)
    if cfg.has_intrinsics():
        cam = cfg.flag_camera(w, h, "a KITTI pose file")
        notes.append("intrinsics from the flags")
        if n != 0:
            notes.append(f"images of camera {n} but no calib.txt used: its baseline to camera 0 is NOT applied")
    elif calib is not None:
        P, line = _kitti_P(calib, n)
        K = P[:, :3]
        cam = SourceCamera(w, h, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                           *cfg.flag_distortion())  # fmt: skip
        notes.append(f"intrinsics from {calib.name} {line}" + (", distortion from --distortion" if cam.dist else ""))
        if n != 0:
            # rectified cameras: P_n = K [I | t_n] with t_n the position of camera 0's origin in camera n's frame
            t_n = np.linalg.solve(K, P[:, 3])
            T_camn_cam0 = np.eye(4)
            T_camn_cam0[:3, 3] = t_n
            T = T @ np.linalg.inv(T_camn_cam0)
            notes.append(f"poses moved from camera 0 to camera {n} by its baseline {np.round(-t_n, 4).tolist()} m")
    else:
        raise PoseImportError(
            f"{poses}: no calib.txt beside the poses or the images; give --calib FILE, or --fx/--fy/--cx/--cy, "
            "or --hfov DEG"
        )
    times = Path(cfg.times) if cfg.times else (calib.parent / "times.txt" if calib is not None else None)
    if times is not None and times.is_file():
        t, _ = read_table(times, "KITTI times.txt")
        if t.shape[1] != 1 or len(t) != len(rows):
            raise PoseImportError(f"{times}: expected one time per line and {len(rows)} lines, got {t.shape}")
        stamps = np.round(t[:, 0] * 1e9).astype(np.int64)
        notes.append(f"stamps from {times.name}")
    elif cfg.times:
        raise PoseImportError(f"{cfg.times}: times file not found")
    else:
        stamps = stamps_from_interval(len(rows), cfg.frame_interval_s)
        notes.append(f"no times.txt: stamps are index x {cfg.frame_interval_s} s")
    T = T @ axes_matrix(cfg.camera_axes)
    if cfg.camera_axes != "optical":
        notes.append(f"camera axes '{cfg.camera_axes}' converted to optical")
    notes.append("the world frame is camera 0 at the first pose (y down, z forward; not ENU, no datum)")
    return PosedImages(
        kind="kitti", source=poses, images=images, T_world_cam=T, stamps_ns=stamps, cameras=[cam] * len(images),
        up_hint=np.array([0.0, -1.0, 0.0]) if cfg.camera_axes == "optical" else None,
        convention="KITTI poses are T_world_cam of camera 0 in its optical frame (no axis change)",
        assumptions=notes,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------------ TUM
_STAMP = re.compile(r"^(\d+(?:\.\d+)?)$")


def _tum_images(cfg: ImagesConfig, traj: Path) -> tuple[list[Path], np.ndarray]:
    if cfg.image_list:
        lst = Path(cfg.image_list)
        if not lst.is_file():
            raise PoseImportError(f"{lst}: image list not found")
        base = Path(cfg.images) if cfg.images else lst.parent
        paths, ts = [], []
        for ln, raw in enumerate(lst.read_text(errors="replace").splitlines(), 1):
            s = raw.strip()
            if not s or s.startswith("#"):
                continue
            parts = s.split()
            try:
                t = float(parts[0])
            except ValueError:
                raise PoseImportError(f"{lst}:{ln}: expected 'timestamp filename', got {s[:60]!r}") from None
            if len(parts) < 2:
                raise PoseImportError(f"{lst}:{ln}: expected 'timestamp filename', got {s[:60]!r}")
            ts.append(t)
            paths.append(base / parts[1])
        if not paths:
            raise PoseImportError(f"{lst}: no 'timestamp filename' lines")
        return paths, np.asarray(ts)
    if not cfg.images:
        raise PoseImportError(f"{traj}: a TUM trajectory needs the images: --images DIR (and/or --image-list rgb.txt)")
    files = image_files(Path(cfg.images), "TUM images")
    ts = []
    for f in files:
        m = _STAMP.match(f.stem)
        if m is None:
            raise PoseImportError(
                f"{f}: no timestamp in the file name (expected seconds, e.g. 1305031102.175304.png); give a "
                "'timestamp filename' list with --image-list"
            )
        ts.append(float(m.group(1)))
    return files, np.asarray(ts)


def read_tum(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    traj = Path(path)
    rows, lines = read_table(traj, "TUM trajectory")
    if rows.shape[1] != 8:
        raise PoseImportError(f"{traj}: {rows.shape[1]} numbers per line; TUM has 8 (timestamp tx ty tz qx qy qz qw)")
    order = np.argsort(rows[:, 0], kind="stable")
    rows = rows[order]
    lines = [lines[i] for i in order]
    keep = np.concatenate([[True], np.diff(rows[:, 0]) > 0])
    rows = rows[keep]
    lines = [ln for ln, k in zip(lines, keep, strict=True) if k]
    q = rows[:, 4:8]
    nq = np.linalg.norm(q, axis=1)
    bad = np.flatnonzero(np.abs(nq - 1.0) > 1e-3)
    if bad.size:
        raise PoseImportError(
            f"{traj}:{lines[bad[0]]}: quaternion (qx qy qz qw) has length {nq[bad[0]]:.4f}, not 1; TUM lines are "
            "'timestamp tx ty tz qx qy qz qw' (is w first?)"
        )
    paths, t_img = _tum_images(cfg, traj)
    order_i = np.argsort(t_img, kind="stable")
    paths = [paths[i] for i in order_i]
    t_img = t_img[order_i]
    # seconds since 1970 as float64 keep ~0.1 us; work in int ns relative to the first pose
    t0 = rows[0, 0]
    tp = np.round((rows[:, 0] - t0) * 1e9).astype(np.int64)
    ti = np.round((t_img - t0) * 1e9).astype(np.int64)
    j = np.clip(np.searchsorted(tp, ti), 1, len(tp) - 1) if len(tp) > 1 else np.zeros(len(ti), np.int64)
    near = np.where(np.abs(tp[j - 1] - ti) <= np.abs(tp[j] - ti), j - 1, j) if len(tp) > 1 else j
    dt = np.abs(tp[near] - ti) / 1e9
    ok = dt <= cfg.tolerance_s
    notes = [
        "TUM lines: timestamp tx ty tz qx qy qz qw, T_world_cam; images matched by time: a pose within "
        f"{cfg.tolerance_s} s is required, the pose is interpolated between the poses around the image time"
    ]
    if not ok.all():
        bad_i = np.flatnonzero(~ok)
        shown = ", ".join(f"{paths[k].name} ({dt[k]:.3f} s)" for k in bad_i[:3]) + (" ..." if len(bad_i) > 3 else "")
        if not cfg.skip_unmatched:
            raise PoseImportError(
                f"{traj}: {len(bad_i)} of {len(paths)} images have no pose within {cfg.tolerance_s} s of their "
                f"timestamp (nearest pose: {shown}); the trajectory covers {rows[0, 0]:.3f} .. {rows[-1, 0]:.3f} s. "
                "Check that images and poses share a clock, raise --tolerance, or pass --set skip_unmatched=true"
            )
        notes.append(f"{len(bad_i)} images without a pose within {cfg.tolerance_s} s were dropped (skip_unmatched)")
        paths = [p for p, k in zip(paths, ok, strict=True) if k]
        ti, t_img = ti[ok], t_img[ok]
        if not paths:
            raise PoseImportError(f"{traj}: no image has a pose within {cfg.tolerance_s} s")
    missing_images(paths, traj)
    Tp = check_rotations(T_from_tq(rows[:, 1:4], q / nq[:, None]), [f"{traj}:{ln}" for ln in lines])
    inside = (ti >= tp[0]) & (ti <= tp[-1])
    T = np.empty((len(paths), 4, 4))
    if inside.any() and len(tp) > 1:
        from pose2rgbd.geometry.interpolation import interpolate_poses
        from pose2rgbd.geometry.transforms import tq_from_T

        tt, qq = tq_from_T(Tp)
        t_i, q_i = interpolate_poses(tp, tt, qq, ti[inside])
        T[inside] = T_from_tq(t_i, q_i)
    out = ~inside
    if out.any():
        nearest = np.clip(np.searchsorted(tp, ti[out]), 0, len(tp) - 1)
        T[out] = Tp[nearest]
    T = T @ axes_matrix(cfg.camera_axes)
    if cfg.camera_axes != "optical":
        notes.append(f"camera axes '{cfg.camera_axes}' converted to optical")
    w, h = image_size(paths[0])
    cam = cfg.flag_camera(w, h, "a TUM trajectory")
    notes += ["intrinsics from the flags", "the world frame is the trajectory's own (not ENU, no datum)"]
    stamps = np.round(t_img * 1e9).astype(np.int64)
    return PosedImages(
        kind="tum", source=traj, images=paths, T_world_cam=T, stamps_ns=stamps, cameras=[cam] * len(paths),
        convention="TUM poses are T_world_cam of the camera's optical frame (no axis change)", assumptions=notes,
    )  # fmt: skip
