"""Build a place map from a dataset's frames: ``pose2rgbd map build``.

1. **Select** the keyframes (:class:`MapSelection`): a split's training frames, some sources, or all frames, then
   every N-th of them -- so the frames a localizer or renderer is evaluated on never enter its map.
2. **Per keyframe**: the image, the metric depth (when the dataset has it), SIFT features where the depth is valid,
   and their world points lifted from the depth (the depth at the keypoint, refused on depth edges where the
   keypoint may belong to either side).
3. Without metric depth the points are **triangulated** across neighbouring keyframes with the known poses
   (:mod:`pose2rgbd.map.triangulate`).
4. The **global descriptors** (:mod:`pose2rgbd.map.place`): a visual vocabulary learned from the map's own
   descriptors, every keyframe's VLAD, a PCA.
5. Written atomically (a hidden sibling folder renamed into place), with a manifest naming the dataset's
   fingerprint and the selection.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.map.features import FeatureConfig, extract
from pose2rgbd.map.format import PLACE_MAP, MapError, MapWriter, encode_depth, encode_rgb
from pose2rgbd.map.place import GlobalConfig, GlobalDescriber
from pose2rgbd.progress import bar

log = logging.getLogger(__name__)

SELECTION_SPLITS = ("", "random", "route", "every-nth")


@dataclass
class MapSelection:
    """Which dataset frames become keyframes."""

    split: str = help_field(
        "", "take the training frames of this split (random | route | every-nth, as `pose2rgbd train` makes it); "
        "empty: no split"
    )  # fmt: skip
    seed: int = help_field(0, "seed of the random split")
    val_fraction: float = help_field(0.1, "validation share of the split (as train.val_fraction)")
    test_fraction: float = help_field(0.1, "test share of the split (as train.test_fraction)")
    every_nth: int = help_field(10, "the every-nth split's N (as train.every_nth)")
    sources: list[int] = help_field([], "only frames of these source ids (empty: every source)")
    stride: int = ranged_field(1, "then keep every N-th of the selected frames (1: all): a sparse map", 1, 100000)

    def __post_init__(self) -> None:
        if self.split not in SELECTION_SPLITS:
            raise ConfigError(f"selection.split {self.split!r}: use random, route, every-nth or leave it empty")

    def describe(self) -> str:
        parts = []
        if self.split:
            parts.append(f"training frames of the {self.split} split (seed {self.seed})")
        if self.sources:
            parts.append(f"sources {','.join(map(str, self.sources))}")
        if self.stride > 1:
            parts.append(f"every {self.stride}th")
        return ", ".join(parts) or "every frame"


@dataclass
class MapBuildConfig:
    """How a place map is built."""

    selection: MapSelection = field(default_factory=MapSelection, metadata={"help": "which frames are keyframes"})
    features: FeatureConfig = field(
        default_factory=lambda: FeatureConfig(max_features=600),
        metadata={"help": "local features (SIFT) of the keyframes (queries take up to 1000 of their own)"},
    )
    global_desc: GlobalConfig = field(default_factory=GlobalConfig, metadata={"help": "place recognition"})
    image_codec: str = help_field("jpg", "how keyframe images are stored: jpg | png (lossless, about 2x larger)")
    image_quality: int = ranged_field(95, "JPEG quality of stored keyframe images", 50, 100)
    edge_ratio: float = ranged_field(
        0.05, "refuse a keypoint's depth when its 3x3 neighbourhood's depth varies more than this (relative)", 0.0, 10.0
    )
    triangulate_neighbours: int = ranged_field(
        6, "without depth: triangulate each keyframe against this many nearest keyframes", 1, 50
    )
    seed: int = help_field(0, "seed of the vocabulary's k-means")
    keyframe_images: bool = help_field(
        True,
        "store the keyframes' images and depth (the hybrid renderer warps them); false: a localization-only map, "
        "about half the size",
    )
    workers: int = ranged_field(0, "threads reading and describing keyframes (0: the cores, at most 4)", 0, 64)

    def __post_init__(self) -> None:
        if self.image_codec not in ("jpg", "png"):
            raise ConfigError(f"image_codec {self.image_codec!r}: use jpg or png")


def select_frames(ds: Any, sel: MapSelection) -> np.ndarray:
    """Sorted dataset rows of the keyframes (see :class:`MapSelection`)."""
    from pose2rgbd.dataset.splits import make_split

    f = ds.frames
    rows = np.arange(len(ds))
    if sel.split:
        sp = make_split(f.source_id, f.stamp_ns, sel.split, seed=sel.seed, val_fraction=sel.val_fraction,
                        test_fraction=sel.test_fraction, every_nth=sel.every_nth)  # fmt: skip
        rows = sp.train
    if sel.sources:
        unknown = sorted(set(sel.sources) - set(np.unique(f.source_id).tolist()))
        if unknown:
            raise ConfigError(f"selection.sources: {unknown} are not source ids of {ds.path}")
        rows = rows[np.isin(f.source_id[rows], sel.sources)]
    if sel.stride > 1:  # every N-th in time order within each source
        keep = []
        for s in np.unique(f.source_id[rows]):
            r = rows[f.source_id[rows] == s]
            r = r[np.argsort(f.stamp_ns[r], kind="stable")]
            keep.append(r[:: sel.stride])
        rows = np.concatenate(keep)
    rows = np.sort(rows)
    if len(rows) < 2:
        raise ConfigError(f"the selection ({sel.describe()}) leaves {len(rows)} keyframe(s); a map needs at least 2")
    return rows


def lift_points(
    xy: np.ndarray, depth: np.ndarray, T_world_cam: np.ndarray, K: np.ndarray, edge_ratio: float
) -> np.ndarray:
    """World points (K, 3) of keypoints ``xy`` from the keyframe's depth (NaN where it has none or at an edge)."""
    h, w = depth.shape
    u = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
    v = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
    d = depth.astype(np.float64)
    z = d[v, u]
    # 3x3 neighbourhood min / max (edge check): a keypoint on a depth edge may take either side's depth
    pad = np.pad(d, 1, mode="edge")
    win = np.stack([pad[v + dy, u + dx] for dy in range(3) for dx in range(3)], axis=1)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0) & np.all(np.isfinite(win), axis=1)
        ok &= (np.max(win, axis=1) - np.min(win, axis=1)) <= edge_ratio * z
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    p = np.stack([(xy[:, 0] - cx) / fx * z, (xy[:, 1] - cy) / fy * z, z], axis=1)
    world = p @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    world[~ok] = np.nan
    return world.astype(np.float32)


def build_map(
    dataset: str | Path,
    out: str | Path,
    cfg: MapBuildConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Build the place map of ``dataset`` into ``out`` (see the module docstring); returns the manifest.
    ``rows``: the keyframes' dataset rows, given by the caller instead of ``cfg.selection`` (the experiments)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.geometry.coverage import DEFAULT_ROT_WEIGHT_M, median_depth_weight
    from pose2rgbd.output_guard import check_output, refuse_existing

    cfg = cfg or MapBuildConfig()
    t0 = time.monotonic()
    check_output(out, PLACE_MAP, inputs=[dataset], overwrite=overwrite)
    refuse_existing(out, overwrite=overwrite)
    ds = Dataset(dataset)
    explicit = rows is not None
    rows = select_frames(ds, cfg.selection) if rows is None else np.unique(np.asarray(rows, np.int64))
    if explicit and (len(rows) < 2 or rows[0] < 0 or rows[-1] >= len(ds)):
        raise ConfigError(f"rows: {len(rows)} keyframe rows, within 0..{len(ds) - 1} needed (at least 2)")
    metric = ds.manifest.depth_kind == "metric"
    cam = ds.camera
    K = cam.K
    T_all = ds.frames.T_world_cam
    rot_w = DEFAULT_ROT_WEIGHT_M
    store_depth = metric and cfg.keyframe_images
    with MapWriter(out, has_depth=store_depth, image_codec=cfg.image_codec, image_quality=cfg.image_quality) as w:
        depth_samples: list[np.ndarray] = []
        raw_desc: list[int] = []

        def keyframe(i: int) -> tuple[bytes, bytes | None, Any, np.ndarray, np.ndarray | None]:
            """Read, extract, lift and encode one keyframe (in a worker thread: OpenCV releases the GIL)."""
            rgb = ds.read_rgb(i)
            depth = ds.read_depth(i) if metric else None
            mask = None if depth is None else np.isfinite(depth) & (depth > 0)
            feats = extract(rgb, cfg.features, mask)
            xyz = None if depth is None else lift_points(feats.xy, depth, T_all[i], K, cfg.edge_ratio)
            enc_d = None if depth is None or not store_depth else encode_depth(depth)
            sample = None if depth is None else depth[::8, ::8]
            enc_rgb = encode_rgb(rgb, cfg.image_codec, cfg.image_quality) if cfg.keyframe_images else b""
            return enc_rgb, enc_d, feats, xyz, sample  # type: ignore[return-value]

        workers = cfg.workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            todo = iter(int(i) for i in rows)
            window = [pool.submit(keyframe, i) for i in itertools.islice(todo, 2 * workers)]
            with bar(total=len(rows), progress=progress, desc="map keyframes", unit="frame") as pbar:
                while window:
                    enc_rgb, enc_d, feats, xyz, sample = window.pop(0).result()
                    window += [pool.submit(keyframe, i) for i in itertools.islice(todo, 1)]
                    if xyz is not None:
                        keep = np.all(np.isfinite(xyz), axis=1)
                        w.add_encoded(enc_rgb, enc_d, feats.xy[keep], feats.desc[keep], xyz[keep])
                        if len(depth_samples) < 32 and sample is not None:
                            depth_samples.append(sample)
                    else:
                        nan = np.full((len(feats.xy), 3), np.nan, np.float32)
                        w.add_encoded(enc_rgb, None, feats.xy, feats.desc, nan)
                    raw_desc.append(len(feats.xy))
                    pbar.update(1)
        if depth_samples:
            rot_w = median_depth_weight(depth_samples)
        points = "depth"
        if not metric:
            from pose2rgbd.map.triangulate import triangulate

            offsets, xy, desc = w.read_features()
            xyz = triangulate(offsets, xy, desc, T_all[rows], K, neighbours=cfg.triangulate_neighbours,
                              rot_weight_m=rot_w, progress=progress)  # fmt: skip
            w.set_points(xyz)
            points = "triangulated"
        offsets, _, desc = w.read_features()
        if offsets[-1] < 16:
            raise MapError(
                f"{len(rows)} keyframes gave only {int(offsets[-1])} local features with a world point: the images "
                "are too plain (or their depth invalid) to localize against"
            )
        describer = GlobalDescriber.learn_vocabulary(desc, cfg.global_desc, seed=cfg.seed)
        if describer.kind == "vlad":
            raw = np.stack([describer.raw_vlad(desc[offsets[k] : offsets[k + 1]]) for k in range(len(rows))])
            describer.learn_pca(raw[:: max(1, len(raw) // 4000)], cfg.global_desc.dims)
            glob = describer.finish(raw)
        else:
            glob = np.stack([describer.thumbnail(ds.read_rgb(int(i))) for i in rows])
        w.save_array("global", glob.astype(np.float32))
        w.save_npz("vocabulary", **describer.arrays())
        w.save_array("poses", T_all[rows])
        w.save_array("intrinsics", np.tile([cam.fx, cam.fy, cam.cx, cam.cy], (len(rows), 1)).astype(np.float64))
        w.save_array("frames", rows.astype(np.int64))
        w.save_array("stamp_ns", ds.frames.stamp_ns[rows])
        w.save_array("source_id", ds.frames.source_id[rows])
        from pose2rgbd import config as cfgmod

        manifest = {
            "dataset": {
                "path": str(Path(dataset).resolve()),
                "name": ds.manifest.name,
                "fingerprint": ds.fingerprint(),
                "world_frame": ds.manifest.world_frame,
                "camera_frame": ds.manifest.camera_frame,
                "frames": len(ds),
                "depth_kind": ds.manifest.depth_kind,
                "datum": None
                if ds.manifest.datum is None
                else {
                    "lat_deg": ds.manifest.datum.lat_deg,
                    "lon_deg": ds.manifest.datum.lon_deg,
                    "alt_m": ds.manifest.datum.alt_m,
                },
            },
            "selection": {
                **cfgmod.to_dict(cfg.selection),
                "description": cfg.selection.describe(),
                "keyframes": len(rows),
            },
            "keyframes": len(rows),
            "image": {"width": cam.width, "height": cam.height, "codec": cfg.image_codec, "quality": cfg.image_quality},
            "depth": {"codec": "png16-log", "min_m": 0.05, "max_m": 5000.0} if store_depth else None,
            "keyframe_images": bool(cfg.keyframe_images),
            "points": points,
            "features": {
                **cfgmod.to_dict(cfg.features),
                "kind": "sift",
                "total": int(offsets[-1]),
                "extracted": int(sum(raw_desc)),
            },
            "global": {**cfgmod.to_dict(cfg.global_desc), "dims_stored": int(glob.shape[1])},
            "rot_weight_m": float(rot_w),
            "build_s": round(time.monotonic() - t0, 2),
        }
        w.close(manifest, overwrite=overwrite)
    return manifest
