"""A folder of image files through a localizer: listing, decoding, the per-image loop, the rows of poses.csv / TUM,
and the summary (``pose2rgbd localize images``; the command only parses, loads, calls this and prints).

* :func:`list_images`, :func:`read_rgb_image`: the files of a folder in name order, one file -> uint8 RGB;
* :func:`localize_sequence`: the structure localizer over the files one at a time, in order (a sequence: the
  localizer's previous fix is the next image's prior, :attr:`StructureConfig.use_previous_fix`; with ``--camera
  exif`` a photo's camera from its EXIF focal length, :mod:`pose2rgbd.geometry.exif`), yielding an
  :class:`ImageResult` per file, with its time; :func:`localize_batches`: an image -> pose model over the files in
  batches;
* :class:`StructureRows` / :class:`ModelRows`: the output rows (CSV or TUM by the file's suffix), written atomically;
* :class:`SequenceSummary`: fixes, images without a fix per reason, fixes flagged out of distribution per kind of
  reason (:func:`ood_kind`), time per image (p50 / p99), the photos ``--camera exif`` found no focal length in; the
  lines that say which images a TUM trajectory holds as comment lines instead of poses
  (:meth:`SequenceSummary.left_out_lines`).

The localize node (``localize bag``, ``ros2 run``) takes images one at a time from messages: it shares the
localizer (:meth:`StructureLocalizer.localize_one`, whose previous-fix prior is the same), the out-of-distribution
rule (:meth:`Fix.out_of_distribution`) and nothing else here -- it publishes messages, not rows, and counts in its
node counters.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pose2rgbd.atomic import note_kept, write_text_atomic
from pose2rgbd.errors import BagError, ConfigError, Pose2RGBDError
from pose2rgbd.geometry.exif import exif_camera
from pose2rgbd.inference.query_camera import unknown_camera_warning
from pose2rgbd.output_guard import VIDEO_SUFFIXES
from pose2rgbd.progress import bar

if TYPE_CHECKING:
    from pose2rgbd.inference.localize import LocalizeEngine
    from pose2rgbd.inference.structure import StructureLocalizer
    from pose2rgbd.inference.structure_fix import Fix

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TUM_SUFFIXES = (".tum", ".txt")
CSV_MODEL = "image,tx,ty,tz,qx,qy,qz,qw,confidence,out_of_distribution"
CSV_STRUCTURE = (
    f"{CSV_MODEL},fix,reason,inliers,confidence_bound_m,"
    "sigma_x_m,sigma_y_m,sigma_z_m,sigma_rx_deg,sigma_ry_deg,sigma_rz_deg,flag"
)


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` (not recursive), in name order; an empty or missing folder raises."""
    if folder.is_file() and folder.suffix.lower() in IMAGE_SUFFIXES:
        raise ConfigError(f"{folder}: an image file; give the folder of images it is in (or a folder of only it)")
    if folder.is_file() and folder.suffix.lower() in VIDEO_SUFFIXES:
        raise ConfigError(
            f"{folder}: a video file, not a folder of images; extract its frames into a folder DIR and give that "
            f"(e.g. `mkdir DIR && ffmpeg -i {folder} -vf fps=2 DIR/%05d.jpg`: 2 frames a second), or convert the "
            f"video with its GPS to a dataset: `pose2rgbd convert video {folder} --out DS` (docs/convert.md)"
        )
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder of images")
    entries = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    files = sorted(p for p in entries if p.is_file())
    broken = sorted(p.name for p in entries if p.is_symlink() and not p.exists())
    if broken:
        log.warning("%s: %d broken link(s) left out: %s", folder, len(broken), ", ".join(broken[:5]) +
                    (", ..." if len(broken) > 5 else ""))  # fmt: skip
    if not files:
        raise ConfigError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_rgb_image(path: Path, bit_depth: int = 0) -> np.ndarray:
    """An image file -> uint8 ``(H, W, 3)`` RGB: grey and alpha are converted, a 16-bit image is scaled by its
    ``bit_depth`` (0: inferred; :func:`pose2rgbd.messages.decode.to_uint8`). An undecodable, truncated or corrupt
    file, or one of another sample type (float TIFF), raises :class:`BagError` naming it."""
    import cv2

    from pose2rgbd.messages.decode import decode_image_bytes, to_uint8

    img = to_uint8(decode_image_bytes(path.read_bytes(), what=path.name), bit_depth, what=path.name)
    if img.ndim == 2 or img.shape[2] == 1:
        return np.asarray(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_GRAY2RGB))
    code = cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return np.asarray(cv2.cvtColor(img, code))


def read_image(path: Path, bit_depth: int = 0) -> tuple[np.ndarray | None, str]:
    """uint8 RGB of an image file (:func:`read_rgb_image`), or ``(None, why not)``."""
    try:
        return read_rgb_image(path, bit_depth), ""
    except (BagError, OSError) as e:
        return None, (str(e) if isinstance(e, BagError) else f"{path.name}: {e.strerror or e}")


@dataclass
class ImageResult:
    """One file of a sequence: its fix, or none and why."""

    index: int  # place in the sequence (name order)
    path: Path
    fix: Fix | None  # None: the file was unreadable or the localizer refused the image
    why: str  # without a fix object: why not ("" otherwise)
    readable: bool
    seconds: float  # reading + localizing
    no_exif: bool = False  # --camera exif, and the photo has no usable EXIF focal length: taken as the map's camera

    @property
    def ok(self) -> bool:
        return self.fix is not None and self.fix.ok

    @property
    def reason(self) -> str:
        """The row's reason: the localizer's, or why the image was not localized (``path: ...``)."""
        return self.why if self.fix is None else self.fix.reason

    @property
    def summary_reason(self) -> str:
        """The reason as counted in the summary: the localizer's, or a kind: an unreadable file, or an image not
        usable with why (its row's reason without the file's name: images of one size refused for one reason are
        counted together, and the console says why, not only that)."""
        if self.fix is not None:
            return self.fix.reason
        if not self.readable:
            return "unreadable file"
        why = self.why.split(": ", 1)[1] if self.why.startswith(f"{self.path.name}: ") else self.why
        return f"image not usable: {why}" if why else "image not usable"


def localize_sequence(
    localizer: StructureLocalizer,
    files: Iterable[Path],
    *,
    bit_depth: int = 0,
    progress: bool = False,
) -> Iterator[ImageResult]:
    """The structure localizer over ``files`` one at a time, in order. A file that cannot be read, or an image the
    localizer cannot take (another aspect ratio without the query camera), yields a result without a fix that says
    why; the sequence goes on. With the localizer's ``use_exif`` (``--camera exif``) each photo is localized with the
    focal length its EXIF gives; one without is taken as the map's camera (marked ``no_exif``, the first logged with
    its name)."""
    warned = False
    for n, path in enumerate(bar(list(files), progress=progress, desc="localize", unit="image")):
        t0 = time.perf_counter()
        rgb, why = read_image(path, bit_depth)
        fix, no_exif = None, False
        if rgb is not None:
            # --camera exif: each photo's own focal length (a set of photos from many cameras)
            own = exif_camera(path, rgb.shape[1], rgb.shape[0]) if localizer.use_exif else None
            no_exif = localizer.use_exif and own is None
            if no_exif and not warned:
                warned = True
                log.warning(unknown_camera_warning(localizer.map, rgb.shape[1], rgb.shape[0], no_exif=path.name))
            try:
                fix = localizer.localize_one(rgb, image_camera=None if own is None else own.camera)
            except Pose2RGBDError as e:  # this image only: its row says why
                why = f"{path.name}: {e}"
        yield ImageResult(n, path, fix, why, rgb is not None, time.perf_counter() - t0, no_exif)


@dataclass
class ModelPose:
    """One image's pose from an image -> pose model."""

    index: int
    name: str
    T_world_cam: np.ndarray
    confidence: float


def localize_batches(
    engine: LocalizeEngine,
    files: Sequence[Path],
    *,
    batch: int,
    crop_scale: float = 0.0,
    bit_depth: int = 0,
    progress: bool = False,
    skipped: list[str] | None = None,
) -> Iterator[ModelPose]:
    """An image -> pose model over ``files`` in batches of ``batch``, each image prepared as the node does
    (:func:`~pose2rgbd.inference.images.prepare_for_model`); a file that is not a usable image is left out and
    why is appended to ``skipped``."""
    from pose2rgbd.inference.images import prepare_for_model

    todo = list(enumerate(files))
    for k in bar(range(0, len(todo), batch), progress=progress, desc="localize", unit="batch"):
        images, names = [], []
        for n, path in todo[k : k + batch]:
            rgb, why = read_image(path, bit_depth)
            if rgb is None:
                if skipped is not None:
                    skipped.append(why)
                continue
            images.append(
                prepare_for_model(getattr(engine, "model", None), rgb, engine.input_hw, crop_scale=crop_scale)
            )
            names.append((n, path.name))
        if not images:
            continue
        res = engine.localize(np.stack(images))
        for (n, name), T, c in zip(names, res.T_world_cam, res.confidence):
            yield ModelPose(n, name, T, float(c))


# ---------------------------------------------------------------------------------------------- rows


def is_tum(out: Path) -> bool:
    """A TUM trajectory (``.tum`` / ``.txt``) rather than poses.csv."""
    return out.suffix.lower() in TUM_SUFFIXES


def pose_fields(T: np.ndarray, quat_xyzw: np.ndarray | None = None) -> str:
    """``tx,ty,tz,qx,qy,qz,qw`` of a pose, every digit kept (``quat_xyzw``: its canonical quaternion where the fix
    carries it, :attr:`Fix.quat_xyzw`; else computed)."""
    if quat_xyzw is None:
        from pose2rgbd.geometry.transforms import tq_from_T

        t, q = tq_from_T(T)
    else:
        t, q = np.asarray(T)[:3, 3], quat_xyzw
    return ",".join(repr(float(v)) for v in (*t, *q))


def csv_name(name: str) -> str:
    """A CSV field, quoted when it holds a comma or a quote."""
    return '"' + name.replace('"', '""') + '"' if ("," in name or '"' in name) else name


def sigmas(cov: np.ndarray) -> str:
    """The six standard deviations of a published covariance: x y z (map units) and the rotations about the
    world's X Y Z axes (degrees) -- the square roots of its diagonal, in PoseWithCovariance order."""
    d = [math.sqrt(max(float(v), 0.0)) for v in np.asarray(cov).diagonal()]
    return ",".join(f"{v:.6g}" for v in (*d[:3], *(math.degrees(v) for v in d[3:])))


def _tum_header(world_frame: str, extra: str = "") -> str:
    return f"{TUM_HEADER}  (index: the image's place in name order; world frame: {world_frame}{extra})"


TUM_HEADER = "# index tx ty tz qx qy qz qw"
# the first line of every poses file `localize images` writes (CSV or TUM): an earlier one, which --overwrite replaces
POSES_FIRST_LINES = (CSV_MODEL, TUM_HEADER)


def ood_kind(fix: Fix, threshold: float | None) -> str:
    """Why a fix out of distribution is (:meth:`Fix.out_of_distribution`), without its figures, as the summary counts
    it: the kinds of its flag (the gate's ``beyond the map's coverage`` or ``weak geometry``, the camera check's
    ``camera focal``; several joined by ``; ``), else ``confidence below T`` (``threshold``: a calibration file's)."""
    if not fix.flag:
        return f"confidence below {threshold:g}" if threshold is not None else "out of distribution"
    kinds: list[str] = []
    depth, start = 0, 0
    for k, ch in enumerate(fix.flag + ";"):  # the reasons flag_fix joined with "; " (outside their parentheses)
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ";" and depth <= 0:
            kind = re.split(r" \(|:", fix.flag[start:k], maxsplit=1)[0].strip()
            if kind and kind not in kinds:
                kinds.append(kind)
            start = k + 1
    return "; ".join(kinds) or fix.flag


class StructureRows:
    """The rows of a structure localizer's sequence: poses.csv (:data:`CSV_STRUCTURE`; a row per image in name
    order, empty pose fields and the reason without a fix) or TUM (a line per fix, a comment line per image
    without one). ``threshold``: a calibration file's confidence threshold of the out_of_distribution column."""

    def __init__(self, out: Path, world_frame: str, threshold: float | None = None) -> None:
        self.out, self.tum, self.threshold = out, is_tum(out), threshold
        self.lines = (
            [_tum_header(world_frame, "; images without a fix, and fixes out of distribution, are comment lines")]
            if self.tum
            else [CSV_STRUCTURE]
        )

    def add(self, r: ImageResult) -> bool:
        """Add ``r``'s row; whether the fix is out of distribution. A TUM line has no column for it: such a fix is
        a comment line with its pose and why (a reader of TUM trajectories skips it, as it skips an image without
        a fix)."""
        fix = r.fix
        if fix is not None and fix.ok:
            pose = pose_fields(fix.T_world_cam, fix.quat_xyzw)
            ood = fix.out_of_distribution(self.threshold)
            if self.tum:
                line = f"{r.index} {pose.replace(',', ' ')}"
                if ood:
                    why = fix.flag or f"confidence {fix.confidence:.3g} below {self.threshold:g}"
                    line = f"# {r.index} {r.path.name}: out of distribution ({why}): {line}"
                self.lines.append(line)
                return ood
            bound = f"{fix.confidence_bound_m:.6g}" if fix.confidence_bound_m > 0 else ""
            self.lines.append(f"{csv_name(r.path.name)},{pose},{fix.confidence!r},{str(ood).lower()},true,,"
                              f"{fix.inliers},{bound},{sigmas(fix.covariance)},{csv_name(fix.flag)}")  # fmt: skip
            return ood
        if self.tum:
            self.lines.append(f"# {r.index} {r.path.name}: no fix ({r.reason})")
        else:
            flag = "" if fix is None else fix.flag
            self.lines.append(f"{csv_name(r.path.name)},,,,,,,,,,false,{csv_name(r.reason)},"
                              f"{0 if fix is None else fix.inliers},,,,,,,,{csv_name(flag)}")  # fmt: skip
        return False

    def write(self) -> Path:
        return write_text_atomic(self.out, "\n".join(self.lines) + "\n")


class ModelRows:
    """The rows of an image -> pose model's poses: poses.csv (:data:`CSV_MODEL`; out_of_distribution empty without
    a threshold) or TUM (a pose out of distribution, below the threshold, a comment line); an image left out has no
    row."""

    def __init__(self, out: Path, world_frame: str, threshold: float | None = None) -> None:
        self.out, self.tum, self.threshold = out, is_tum(out), threshold
        self.lines = (
            [_tum_header(world_frame, "; poses out of distribution are comment lines" if threshold is not None else "")]
            if self.tum
            else [CSV_MODEL]
        )
        self.count = 0  # images with a pose
        self.ood = 0  # ... out of distribution (below the threshold): a TUM file's comment lines, not poses

    @property
    def poses(self) -> int:
        """The poses the file holds as poses (TUM: not those out of distribution, which are comment lines)."""
        return self.count - self.ood if self.tum else self.count

    def left_out_line(self) -> str:
        """The summary's line on the poses out of distribution: how many, why, and where they are -- a TUM file's
        comment lines (it has no column for the flag), poses.csv's out_of_distribution column; "" where none is."""
        if self.threshold is None or not self.ood:
            return ""
        why = f"confidence below {self.threshold:g}, the calibration's threshold"
        if not self.tum:
            return f"  out of distribution: {self.ood} pose(s) ({why}), rows with out_of_distribution true"
        return (f"  {self.ood} pose(s) out of distribution ({why}) are comment lines in {self.out}, not poses "
                "('# INDEX NAME: out of distribution (WHY): INDEX tx ty tz qx qy qz qw'; a TUM line has no column for "
                f"the flag); --out {self.out.with_suffix('.csv')} keeps them as rows, out_of_distribution "
                "true")  # fmt: skip

    def add(self, p: ModelPose) -> None:
        pose = pose_fields(p.T_world_cam)
        self.count += 1
        ood = self.threshold is not None and p.confidence < self.threshold
        self.ood += int(ood)
        if self.tum:
            line = f"{p.index} {pose.replace(',', ' ')}"
            if ood:
                why = f"confidence {p.confidence:.3g} below {self.threshold:g}"
                line = f"# {p.index} {p.name}: out of distribution ({why}): {line}"
            self.lines.append(line)
        else:
            column = "" if self.threshold is None else str(ood).lower()
            self.lines.append(f"{csv_name(p.name)},{pose},{p.confidence!r},{column}")

    def write(self) -> Path:
        return write_text_atomic(self.out, "\n".join(self.lines) + "\n")


@dataclass
class SequenceSummary:
    """What a sequence came to: fixes, images without a fix per reason, fixes flagged out of distribution (in the
    rows), time per image, the photos without a usable EXIF focal (``--camera exif``)."""

    images: int = 0
    fixes: int = 0
    flagged: int = 0
    no_fix: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    no_exif: list[str] = field(default_factory=list)  # --camera exif: the photos without a usable EXIF focal
    flagged_why: Counter[str] = field(default_factory=Counter)  # the flagged fixes per kind of reason (ood_kind)

    def add(self, r: ImageResult, flagged: bool = False, why: str = "") -> None:
        """Count ``r``; ``flagged``: its fix is out of distribution, ``why`` the kind of reason (:func:`ood_kind`)."""
        self.images += 1
        self.seconds.append(r.seconds)
        if r.no_exif:
            self.no_exif.append(r.path.name)
        if r.ok:
            self.fixes += 1
            self.flagged += int(flagged)
            if flagged:
                self.flagged_why[why or "out of distribution"] += 1
        else:
            self.no_fix[r.summary_reason] += 1

    def poses(self, out: Path) -> int:
        """The poses the rows at ``out`` hold as poses: every fix in poses.csv; in a TUM trajectory not the fixes out
        of distribution, which are comment lines there."""
        return self.fixes - self.flagged if is_tum(out) else self.fixes

    def left_out_lines(self, out: Path) -> list[str]:
        """The summary's lines on the images a trajectory at ``out`` holds no pose for, and why: the fixes out of
        distribution per kind of reason and the images without a fix per reason, each block saying where to see
        them -- a TUM file's comment lines (it has no column for the flag or the reason), poses.csv's
        out_of_distribution / flag and reason columns."""
        lines: list[str] = []
        missing = sum(self.no_fix.values())
        if is_tum(out) and self.flagged + missing:
            lines.append(
                f"  {self.flagged + missing} of the {self.images} images are comment lines in {out}, not poses: "
                f"{self.flagged} fix(es) out of distribution, {missing} without a fix (a TUM line has no column for "
                f"the flag or the reason); --out {out.with_suffix('.csv')} keeps every image as a row"
            )
        if self.flagged:
            where = ("each a comment line '# INDEX NAME: out of distribution (WHY): INDEX tx ty tz qx qy qz qw'"
                     if is_tum(out) else "rows with out_of_distribution true, why in the flag column")  # fmt: skip
            lines.append(f"  {self.flagged} fix(es) out of distribution, {where}:")
            lines += [f"    {count:>6}  {why}" for why, count in self.flagged_why.most_common()]
        if missing:
            where = ", each a comment line '# INDEX NAME: no fix (REASON)'" if is_tum(out) else ""
            lines.append(f"  {missing} images without a fix{where}:")
            lines += [f"    {count:>6}  {reason}" for reason, count in self.no_fix.most_common()]
        return lines

    def percentile_ms(self, q: float) -> float:
        """The ``q`` percentile of the time per image, milliseconds (NaN without images)."""
        return float(np.percentile(self.seconds, q)) * 1e3 if self.seconds else math.nan


def run_sequence(
    localizer: StructureLocalizer,
    files: Sequence[Path],
    out: Path,
    *,
    threshold: float | None = None,
    bit_depth: int = 0,
    progress: bool = False,
) -> SequenceSummary:
    """:func:`localize_sequence` over ``files`` into ``out`` (:class:`StructureRows`, written atomically once all
    are done); the summary."""
    rows = StructureRows(out, localizer.world_frame, threshold)
    summary = SequenceSummary()
    done = 0
    try:
        for r in localize_sequence(localizer, files, bit_depth=bit_depth, progress=progress):
            flagged = rows.add(r)
            summary.add(r, flagged, ood_kind(r.fix, threshold) if flagged and r.fix is not None else "")
            done += 1
    except KeyboardInterrupt:
        keep_interrupted(rows, done, len(files))
        raise
    rows.write()
    return summary


def keep_interrupted(rows: StructureRows | ModelRows, done: int, total: int) -> None:
    """On Ctrl-C: the rows of the ``done`` images localized so far written to ``rows.out`` (a TUM file ends in a
    comment line saying so; a CSV stays a plain table) and noted for the CLI's message, where nothing was there
    before: an earlier output is never replaced by part of a new one, and nothing is written before the first
    image."""
    if done == 0 or rows.out.exists():
        return
    if rows.tum:
        rows.lines.append(f"# interrupted after {done} of {total} images (in name order); the rest were not localized")
    rows.write()
    note_kept(f"{rows.out} ({done} of {total} images localized, in name order; to localize them all, run the "
              "command again with --overwrite)")  # fmt: skip
