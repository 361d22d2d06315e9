"""Fuse every keyframe's depth into one TSDF, keep its surface, ray-cast it from any pose.

One sensor frame's depth has holes (structured light: ~10 % invalid pixels) and noise; the truncated signed
distance function of all of them together (Curless & Levoy; KinectFusion) fills one frame's holes from the others
and averages the noise away. Open3D's ``VoxelBlockGrid`` (a hashed grid of 8^3-voxel blocks, only the blocks near a
surface exist) integrates the frames; its marching-cubes surface is kept as a triangle mesh (a few MB; the TSDF
itself is not stored) and ray-cast with Open3D's ``RaycastingScene`` (Embree), which gives the depth of any pose.
A place of more blocks than ``tile_blocks`` is fused a cell of space at a time (:func:`fuse_keyframes`): memory is
bounded by the cell, and the surface is the one a single grid gives.

The voxel size is sized to the place (``voxel_size: auto``): 1/150 of the keyframes' median depth (1.3 cm at 2 m
indoors, 33 cm at 50 m over a city), never finer than 1.5 pixel footprints at that depth (a finer grid has no
data to fill it: holes in the surface) nor 5 mm. Depth beyond ``depth_max`` (``auto``: the 98th percentile of
the keyframes' finite depth) is not fused (Open3D skips a pixel deeper than the limit) and does not size the
voxels: sensors are noisiest there. Sky (+inf) and unverified depth (NaN, e.g. multi-view stereo's) never are.
A depth source that gives the sky a finite depth (a monocular network) needs a ``depth_max`` below it, or its
sky marked +inf / NaN (``convert video --depth selfsup+mvs`` does: :mod:`pose2rgbd.geometry.mvs`).

Stored beside a place map in ``<map>/fused/`` (written into a hidden sibling, renamed into place):
``fused.json`` (settings, counts, build time), ``vertices.npy`` (V, 3) float32 world metres, ``triangles.npy``
(T, 3) int32, ``exposure.npy`` (N, 3, 2) float32 per keyframe and channel ``(a, b)``: corrected = a * colour + b
(:mod:`pose2rgbd.placemap.fused.exposure`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lz4.block
import numpy as np

from pose2rgbd.atomic import make_temp_dir, swap_in
from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.jsonio import json_text
from pose2rgbd.output_guard import refuse_existing
from pose2rgbd.placemap.format import MapError, depth_codes, depth_of_code
from pose2rgbd.placemap.keyframes import Keyframes
from pose2rgbd.progress import LoggedBar, bar

if TYPE_CHECKING:  # Open3D's own stubs; the module itself is imported only to fuse or ray-cast (_open3d)
    from open3d.pybind.core import Tensor
    from open3d.pybind.t.geometry import Image, VoxelBlockGrid

log = logging.getLogger(__name__)

FUSED_DIR = "fused"
FUSED_FORMAT = "pose2rgbd-fused-geometry"
FUSED_VERSION = 1
# Open3D looks a voxel's depth up at the pixel int(u), int(v) (truncation); our pixel centres are at integers, so
# the nearest pixel is int(u + 0.5): shifting cx, cy by half a pixel removes a half-pixel bias that put slanted
# surfaces half a voxel too far (measured on the synthetic scene of test/test_fused.py).
_HALF_PIXEL = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])


def _open3d() -> Any:
    """Open3D, or a clear error saying how to get it."""
    try:
        import open3d as o3d
    except ImportError as e:  # the wheel or a system library it links (libusb-1.0) is missing
        raise MapError(
            f"the fused geometry needs Open3D ({e}): pip install 'pose2rgbd[fusion]' (open3d-cpu); on Linux it also "
            "needs libusb-1.0 (apt install libusb-1.0-0)"
        ) from e
    return o3d


def _number_or_auto(value: str, key: str) -> float | None:
    if str(value).strip().lower() == "auto":
        return None
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise ConfigError(f"{key} {value!r}: give a positive number of metres or 'auto'")
    return v


@dataclass
class FusionConfig:
    """How the keyframes' depth is fused (``pose2rgbd map fuse``, ``map build --fuse``)."""

    voxel_size: str = help_field(
        "auto", "TSDF voxel edge in metres, or auto: 1/150 of the keyframes' median depth (centimetres indoors, "
        "decimetres over a city), at least 1.5 pixel footprints there"
    )  # fmt: skip
    depth_max: str = help_field("auto", "fuse depth up to this many metres, or auto: the 98th percentile of the depth")
    trunc_voxels: float = ranged_field(4.0, "TSDF truncation distance in voxels", 1.0, 50.0)
    min_observations: int = ranged_field(1, "keep the surface where at least this many keyframes saw it", 1, 100)
    exposure: bool = help_field(True, "fit each keyframe's gain and offset per channel (auto-exposure)")
    exposure_neighbours: int = ranged_field(4, "exposure fit: compare each keyframe with this many nearest", 1, 32)
    exposure_samples: int = ranged_field(
        100, "exposure fit: pixels sampled per keyframe (flat, unsaturated, with depth)", 10, 100000
    )
    tile_blocks: int = ranged_field(
        5000, "most voxel blocks (8^3 voxels, about 5 kB each in the grid) fused at a time: a place with more is "
        "fused in cells of space, so the TSDF's memory stays bounded however large the place (time grows with the "
        "cells)", 64,
        10_000_000,
    )  # fmt: skip
    extract_blocks: int = ranged_field(
        2000, "most voxel blocks whose surface is extracted at a time (marching cubes: about 14 kB a block)", 64,
        10_000_000,
    )  # fmt: skip

    def __post_init__(self) -> None:
        _number_or_auto(self.voxel_size, "voxel_size")
        _number_or_auto(self.depth_max, "depth_max")


def _depth_sample(kf: Keyframes, n: int = 64) -> np.ndarray:
    """Finite, positive depths of up to ``n`` keyframes spread over the place (every 4th pixel)."""
    rows = np.unique(np.linspace(0, len(kf) - 1, min(n, len(kf))).astype(int))
    vals = [kf.depth(int(i))[::4, ::4].ravel() for i in rows]
    d = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    return d[np.isfinite(d) & (d > 0)]


def resolve_settings(kf: Keyframes, cfg: FusionConfig) -> dict[str, float]:
    """The voxel size, truncation and depth limit for these keyframes (``auto`` resolved, see the module doc)."""
    d = _depth_sample(kf)
    if len(d) == 0:
        raise MapError("no keyframe has finite depth: nothing to fuse (the fused geometry needs metric depth)")
    depth_max = _number_or_auto(cfg.depth_max, "depth_max") or 1.01 * float(np.percentile(d, 98))
    near = d[d <= depth_max]  # a given limit leaves the far field (a network's finite sky) out of the sizing too
    if len(near) == 0:
        raise MapError(f"no keyframe depth within depth_max {depth_max:g} m: nothing to fuse (raise depth_max)")
    median = float(np.median(near))
    cam = kf.camera(0)
    voxel = _number_or_auto(cfg.voxel_size, "voxel_size")
    if voxel is None:
        voxel = max(median / 150.0, 1.5 * median / max(cam.fx, cam.fy), 0.005)
    return {"voxel_size_m": float(voxel), "sdf_trunc_m": float(cfg.trunc_voxels * voxel),
            "depth_max_m": float(depth_max), "median_depth_m": median}  # fmt: skip


@dataclass
class FusedGeometry:
    """The fused surface of a place (a triangle mesh in world metres) and its keyframes' exposure."""

    vertices: np.ndarray  # (V, 3) float32
    triangles: np.ndarray  # (T, 3) int32
    meta: dict[str, Any]
    exposure: np.ndarray | None = None  # (N, 3, 2) float32: corrected = a * colour + b
    _scene: Any = field(default=None, repr=False)

    @property
    def voxel_size(self) -> float:
        return float(self.meta["voxel_size_m"])

    def scene(self) -> Any:
        """The Open3D ray-casting scene over the mesh (built on first use)."""
        if self._scene is None:
            o3d = _open3d()
            scene = o3d.t.geometry.RaycastingScene()
            if len(self.triangles):
                scene.add_triangles(
                    o3d.core.Tensor(np.ascontiguousarray(self.vertices, np.float32)),
                    o3d.core.Tensor(np.ascontiguousarray(self.triangles, np.uint32)),
                )
            self._scene = scene
        return self._scene

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """``t`` of the first hit of each ray ``origin + t * direction`` (``(..., 3)`` each); +inf on a miss."""
        o3d = _open3d()
        shape = np.broadcast_shapes(np.shape(origins), np.shape(directions))
        rays = np.concatenate(
            [np.broadcast_to(origins, shape).reshape(-1, 3), np.broadcast_to(directions, shape).reshape(-1, 3)], axis=1
        ).astype(np.float32)
        if not len(self.triangles):
            return np.full(shape[:-1], np.inf, np.float32)
        ans = self.scene().cast_rays(o3d.core.Tensor(rays))
        return np.asarray(ans["t_hit"].numpy(), np.float32).reshape(shape[:-1])

    def raycast(self, T_world_cam: np.ndarray, camera: PinholeCamera) -> np.ndarray:
        """``(H, W)`` float32 depth (metres along optical z) of the fused surface seen from ``T_world_cam``; NaN
        where a ray meets no surface (outside what the keyframes saw, or sky)."""
        T = np.asarray(T_world_cam, np.float64)
        dirs = camera.rays() @ T[:3, :3].T  # z = 1 in the camera: t is the z-depth
        t = self.cast(T[:3, 3], dirs)
        return np.where(np.isfinite(t), t, np.nan).astype(np.float32)

    def digest(self) -> str:
        """SHA-256 of the surface and the exposure gains (what a checkpoint that renders with them records)."""
        h = hashlib.sha256()
        arrays = (self.vertices, self.triangles, self.exposure if self.exposure is not None else np.zeros(0))
        for a, dtype in zip(arrays, (np.float32, np.int32, np.float32), strict=True):
            b = np.ascontiguousarray(a, dtype)
            h.update(f"{b.shape};".encode())
            h.update(b.tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ storage
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vertices.npy", np.asarray(self.vertices, np.float32))
        np.save(folder / "triangles.npy", np.asarray(self.triangles, np.int32))
        if self.exposure is not None:
            np.save(folder / "exposure.npy", np.asarray(self.exposure, np.float32))
        meta = {"format": FUSED_FORMAT, "version": FUSED_VERSION, **self.meta}
        (folder / "fused.json").write_text(json_text(meta) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> FusedGeometry:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "fused.json").read_text())
            if meta.get("format") != FUSED_FORMAT or meta.get("version") != FUSED_VERSION:
                raise MapError(f"{folder}: not a fused geometry of version {FUSED_VERSION}; run `pose2rgbd map fuse`")
            exp = folder / "exposure.npy"
            return cls(np.load(folder / "vertices.npy"), np.load(folder / "triangles.npy"), meta,
                       np.load(exp) if exp.is_file() else None)  # fmt: skip
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise MapError(f"{folder}: damaged fused geometry ({e}); run `pose2rgbd map fuse --overwrite`") from e


BLOCK = 8  # voxels along a voxel block's edge
# Blocks integrated per call. Open3D's block hash map doubles (a copy of the grid: three times its memory at that
# moment) when its size plus a call's blocks exceed its capacity, even where the blocks are already there; a frame's
# blocks given in batches of this many keep a grid sized to its blocks plus one batch.
_BATCH = 512


def _grid(voxel_size: float, blocks: int) -> VoxelBlockGrid:
    """An empty voxel-block grid for ``blocks`` blocks (sized once: a grid that grows rehashes into a copy)."""
    o3d = _open3d()
    f32 = o3d.core.float32
    grid: VoxelBlockGrid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"), attr_dtypes=(f32, f32), attr_channels=((1), (1)), voxel_size=voxel_size,
        block_resolution=BLOCK, block_count=max(int(blocks), 1), device=o3d.core.Device("CPU:0"),
    )  # fmt: skip
    return grid


@dataclass
class _Frame:
    """One keyframe's depth as Open3D takes it: the image, intrinsics and ``T_cam_world``."""

    depth: Image
    K: Tensor
    E: Tensor


@functools.cache
def _fused_depth_of_code() -> np.ndarray:
    """The map's depth codes in metres as Open3D integrates them: 0 (not integrated) for invalid (NaN) and sky."""
    lut = np.array(depth_of_code(), np.float32)
    lut[0] = lut[65535] = 0.0
    return lut


class _DepthCodes:
    """Every keyframe's depth, quantized to the place map's 16-bit codes (:func:`~pose2rgbd.placemap.format.
    depth_codes`: a map's own depth exactly; keyframes given as arrays within 1.8e-4 of theirs, clipped to 0.05-5000
    m as a map stores them) and kept lz4-compressed in a scratch file for the cells that read a keyframe again (at
    640x480: 0.2 ms a read against 3 for the map's PNG; about 300 kB a keyframe, two bytes a pixel at most)."""

    def __init__(self, n: int, spill: _Spill, depth_max: float) -> None:
        self.spill = spill
        self.shapes = np.zeros((n, 2), np.int64)
        # the codes below depth_max: 1 .. in_range - 1 (the table increases with the code)
        self.in_range = int(np.searchsorted(depth_of_code()[1:65535], depth_max, side="left")) + 1

    def add(self, i: int, code: np.ndarray) -> None:
        """Keyframe ``i``'s codes; keyframes are added in order, each once (record ``i`` of the spill)."""
        self.shapes[i] = code.shape
        self.spill.add_record(lz4.block.compress(np.ascontiguousarray(code, np.uint16).tobytes()))

    def code(self, i: int) -> np.ndarray:
        data = lz4.block.decompress(self.spill.record(i))
        return np.frombuffer(data, np.uint16).reshape(int(self.shapes[i, 0]), int(self.shapes[i, 1]))


def _frame(kf: Keyframes, i: int, code: np.ndarray, depth: _DepthCodes) -> _Frame | None:
    """Keyframe ``i`` for integration from its depth codes; None when none of its depth is below the limit
    (Open3D refuses a frame that touches no block)."""
    if not np.any((code > 0) & (code < depth.in_range)):
        return None
    o3d = _open3d()
    K = o3d.core.Tensor(kf.camera(i).K + _HALF_PIXEL, o3d.core.float64)
    E = o3d.core.Tensor(np.linalg.inv(kf.T_world_cam[i]), o3d.core.float64)
    return _Frame(o3d.t.geometry.Image(o3d.core.Tensor(np.take(_fused_depth_of_code(), code))), K, E)


_ROW = np.dtype((np.void, 12))  # a block's three int32 coordinates as one value, for np.unique over rows


def _rows(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b, np.int32).view(_ROW).ravel()


def tiles_of(blocks: np.ndarray, most: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cells ``[lo, hi)`` of block coordinates that partition space, each holding at most ``most`` of ``blocks``
    (K, 3) where a cut can give that (a k-d split across the longest extent, into as few cells as that many blocks
    need: ``ceil(K / most)``, split in proportion; a cell whose blocks share one coordinate on every axis stays
    whole). The outer cells reach to +-2^30: every block lies in exactly one cell."""
    far = np.int64(1 << 30)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    todo = [(np.full(3, -far), np.full(3, far), np.asarray(blocks, np.int64))]
    while todo:
        lo, hi, b = todo.pop()
        ext = b.max(axis=0) - b.min(axis=0) if len(b) else np.zeros(3, np.int64)
        axis = int(np.argmax(ext))
        cells = -(-len(b) // most)
        if cells <= 1 or ext[axis] == 0:
            out.append((lo, hi))
            continue
        c = np.sort(b[:, axis])
        cut = int(c[(cells // 2) * len(c) // cells])  # left: blocks below it, for cells // 2 of the cells
        cut = min(max(cut, int(c[0]) + 1), int(c[-1]))  # both sides keep a block
        left = b[:, axis] < cut
        hi_l, lo_r = hi.copy(), lo.copy()
        hi_l[axis] = lo_r[axis] = cut
        todo += [(lo_r, hi, b[~left]), (lo, hi_l, b[left])]
    return out


def _inside(b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per row of ``b`` (K, 3): inside the cell ``[lo, hi)``."""
    return np.asarray(np.all((b >= lo) & (b < hi), axis=1))


class _Spill:
    """An anonymous temporary file that arrays are appended to and read back from whole, or records (one per
    keyframe, in order) read back by their number: what a pass makes for a later one, kept off the heap. Removed
    when closed, or with the process."""

    def __init__(self, folder: Path | None = None) -> None:
        self._f = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed by close(), from the caller's with)
        self.size = 0
        self._ends: list[int] = []  # where each record ends

    def append(self, a: np.ndarray) -> None:
        """Write ``a``'s bytes at the end (``size`` grows by them)."""
        self.append_bytes(np.ascontiguousarray(a).tobytes())

    def append_bytes(self, data: bytes) -> None:
        self._f.write(data)
        self.size += len(data)

    def add_record(self, data: bytes) -> None:
        """Record number ``len(records so far)``: ``data`` (may be empty)."""
        self.append_bytes(data)
        self._ends.append(self.size)

    def record(self, i: int) -> bytes:
        start, stop = self._ends[i - 1] if i else 0, self._ends[i]
        self._f.flush()
        return os.pread(self._f.fileno(), stop - start, start)

    def whole(self, dtype: type, width: int) -> np.ndarray:
        """All of it as an ``(n, width)`` array of ``dtype``, read straight into the array (no bytes copy)."""
        self._f.flush()
        self._f.seek(0)
        return np.fromfile(self._f, dtype).reshape(-1, width)

    def close(self) -> None:
        self._f.close()


def _give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing). Open3D's many
    per-frame allocations leave the heap fragmented: freed, but held by the process (50 MB after eight tiles of
    2,161 keyframes at 320x240); trimmed between tiles, the next tile and the surface read back reuse the pages."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): no such call
        return
    trim(0)


@dataclass
class _Blocks:
    """What the first pass found: every voxel block the keyframes' depth touches (K, 3), each keyframe's box of
    its blocks (N, 2, 3; lo > hi: none) and its blocks themselves, spilled: keyframe ``i``'s are the int32 rows of
    record ``i`` of ``spill``; and its depth, kept for the cells that read it again."""

    all: np.ndarray
    boxes: np.ndarray
    spill: _Spill
    depth: _DepthCodes

    def of(self, i: int) -> np.ndarray:
        return np.frombuffer(self.spill.record(i), np.int32).reshape(-1, 3)


def _block_pass(kf: Keyframes, s: dict[str, float], trunc_mult: float, spills: tuple[_Spill, _Spill],
                pbar: LoggedBar) -> _Blocks:  # fmt: skip
    """Which voxel blocks each keyframe's depth touches (Open3D's own rule: those within the truncation of a
    depth pixel's point); each keyframe's blocks go to ``spills[0]``, its depth codes to ``spills[1]``."""
    probe = _grid(s["voxel_size_m"], 1)
    boxes = np.zeros((len(kf), 2, 3), np.int64)
    boxes[:, 0], boxes[:, 1] = 1, 0
    depth = _DepthCodes(len(kf), spills[1], s["depth_max_m"])
    keys = np.zeros(0, _ROW)
    pending: list[np.ndarray] = []
    for i in range(len(kf)):
        code = depth_codes(kf.depth(i))
        depth.add(i, code)
        f = _frame(kf, i, code, depth)
        pbar.update(1)
        b = np.zeros((0, 3), np.int32)
        if f is not None:
            b = probe.compute_unique_block_coordinates(f.depth, f.K, f.E, 1.0, s["depth_max_m"], trunc_mult).numpy()
            if len(b):
                boxes[i] = b.min(axis=0), b.max(axis=0)
                pending.append(_rows(b))
        spills[0].add_record(np.ascontiguousarray(b, np.int32).tobytes())  # record i: none without blocks
        if len(pending) >= 64:  # merged as it goes: the union stays the size of the place's blocks
            keys = np.unique(np.concatenate([keys, *pending]))
            pending = []
    keys = np.unique(np.concatenate([keys, *pending]))
    return _Blocks(keys.view(np.int32).reshape(-1, 3), boxes, spills[0], depth)


def _surface(vbg: VoxelBlockGrid, lo: np.ndarray, hi: np.ndarray, cfg: FusionConfig,
             voxel_size: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The surface of a grid, kept where a triangle's centroid lies in a block of the cell ``[lo, hi)``. The grid
    also holds a border of blocks around the cell, so that the cell's edge has its neighbours; a triangle there
    belongs to the neighbouring cell, whose grid makes the same one from the same voxels (the same positions: the
    same test gives each triangle to exactly one cell)."""
    try:  # a voxel's weight is the number of frames that saw it; the surface where enough did
        mesh = vbg.extract_triangle_mesh(weight_threshold=cfg.min_observations - 0.5)
        v = mesh.vertex.positions.numpy()
        t = mesh.triangle.indices.numpy()
    except RuntimeError:  # Open3D raises on an empty surface
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    centre = (v[t[:, 0]].astype(np.float64) + v[t[:, 1]] + v[t[:, 2]]) / (3.0 * BLOCK * voxel_size)
    t = t[_inside(np.floor(centre).astype(np.int64), lo, hi)]
    used, t = np.unique(t, return_inverse=True)  # the vertices the kept triangles use, renumbered
    return np.array(v[used], np.float32), t.reshape(-1, 3).astype(np.int32)


def _tile_surfaces(vbg: VoxelBlockGrid, lo: np.ndarray, hi: np.ndarray, cfg: FusionConfig,
                   voxel_size: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The surface of one tile's grid in its cell ``[lo, hi)``, extracted a chunk of at most ``extract_blocks``
    blocks at a time (marching cubes holds about 14 kB a block while it runs): each chunk's blocks and a border of
    one block are copied into a grid of their own."""
    o3d = _open3d()
    hm = vbg.hashmap()
    buf = hm.active_buf_indices().numpy()
    keys = hm.key_tensor().numpy()[buf]
    own = keys[_inside(keys, lo, hi)]
    if len(own) <= cfg.extract_blocks:
        yield _surface(vbg, lo, hi, cfg, voxel_size)
        return
    for clo, chi in tiles_of(own, cfg.extract_blocks):
        clo, chi = np.maximum(clo, lo), np.minimum(chi, hi)
        sel = _inside(keys, clo - 1, chi + 1)
        rows = o3d.core.Tensor(buf[sel].astype(np.int64))
        chunk = _grid(voxel_size, int(sel.sum()))
        chunk.hashmap().insert(o3d.core.Tensor(np.ascontiguousarray(keys[sel])),
                               [hm.value_tensor(0)[rows], hm.value_tensor(1)[rows]])  # fmt: skip
        yield _surface(chunk, clo, chi, cfg, voxel_size)
        del chunk


@dataclass
class _Cell:
    """One tile: its cell ``[lo, hi)`` of block coordinates, the cell grown by one block (its grid's extent), how
    many blocks lie there, and the keyframes whose blocks reach it."""

    lo: np.ndarray
    hi: np.ndarray
    grown: tuple[np.ndarray, np.ndarray]
    blocks: int
    reach: np.ndarray


def _plan(found: _Blocks, most: int) -> list[_Cell]:
    """The cells of :func:`tiles_of` with what fusing each needs."""
    cells = []
    lo_kf, hi_kf = found.boxes[:, 0], found.boxes[:, 1]
    some = np.all(lo_kf <= hi_kf, axis=1)  # a keyframe without blocks (an empty box) reaches no cell
    for lo, hi in tiles_of(found.all, most) if len(found.all) else []:
        glo, ghi = lo - 1, hi + 1
        reach = np.flatnonzero(some & np.all((hi_kf >= glo) & (lo_kf < ghi), axis=1))
        cells.append(_Cell(lo, hi, (glo, ghi), int(_inside(found.all, glo, ghi).sum()), reach))
    return cells


def _fuse_cell(kf: Keyframes, cell: _Cell, found: _Blocks, s: dict[str, float], trunc_mult: float,
               pbar: LoggedBar) -> VoxelBlockGrid:  # fmt: skip
    """The grid of one cell and its border, every keyframe that reaches it integrated there (its blocks from the
    first pass: a keyframe with none there is not even read)."""
    o3d = _open3d()
    vbg = _grid(s["voxel_size_m"], cell.blocks + _BATCH)
    for i in cell.reach:
        pbar.update(1)
        b = found.of(int(i))
        b = b[_inside(b, *cell.grown)]
        f = _frame(kf, int(i), found.depth.code(int(i)), found.depth) if len(b) else None
        if f is None:
            continue
        for k in range(0, len(b), _BATCH):  # see _BATCH
            sub = o3d.core.Tensor(np.ascontiguousarray(b[k : k + _BATCH]))
            vbg.integrate(sub, f.depth, f.K, f.E, 1.0, s["depth_max_m"], trunc_mult)
    return vbg


def fuse_keyframes(
    kf: Keyframes, cfg: FusionConfig | None = None, *, progress: bool = False, scratch: Path | None = None
) -> FusedGeometry:
    """Fuse the depth of every keyframe into a TSDF and return its surface (and the exposure fit, when asked).

    The TSDF's memory is bounded by ``tile_blocks`` and ``extract_blocks``, not by the place (the exposure fit's
    samples grow with the keyframes: at its peak about 30 kB each at 100 samples): a first pass finds the voxel
    blocks the depth touches; a place with more is cut into cells of at most that many (:func:`tiles_of`), each
    fused on its own from the keyframes that reach it and its surface extracted a chunk at a time. What a pass
    keeps for a later one (each keyframe's blocks and depth, the surface as it comes) goes to anonymous temporary
    files in ``scratch`` (default: the system's temporary folder; the depth takes about a byte a pixel). The
    surface is the one a single grid gives (each voxel sees the same frames), a vertex on a cell's border once per
    cell."""
    _open3d()  # a clear error before any work where Open3D is missing
    cfg = cfg or FusionConfig()
    t0 = time.monotonic()
    s = resolve_settings(kf, cfg)
    exposure, exposure_stats = None, None
    if cfg.exposure:  # first: its samples are freed before the grids are made
        from pose2rgbd.placemap.fused.exposure import fit_exposure

        exposure, exposure_stats = fit_exposure(kf, s, neighbours=cfg.exposure_neighbours,
                                                samples=cfg.exposure_samples, progress=progress)  # fmt: skip
        _give_back_freed_memory()
    t_fuse = time.monotonic()
    trunc_mult = float(cfg.trunc_voxels)
    spills = [_Spill(scratch) for _ in range(4)]  # the keyframes' blocks and depth, the vertices, the triangles
    try:
        with bar(total=len(kf), progress=progress, desc="fuse: find blocks", unit="frame") as pbar:
            found = _block_pass(kf, s, trunc_mult, (spills[0], spills[3]), pbar)
        cells = _plan(found, cfg.tile_blocks)
        nv = 0
        reads = sum(len(c.reach) for c in cells)  # a keyframe is read once for each tile it reaches
        with bar(total=reads, progress=progress, desc=f"fuse depth in {len(cells)} tiles", unit="read") as pbar:
            for cell in cells:
                vbg = _fuse_cell(kf, cell, found, s, trunc_mult, pbar)
                for v, t in _tile_surfaces(vbg, cell.lo, cell.hi, cfg, s["voxel_size_m"]):
                    spills[1].append(v.astype(np.float32))
                    spills[2].append((t + nv).astype(np.int32))
                    nv += len(v)
                del vbg
                _give_back_freed_memory()
        # read back whole: a list of the pieces joined at the end held the surface twice (45 MB more at the peak
        # of 2.5 million triangles)
        vertices, triangles = spills[1].whole(np.float32, 3), spills[2].whole(np.int32, 3)
    finally:
        for sp in spills:
            sp.close()
    meta: dict[str, Any] = {**s, "keyframes": len(kf), "vertices": len(vertices), "triangles": len(triangles),
                            "trunc_voxels": cfg.trunc_voxels, "voxel_blocks": len(found.all), "tiles": len(cells),
                            "min_observations": cfg.min_observations,
                            "keyframes_without_depth": int(np.sum(found.boxes[:, 0, 0] > found.boxes[:, 1, 0])),
                            "fuse_s": round(time.monotonic() - t_fuse, 2)}  # fmt: skip
    if exposure_stats is not None:
        meta["exposure"] = exposure_stats
    meta["build_s"] = round(time.monotonic() - t0, 2)
    log.info("fused %d keyframes: %d triangles at %s voxels in %.1f s", len(kf), len(triangles),
             voxel_words(s["voxel_size_m"]), meta["build_s"])  # fmt: skip
    return FusedGeometry(vertices, triangles, meta, exposure)


def voxel_words(voxel_size_m: float) -> str:
    """A voxel size as every message says it: centimetres below a metre ("1.3 cm"), metres from there ("3.47 m")."""
    v = float(voxel_size_m)
    return f"{100 * v:.1f} cm" if v < 1.0 else f"{v:.3g} m"


def fuse_map(
    map_path: str | Path, cfg: FusionConfig | None = None, *, overwrite: bool = False, progress: bool = True
) -> FusedGeometry:
    """Fuse a place map's keyframes and store the result in ``<map>/fused/`` (atomically: a hidden sibling renamed
    into place; an earlier one is replaced only with ``overwrite``)."""
    from pose2rgbd.placemap.place_map import PlaceMap

    # nothing cached: every pass reads a keyframe once, but the exposure fit, which keeps its own (exposure._Images)
    pm = PlaceMap(map_path, cache_keyframes=0)
    if not pm.has_depth:
        raise MapError(f"{pm.path}: the map has no depth to fuse (built from a dataset without metric depth, or "
                       "localization-only)")  # fmt: skip
    out = pm.path / FUSED_DIR
    refuse_existing(out, overwrite=overwrite)
    tmp = make_temp_dir(out)
    try:
        geo = fuse_keyframes(pm, cfg, progress=progress, scratch=tmp)  # its scratch files on the map's disk
        geo.meta["map_fingerprint"] = pm.fingerprint
        geo.save(tmp)
        swap_in([(tmp, out)])  # the earlier fused geometry back on any failure or Ctrl-C
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return geo


def load_fused(map_path: str | Path) -> FusedGeometry:
    """The fused geometry stored with a place map; a clear error when it has none."""
    folder = Path(map_path).expanduser() / FUSED_DIR
    if not (folder / "fused.json").is_file():
        raise MapError(f"{map_path}: no fused geometry; make it with `pose2rgbd map fuse --map {map_path}`")
    return FusedGeometry.load(folder)
