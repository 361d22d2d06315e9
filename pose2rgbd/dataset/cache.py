"""Training cache: a dataset resized once to ``size x size`` and stored as memory-mapped ``.npy`` arrays.

The cache lives in ``<dataset>/cache/<size>-<fingerprint>/`` (or a directory you choose), is built
atomically (temporary directory, then rename), and is reused while the dataset's fingerprint is the same and
every image and depth file it was built from is unchanged: their size and modification time are recorded at build
time (``source_stat.npy``) and compared at each use, and with ``deep`` their SHA-256 too (``source_sha256.npy``),
which also catches an edit that kept the size and modification time (``cp -p``, ``rsync -t``). The dataset
fingerprint covers the manifest and frames.csv, not the pixels, so an image or depth map edited in place must be
caught here or training would use the old pixels.
Resizing follows the paper: the image is squashed to a square (aspect ratio not kept); intrinsics are scaled
accordingly. RGB uses area interpolation; depth uses nearest-neighbour so that depth edges are not blended
into values that exist nowhere in the scene (and +inf / NaN keep their meaning).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from pose2rgbd.atomic import make_temp_dir, sibling_prefix, sweep_stale_siblings
from pose2rgbd.dataset.format import Dataset
from pose2rgbd.errors import DatasetError
from pose2rgbd.filehash import file_sha256
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.output_guard import check_links
from pose2rgbd.progress import bar

CACHE_VERSION = 2  # 2: the source files' size, modification time and SHA-256 are recorded

log = logging.getLogger(__name__)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_NOT_A_FOLDER = (errno.EEXIST, errno.ENOTDIR, errno.ELOOP)


@dataclass
class TrainingCache:
    """Memory-mapped arrays of one dataset at one resolution."""

    path: Path
    size: int
    fingerprint: str
    camera: PinholeCamera  # scaled to size x size
    depth_kind: str
    rgb: np.ndarray  # (N, S, S, 3) uint8, memmap
    depth: np.ndarray | None  # (N, S, S) float32, memmap; NaN invalid, +inf sky
    T_world_cam: np.ndarray  # (N, 4, 4) float64
    stamp_ns: np.ndarray  # (N,) int64
    source_id: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.stamp_ns)


def _cache_dir(dataset: Dataset, size: int, root: Path | None) -> Path:
    base = root if root is not None else dataset.path / "cache"
    return base / f"{size}-{dataset.fingerprint()}"


def _source_files(ds: Dataset) -> list[str]:
    """The files a cache is built from, relative to the dataset: every image, then every depth map."""
    return list(ds.frames.rgb) + (list(ds.frames.depth) if ds.has_depth else [])


def _stat_table(ds: Dataset, files: list[str]) -> np.ndarray:
    """``(len(files), 2)`` int64: size in bytes and modification time in ns (-1, -1 for a file that is gone)."""
    table = np.full((len(files), 2), -1, dtype=np.int64)
    for k, rel in enumerate(files):
        try:
            st = os.stat(ds.path / rel)
        except OSError:
            continue
        table[k] = (st.st_size, st.st_mtime_ns)
    return table


def _sha256_table(ds: Dataset, files: list[str], progress: bool) -> np.ndarray:
    """``(len(files), 32)`` uint8: the SHA-256 of each file's bytes (zeros for a file that cannot be read)."""
    table = np.zeros((len(files), 32), dtype=np.uint8)
    for k in bar(range(len(files)), desc="hashing files", progress=progress, unit="file"):
        try:
            digest = bytes.fromhex(file_sha256(ds.path / files[k]))
        except OSError:
            continue
        table[k] = np.frombuffer(digest, dtype=np.uint8)
    return table


def _changed(files: list[str], old: np.ndarray | None, new: np.ndarray) -> str | None:
    """Why a cache recorded as ``old`` no longer matches ``new`` (None: it does)."""
    if old is None or old.shape != new.shape:
        return "it does not record the files it was built from"
    diff = np.flatnonzero(np.any(old.reshape(len(old), -1) != new.reshape(len(new), -1), axis=1))
    if len(diff) == 0:
        return None
    shown = ", ".join(files[k] for k in diff[:3]) + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")
    return f"{len(diff)} file(s) changed since it was built ({shown})"


def _stale_reason(ds: Dataset, out: Path, deep: bool, progress: bool) -> str | None:
    """Why the cache in ``out`` does not describe the dataset's files as they are now (None: it does)."""
    files = _source_files(ds)
    old = _load_table(out / "source_stat.npy")
    why = _changed(files, old, _stat_table(ds, files))
    if why is None and deep:
        why = _changed(files, _load_table(out / "source_sha256.npy"), _sha256_table(ds, files, progress))
        why = None if why is None else f"{why}, by content (SHA-256)"
    return why


def _load_table(path: Path) -> np.ndarray | None:
    try:
        table: np.ndarray = np.load(path)
        return table
    except (OSError, ValueError, EOFError):
        return None


def build_cache(
    dataset: Dataset | str | Path,
    size: int,
    *,
    cache_root: str | Path | None = None,
    progress: bool = True,
    deep: bool = False,
) -> TrainingCache:
    """Return the cache of ``dataset`` at ``size x size``, building it first if needed.

    An existing cache is used only if every image and depth file has the size and modification time it had when
    the cache was built; ``deep`` also compares their SHA-256 (a full read of the dataset). Else it is rebuilt,
    with a warning naming the changed files."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    if size < 8 or size > 4096:
        raise DatasetError(f"cache size {size} is out of range [8, 4096]")
    if cache_root is not None:  # a dangling link or a link loop: a clear error, not the mkdir's below
        check_links(cache_root, "--cache-root")
    out = _cache_dir(ds, size, Path(cache_root) if cache_root is not None else None)
    if out.exists():
        try:
            cache = load_cache(out)
        except DatasetError as e:  # a cache is derived data: rebuild it rather than fail
            log.warning("%s; rebuilding it", e)
            _remove_cache(out, cache_root)
        else:
            stale = _stale_reason(ds, out, deep, progress)
            if stale is None:
                return cache
            del cache  # its memory maps: the files are moved aside and deleted below
            log.warning("%s: training cache out of date: %s; rebuilding it", out, stale)
            _remove_cache(out, cache_root)
    made = _missing_folders(out.parent)  # removed again if this build makes no cache (an error, Ctrl-C)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_siblings(out)
        tmp = make_temp_dir(out, "partial")
    except OSError as e:
        _remove_empty(made)
        raise _unwritable(out, e, cache_root) from e
    except BaseException:
        _remove_empty(made)
        raise
    W, H = ds.camera.width, ds.camera.height
    if abs(W / H - 1.0) > 0.02:
        log.info(
            "training cache: the %dx%d images are resized to %dx%d (the models render square images); the camera's "
            "fx and fy are scaled each with its own axis, so poses and depth stay right and only the pixels' aspect "
            "changes",
            W, H, size, size,
        )  # fmt: skip
    try:
        n = len(ds)
        negative = 0
        # recorded before the pixels are read: a file changed while building shows up as changed at the next use
        files = _source_files(ds)
        np.save(tmp / "source_stat.npy", _stat_table(ds, files))
        np.save(tmp / "source_sha256.npy", _sha256_table(ds, files, progress))
        rgb = np.lib.format.open_memmap(tmp / "rgb.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        depth = None
        if ds.has_depth:
            depth = np.lib.format.open_memmap(tmp / "depth.npy", mode="w+", dtype=np.float32, shape=(n, size, size))
        for i in bar(range(n), desc=f"cache {size}x{size}", progress=progress, unit="frame"):
            img = ds.read_rgb(i)
            rgb[i] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            if depth is not None:
                d, k = ds.read_depth_counted(i)
                negative += k
                depth[i] = resize_depth_nearest(d, size)
        rgb.flush()
        del rgb
        if depth is not None:
            depth.flush()
            del depth
        np.save(tmp / "T_world_cam.npy", ds.frames.T_world_cam)
        np.save(tmp / "stamp_ns.npy", ds.frames.stamp_ns)
        np.save(tmp / "source_id.npy", ds.frames.source_id)
        meta = {
            "cache_version": CACHE_VERSION,
            "size": size,
            "fingerprint": ds.fingerprint(),
            "dataset": str(ds.path.resolve()),
            "frames": n,
            "depth_kind": ds.manifest.depth_kind,
            "camera": ds.camera.scaled(size, size).to_dict(),
        }
        (tmp / "meta.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        if out.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise
    if negative:
        log.warning("%s: %d negative depth pixel(s) read as invalid (NaN) in the cache", ds.path, negative)
    return load_cache(out)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what ``mkdir(parents=True)``
    makes."""
    missing = []
    for f in (folder, *folder.parents):
        if f.exists() or f.is_symlink():
            break
        missing.append(f)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed or interrupted build made (deepest first), each only while it is empty: a cache
    folder that holds nothing is not left in the dataset."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:  # not empty (another build's cache), or gone: leave it
            return


def _unwritable(out: Path, e: OSError, cache_root: str | Path | None) -> Exception:
    if e.errno in _NOT_WRITABLE and cache_root is None:
        err = DatasetError(
            f"cannot write the training cache into {out.parent} ({e.strerror}): the dataset directory is not "
            "writable; pass --cache-root DIR to keep caches in a writable directory"
        )
        err.says_what_to_do = True  # not also "write the output to a writable directory": the output is elsewhere
        return err
    if e.errno in _NOT_A_FOLDER and cache_root is not None:  # a file in the way (or a loop made meanwhile)
        return DatasetError(
            f"--cache-root {cache_root}: cannot make the cache folder {out.parent} ({e.strerror}: "
            f"{os.fsdecode(e.filename) if e.filename is not None else out.parent}); --cache-root must be a "
            "directory (or a path where one can be made)"
        )
    if e.errno in _NOT_WRITABLE:  # cache_root given
        err = DatasetError(
            f"--cache-root {cache_root}: cannot write the training cache {out} ({e.strerror}); choose a writable "
            "--cache-root, or leave it out to keep the cache in the dataset's folder"
        )
        err.says_what_to_do = True
        return err
    return e  # the CLI turns disk full and other errors of writing into a message


def _remove_cache(out: Path, cache_root: str | Path | None) -> None:
    """Move a damaged cache aside (one rename, so a reader never sees half of it), then delete it (named as a
    temporary: a killed run's is removed by the next one, never put back)."""
    aside = out.with_name(sibling_prefix(out, "tmp") + "-damaged")
    try:
        os.replace(out, aside)
    except OSError as e:
        raise _unwritable(out, e, cache_root) from e
    shutil.rmtree(aside, ignore_errors=True)


def resize_depth_nearest(d: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize sampling at pixel centres (consistent with PinholeCamera.scaled)."""
    h, w = d.shape
    rows = np.clip(((np.arange(size) + 0.5) * h / size).astype(np.int64), 0, h - 1)
    cols = np.clip(((np.arange(size) + 0.5) * w / size).astype(np.int64), 0, w - 1)
    return d[np.ix_(rows, cols)]


def load_cache(path: str | Path) -> TrainingCache:
    """Open a cache built by :func:`build_cache`; a damaged or foreign one raises :class:`DatasetError`
    (``build_cache`` then rebuilds it)."""
    p = Path(path)
    try:
        meta = yaml.safe_load((p / "meta.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"{p}: not a training cache, or a damaged one ({e})") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{p}: damaged training cache (meta.yaml is {type(meta).__name__}, not a mapping)")
    if meta.get("cache_version") != CACHE_VERSION:
        raise DatasetError(
            f"{p}: training cache version {meta.get('cache_version')}, this pose2rgbd uses {CACHE_VERSION}"
        )
    try:
        size, n = int(meta["size"]), int(meta["frames"])
        depth = np.load(p / "depth.npy", mmap_mode="r") if (p / "depth.npy").exists() else None
        cache = TrainingCache(
            path=p,
            size=size,
            fingerprint=str(meta["fingerprint"]),
            camera=PinholeCamera.from_dict(meta["camera"]),
            depth_kind=str(meta["depth_kind"]),
            rgb=np.load(p / "rgb.npy", mmap_mode="r"),
            depth=depth,
            T_world_cam=np.load(p / "T_world_cam.npy"),
            stamp_ns=np.load(p / "stamp_ns.npy"),
            source_id=np.load(p / "source_id.npy"),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as e:
        raise DatasetError(f"{p}: damaged training cache ({type(e).__name__}: {e})") from e
    expect = {
        "rgb": (cache.rgb, (n, size, size, 3), np.uint8),
        "depth": (cache.depth, (n, size, size), np.float32),
        "T_world_cam": (cache.T_world_cam, (n, 4, 4), np.float64),
        "stamp_ns": (cache.stamp_ns, (n,), np.int64),
        "source_id": (cache.source_id, (n,), np.int64),
    }
    for name, (a, shape, dtype) in expect.items():
        if a is None:
            if name == "depth" and cache.depth_kind == "none":
                continue
            raise DatasetError(f"{p}: damaged training cache ({name}.npy is missing)")
        if a.shape != shape or a.dtype != dtype:
            raise DatasetError(f"{p}: damaged training cache ({name}.npy is {a.dtype} {a.shape}, expected {shape})")
    return cache
