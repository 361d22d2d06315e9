"""The format-v1 dataset writer (the format: :mod:`pose2rgbd.dataset.format`, docs/dataset-format.md).

Two writing modes:

* ``atomic`` (conversions, the simulator): everything goes into a sibling temporary directory that is
  renamed onto the target only when :meth:`DatasetWriter.close` succeeds; an exception or Ctrl-C leaves
  no half dataset behind.
* ``append`` (the live recorder): frames go straight into the target; each image is written to a
  temporary name and renamed, then its row is appended to frames.csv and flushed + fsynced, so a crash
  leaves a readable dataset and opening it again in ``append`` mode resumes after the last full row.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
import yaml

from pose2rgbd.atomic import make_temp_dir, swap_in
from pose2rgbd.dataset.format import FRAME_COLUMNS, FRAMES, MANIFEST, Manifest
from pose2rgbd.errors import DatasetError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.transforms import tq_from_T
from pose2rgbd.output_guard import (
    DATASET,
    check_not_foreign_dir,
    check_output,
    check_replaced_whole,
    is_empty_folder,
    refuse_existing,
)


def _fmt(v: float) -> str:
    return "" if not np.isfinite(v) else repr(float(v))


def _row(
    i: int, stamp_ns: int, t: np.ndarray, q: np.ndarray, lla: np.ndarray, sid: int, rgb: str, depth: str
) -> list[str]:
    return [str(i), str(int(stamp_ns)), *(repr(float(x)) for x in t), *(repr(float(x)) for x in q),
            *(_fmt(x) for x in lla), str(int(sid)), rgb, depth]  # fmt: skip


def camera_text(cam: PinholeCamera) -> str:
    return f"{cam.width}x{cam.height}, fx {cam.fx:.6g} fy {cam.fy:.6g} cx {cam.cx:.6g} cy {cam.cy:.6g}"


def _not_resumable(root: Path, existing: Manifest, new: Manifest) -> str:
    """Why frames cannot be appended to the dataset at ``root``: what differs between its manifest and the new
    frames' (the camera, the depth kind), both named, and what to do."""
    kinds, diff = [], []
    if existing.camera != new.camera:
        kinds.append("camera")
        diff.append(f"camera {camera_text(existing.camera)} there, {camera_text(new.camera)} here")
    if existing.depth_kind != new.depth_kind:
        kinds.append("depth kind")
        diff.append(f"depth kind {existing.depth_kind!r} there, {new.depth_kind!r} here")
    e = existing.camera
    resized = kinds == ["camera"] and e.is_resized(new.camera)
    size = f", or, for the same camera at the dataset's size, record with --size {e.width}x{e.height} (size)"
    size = size if resized else ""
    return (
        f"{root}: cannot resume, the existing dataset has another {' and '.join(kinds)} than the new frames "
        f"({'; '.join(diff)}). Frames of another camera or depth kind do not belong in one dataset: write them into a "
        f"new dataset (another output folder: `record bag --out NEW`, the record node's output.dataset){size}"
    )


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# zlib level 1 and every row filtered by the row above (PNG's "Up" filter, not libpng's per-row choice among five):
# lossless as before; on 640x480 GoPro frames 1.6x faster to encode and 3 % smaller (docs/ros.md, the record node).
# The filter setting is OpenCV 4.12's; an older OpenCV (a distribution's python3-opencv) keeps libpng's choice.
def png_rgb_params(cv: Any = cv2) -> list[int]:
    """The ``imencode`` parameters of a dataset's PNG images with OpenCV module ``cv``."""
    params = [int(cv.IMWRITE_PNG_COMPRESSION), 1]
    if hasattr(cv, "IMWRITE_PNG_FILTER") and hasattr(cv, "IMWRITE_PNG_FILTER_UP"):
        params += [int(cv.IMWRITE_PNG_FILTER), int(cv.IMWRITE_PNG_FILTER_UP)]
    return params


PNG_RGB_PARAMS = png_rgb_params()


def _encode_rgb(rgb: np.ndarray, encoding: str) -> bytes:
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise DatasetError(f"rgb image must be uint8 (H, W, 3), got {a.dtype} {a.shape}")
    ext = ".png" if encoding == "png" else ".jpg"
    params = PNG_RGB_PARAMS if encoding == "png" else [cv2.IMWRITE_JPEG_QUALITY, 95]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(a[..., ::-1]), params)
    if not ok:
        raise DatasetError("could not encode rgb image")
    return buf.tobytes()


def _encode_depth(depth: np.ndarray) -> bytes:
    d = np.asarray(depth)
    if d.ndim != 2:
        raise DatasetError(f"depth must be (H, W), got {d.shape}")
    bio = io.BytesIO()
    np.save(bio, d.astype(np.float32, copy=False))
    return bio.getvalue()


_LINK_REFUSED = {
    errno.EXDEV: "the output is on another file system than the inputs",
    errno.EPERM: "linking was not permitted (the kernel's protected_hardlinks: files another user owns)",
    errno.EMLINK: "a file has as many hard links as its file system allows",
}


def link_or_copy(src: Path, dst: Path) -> tuple[int, str]:
    """``dst`` as a hard link to ``src`` where the file system allows, else a copy (written aside, then renamed);
    returns the bytes copied (0 for a link) and why it was copied (empty for a link)."""
    try:
        os.link(src, dst)
        return 0, ""
    except OSError as e:
        why = _LINK_REFUSED.get(e.errno or 0, f"the file system refused a link ({e.strerror})")
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return dst.stat().st_size, why


class DatasetWriter:
    """Write a format-v1 dataset; use as a context manager.

    Args:
        path: target directory.
        manifest: what goes into manifest.yaml (written at open in ``append`` mode, at close in ``atomic``). In
            ``atomic`` mode it may come later (None here, then :meth:`begin`): a conversion opens its writer --
            the output check and the staging folder -- before its long first pass, and knows the camera only
            after it.
        mode: ``"atomic"`` or ``"append"`` (see module docstring).
        overwrite: in ``atomic`` mode, replace an existing target (an earlier dataset only) at close.
        inputs: the paths being read to make it; ``path`` may not be, contain or lie inside one
            (:func:`pose2rgbd.output_guard.check_output`). In ``append`` mode an existing non-empty folder must
            be a dataset (it has manifest.yaml).
    """

    def __init__(
        self,
        path: str | Path,
        manifest: Manifest | None,
        *,
        mode: str = "atomic",
        overwrite: bool = False,
        inputs: Iterable[str | Path | None] = (),
    ) -> None:
        if mode not in ("atomic", "append"):
            raise DatasetError(f"unknown writer mode {mode!r}")
        if manifest is None and mode != "atomic":
            raise DatasetError("an append writer needs its manifest when it opens")
        if mode == "atomic":  # put in place whole: an empty folder is taken, the user's folder or the cwd refused
            self.path = check_replaced_whole(path, DATASET, inputs=inputs, overwrite=overwrite)
        else:
            self.path = check_output(path, DATASET, inputs=inputs)
        if mode == "append":
            check_not_foreign_dir(
                self.path, DATASET, what_to_do="record into a new or empty folder, or into an existing dataset"
            )
        self._manifest = manifest
        self.mode = mode
        self.overwrite = overwrite
        self._closed = False
        self._shape: tuple[int, int] | None = None
        self.copied_bytes = 0  # add_frame_files: what it had to copy rather than link, and why
        self.copy_reasons: set[str] = set()
        if mode == "atomic":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.root = make_temp_dir(self.path, "partial")  # with the umask's mode, as the final dataset
            self._count = 0
        else:
            self.root = self.path
            self.root.mkdir(parents=True, exist_ok=True)
            self._count = self._prepare_append()
        self._csv_file: IO[str] | None = None
        if manifest is not None:
            self.begin(manifest)

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise DatasetError("the dataset writer has no manifest yet: call begin(manifest) first")
        return self._manifest

    def begin(self, manifest: Manifest) -> None:
        """Give the manifest of a writer opened without one (its folders and frames.csv are made now)."""
        if self._csv_file is not None:
            raise DatasetError("the dataset writer has begun already")
        self._manifest = manifest
        (self.root / "rgb").mkdir(exist_ok=True)
        if manifest.depth_kind != "none":
            (self.root / "depth").mkdir(exist_ok=True)
        new_file = not (self.root / FRAMES).exists()
        self._csv_file = open(self.root / FRAMES, "a", newline="")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._csv_file)
        if new_file:
            self._csv.writerow(FRAME_COLUMNS)
            self._flush()

    def _prepare_append(self) -> int:
        """Resume: keep full rows of an existing frames.csv, drop a torn last line, return the row count."""
        mpath = self.root / MANIFEST
        if mpath.exists():
            existing = Manifest.from_dict(yaml.safe_load(mpath.read_text()), str(mpath))
            if existing.camera != self.manifest.camera or existing.depth_kind != self.manifest.depth_kind:
                raise DatasetError(_not_resumable(self.root, existing, self.manifest))
            self.manifest.created_utc = existing.created_utc
        _atomic_write_bytes(mpath, yaml.safe_dump(self.manifest.to_dict(), sort_keys=False).encode())
        fpath = self.root / FRAMES
        if not fpath.exists():
            return 0
        data = fpath.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]  # torn last row from a crash
            with open(fpath, "r+b") as f:
                f.truncate(len(data))
        lines = [ln for ln in data.decode().splitlines() if ln.strip()]
        return max(0, len(lines) - 1)

    def _flush(self) -> None:
        assert self._csv_file is not None
        self._csv_file.flush()
        if self.mode == "append":
            os.fsync(self._csv_file.fileno())

    def __len__(self) -> int:
        return self._count

    def add_frame(
        self,
        stamp_ns: int,
        T_world_cam: np.ndarray,
        rgb: np.ndarray,
        depth: np.ndarray | None = None,
        *,
        latlonalt: tuple[float, float, float] | None = None,
        source_id: int = 0,
    ) -> int:
        """Add one frame; returns its index. ``T_world_cam`` is ``(4, 4)``; depth float32 metres."""
        if self._closed:
            raise DatasetError("writer is closed")
        if self._csv_file is None:
            raise DatasetError("the dataset writer has no manifest yet: call begin(manifest) first")
        if not isinstance(stamp_ns, (int, np.integer)):
            raise DatasetError(f"stamp_ns must be integer nanoseconds, got {type(stamp_ns).__name__}")
        rgb = np.asarray(rgb)
        cam = self.manifest.camera
        if rgb.shape[:2] != (cam.height, cam.width):
            raise DatasetError(f"rgb is {rgb.shape[:2]}, manifest camera is {cam.height}x{cam.width}")
        if (depth is None) != (self.manifest.depth_kind == "none"):
            raise DatasetError(
                f"depth given={depth is not None} but manifest depth kind is {self.manifest.depth_kind!r}"
            )
        if depth is not None and np.asarray(depth).shape != (cam.height, cam.width):
            raise DatasetError(f"depth is {np.asarray(depth).shape}, manifest camera is {cam.height}x{cam.width}")
        t, q = tq_from_T(np.asarray(T_world_cam).reshape(4, 4))
        i = self._count
        ext = "png" if self.manifest.rgb_encoding == "png" else "jpg"
        rgb_rel = f"rgb/{i:06d}.{ext}"
        _atomic_write_bytes(self.root / rgb_rel, _encode_rgb(rgb, self.manifest.rgb_encoding))
        depth_rel = ""
        if depth is not None:
            depth_rel = f"depth/{i:06d}.npy"
            _atomic_write_bytes(self.root / depth_rel, _encode_depth(depth))
        lla = np.full(3, np.nan) if latlonalt is None else np.asarray(latlonalt, dtype=np.float64)
        self._csv.writerow(_row(i, int(stamp_ns), t, q, lla, source_id, rgb_rel, depth_rel))
        self._flush()
        self._count += 1
        return i

    def add_frame_files(
        self,
        stamp_ns: int,
        T_world_cam: np.ndarray,
        rgb_file: Path,
        depth_file: Path | None = None,
        *,
        latlonalt: tuple[float, float, float] | None = None,
        source_id: int = 0,
    ) -> int:
        """Add one frame whose image (and depth) are files of another dataset, as they are: hard-linked where both
        lie on one file system (a dataset's files are never changed in place, so a link shares them safely), copied
        otherwise; nothing is decoded or encoded again. Their encoding must be the manifest's. Returns its index."""
        if self._closed:
            raise DatasetError("writer is closed")
        if self._csv_file is None:
            raise DatasetError("the dataset writer has no manifest yet: call begin(manifest) first")
        ext = "png" if self.manifest.rgb_encoding == "png" else "jpg"
        if rgb_file.suffix.lower().lstrip(".") not in ((ext, "jpeg") if ext == "jpg" else (ext,)):
            raise DatasetError(f"{rgb_file}: not a {ext} image, the dataset's rgb encoding")
        if (depth_file is None) != (self.manifest.depth_kind == "none"):
            raise DatasetError(
                f"depth given={depth_file is not None} but manifest depth kind is {self.manifest.depth_kind!r}"
            )
        t, q = tq_from_T(np.asarray(T_world_cam).reshape(4, 4))
        i = self._count
        rgb_rel = f"rgb/{i:06d}.{ext}"
        for src, rel in ((rgb_file, rgb_rel), (depth_file, f"depth/{i:06d}.npy")):
            if src is not None:
                copied, why = link_or_copy(src, self.root / rel)
                self.copied_bytes += copied
                if why:
                    self.copy_reasons.add(why)
        depth_rel = f"depth/{i:06d}.npy" if depth_file is not None else ""
        lla = np.full(3, np.nan) if latlonalt is None else np.asarray(latlonalt, dtype=np.float64)
        self._csv.writerow(_row(i, int(stamp_ns), t, q, lla, source_id, rgb_rel, depth_rel))
        self._flush()
        self._count += 1
        return i

    def close(self) -> Path:
        """Finish the dataset. In ``atomic`` mode this is when it appears at ``path``."""
        if self._closed:
            return self.path
        if self._csv_file is None:
            self.abort()
            raise DatasetError(f"no manifest was given, no frames were written; {self.path} was not created")
        self._csv_file.close()
        self._closed = True
        if self.mode == "atomic":
            if self._count == 0:
                shutil.rmtree(self.root, ignore_errors=True)
                raise DatasetError(f"no frames were written; {self.path} was not created")
            try:
                text = yaml.safe_dump(self.manifest.to_dict(), sort_keys=False)
                _atomic_write_bytes(self.root / MANIFEST, text.encode())
                late = "it appeared while this one was written; the new dataset was not kept"
                if not is_empty_folder(self.path):  # (an empty folder was taken at the start: it still is)
                    refuse_existing(self.path, overwrite=self.overwrite, nothing=late)
                    if self.path.exists():  # a second look: the user's files put into the earlier one meanwhile
                        check_output(self.path, DATASET, overwrite=True)
                swap_in([(self.root, self.path)])  # all or nothing, the earlier dataset back on any failure
            except BaseException:
                shutil.rmtree(self.root, ignore_errors=True)  # (gone already when the swap was complete)
                raise
        return self.path

    def abort(self) -> None:
        """Discard an ``atomic`` dataset (an ``append`` dataset keeps what was flushed)."""
        if not self._closed:
            if self._csv_file is not None:
                self._csv_file.close()
            self._closed = True
        if self.mode == "atomic":
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
