"""Fuse every keyframe's depth into one TSDF, keep its surface, ray-cast it from any pose.

One sensor frame's depth has holes (structured light: ~10 % invalid pixels) and noise; the truncated signed
distance function of all of them together (Curless & Levoy; KinectFusion) fills one frame's holes from the others
and averages the noise away. Open3D's ``ScalableTSDFVolume`` (a hashed voxel-block grid, only the blocks near a
surface exist) integrates the frames; its marching-cubes surface is kept as a triangle mesh (a few MB; the TSDF
itself is not stored) and ray-cast with Open3D's ``RaycastingScene`` (Embree), which gives the depth of any pose.

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

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.atomic import make_temp_dir, swap_in
from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.jsonio import json_text
from pose2rgbd.output_guard import refuse_existing
from pose2rgbd.placemap.format import MapError
from pose2rgbd.placemap.keyframes import Keyframes
from pose2rgbd.progress import bar

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


def fuse_keyframes(kf: Keyframes, cfg: FusionConfig | None = None, *, progress: bool = False) -> FusedGeometry:
    """Fuse the depth of every keyframe into a TSDF and return its surface (and the exposure fit, when asked)."""
    o3d = _open3d()
    cfg = cfg or FusionConfig()
    t0 = time.monotonic()
    s = resolve_settings(kf, cfg)
    dev = o3d.core.Device("CPU:0")
    f32 = o3d.core.float32
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"),
        attr_dtypes=(f32, f32),
        attr_channels=((1), (1)),
        voxel_size=s["voxel_size_m"],
        block_resolution=8,
        block_count=1000,
        device=dev,
    )  # fmt: skip  (the block hash map grows as the surface does)
    trunc_mult = float(cfg.trunc_voxels)
    skipped = 0
    with bar(total=len(kf), progress=progress, desc="fuse depth", unit="frame") as pbar:
        for i in range(len(kf)):
            cam = kf.camera(i)
            d = np.array(kf.depth(i), np.float32)
            d[~np.isfinite(d) | (d <= 0)] = 0.0  # invalid and sky: not integrated
            depth = o3d.t.geometry.Image(o3d.core.Tensor(d))
            K = o3d.core.Tensor(cam.K + _HALF_PIXEL, o3d.core.float64)
            E = o3d.core.Tensor(np.linalg.inv(kf.T_world_cam[i]), o3d.core.float64)
            pbar.update(1)
            if not np.any((d > 0) & (d < s["depth_max_m"])):
                skipped += 1  # no depth in range: Open3D refuses a frame that touches no block
                continue
            blocks = vbg.compute_unique_block_coordinates(depth, K, E, 1.0, s["depth_max_m"], trunc_mult)
            vbg.integrate(blocks, depth, K, E, 1.0, s["depth_max_m"], trunc_mult)
    blocks_used = int(vbg.hashmap().size())
    try:  # a voxel's weight is the number of frames that saw it; the surface where enough did
        mesh = vbg.extract_triangle_mesh(weight_threshold=cfg.min_observations - 0.5)
        vertices = np.asarray(mesh.vertex.positions.numpy(), np.float32)
        triangles = np.asarray(mesh.triangle.indices.numpy(), np.int32)
    except RuntimeError:  # Open3D raises on an empty surface
        vertices, triangles = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    del vbg
    fuse_s = time.monotonic() - t0
    meta: dict[str, Any] = {**s, "keyframes": len(kf), "vertices": len(vertices), "triangles": len(triangles),
                            "trunc_voxels": cfg.trunc_voxels, "voxel_blocks": blocks_used,
                            "min_observations": cfg.min_observations,
                            "keyframes_without_depth": skipped, "fuse_s": round(fuse_s, 2)}  # fmt: skip
    geo = FusedGeometry(vertices, triangles, meta)
    if cfg.exposure:
        from pose2rgbd.placemap.fused.exposure import fit_exposure

        geo.exposure, stats = fit_exposure(kf, geo, neighbours=cfg.exposure_neighbours,
                                           samples=cfg.exposure_samples)  # fmt: skip
        meta["exposure"] = stats
    meta["build_s"] = round(time.monotonic() - t0, 2)
    log.info("fused %d keyframes: %d triangles at %s voxels in %.1f s", len(kf), len(triangles),
             voxel_words(s["voxel_size_m"]), meta["build_s"])  # fmt: skip
    return geo


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

    pm = PlaceMap(map_path, cache_keyframes=0)
    if not pm.has_depth:
        raise MapError(f"{pm.path}: the map has no depth to fuse (built from a dataset without metric depth, or "
                       "localization-only)")  # fmt: skip
    out = pm.path / FUSED_DIR
    refuse_existing(out, overwrite=overwrite)
    geo = fuse_keyframes(pm, cfg, progress=progress)
    geo.meta["map_fingerprint"] = pm.fingerprint
    tmp = make_temp_dir(out)
    try:
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
