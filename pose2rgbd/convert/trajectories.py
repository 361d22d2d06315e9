"""The trajectory files ``pose2rgbd render trajectory`` reads: poses to render, as a
:class:`~pose2rgbd.evaluation.trajectory.Trajectory` (:func:`read_trajectory`; the format is told by the file's content,
not its name).

* the trajectory CSV (the simulator's ground-truth poses): a header row ``frame,time_s,tx,ty,tz,qx,qy,qz,qw``
  (more columns are ignored), one pose per row, ``T_world_cam``;
* a TUM trajectory (TUM RGB-D ``groundtruth.txt``, what ``convert images --format tum`` imports and
  ``localize images --out poses.tum`` writes): ``timestamp tx ty tz qx qy qz qw`` per line, whitespace separated,
  ``#`` comments, read by the importer's own reader (:func:`pose2rgbd.convert.posed_images.trajectory.read_tum_poses`);
* a pose2rgbd dataset's ``frames.csv`` (header exactly :data:`~pose2rgbd.dataset.format.FRAME_COLUMNS`), or the
  dataset's folder (its ``frames.csv``): read by the dataset's own reader (:class:`~pose2rgbd.dataset.Dataset`, with
  the ``manifest.yaml`` beside it; the images need not be there), ``stamp_ns`` as written, ``index`` as the frame.

All are ``T_world_cam`` (metres, or the dataset's units for an ``unscaled`` one; quaternion x y z w, Hamilton). The
CSV and TUM poses are in the camera's optical frame unless ``camera_axes`` says otherwise: they are mapped exactly as
``convert images`` maps a trajectory (``T @ axes_matrix(camera_axes)``, the world frame unchanged), so a line of a
``groundtruth.txt`` imported with ``convert images`` renders at the pose of the dataset frame with that timestamp. A
dataset's poses are in the optical frame by the format's definition (the importer mapped them): any other
``camera_axes`` is refused for them. Here, beside the importer's readers, and not in
:mod:`pose2rgbd.evaluation.trajectory` (the rendering): the evaluation layer does not import the converters.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pose2rgbd.convert.posed_images.common import check_rotations
from pose2rgbd.convert.posed_images.trajectory import read_tum_poses, stamp_ns
from pose2rgbd.dataset.format import FRAME_COLUMNS, FRAMES, MANIFEST, Dataset
from pose2rgbd.errors import ConfigError, Pose2RGBDError
from pose2rgbd.evaluation.trajectory import TRAJECTORY_COLUMNS, Trajectory
from pose2rgbd.geometry import T_from_tq
from pose2rgbd.geometry.camera_axes import CAMERA_AXES, axes_matrix

TRAJECTORY_FORMATS = ("csv", "tum", "dataset")
TUM_LINE = "timestamp tx ty tz qx qy qz qw"
TUM_EXAMPLE = "1305031102.175304 1.3434 0.6271 1.6606 0.6583 0.6112 -0.2938 -0.3266"


def accepted_formats() -> str:
    """The formats ``render trajectory`` reads, with the CSV headers and a TUM line: for every format error."""
    return (
        f"accepted: a trajectory CSV whose first row is the header {','.join(TRAJECTORY_COLUMNS)} (comma "
        f"separated), a TUM trajectory of lines '{TUM_LINE}' (whitespace separated, '#' comments), e.g. "
        f"'{TUM_EXAMPLE}', or a pose2rgbd dataset's {FRAMES} (header {','.join(FRAME_COLUMNS)}, with the "
        f"dataset's {MANIFEST} beside it) or the dataset folder itself"
    )


def format_title(fmt: str) -> str:
    """How messages name a trajectory of format ``fmt`` (:data:`TRAJECTORY_FORMATS`)."""
    return f"a dataset's {FRAMES}" if fmt == "dataset" else f"a {fmt.upper()} trajectory"


def trajectory_file(path: str | Path) -> Path:
    """The file that is read for ``path``: the file itself, or a pose2rgbd dataset folder's ``frames.csv`` (a
    folder with a ``manifest.yaml``); any other folder is refused, naming the accepted formats."""
    p = Path(path)
    if not p.is_dir():
        return p
    if not (p / MANIFEST).is_file():
        raise ConfigError(f"{p}: a folder, not a trajectory file, and not a pose2rgbd dataset (no {MANIFEST}); "
                          f"{accepted_formats()}")  # fmt: skip
    return p / FRAMES


def _data_lines(path: Path) -> tuple[list[tuple[int, str]], str]:
    """The lines that are not blank or ``#`` comments, with their 1-based numbers, and the file's first line that is
    not blank (a comment included); a CSV header written as the first comment (``# frame,time_s,...``, as NumPy's
    ``savetxt`` writes one) counts as the header."""
    if not path.is_file():
        raise ConfigError(f"{path}: trajectory file not found")
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the trajectory: {e.strerror or e}") from e
    out: list[tuple[int, str]] = []
    first = ""
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        first = first or s
        if s.startswith("#") and not out and set(TRAJECTORY_COLUMNS) <= {c.strip() for c in s[1:].split(",")}:
            out.append((n, s[1:].strip()))
        elif s and not s.startswith("#"):
            out.append((n, s))
    return out, first


def trajectory_format(path: str | Path) -> str:
    """``csv``, ``tum`` or ``dataset``, from the first line that is not blank or a ``#`` comment: 8 numbers is TUM,
    a row with the CSV's columns is the CSV, a dataset's ``frames.csv`` header (exactly) is ``dataset``; anything
    else is an error naming every format. ``path`` may be a dataset folder (:func:`trajectory_file`)."""
    p = trajectory_file(path)
    return _format(p, _data_lines(p)[0])


def _format(p: Path, lines: list[tuple[int, str]]) -> str:
    """:func:`trajectory_format` of the file's data lines (:func:`_data_lines`)."""
    if not lines:
        raise ConfigError(f"{p}: no poses (the file is empty or only comments); {accepted_formats()}")
    n, first = lines[0]
    parts = first.replace(",", " ").split()
    try:
        [float(x) for x in parts]
        numbers = True
    except ValueError:
        numbers = False
    if numbers and len(parts) == 8:
        return "tum"
    names = [c.strip() for c in first.split(",")]
    if not numbers and "," in first:
        missing = [c for c in TRAJECTORY_COLUMNS if c not in names]
        if not missing:
            return "csv"
        if tuple(names) == FRAME_COLUMNS:
            return "dataset"
        why = f"its header (line {n}) lacks the column(s) {','.join(missing)}"
        if names[:8] == ["image", "tx", "ty", "tz", "qx", "qy", "qz", "qw"]:  # localize images' table of fixes
            why += (" (it is `localize images`' table of fixes, one row per image: run it with --out poses.tum "
                    "for a TUM trajectory this command reads; fixes flagged out of distribution are comments "
                    "there)")  # fmt: skip
    elif numbers:
        why = f"line {n} has {len(parts)} numbers: a TUM line has 8, and a CSV needs its header row first"
    else:
        why = f"line {n} is neither a CSV header nor a TUM line of 8 numbers: {first[:60]!r}"
    raise ConfigError(f"{p}: not a trajectory: {why}; {accepted_formats()}")


def _poses_checked(path: Path, t: np.ndarray, q: np.ndarray, rows: list[int]) -> np.ndarray:
    """The CSV's poses (``rows``: the file's lines): NaN / inf, zero quaternions and quaternions not of unit length
    (to 1e-3: a w-first row, a column swapped) refused; quaternions normalized and rotations checked as the TUM reader
    does (:func:`pose2rgbd.convert.posed_images.trajectory.read_tum_poses`), so that one pose in either format is one
    matrix."""
    ok = np.isfinite(t).all(1) & np.isfinite(q).all(1)
    if not ok.all():
        raise ConfigError(f"{path}: row {rows[int(np.argmax(~ok))]} has NaN / inf")
    qn = np.linalg.norm(q, axis=-1)
    if np.any(qn < 1e-6):
        raise ConfigError(
            f"{path}: row {rows[int(np.argmax(qn < 1e-6))]} has a zero quaternion (qx, qy, qz, qw); an orientation "
            "needs a non-zero quaternion, e.g. 0,0,0,1 for no rotation"
        )
    bad = np.flatnonzero(~(np.abs(qn - 1.0) <= 1e-3))
    if bad.size:
        raise ConfigError(
            f"{path}: row {rows[bad[0]]}: quaternion (qx, qy, qz, qw) has length {qn[bad[0]]:.4f}, not 1 ({bad.size} "
            f"of {len(qn)} rows); the columns are named, and qw is the scalar part: is w in the qx column?"
        )
    return check_rotations(T_from_tq(t, q / qn[:, None]), [f"{path}: row {r}" for r in rows])


def _read_csv_rows(path: Path, lines: list[tuple[int, str]]) -> tuple[np.ndarray, list[int], np.ndarray]:
    """The CSV's :data:`TRAJECTORY_COLUMNS` as ``(N, 9)`` float64 from its data ``lines`` (:func:`_data_lines`), the
    line of each row ("row" in messages) and ``time_s`` in int64 ns (exactly as written)."""
    (hn, header), body = lines[0], lines[1:]
    names = [c.strip() for c in next(csv.reader([header]))]
    missing = [c for c in TRAJECTORY_COLUMNS if c not in names]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing} in the header (line {hn}); {accepted_formats()}")
    if not body:
        raise ConfigError(f"{path}: no rows (only the header)")
    cols = [names.index(c) for c in TRAJECTORY_COLUMNS]
    out = np.empty((len(body), len(cols)))
    stamps = np.zeros(len(body), dtype=np.int64)
    for i, (n, row) in enumerate(body):
        fields = next(csv.reader([row]))
        if len(fields) != len(names):
            raise ConfigError(f"{path}: row {n} has {len(fields)} fields, the header (line {hn}) has {len(names)}")
        for j, c in enumerate(cols):
            try:
                out[i, j] = float(fields[c])
            except ValueError:
                raise ConfigError(
                    f"{path}: row {n}, column {TRAJECTORY_COLUMNS[j]}: {fields[c].strip()[:30]!r} is not a number"
                ) from None
        ns = stamp_ns(fields[cols[1]].strip())
        if ns is None:  # a number (read above), but not a time int64 ns hold
            raise ConfigError(f"{path}: row {n}: time_s {fields[cols[1]].strip()[:30]!r} does not fit int64 ns")
        stamps[i] = ns
    return out, [n for n, _ in body], stamps


def _read_dataset_frames(p: Path, lines: list[tuple[int, str]]) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """A pose2rgbd dataset's ``frames.csv`` (its data ``lines``: :func:`_data_lines`), read by the dataset's own
    reader with the ``manifest.yaml`` beside it (the images and depth maps need not be there): ``stamp_ns`` (int64, as
    written), ``T_world_cam`` (optical frame, from ``tx..qw``, quaternion x y z w), the line of each row and its
    ``index`` (float64, as the CSV's ``frame``)."""
    if p.name != FRAMES or not (p.parent / MANIFEST).is_file():
        raise ConfigError(
            f"{p}: has the header of a pose2rgbd dataset's {FRAMES}, which is read with its dataset's {MANIFEST} "
            f"beside it (and named {FRAMES}); pass the dataset folder or the {FRAMES} in it, or write the poses as "
            f"another format; {accepted_formats()}"
        )
    frames = Dataset(p.parent, check_files=False).frames
    n = len(frames)
    # the reader skips blank lines, as _data_lines does, and a torn last row (a recorder's crash): the first n
    return frames.stamp_ns.copy(), frames.T_world_cam, [k for k, _ in lines[1 : n + 1]], frames.index.astype(float)


def read_trajectory_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(time_s (N,), T_world_cam (N, 4, 4))`` from the trajectory CSV (header row required)."""
    p = Path(path)
    lines = _data_lines(p)[0]
    fmt = _format(p, lines)
    if fmt != "csv":
        raise ConfigError(f"{p}: {format_title(fmt)}, not the trajectory CSV; read it with read_trajectory")
    data, rows, _ = _read_csv_rows(p, lines)
    return data[:, 1].copy(), _poses_checked(p, data[:, 2:5], data[:, 5:9], rows)


def read_trajectory(path: str | Path, camera_axes: str = "optical") -> Trajectory:
    """The poses of a trajectory CSV, TUM file or dataset ``frames.csv`` (told apart by :func:`trajectory_format`;
    ``path`` may be a dataset folder: :func:`trajectory_file`), mapped from the file's ``camera_axes``
    (``optical``, ``opengl``, ``flu``; as ``convert images --camera-axes``) to the optical frame. A dataset's poses
    are in the optical frame already: another ``camera_axes`` is refused for them."""
    if camera_axes not in CAMERA_AXES:
        raise ConfigError(f"camera axes must be one of {', '.join(CAMERA_AXES)}, got {camera_axes!r}")
    p = trajectory_file(path)
    lines, first = _data_lines(p)
    fmt = _format(p, lines)
    if fmt == "dataset" and camera_axes != "optical":
        raise ConfigError(
            f"{p}: a pose2rgbd dataset's {FRAMES}, whose poses are in the camera's optical frame by the format's "
            f"definition (its importer mapped them); camera axes {camera_axes!r} (--camera-axes) apply to a "
            "trajectory CSV or TUM file only: leave it out"
        )
    frames = None
    try:
        if fmt == "csv":
            data, rows, stamps = _read_csv_rows(p, lines)
            frames = data[:, 0].copy()
            T = _poses_checked(p, data[:, 2:5], data[:, 5:9], rows)
        elif fmt == "dataset":
            stamps, T, rows, frames = _read_dataset_frames(p, lines)
        else:
            stamps, T, rows = read_tum_poses(p)
    except Pose2RGBDError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from e
    T = T @ axes_matrix(camera_axes)
    timed = not (fmt == "tum" and first.lower().lstrip("# ").startswith("index"))  # localize images' .tum
    return Trajectory(p, fmt, stamps, T, np.asarray(rows, dtype=np.int64), frames, timed=timed)
