"""The place map, opened lazily: the keyframe store every map consumer reads (the structure localizer, the hybrid
renderer, the baselines, coverage). Format: :mod:`pose2rgbd.placemap.format`, docs/place-map.md.

Opening reads the manifest and the index -- poses, intrinsics, global descriptors (a few hundred bytes per
keyframe) and a k-d tree over positions (:class:`~pose2rgbd.geometry.coverage.PoseSet`); keyframe images, depth
and local features stay on disk (memory-mapped) until a query asks for them, and the decoded ones are kept in a
small LRU cache. Thread-safe.
"""

from __future__ import annotations

import os
import shlex
import stat
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import PoseSet
from pose2rgbd.placemap.features import KeyframeFeatures as KeyframeFeatures  # where it was: map.place_map
from pose2rgbd.placemap.format import (
    MANIFEST,
    MERGED_PREFIX,
    BlobReader,
    MapError,
    decode_depth,
    decode_rgb,
    read_manifest,
    stated_pose_error,
)
from pose2rgbd.placemap.lru import LRU
from pose2rgbd.placemap.place import GlobalDescriber
from pose2rgbd.placemap.selection import MapSelection

if TYPE_CHECKING:
    from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.placemap.verify import Verified, rebuild_command, verify_files

# the folder of the fused geometry `map fuse` stores with a map (pose2rgbd.placemap.fused.tsdf.FUSED_DIR; not imported:
# `map info` does not load the fusion's modules)
FUSED_DIR = "fused"


def _tree_bytes(path: Path) -> int:
    """The bytes of the regular files at ``path`` (a file, or a folder and everything under it; links not followed);
    a file that vanishes while counted counts nothing."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if not stat.S_ISDIR(st.st_mode):
        return 0
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one folder (the same file on disk, else the same resolved path)."""
    try:
        return Path(a).expanduser().samefile(Path(b).expanduser())
    except OSError:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def pose_units_of(manifest: Mapping[str, object]) -> str:
    """The units of a map's keyframe positions, from its manifest (``map.json``): ``m``, ``unscaled`` (the source's
    own scale, e.g. structure from motion) or ``not recorded`` (an empty manifest: a map in memory)."""
    ds = manifest.get("dataset")
    if not isinstance(ds, Mapping):
        return "not recorded"
    units = ds.get("pose_units")
    if units is None:  # a map of an older pose2rgbd: metres when the dataset had a datum or metric depth
        units = "m" if ds.get("datum") or ds.get("depth_kind") == "metric" else "not recorded"
    return str(units)


@dataclass(frozen=True)
class DiskUsage:
    """What a map folder holds on disk, in bytes (each file's size where it is now): ``keyframe_store`` (the manifest
    and the files it lists: keyframes, features, the index -- what grows with the keyframes), ``fused`` (the fused
    geometry ``map fuse`` stores in ``fused/``; 0 without one), ``other`` (anything else in the folder: a partial
    fused geometry a killed ``map fuse`` left, files put there by hand), named in ``other_names``."""

    keyframe_store: int
    fused: int
    other: int
    other_names: tuple[str, ...]

    @property
    def total(self) -> int:
        return self.keyframe_store + self.fused + self.other


class PlaceMap:
    """A place map folder (see the module docstring). ``PlaceMap(path)`` raises :class:`MapError` on problems:
    :class:`~pose2rgbd.placemap.verify.MapDamagedError` when a file is missing or not of the size the manifest
    records; with ``verify`` also when its SHA-256 differs (every file is read: :mod:`pose2rgbd.placemap.verify`)."""

    def __init__(self, path: str | Path, *, cache_keyframes: int = 64, verify: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.manifest = read_manifest(self.path)
        self.verified: Verified = verify_files(self.path, self.manifest, hashes=verify)
        again = f"rebuild it with {rebuild_command(self.path, self.manifest)}"
        need = ["poses.npy", "intrinsics.npy", "frames.npy", "images.bin", "images_offsets.npy", "kp_offsets.npy",
                "kp_xy.npy", "kp_desc.npy", "kp_xyz.npy", "global.npy", "vocabulary.npz"]  # fmt: skip
        if self.manifest.get("depth"):
            need += ["depth.bin", "depth_offsets.npy"]
        missing = [n for n in need if not (self.path / n).is_file()]
        if missing:
            raise MapError(f"{self.path}: incomplete place map, missing {', '.join(missing)}; {again}")
        try:
            self.T_world_cam = np.load(self.path / "poses.npy").astype(np.float64)
            self.intrinsics = np.load(self.path / "intrinsics.npy").astype(np.float64)
            self.frames = np.load(self.path / "frames.npy")
            self.stamp_ns = np.load(self.path / "stamp_ns.npy") if (self.path / "stamp_ns.npy").is_file() else None
            self.source_id = np.load(self.path / "source_id.npy") if (self.path / "source_id.npy").is_file() else None
            self.global_desc = np.load(self.path / "global.npy").astype(np.float32)
            with np.load(self.path / "vocabulary.npz") as z:
                self.describer = GlobalDescriber.from_arrays({k: z[k] for k in z.files})
            self._kp_offsets = np.load(self.path / "kp_offsets.npy")
            self._kp_xy = np.load(self.path / "kp_xy.npy", mmap_mode="r")
            self._kp_desc = np.load(self.path / "kp_desc.npy", mmap_mode="r")
            self._kp_xyz = np.load(self.path / "kp_xyz.npy", mmap_mode="r")
            self._img_off = np.load(self.path / "images_offsets.npy")
            # read by offset, not mapped: the process keeps no keyframe's encoded bytes (BlobReader)
            self._img = BlobReader(self.path / "images.bin") if self._img_off[-1] else None
            self._depth_off = None
            self._depth: BlobReader | None = None
            if self.manifest.get("depth"):
                self._depth_off = np.load(self.path / "depth_offsets.npy")
                self._depth = BlobReader(self.path / "depth.bin")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            verify_files(self.path, self.manifest, hashes=True)  # names the changed file where digests can
            raise MapError(f"{self.path}: damaged place map ({type(e).__name__}: {e}); {again}") from e
        n = len(self.T_world_cam)
        per_keyframe = (self.intrinsics, self.frames, self.global_desc, self._img_off[1:], self._kp_offsets[1:])
        if n == 0 or any(len(a) != n for a in per_keyframe):
            raise MapError(f"{self.path}: inconsistent place map (array lengths differ); {again}")
        self.poses = PoseSet(self.T_world_cam, rot_weight_m=float(self.manifest.get("rot_weight_m", 10.0)))
        self._cache: LRU[tuple[str, int], np.ndarray] = LRU(cache_keyframes)

    # ------------------------------------------------------------------ the index
    def __len__(self) -> int:
        return len(self.T_world_cam)

    @property
    def has_depth(self) -> bool:
        return self._depth is not None

    @property
    def image_hw(self) -> tuple[int, int]:
        im = self.manifest["image"]
        return int(im["height"]), int(im["width"])

    @property
    def world_frame(self) -> str:
        return str(self.manifest.get("dataset", {}).get("world_frame", "map"))

    @property
    def datum(self) -> Datum | None:
        """The dataset's ENU origin and where its ENU frame lies in the world, or None: GPS fixes -> map
        (:meth:`Datum.to_world`)."""
        from pose2rgbd.geometry.geodesy import Datum

        d = self.manifest.get("dataset", {}).get("datum")
        return None if not d else Datum.from_dict(d)

    @property
    def pose_error(self) -> tuple[float, float] | None:
        """The standard deviations (horizontal, vertical; metres) of the map's own poses against the true ones, where
        its dataset states them (a recording's GPS receiver, ``pose_error`` in docs/dataset-format.md), else None."""
        return stated_pose_error(self.manifest)

    @property
    def selection(self) -> MapSelection:
        """Which of its dataset's frames the map's keyframes are (the selection it was built with)."""
        return MapSelection.from_manifest(self.manifest.get("selection") or {})

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the dataset the map was built from."""
        return str(self.manifest.get("dataset", {}).get("fingerprint", ""))

    def camera(self, i: int = 0) -> PinholeCamera:
        """Keyframe ``i``'s intrinsics at the stored image size."""
        h, w = self.image_hw
        fx, fy, cx, cy = (float(v) for v in self.intrinsics[i])
        return PinholeCamera(w, h, fx, fy, cx, cy)

    @property
    def positions(self) -> np.ndarray:
        t: np.ndarray = self.T_world_cam[:, :3, 3]
        return t

    # ------------------------------------------------------------------ lazily read keyframe data
    def features(self, i: int) -> KeyframeFeatures:
        a, b = int(self._kp_offsets[i]), int(self._kp_offsets[i + 1])
        return KeyframeFeatures(
            np.asarray(self._kp_xy[a:b]), np.asarray(self._kp_desc[a:b]), np.asarray(self._kp_xyz[a:b])
        )

    def rgb(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB of keyframe ``i`` (decoded, cached)."""
        if self._img is None:
            raise MapError(
                f"{self.path}: this map holds no keyframe images (a localization-only map, built with "
                "keyframe_images false); build it again with them for the hybrid renderer"
            )
        off, img = self._img_off, self._img
        return self._cache.get(("rgb", int(i)), lambda: decode_rgb(img.read(off[i], off[i + 1])))

    def depth(self, i: int) -> np.ndarray:
        """float32 (H, W) metric depth of keyframe ``i`` (NaN invalid, +inf sky; decoded, cached)."""
        if self._depth is None or self._depth_off is None:
            raise MapError(
                f"{self.path}: this map has no depth (built from a dataset without metric depth, or a "
                "localization-only map)"
            )
        off, data = self._depth_off, self._depth
        return self._cache.get(("depth", int(i)), lambda: decode_depth(data.read(off[i], off[i + 1])))

    def encoded(self, i: int) -> tuple[bytes, bytes | None]:
        """Keyframe ``i``'s image and depth as stored (encoded files; ``b""`` / None where the map has none):
        what :mod:`pose2rgbd.placemap.merge` copies without decoding."""
        rgb = b"" if self._img is None else self._img.read(self._img_off[i], self._img_off[i + 1])
        if self._depth is None or self._depth_off is None:
            return rgb, None
        return rgb, self._depth.read(self._depth_off[i], self._depth_off[i + 1])

    # ------------------------------------------------------------------ checks and summary
    @property
    def merged(self) -> bool:
        """Whether the map was merged from maps of several datasets (``map merge``): its keyframes are the frames of
        all of them, and its fingerprint (``merged-...``) is no dataset's."""
        return self.fingerprint.startswith(MERGED_PREFIX)

    @property
    def merged_datasets(self) -> list[dict[str, object]]:
        """The datasets of a :attr:`merged` map as its manifest records them (path, name, fingerprint, frames), else
        empty."""
        leaves = self.manifest.get("dataset", {}).get("datasets") if self.merged else None
        return [d for d in leaves if isinstance(d, dict)] if isinstance(leaves, list) else []

    def check_dataset(
        self, fingerprint: str, what: str, *, path: str | Path | None = None, frames: int | None = None
    ) -> None:
        """Refuse a map built from another dataset than ``what`` (whose fingerprint is given): a merged map of several
        datasets, a map of another dataset, or -- ``path`` the dataset's folder, where the map was built from that
        very folder -- a map of the dataset as it was before it changed (frames appended since, ``frames`` now)."""
        if fingerprint and self.fingerprint and fingerprint != self.fingerprint:
            raise MapError(self._other_dataset(fingerprint, what, path, frames))

    def _other_dataset(self, fingerprint: str, what: str, path: str | Path | None, frames: int | None) -> str:
        build = f"`pose2rgbd map build --dataset {shlex.quote(str(path or what))} --out MAP`"
        if self.merged:
            leaves = self.merged_datasets
            names = ", ".join(str(d.get("path") or d.get("name") or "?") for d in leaves)
            among = any(d.get("fingerprint") == fingerprint for d in leaves)
            return (
                f"{self.path} is a map merged from {len(leaves) or 'several'} datasets ({names}; fingerprint "
                f"{self.fingerprint}), not a map of {what} ({fingerprint}) alone: a map of another dataset, whose "
                f"keyframes are frames of {'several datasets, this one among them' if among else 'other datasets'}. "
                f"Use a map built from this dataset alone: {build}"
            )
        change = self.dataset_change(path, fingerprint, frames)
        if change:
            return f"{what}: {change}"
        return (
            f"{self.path} was built from another dataset (fingerprint {self.fingerprint}) than {what} "
            f"({fingerprint}); build a map of this dataset with {build}"
        )

    def dataset_change(self, path: str | Path | None, fingerprint: str, frames: int | None) -> str:
        """Why the map no longer fits its own dataset, where ``path`` is the folder it was built from (as its
        manifest records it) and the dataset there now has the fingerprint ``fingerprint`` (``frames`` frames): the
        frames then and now, and the command that builds the map again. Empty where ``path`` is another folder or
        the dataset is unchanged."""
        rec = self.manifest.get("dataset", {})
        built_from = rec.get("path")
        if not path or not built_from or fingerprint == self.fingerprint or not _same_folder(built_from, path):
            return ""
        then = rec.get("frames")
        if isinstance(then, int) and frames is not None and frames != then:
            grew = (f"{frames - then} frames added since, as a recording resumed into it appends them"
                    if frames > then else f"{then - frames} frames fewer")  # fmt: skip
            counts = f"{then} frames when the map was built, {frames} now: {grew}"
        elif isinstance(then, int) and frames is not None:
            counts = f"{then} frames then and now, but its frames or manifest were rewritten"
        else:
            counts = "its frames or manifest were rewritten"
        sel = str(self.manifest.get("selection", {}).get("description") or "")
        same = f" (with the selection it was built with: {sel})" if sel and sel != "every frame" else ""
        return (
            f"the dataset has changed since {self.path} was built from it ({counts}; fingerprint {self.fingerprint} "
            f"then, {fingerprint} now), and the map's keyframes are frames of the dataset as it was. Build the map "
            f"again from the dataset as it is: {rebuild_command(self.path, self.manifest)}{same}"
        )

    def dataset_now(self) -> dict[str, object]:
        """The map's dataset as it is now at the folder the manifest records (``map info``): ``status`` ``unchanged``,
        ``changed`` (with ``frames_then`` / ``frames_now``, ``fingerprint_now`` and a ``note``: what to do), ``not
        found`` (moved, or on another machine: nothing to compare) or ``unreadable`` (``note``: why); the datasets of
        a merged map each (``datasets``)."""
        from pose2rgbd.dataset import Dataset
        from pose2rgbd.errors import Pose2RGBDError

        recs = self.merged_datasets if self.merged else [self.manifest.get("dataset", {})]
        out: list[dict[str, object]] = []
        for rec in recs:
            p = rec.get("path")
            entry: dict[str, object] = {"path": p}
            if not p or not (Path(str(p)) / "manifest.yaml").is_file():
                entry["status"] = "not found"
            else:
                try:
                    ds = Dataset(str(p), check_files=False)
                    fp, n = ds.fingerprint(), len(ds)
                except (Pose2RGBDError, OSError) as e:
                    entry.update(status="unreadable", note=str(e))
                else:
                    if fp == rec.get("fingerprint"):
                        entry["status"] = "unchanged"
                    else:
                        entry.update(status="changed", frames_then=rec.get("frames"), frames_now=n,
                                     fingerprint_now=fp)  # fmt: skip
                        if self.merged:
                            entry["note"] = (
                                f"the dataset {p} has changed since it was merged into {self.path} (fingerprint "
                                f"{rec.get('fingerprint')} then, {fp} now; {rec.get('frames')} frames then, {n} "
                                "now): build its map again and merge the maps again"
                            )
                        else:
                            entry["note"] = self.dataset_change(str(p), fp, n)
            out.append(entry)
        if self.merged:
            statuses = {e["status"] for e in out}
            worst = next((w for w in ("changed", "unreadable", "not found") if w in statuses), "unchanged")
            return {"status": worst, "datasets": out}
        return out[0]

    @property
    def pose_units(self) -> str:
        """The units of the keyframes' positions (and the extent): :func:`pose_units_of` its manifest."""
        return pose_units_of(self.manifest)

    def disk_usage(self) -> DiskUsage:
        """What the map folder holds on disk now (:class:`DiskUsage`: the keyframe store, the fused geometry, anything
        else)."""
        listed = {str(n) for n in self.manifest.get("files", {})} | {MANIFEST}
        store = fused = other = 0
        names: list[str] = []
        for entry in sorted(self.path.iterdir()):
            size = _tree_bytes(entry)
            if entry.name in listed and entry.is_file():
                store += size
            elif entry.name == FUSED_DIR and entry.is_dir():
                fused += size
            else:
                other += size
                names.append(entry.name)
        return DiskUsage(store, fused, other, tuple(names))

    def info(self) -> dict[str, Any]:
        m = self.manifest
        disk = self.disk_usage()
        h, w = self.image_hw
        lo, hi = self.positions.min(axis=0), self.positions.max(axis=0)
        return {
            "path": str(self.path),
            "keyframes": len(self),
            "image": f"{w}x{h} {m['image'].get('codec')}" if self._img is not None else f"{w}x{h}, not stored",
            "depth": "metric (log-quantized 16-bit)" if self.has_depth else "none",
            "points": m.get("points", ""),
            "features": int(self._kp_offsets[-1]),
            "features_per_keyframe": float(self._kp_offsets[-1]) / len(self),
            "features_with_point": self.features_with_point(),
            "features_extracted": int(m.get("features", {}).get("extracted") or self._kp_offsets[-1]),
            "global": f"{self.describer.kind} ({self.global_desc.shape[1]} dims)",
            "dataset": m.get("dataset", {}),
            "selection": m.get("selection", {}),
            "extent": [float(v) for v in hi - lo],
            "pose_units": self.pose_units,
            # everything in the folder, and what is what (DiskUsage); the rate is the keyframe store's (what grows
            # with the keyframes: a fused geometry grows with the place)
            "size_bytes": disk.total,
            "size_parts": {"keyframe_store": disk.keyframe_store, "fused": disk.fused, "other": disk.other},
            "size_other_names": list(disk.other_names),
            "size_mb_per_1000_keyframes": disk.keyframe_store / 1e6 * 1000 / len(self),
            "build_s": m.get("build_s"),
            "build_s_per_1000_keyframes": (m.get("build_s") or 0) * 1000 / len(self),
            "created_utc": m.get("created_utc"),
            "calibration": self.calibration_status(),
            # what `map merge` left out or decided, as it recorded it (empty for a built map)
            "merge_notes": [str(n) for n in m.get("merge_notes") or []],
        }

    def calibration_status(self) -> dict[str, object]:
        """Whether the map calibrated its localizer at build (docs/place-map.md, "Calibration"): ``status``
        (``calibrated``, ``not calibrated``, or ``none`` for a map built before maps calibrated themselves), the
        ``reason`` where it is not, ``held_out`` / ``fixes`` / ``seconds`` where it is; ``note``: what to do."""
        c = self.manifest.get("calibration")
        if not isinstance(c, dict):
            return {"status": "none", "note": f"built without a calibration: rebuild it with "
                    f"{rebuild_command(self.path, self.manifest)}, or `pose2rgbd localize calibrate --map "
                    f"{self.path}` on frames outside it"}  # fmt: skip
        status = str(c.get("status", "none"))
        out: dict[str, object] = {"status": status}
        if status == "calibrated":
            out.update({k: c[k] for k in ("held_out", "fixes", "seconds") if k in c})
        else:
            reason = str(c.get("reason", ""))
            out["reason"] = reason
            if "localize calibrate" not in reason:
                out["note"] = (
                    f"calibrate it with `pose2rgbd localize calibrate --map {self.path} --dataset D` on frames "
                    "outside it"
                )
        return out

    def features_with_point(self) -> int:
        """How many of the stored local features have a world point (all of a map lifted from depth; those
        triangulated in at least two keyframes of one without), counted in chunks of the memory-mapped points."""
        n, step = len(self._kp_xyz), 1 << 20
        return int(sum(np.isfinite(self._kp_xyz[a : a + step, 0]).sum() for a in range(0, n, step)))

    def cache_stats(self) -> dict[str, int]:
        return self._cache.stats()
