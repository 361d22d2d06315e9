"""Dataset format v1: the manifest, the reader and validation (the writer: :mod:`pose2rgbd.dataset.writer`).
Specification: docs/dataset-format.md.

Layout::

    <dataset>/
      manifest.yaml      format, version, camera intrinsics, depth kind, frames, datum, sources
      frames.csv         one row per frame (see FRAME_COLUMNS)
      rgb/000000.png     8-bit RGB images (png or jpg)
      depth/000000.npy   float32 z-depth, metres (or unscaled units), NaN invalid, +inf sky
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml

from pose2rgbd.errors import DatasetError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.geometry.rotations import canonical_quat_xyzw
from pose2rgbd.geometry.transforms import T_from_tq

FORMAT_NAME = "pose2rgbd-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.yaml"
FRAMES = "frames.csv"
FRAME_COLUMNS = (
    "index", "stamp_ns", "tx", "ty", "tz", "qx", "qy", "qz", "qw",
    "lat", "lon", "alt", "source_id", "rgb", "depth",
)  # fmt: skip
DepthKind = Literal["metric", "unscaled", "none"]
DEPTH_KINDS = ("metric", "unscaled", "none")
POSE_UNITS = ("m", "unscaled")
# source kinds whose poses have no scale of their own (structure from motion): an older manifest without
# ``pose_units`` whose sources are all of these kinds, with no datum and no metric depth, has unscaled poses
UNSCALED_SOURCE_KINDS = ("colmap", "transforms.json", "llff")


@dataclass
class Manifest:
    """The manifest.yaml of a dataset (format v1)."""

    name: str
    camera: PinholeCamera
    depth_kind: str = "metric"
    rgb_encoding: str = "png"
    world_frame: str = "map"
    camera_frame: str = "camera_optical"
    datum: Datum | None = None
    sources: list[dict[str, Any]] = field(default_factory=lambda: [{"id": 0, "kind": "unknown", "name": "default"}])
    extra: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    pose_units: str = ""  # "m" or "unscaled" (poses up to an unknown scale); "": inferred, see resolved_pose_units
    # the cameras the images were taken with, when the stored (pinhole) images were undistorted from them: each
    # {width, height, fx, fy, cx, cy, model: pinhole|opencv|fisheye, distortion: [...]} (docs/dataset-format.md)
    source_cameras: list[dict[str, Any]] = field(default_factory=list)
    # the poses' own error against the true ones where the producer knows it (a recording's GPS receiver's
    # reported covariance): {horizontal_m, vertical_m, fixes, source} (docs/dataset-format.md); {} not known
    pose_error: dict[str, object] = field(default_factory=dict)

    def pose_error_sigmas(self) -> tuple[float, float] | None:
        """:attr:`pose_error` as ``(horizontal, vertical)`` standard deviations in metres; None where not known."""
        return pose_error_sigmas(self.pose_error)

    def __post_init__(self) -> None:
        if self.pose_units not in ("", *POSE_UNITS):
            raise DatasetError(f"pose_units is {self.pose_units!r}, expected one of {list(POSE_UNITS)}")

    @property
    def resolved_pose_units(self) -> str:
        """``m`` or ``unscaled``: as written, else inferred -- metres with a GPS datum or metric depth, unscaled with
        unscaled depth and the video's own poses (``extra.poses.kind`` pseudo-absolute: a video converted without
        GPS, written before its units were) or when every
        source is of a kind without a scale of its own (COLMAP, transforms.json, LLFF), else metres."""
        if self.pose_units:
            return self.pose_units
        if self.datum is not None or self.depth_kind == "metric":
            return "m"
        poses = self.extra.get("poses")
        if self.depth_kind == "unscaled" and isinstance(poses, dict) and poses.get("kind") == "pseudo-absolute":
            return "unscaled"  # the video's own poses, scaled by its unscaled depth
        kinds = {str(s.get("kind", "")) for s in self.sources}
        return "unscaled" if kinds and kinds <= set(UNSCALED_SOURCE_KINDS) else "m"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "created_utc": self.created_utc or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "world_frame": self.world_frame,
            "camera_frame": self.camera_frame,
            "camera": self.camera.to_dict(),
            # written when a producer states it (left out otherwise, so that a dataset's fingerprint stays as it was)
            **({"pose_units": self.pose_units} if self.pose_units else {}),
            **({"source_cameras": self.source_cameras} if self.source_cameras else {}),
            **({"pose_error": self.pose_error} if self.pose_error else {}),
            "rgb": {"encoding": self.rgb_encoding},
            "depth": {
                "kind": self.depth_kind,
                "encoding": "npy-float32",
                "units": _depth_units(self.depth_kind),
            },
            "datum": None if self.datum is None else self.datum.to_dict(),
            "sources": self.sources,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Manifest:
        if not isinstance(d, dict):
            raise DatasetError(f"{where}: expected a mapping at the top level, got {type(d).__name__}")
        if d.get("format") != FORMAT_NAME:
            raise DatasetError(f"{where}: 'format' is {d.get('format')!r}, expected {FORMAT_NAME!r}")
        if d.get("version") != FORMAT_VERSION:
            raise DatasetError(
                f"{where}: dataset format version {d.get('version')!r} is not supported "
                f"(this pose2rgbd reads version {FORMAT_VERSION})"
            )
        for key in ("name", "camera", "depth"):
            if key not in d:
                raise DatasetError(f"{where}: missing required key '{key}'")
        try:
            camera = PinholeCamera.from_dict(d["camera"])
        except Exception as e:
            raise DatasetError(f"{where}: bad 'camera': {e}") from e
        depth = d["depth"] or {}
        kind = depth.get("kind")
        if kind not in DEPTH_KINDS:
            raise DatasetError(f"{where}: depth.kind is {kind!r}, expected one of {list(DEPTH_KINDS)}")
        rgb_enc = (d.get("rgb") or {}).get("encoding", "png")
        if rgb_enc not in ("png", "jpg"):
            raise DatasetError(f"{where}: rgb.encoding is {rgb_enc!r}, expected 'png' or 'jpg'")
        datum = None
        if d.get("datum"):
            try:
                datum = Datum.from_dict(d["datum"])
            except Exception as e:
                raise DatasetError(f"{where}: bad 'datum': {e}") from e
        units = d.get("pose_units", "")
        if units not in ("", *POSE_UNITS):
            raise DatasetError(f"{where}: pose_units is {units!r}, expected one of {list(POSE_UNITS)}")
        source_cameras = d.get("source_cameras") or []
        for k, c in enumerate(source_cameras if isinstance(source_cameras, list) else [None]):
            _check_source_camera(c, f"{where}: source_cameras[{k}]")
        pose_error = d.get("pose_error") or {}
        if pose_error and not _good_pose_error(pose_error):
            raise DatasetError(
                f"{where}: bad 'pose_error' {pose_error!r}: expected {{horizontal_m, vertical_m}} (standard deviations "
                "of the poses' own error, metres, finite and >= 0) and optionally fixes and source"
            )
        sources = d.get("sources") or []
        if not isinstance(sources, list) or not all(isinstance(s, dict) and "id" in s for s in sources):
            raise DatasetError(f"{where}: 'sources' must be a list of mappings with an 'id'")
        return cls(
            name=str(d["name"]),
            camera=camera,
            depth_kind=kind,
            rgb_encoding=rgb_enc,
            world_frame=str(d.get("world_frame", "map")),
            camera_frame=str(d.get("camera_frame", "camera_optical")),
            datum=datum,
            sources=sources,
            extra=dict(d.get("extra") or {}),
            created_utc=str(d.get("created_utc", "")),
            pose_units=str(units),
            source_cameras=list(source_cameras),
            pose_error=dict(pose_error),
        )


def pose_error_sigmas(e: object) -> tuple[float, float] | None:
    """A manifest's ``pose_error`` (checked when read: :func:`_good_pose_error`) as ``(horizontal, vertical)``
    standard deviations in metres; None where it is empty or absent."""
    if not isinstance(e, Mapping) or not e:
        return None
    h, v = e["horizontal_m"], e["vertical_m"]
    return (float(h), float(v)) if isinstance(h, (int, float)) and isinstance(v, (int, float)) else None


def _good_pose_error(e: object) -> bool:
    """A manifest's ``pose_error``: a mapping whose ``horizontal_m`` and ``vertical_m`` are finite numbers >= 0."""
    if not isinstance(e, dict):
        return False
    vals = [e.get(k) for k in ("horizontal_m", "vertical_m")]
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in vals)


def _check_source_camera(c: Any, where: str) -> None:
    """A ``source_cameras`` entry: the six intrinsics, a model and its coefficients (OpenCV's models)."""
    from pose2rgbd.geometry.lens import Distortion

    try:
        PinholeCamera.from_dict(c)
        model, dist = str(c.get("model", "pinhole")), list(c.get("distortion") or [])
        if model != "pinhole" or dist:
            Distortion(model, tuple(dist))
    except Exception as e:
        raise DatasetError(
            f"{where}: {e}; expected {{width, height, fx, fy, cx, cy, model: pinhole|opencv|fisheye, distortion: "
            "[...]}}"
        ) from e


def _depth_units(kind: str) -> str:
    return {"metric": "m", "unscaled": "unscaled", "none": "none"}[kind]


@dataclass
class Frames:
    """The per-frame table as arrays. Quaternions are x, y, z, w."""

    index: np.ndarray  # (N,) int64
    stamp_ns: np.ndarray  # (N,) int64
    translation: np.ndarray  # (N, 3) float64, metres in the world frame
    quat_xyzw: np.ndarray  # (N, 4) float64
    latlonalt: np.ndarray  # (N, 3) float64, NaN where absent
    source_id: np.ndarray  # (N,) int64
    rgb: list[str]
    depth: list[str]
    # the text of a torn last row that was ignored (the file cut mid-line: a recorder stopped while writing it);
    # "" when the file ends with a full row
    torn_row: str = ""

    def __len__(self) -> int:
        return len(self.index)

    @property
    def T_world_cam(self) -> np.ndarray:
        return T_from_tq(self.translation, self.quat_xyzw)


@dataclass
class FileCheck:
    """What :meth:`Dataset.verify_files` found: ``bad`` holds ``(relative path, reason)`` per unreadable file;
    negative depth is not an error (read as NaN, invalid) but is counted."""

    frames_checked: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    negative_depth_pixels: int = 0
    negative_depth_files: int = 0
    # pixels at exactly a 16-bit sensor's maximum code over a depth scale (65535 / 1000 = 65.535 m): a saturated
    # "no return" imported as a distance (by an importer without the code check, or another tool); not an error
    saturated_depth_pixels: int = 0
    saturated_depth_files: int = 0
    saturated_depth_values: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad


def _reason(e: DatasetError, p: Path) -> str:
    msg = str(e)
    prefix = f"{p}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


SATURATION_SCALES = (1000.0, 5000.0)  # the usual 16-bit depth scales: millimetres, TUM RGB-D


def saturation_values(manifest: Manifest) -> np.ndarray:
    """float32 depth values that are a 16-bit sensor's maximum code (65535) over a usual depth scale or the one
    the dataset's import recorded (``extra.conversion.depth_import.scale.units_per_m``): 65.535 m, 13.107 m."""
    scales = list(SATURATION_SCALES)
    conv = manifest.extra.get("conversion") if isinstance(manifest.extra, dict) else None
    di = conv.get("depth_import") if isinstance(conv, dict) else None
    sc = di.get("scale") if isinstance(di, dict) else None
    rec = sc.get("units_per_m") if isinstance(sc, dict) else None
    if isinstance(rec, (int, float)) and rec > 0:
        scales.append(float(rec))
    return np.unique(np.float32(65535.0) / np.asarray(scales, np.float32))


def _on_code_grid(d: np.ndarray, sat: np.ndarray) -> bool:
    """Whether depth ``d`` can have come from 16-bit codes over the scale of its saturated pixels ``sat``: every
    valid value a whole number of codes (65535 / value per metre). Depth imported from codes is (a code over the
    scale); depth from a float source (a 32FC1 topic, a renderer, a depth network) is not, and a pixel of it that
    happens to equal 65.535 m is a distance like any other, not a sensor's code."""
    valid = np.isfinite(d) & (d > 0)
    for v in np.unique(d[sat]):
        scale = 65535.0 / float(v)
        units = d[valid].astype(np.float64) * scale
        if np.all(np.abs(units - np.rint(units)) < 0.02):  # float32 rounding of code / scale: < 0.01 code
            return True
    return False


MODEL_SUFFIXES = {".pt": "a model checkpoint", ".pth": "a model checkpoint", ".onnx": "an exported model"}


def run_dataset(checkpoint: str | Path) -> tuple[str, str]:
    """The dataset a checkpoint's training run was trained on, as the run folder it lies in records it (its
    config.yaml's ``dataset`` and ``dataset_fingerprint``, written by ``train``); empty strings where there is none."""
    try:
        run = yaml.safe_load((Path(checkpoint).parent / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "", ""
    if not isinstance(run, dict):
        return "", ""
    return str(run.get("dataset") or ""), str(run.get("dataset_fingerprint") or "")


def not_a_dataset_file(path: Path) -> str:
    """Why the file ``path`` given as a dataset is not one, and what to give instead: a dataset's own file (its
    folder), a checkpoint (named as such, with the dataset its training run recorded in its config.yaml), any
    other file."""
    hint = ""
    if (path.parent / MANIFEST).is_file() and path.name in (MANIFEST, FRAMES):
        what = f"the {path.name} of the dataset {path.parent}"
        hint = f"; give its folder, {path.parent}"
    elif path.suffix.lower() in MODEL_SUFFIXES:
        what = f"{MODEL_SUFFIXES[path.suffix.lower()]} file (what --checkpoint takes)"
        trained_on, _ = run_dataset(path)
        if trained_on:
            hint = f"; the run it comes from ({path.parent / 'config.yaml'}) was trained on the dataset {trained_on}"
    else:
        what = "a file"
    return (
        f"{path}: is {what}, not a dataset: a dataset (what --dataset takes) is a folder holding {MANIFEST}, written "
        f"by `pose2rgbd convert` or `pose2rgbd sim`{hint}"
    )


class Dataset:
    """A validated, read-only format-v1 dataset. ``Dataset(path)`` raises :class:`DatasetError` on problems."""

    def __init__(self, path: str | Path, *, check_files: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_file():
            raise DatasetError(not_a_dataset_file(self.path))
        if not self.path.is_dir():
            raise DatasetError(f"{self.path}: dataset directory not found")
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            if (self.path / "map.json").is_file():
                raise DatasetError(
                    f"{self.path} is a place map, not a dataset (no {MANIFEST}); its dataset is the one it was built "
                    "from (`pose2rgbd map info` names it)"
                )
            if (self.path / "metadata.yaml").is_file():  # a rosbag2 recording's folder
                raise DatasetError(
                    f"{self.path} is a rosbag2 recording, not a dataset (no {MANIFEST}): make a dataset of it with "
                    f"`pose2rgbd convert bag {self.path} --out DATASET` (or `pose2rgbd record bag`, topics already "
                    "synchronized)"
                )
            if (self.path / "config.yaml").is_file() and any(self.path.glob("*.pt")):  # a training run's folder
                trained_on, _ = run_dataset(self.path / "last.pt")
                on = f": its dataset, as its config.yaml records it, is {trained_on}" if trained_on else ""
                raise DatasetError(
                    f"{self.path} is a training run (config.yaml, checkpoints), not a dataset (no {MANIFEST}){on}; "
                    "a run's checkpoint is what --checkpoint takes"
                )
            raise DatasetError(f"{mpath}: missing; is {self.path} a pose2rgbd dataset?")
        try:
            raw = yaml.safe_load(mpath.read_text())
        except yaml.YAMLError as e:
            raise DatasetError(f"{mpath}: not valid YAML: {e}") from e
        self.manifest = Manifest.from_dict(raw, str(mpath))
        self.frames = _read_frames(self.path / FRAMES, self.manifest)
        if check_files:
            self._check_files()

    def _check_files(self) -> None:
        for rel in self.frames.rgb:
            if not (self.path / rel).is_file():
                raise DatasetError(f"{self.path / FRAMES}: image {rel} is listed but missing")
        for rel in self.frames.depth:
            if rel and not (self.path / rel).is_file():
                raise DatasetError(f"{self.path / FRAMES}: depth map {rel} is listed but missing")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def camera(self) -> PinholeCamera:
        return self.manifest.camera

    @property
    def has_depth(self) -> bool:
        return self.manifest.depth_kind != "none"

    def read_rgb(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) RGB. Refuses (:class:`DatasetError` naming the file) an image that cannot be decoded,
        is not 8-bit, or is not the manifest camera's size: images are never resized or rescaled on load."""
        p = self.path / self.frames.rgb[i]
        # ANYDEPTH: a 16-bit file stays 16-bit so that it is refused below instead of silently cut to 8 bits
        img = cv2.imread(str(p), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        if img is None:
            raise DatasetError(f"{p}: cannot decode image (not a PNG / JPEG file, or damaged)")
        if img.dtype != np.uint8:
            bits = "16-bit" if img.dtype == np.uint16 else str(img.dtype)
            raise DatasetError(
                f"{p}: {bits} image; dataset images must be 8-bit RGB (or 8-bit grey). Convert it to 8 bits "
                "(for 16-bit: value * 255 / 65535, or stretch its actual range) and write it again"
            )
        cam = self.camera
        if img.shape[:2] != (cam.height, cam.width):
            raise DatasetError(
                f"{p}: image is {img.shape[1]}x{img.shape[0]}, the manifest camera is {cam.width}x{cam.height}; "
                "images are never resized on load: fix the image or the manifest's camera"
            )
        return np.ascontiguousarray(img[..., ::-1])

    def read_depth(self, i: int) -> np.ndarray:
        """float32 (H, W) depth (metres if ``manifest.depth_kind == 'metric'``); NaN invalid, +inf sky.
        Negative values are invalid and come back as NaN (:meth:`read_depth_counted` also counts them)."""
        return self.read_depth_counted(i)[0]

    def read_depth_counted(self, i: int) -> tuple[np.ndarray, int]:
        """``(depth, n)``: :meth:`read_depth` and how many negative pixels it turned into NaN."""
        if not self.has_depth:
            raise DatasetError(f"{self.path}: dataset has no depth")
        p = self.path / self.frames.depth[i]
        try:
            d = np.load(p, allow_pickle=False)
        except Exception as e:
            raise DatasetError(f"{p}: cannot read depth ({type(e).__name__}: {e}); not a NumPy .npy file?") from e
        cam = self.camera
        if d.shape != (cam.height, cam.width) or d.dtype != np.float32:
            raise DatasetError(f"{p}: depth is {d.dtype} {d.shape}, expected float32 ({cam.height}, {cam.width})")
        neg = d < 0
        n = int(np.count_nonzero(neg))
        if n:
            d = np.array(d, copy=True)
            d[neg] = np.nan
        return d, n

    def verify_files(self, *, progress: bool = False) -> FileCheck:
        """Read every image and depth map (what :meth:`read_rgb` / :meth:`read_depth` would refuse), collecting
        each bad file with the reason instead of stopping at the first. Costs a full read of the dataset."""
        from pose2rgbd.progress import bar

        check = FileCheck()
        codes = saturation_values(self.manifest)
        for i in bar(range(len(self)), desc="checking files", progress=progress, unit="frame"):
            try:
                self.read_rgb(i)
            except DatasetError as e:
                check.bad.append((self.frames.rgb[i], _reason(e, self.path / self.frames.rgb[i])))
            if self.has_depth:
                try:
                    d, n = self.read_depth_counted(i)
                except DatasetError as e:
                    check.bad.append((self.frames.depth[i], _reason(e, self.path / self.frames.depth[i])))
                else:
                    sat = np.isin(d, codes)
                    if sat.any() and _on_code_grid(d, sat):
                        check.saturated_depth_pixels += int(np.count_nonzero(sat))
                        check.saturated_depth_files += 1
                        found = {float(v) for v in np.unique(d[sat])} | set(check.saturated_depth_values)
                        check.saturated_depth_values = sorted(found)
                    if n:
                        check.negative_depth_pixels += n
                        check.negative_depth_files += 1
            check.frames_checked += 1
        return check

    def capabilities(self) -> set[str]:
        """What a model can train on from this dataset (the ``data`` of a model family):

        * ``pose_to_image``: camera pose -> image pairs (every non-empty dataset);
        * ``image_to_pose``: image -> camera pose pairs (the same frames, read the other way);
        * ``sequences``: short time-ordered frame sequences with intrinsics (self-supervised depth and
          ego-motion): some source has at least 3 frames with strictly increasing stamps, and the camera has
          positive focal lengths.
        """
        if len(self) == 0:
            return set()
        caps = {"pose_to_image", "image_to_pose"}
        cam = self.camera
        if cam.fx > 0 and cam.fy > 0:
            f = self.frames
            for sid in np.unique(f.source_id):
                st = np.sort(f.stamp_ns[f.source_id == sid])
                if len(st) >= 3 and np.all(np.diff(st) > 0):
                    caps.add("sequences")
                    break
        return caps

    def fingerprint(self) -> str:
        """Short content hash of manifest fields and frames.csv (not the pixels): ties checkpoints to data."""
        h = hashlib.sha256()
        m = self.manifest.to_dict()
        m.pop("created_utc", None)
        h.update(yaml.safe_dump(m, sort_keys=True).encode())
        h.update((self.path / FRAMES).read_bytes())
        return h.hexdigest()[:16]

    def iter_frames(self) -> Iterator[int]:
        return iter(range(len(self)))


def _read_frames(path: Path, manifest: Manifest) -> Frames:
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    text = path.read_text()
    torn = ""
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        text, torn = text[:cut], text[cut:]  # torn last row (recorder crash): ignore it (dataset info says so)
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DatasetError(f"{path}: empty file (no header)")
    header = tuple(rows[0])
    if header != FRAME_COLUMNS:
        missing = [c for c in FRAME_COLUMNS if c not in header]
        raise DatasetError(f"{path}: header {list(header)} does not match format v1; missing {missing}")
    body = [r for r in rows[1:] if r]
    if not body:
        raise DatasetError(f"{path}: no frames")
    n = len(body)
    idx = np.empty(n, np.int64)
    stamps = np.empty(n, np.int64)
    tq = np.empty((n, 7))
    lla = np.full((n, 3), np.nan)
    sid = np.empty(n, np.int64)
    rgb, depth = [], []
    source_ids = {int(s["id"]) for s in manifest.sources}
    for k, r in enumerate(body):
        line = k + 2
        if len(r) != len(FRAME_COLUMNS):
            raise DatasetError(f"{path}:{line}: expected {len(FRAME_COLUMNS)} fields, got {len(r)}")
        idx[k] = _field(r, 0, int, path, line)
        stamps[k] = _field(r, 1, int, path, line)
        tq[k] = [_field(r, j, float, path, line) for j in range(2, 9)]
        for j in range(3):
            lla[k, j] = _field(r, 9 + j, float, path, line) if r[9 + j] != "" else np.nan
        sid[k] = _field(r, 12, int, path, line)
        if idx[k] != k:
            raise DatasetError(f"{path}:{line}: index {idx[k]} out of sequence (expected {k})")
        if not np.all(np.isfinite(tq[k])):
            raise DatasetError(f"{path}:{line}: pose contains NaN or inf")
        if abs(np.linalg.norm(tq[k, 3:]) - 1.0) > 1e-3:
            raise DatasetError(f"{path}:{line}: quaternion (qx, qy, qz, qw) is not unit length")
        if source_ids and sid[k] not in source_ids:
            raise DatasetError(f"{path}:{line}: source_id {sid[k]} is not declared in manifest 'sources'")
        if not r[13]:
            raise DatasetError(f"{path}:{line}: empty rgb path")
        if (manifest.depth_kind != "none") != bool(r[14]):
            raise DatasetError(
                f"{path}:{line}: depth path {'missing' if not r[14] else 'given'} "
                f"but depth kind is {manifest.depth_kind!r}"
            )
        rgb.append(r[13])
        depth.append(r[14])
    for s in np.unique(sid):
        rows_s = np.flatnonzero(sid == s)
        back = np.flatnonzero(np.diff(stamps[rows_s]) < 0)
        if back.size:
            line = int(rows_s[back[0] + 1]) + 2
            raise DatasetError(
                f"{path}:{line}: stamp_ns goes backwards within source {s} (frames must be in time order)"
            )
    q = canonical_quat_xyzw(tq[:, 3:])
    return Frames(idx, stamps, tq[:, :3], q, lla, sid, rgb, depth, torn_row=torn)


# what each number column of frames.csv must hold (docs/dataset-format.md), for the error of a value that is not
_COLUMN_MEANS = {
    "index": "an integer, the row's number from 0",
    "stamp_ns": "an integer, the frame's time in nanoseconds since the epoch (e.g. 1700000000033333333)",
    **{c: "a number, metres in the world frame" for c in ("tx", "ty", "tz")},
    **{c: "a number, a unit quaternion's component" for c in ("qx", "qy", "qz", "qw")},
    "lat": "a number in degrees, or empty (no GPS)",
    "lon": "a number in degrees, or empty (no GPS)",
    "alt": "a number in metres, or empty (no GPS)",
    "source_id": "an integer, a source id the manifest's 'sources' declares",
}


def _field(row: list[str], j: int, kind: type[int] | type[float], path: Path, line: int) -> int | float:
    """``row[j]`` as ``kind``; a value that is not one is refused naming the column, the value and what the
    column holds."""
    try:
        v = kind(row[j])
    except ValueError:
        v = None
    if v is None or (kind is int and not -(2**63) <= v < 2**63):  # past int64: not a time in ns either
        col = FRAME_COLUMNS[j]
        raise DatasetError(f"{path}:{line}: column {col} is {row[j]!r}; it must be {_COLUMN_MEANS[col]}")
    return v
