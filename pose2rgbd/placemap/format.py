"""The place map on disk: one folder, memory-mappable arrays, a manifest. Specification: docs/place-map.md.

Layout::

    <map>/
      map.json           format, version, the dataset (path, fingerprint), the selection, build settings, every
                         file's size and SHA-256 (checked on load: :mod:`pose2rgbd.placemap.verify`)
      poses.npy          (N, 4, 4) float64 T_world_cam of each keyframe (REP-103 optical camera)
      intrinsics.npy     (N, 4) float64 fx, fy, cx, cy at the keyframes' image size
      frames.npy         (N,) int64 the keyframe's row in the dataset's frames.csv
      stamp_ns.npy       (N,) int64;  source_id.npy (N,) int64
      images.bin         the keyframes' RGB images, each one encoded file (jpg or png), back to back
      images_offsets.npy (N + 1,) int64 byte offsets into images.bin
      depth.bin          the keyframes' metric depth, each a 16-bit PNG of log-quantized metres (absent without
      depth_offsets.npy  depth); codes: 0 invalid (NaN), 65535 sky (+inf), else exp(log_min + (code - 1) * step)
      kp_offsets.npy     (N + 1,) int64 row offsets of each keyframe's local features into the kp_* arrays
      kp_xy.npy          (K, 2) float32 keypoint pixel positions (x right, y down)
      kp_desc.npy        (K, 128) uint8 SIFT descriptors
      kp_xyz.npy         (K, 3) float32 world points of the keypoints (NaN: no depth / not triangulated)
      global.npy         (N, D) float32 unit global descriptors (place recognition)
      vocabulary.npz     what computes a query's global descriptor (VLAD centroids, PCA)

Opening a map reads the manifest and the small per-keyframe arrays (poses, the global descriptors: "the index");
the features are mapped (``np.load(mmap_mode="r")``) and images and depth read by offset (:class:`BlobReader`),
only for the keyframes a query touches (decoded ones kept in a small cache: :mod:`pose2rgbd.placemap.lru`).
A map is written into a hidden sibling folder and renamed into place when complete (:class:`MapWriter`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import math
import os
import shutil
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose2rgbd.atomic import make_temp_dir, swap_in, sweep_stale_siblings, write_text_atomic
from pose2rgbd.dataset.format import pose_error_sigmas
from pose2rgbd.errors import Pose2RGBDError
from pose2rgbd.jsonio import json_text
from pose2rgbd.output_guard import OutputKind, refuse_existing
from pose2rgbd.placemap.digests import file_table

FORMAT_NAME = "pose2rgbd-map"
FORMAT_VERSION = 1
MANIFEST = "map.json"
# the fingerprint of a map merged from maps of several datasets begins with it (`map merge`): no dataset's
MERGED_PREFIX = "merged-"
# its manifest, the arrays the manifest lists, and the fused geometry `map fuse` adds (placemap.fused.tsdf.FUSED_DIR)
PLACE_MAP = OutputKind("place map", True, (MANIFEST,), contents=(MANIFEST, "*.npy", "*.bin", "*.npz", "fused"))

# log-quantized depth: 1.76e-4 relative step (float16, the hybrid's former store, has 4.9e-4)
DEPTH_LOG_MIN = math.log(0.05)
DEPTH_LOG_MAX = math.log(5000.0)
DEPTH_STEP = (DEPTH_LOG_MAX - DEPTH_LOG_MIN) / 65533.0


class MapError(Pose2RGBDError):
    """A place map is missing, malformed, or does not belong with what it is used with."""


# ------------------------------------------------------------------------------------------------------ codecs
def depth_codes(depth: np.ndarray) -> np.ndarray:
    """float (H, W) metres (NaN invalid, +inf sky) -> uint16 (H, W) log-quantized codes (see above): 0 for NaN and
    depth <= 0, 65535 for +inf, else the nearest code of the depth clipped to [0.05, 5000] m. Computed in float32
    (1 ms at 640x480, 4 in float64): every decoded depth gives back its own code exactly, and any other depth the
    code float64 gives or its neighbour, 1.8e-4 apart (both tested)."""
    d = np.asarray(depth, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (np.log(np.clip(d, np.float32(0.05), np.float32(5000.0))) - np.float32(DEPTH_LOG_MIN)) * np.float32(
            1.0 / DEPTH_STEP
        ) + np.float32(1.0)
        valid = d > 0  # False for NaN
    code = np.where(valid, np.rint(np.clip(x, 1.0, 65534.0)), 0.0).astype(np.uint16)
    code[np.isposinf(d)] = 65535
    return code


def encode_depth(depth: np.ndarray) -> bytes:
    """float (H, W) metres (NaN invalid, +inf sky) -> 16-bit PNG bytes of log-quantized depth (see above)."""
    code = depth_codes(depth)
    ok, buf = cv2.imencode(".png", code, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise MapError("cannot encode a depth map as 16-bit PNG")
    return bytes(buf)


@functools.cache
def depth_of_code() -> np.ndarray:
    """(65536,) float32: the metres of every 16-bit depth code (code 0 NaN, 65535 +inf), read only. Decoding is one
    lookup per pixel: the same values as computing each pixel's exponential in float64 (0.3 ms at 640x480 instead of
    1.7; read-only so that no caller can change the table under everyone else)."""
    lut = np.exp(DEPTH_LOG_MIN + (np.arange(65536, dtype=np.float64) - 1.0) * DEPTH_STEP).astype(np.float32)
    lut[0], lut[65535] = np.nan, np.inf
    lut.flags.writeable = False
    return lut


def decode_depth_code(data: bytes | np.ndarray) -> np.ndarray:
    """A stored depth map's uint16 (H, W) codes (see the module doc), undecoded into metres."""
    code = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if code is None or code.dtype != np.uint16:
        raise MapError("a stored depth map cannot be decoded (damaged map file depth.bin?)")
    return np.asarray(code, np.uint16)


def decode_depth(data: bytes | np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode_depth`: float32 (H, W) metres, NaN invalid, +inf sky."""
    return np.take(depth_of_code(), decode_depth_code(data))  # twice as fast as indexing with the codes


def encode_rgb(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    bgr = np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1])
    params = (  # JPEG without chroma subsampling: colour edges stay where the renderers warp them
        [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        if codec == "jpg"
        else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    )
    ok, buf = cv2.imencode("." + codec, bgr, params)
    if not ok:
        raise MapError(f"cannot encode a keyframe image as {codec}")
    return bytes(buf)


def decode_rgb(data: bytes | np.ndarray) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MapError("a stored keyframe image cannot be decoded (damaged map file images.bin?)")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)  # a fifth of numpy's reversed copy's time


class BlobReader:
    """The encoded files of ``<name>.bin`` (:class:`_Blobs`) read back by offset: each read is one ``pread`` into a
    new buffer, freed once decoded. Not a memory map: a map keeps every page it touched resident in the process
    (clean file pages, but counted in its resident memory and never given back while mapped) -- after one pass over
    2,161 keyframes at 160x120, 66 MB; at 320x240 four times that -- so a pass over every keyframe (the fused
    geometry, the exposure fit) or a renderer serving a large place would grow with the map. The operating system's
    page cache still keeps the file's pages for the next read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self._fd)

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file; a :class:`MapError` where the file ends before ``end``."""
        n = int(end) - int(start)
        data = os.pread(self._fd, n, int(start)) if n > 0 else b""
        if len(data) != n:
            size = os.fstat(self._fd).st_size
            raise MapError(f"{self.path}: the file ends at byte {size}, before the keyframe data at bytes "
                           f"{start}-{end} (a damaged or cut map file)")  # fmt: skip
        return data

    def close(self) -> None:
        self._closer()

    def __reduce__(self) -> tuple[type[BlobReader], tuple[Path]]:
        return BlobReader, (self.path,)  # a copy (pickle, deepcopy) opens the file again: no shared descriptor


# ------------------------------------------------------------------------------------------------------ writer
class _Blobs:
    """Encoded files appended back to back to ``<name>.bin``; offsets kept for ``<name>_offsets.npy``."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        self.folder = folder
        self.f = open(folder / f"{name}.bin", "wb")  # noqa: SIM115 -- closed in finish()
        self.offsets = [0]

    def add(self, data: bytes) -> None:
        self.f.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def finish(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        np.save(self.folder / f"{self.name}_offsets.npy", np.asarray(self.offsets, np.int64))


class MapWriter:
    """Writes a map into a hidden sibling of ``out``; :meth:`close` renames it onto ``out`` (replacing an earlier
    map only when ``overwrite``), :meth:`abort` (or an exception inside ``with``) removes it."""

    def __init__(self, out: str | Path, *, has_depth: bool, image_codec: str, image_quality: int) -> None:
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_siblings(self.out)
        self.tmp = make_temp_dir(self.out)
        self.codec, self.quality = image_codec, int(image_quality)
        self.images = _Blobs(self.tmp, "images")
        self.depth = _Blobs(self.tmp, "depth") if has_depth else None
        self.kp_counts: list[int] = []
        self._kp_files = {k: open(self.tmp / f".{k}.raw", "wb") for k in ("xy", "desc", "xyz")}  # noqa: SIM115
        self.closed = False

    def add_keyframe(
        self, rgb: np.ndarray, depth: np.ndarray | None, xy: np.ndarray, desc: np.ndarray, xyz: np.ndarray
    ) -> None:
        """One keyframe's image, depth (metres; None without) and local features (xy, uint8 desc, world xyz)."""
        enc_d = None if depth is None else encode_depth(depth)
        self.add_encoded(encode_rgb(rgb, self.codec, self.quality), enc_d, xy, desc, xyz)

    def add_encoded(self, rgb: bytes, depth: bytes | None, xy: np.ndarray, desc: np.ndarray, xyz: np.ndarray) -> None:
        """:meth:`add_keyframe` with the image and depth already encoded (:func:`encode_rgb`, :func:`encode_depth`)."""
        self.images.add(rgb)
        if self.depth is not None:
            if depth is None:
                raise MapError("a map with depth needs every keyframe's depth")
            self.depth.add(depth)
        n = len(xy)
        self._kp_files["xy"].write(np.ascontiguousarray(xy, np.float32).reshape(n, 2).tobytes())
        self._kp_files["desc"].write(np.ascontiguousarray(desc, np.uint8).reshape(n, 128).tobytes())
        self._kp_files["xyz"].write(np.ascontiguousarray(xyz, np.float32).reshape(n, 3).tobytes())
        self.kp_counts.append(n)

    def set_points(self, xyz: np.ndarray) -> None:
        """Replace every keypoint's world point (K, 3) (triangulation after all keyframes were added)."""
        self._kp_files["xyz"].close()
        path = self.tmp / ".xyz.raw"
        path.write_bytes(np.ascontiguousarray(xyz, np.float32).reshape(-1, 3).tobytes())
        self._kp_files["xyz"] = open(path, "ab")  # noqa: SIM115

    def finish_features(self) -> None:
        """Turn the streamed feature files into the .npy arrays (called by :meth:`close`)."""
        cols = {"xy": (np.float32, 2), "desc": (np.uint8, 128), "xyz": (np.float32, 3)}
        for k, f in self._kp_files.items():
            f.close()
            dt, c = cols[k]
            raw = self.tmp / f".{k}.raw"
            rows = raw.stat().st_size // (np.dtype(dt).itemsize * c)
            # np.save's bytes: its header, then the raw rows copied a MiB at a time (read whole, the descriptors of
            # 2,161 keyframes took 160 MB)
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dt)), "fortran_order": False, "shape": (rows, c)}
            with open(self.tmp / f"kp_{k}.npy", "wb") as out, open(raw, "rb") as src:
                np.lib.format.write_array_header_1_0(out, header)
                shutil.copyfileobj(src, out, 1 << 20)
            raw.unlink()
        np.save(self.tmp / "kp_offsets.npy", np.concatenate([[0], np.cumsum(self.kp_counts)]).astype(np.int64))

    def read_features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What was added so far: (offsets, xy, desc), memory-mapped read-only (triangulation's worker processes
        map the same files)."""
        for f in self._kp_files.values():
            f.flush()
        offsets = np.concatenate([[0], np.cumsum(self.kp_counts)]).astype(np.int64)
        n = int(offsets[-1])
        if n == 0:  # an empty file cannot be mapped
            return offsets, np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
        xy = np.memmap(self.tmp / ".xy.raw", np.float32, mode="r", shape=(n, 2))
        desc = np.memmap(self.tmp / ".desc.raw", np.uint8, mode="r", shape=(n, 128))
        return offsets, xy, desc

    def save_array(self, name: str, arr: np.ndarray) -> None:
        np.save(self.tmp / f"{name}.npy", arr)

    def save_npz(self, name: str, **arrays: np.ndarray) -> None:
        np.savez(self.tmp / f"{name}.npz", **arrays)  # type: ignore[arg-type]

    def close(self, manifest: dict[str, Any], *, overwrite: bool) -> Path:
        """Finish the files, write the manifest, rename the folder onto ``out``."""
        self.images.finish()
        if self.depth is not None:
            self.depth.finish()
        self.finish_features()
        manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **manifest}
        manifest.setdefault("created_utc", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        manifest.update(file_table(self.tmp, exclude=MANIFEST))  # sizes and SHA-256s, checked when the map is read
        write_text_atomic(self.tmp / MANIFEST, json_text(manifest) + "\n")
        refuse_existing(self.out, overwrite=overwrite, nothing="the new map was not kept")
        swap_in([(self.tmp, self.out)])  # all or nothing, the earlier map back on any failure or Ctrl-C
        self.closed = True
        return self.out

    def abort(self) -> None:
        """Remove the unfinished map. A close that fails (its buffer flushed onto a full disk: the error that
        stopped the build, raised again) does not stop the removal; the file is closed all the same."""
        files = [*self._kp_files.values(), self.images.f, *([self.depth.f] if self.depth is not None else [])]
        for f in files:
            with contextlib.suppress(OSError):
                f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.closed:
            self.abort()


# ------------------------------------------------------------------------------------------------------ reader
def stated_pose_error(manifest: Mapping[str, object]) -> tuple[float, float] | None:
    """The standard deviations (horizontal, vertical; metres) of a map's own poses against the true ones, from its
    manifest's ``dataset.pose_error`` (a recording's GPS receiver's statement, docs/dataset-format.md); None where
    its dataset states none."""
    dataset = manifest.get("dataset")
    return pose_error_sigmas(dataset.get("pose_error")) if isinstance(dataset, Mapping) else None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the map folder ``path``; a clear :class:`MapError` when it is not a map."""
    p = Path(path).expanduser()
    if p.is_file() and (p.parent / MANIFEST).is_file():
        raise MapError(f"{p}: a file of the place map {p.parent}; give the map's folder: {p.parent}")
    if p.is_file() and p.suffix in (".pt", ".onnx"):
        raise MapError(f"{p}: a model checkpoint, not a place map (a folder written by `pose2rgbd map build`); "
                       "give a checkpoint with --checkpoint, a map with --map")  # fmt: skip
    if not p.is_dir():
        raise MapError(f"{p}: place map folder not found (build one with `pose2rgbd map build`)")
    m = p / MANIFEST
    if not m.is_file():
        what = (
            f": it is a dataset; build a map of it with `pose2rgbd map build --dataset {p} --out MAP`"
            if (p / "manifest.yaml").is_file()
            else "; build one with `pose2rgbd map build`"
        )
        raise MapError(f"{p}: not a place map ({MANIFEST} missing){what}")
    try:
        d = json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapError(f"{m}: not valid JSON: {e}") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
        raise MapError(f"{m}: 'format' is not {FORMAT_NAME!r}")
    if d.get("version") != FORMAT_VERSION:
        raise MapError(f"{m}: map format version {d.get('version')!r} is not supported (this reads {FORMAT_VERSION})")
    return d
