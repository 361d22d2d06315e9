"""The one check before anything is written to (or replaced at) an output path.

Every command and writer that can replace an output (bags, datasets, training runs, evaluation folders,
trajectory files) calls :func:`check_output` first. It refuses, whatever ``overwrite`` says:

- an output that *is*, *contains* or *lies inside* one of the inputs (symlinks resolved): replacing it would
  delete the recording being read;
- with ``overwrite``, an existing path that is not an output of the same kind (a bag folder has
  ``metadata.yaml``, a dataset ``manifest.yaml``, a training run its ``config.yaml``, ``last.pt``, ...): replacing
  it would delete something the user made by other means;
- with ``overwrite``, an existing path with the marker of the kind that is still someone else's (a folder with a
  ``manifest.yaml`` that does not say ``format: pose2rgbd-dataset``: a Kubernetes manifest, another tool's): it is no
  earlier output of the kind;
- with ``overwrite``, an earlier output of the same kind that the new one replaces whole (a bag, a dataset, a place
  map, posed images, a folder of renders) but that also holds entries no output of its kind has (the user's notes,
  labels, a notebook put there since): replacing the folder would delete them with it. The error names them. Inside a
  dataset's subfolders too: a file in rgb/ or depth/ that its frames.csv does not list, one in report/ or cache/
  that pose2rgbd does not write there (``rgb/holiday.jpg``, ``report/my_analysis.md``).

:func:`refuse_existing` is the one overwrite policy: an existing output is replaced only with ``overwrite``;
without it every writer and command raises the same :class:`~pose2rgbd.errors.OutputExistsError` with the same
message (``OUT exists; pass --overwrite to replace it (nothing was written)``). It first lets
:func:`pose2rgbd.atomic.sweep_stale_siblings` put back an earlier output that a killed run had moved aside, so
that the question is asked of what is really there.

:func:`check_writable` asks the disk, before the work, whether the output can be written where it is to go (its folder
takes a new file; no path above it is a file): a command that renders or localizes for minutes and then cannot write
its output checks it first.
"""

from __future__ import annotations

import csv
import errno
import fnmatch
import io
import os
import posixpath
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from pose2rgbd.atomic import sweep_stale_siblings
from pose2rgbd.errors import OutputError, OutputExistsError

__all__ = ["CHECKPOINT", "OutputError", "OutputExistsError", "OutputKind", "check_checkpoint_output",
           "check_not_foreign_dir", "check_output", "check_replaced_whole", "check_writable",
           "refuse_existing"]  # fmt: skip


def _first_line(path: Path) -> str:
    """The first line of a file (at most 4 KiB of it; empty where it cannot be read as text)."""
    try:
        with open(path, "rb") as f:
            return f.read(4096).split(b"\n", 1)[0].decode("utf-8", "replace")
    except OSError:
        return ""


# what pose2rgbd's own atomic writers leave inside an output while they write (pose2rgbd.atomic:
# ``.<name>.partial-<pid>``, ``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``, their ``.swap`` markers; DatasetWriter's
# ``.<name>.tmp``)
_HIDDEN_SIBLING = re.compile(r"^\..+\.(partial|tmp|old)-\d+.*$|^\..+\.tmp$")


@dataclass(frozen=True)
class OutputKind:
    """What an output of one kind looks like on disk."""

    name: str  # "bag", "dataset", ...
    is_dir: bool
    markers: tuple[str, ...] = ()  # a directory of this kind holds at least one of these (glob patterns)
    suffixes: tuple[str, ...] = ()  # a file of this kind ends in one of these (empty: any)
    excludes: tuple[str, ...] = ()  # ... and none of these (a folder of another kind that holds a marker too)
    # where --overwrite replaces the folder whole: glob patterns of every entry directly inside an output of this kind
    # (what pose2rgbd writes there); anything else is the user's and refuses the overwrite. None: the kind's writer
    # adds files to the folder (an evaluation) or moves only its own aside (a training run), so nothing is checked
    contents: tuple[str, ...] | None = None
    # a file of this kind starts with one of these (its header line; empty: any): a table of the user's with the same
    # suffix is not one
    first_lines: tuple[str, ...] = ()
    # why a folder that holds a marker is still not of this kind ("" where it is): a dataset's manifest.yaml says
    # ``format: pose2rgbd-dataset``, someone else's manifest.yaml does not. None: a marker is enough
    not_ours: Callable[[Path], str] | None = None
    # where --overwrite replaces the folder whole: the entries inside its subfolders that no output of this kind holds
    # (relative paths, e.g. rgb/holiday.jpg), where :attr:`contents` names only the subfolders. None: none checked
    inside: Callable[[Path], list[str]] | None = None

    def matches(self, path: Path) -> bool:
        if self.is_dir:
            return (
                path.is_dir()
                and any(any(path.glob(m)) for m in self.markers)
                and not any(any(path.glob(m)) for m in self.excludes)
                and not self.refuted(path)
            )
        if not (path.is_file() and (not self.suffixes or path.name.endswith(self.suffixes))):
            return False
        return not self.first_lines or _first_line(path).startswith(self.first_lines)

    def refuted(self, path: Path) -> str:
        """Why the folder ``path``, which holds a marker of this kind, is not of this kind after all (what it holds,
        e.g. ``a manifest.yaml that is not a pose2rgbd dataset's (...)``); empty where it is, or holds no marker."""
        if self.not_ours is None or not path.is_dir() or not any(any(path.glob(m)) for m in self.markers):
            return ""
        return self.not_ours(path)

    def foreign_entries(self, path: Path) -> list[str]:
        """The names directly inside the folder ``path`` that no output of this kind holds, and the relative paths
        inside its subfolders that none holds (:attr:`inside`) (sorted; empty where the kind lists no
        :attr:`contents`)."""
        if self.contents is None or not path.is_dir():
            return []
        contents = self.contents
        top = [
            e.name
            for e in path.iterdir()
            if not _HIDDEN_SIBLING.match(e.name) and not any(fnmatch.fnmatchcase(e.name, c) for c in contents)
        ]
        return sorted(top + (self.inside(path) if self.inside is not None else []))


# a bag: its metadata and storage files (rosbags / ros2 bag: NAME_0.mcap, NAME.db3 and SQLite's journal files, zstd)
BAG = OutputKind("bag", True, ("metadata.yaml",),
                 contents=("metadata.yaml", "*.mcap", "*.db3", "*.db3-shm", "*.db3-wal", "*.db3-journal",
                           "*.zstd"))  # fmt: skip


# a dataset's manifest file and what its 'format' says (pose2rgbd.dataset.format's MANIFEST and FORMAT_NAME, which this
# lower layer cannot import; test_output_guard_subfolders checks they agree)
DATASET_MANIFEST = "manifest.yaml"
DATASET_FORMAT = "pose2rgbd-dataset"


def _dataset_not_ours(path: Path) -> str:
    """Why the folder ``path``, which holds a manifest.yaml, is not a pose2rgbd dataset: its manifest.yaml does not
    parse as a YAML mapping with ``format: pose2rgbd-dataset`` (a Kubernetes manifest, another tool's); "" where it
    does. Only the format is asked here: a dataset of another version is still pose2rgbd's, and the reader names it."""
    m = path / DATASET_MANIFEST
    what = f"a {DATASET_MANIFEST} that is not a pose2rgbd dataset's"
    try:
        d = yaml.safe_load(m.read_bytes())
    except OSError as e:
        return f"{what} ({m} cannot be read: {e.strerror})"
    except (yaml.YAMLError, ValueError):  # (a UnicodeDecodeError is a ValueError)
        return f"{what} ({m} is not YAML)"
    if not isinstance(d, dict):
        return f"{what} ({m}: expected a mapping at the top level, got {type(d).__name__})"
    if d.get("format") != DATASET_FORMAT:
        return f"{what} ({m}: 'format' is {d.get('format')!r}, expected {DATASET_FORMAT!r})"
    return ""


# what pose2rgbd writes into a dataset's report/ (convert.pipeline: summary.json; convert.report: sync.png, track.png,
# world.png; convert.sources.images: poses.png; convert.stages.depth_report and convert.mvs_depth: samples.png,
# scale.png, trajectory.png; dataset.merge: merge.png), beside the folder inputs/ of a merge
DATASET_REPORT_FILES = ("summary.json", "sync.png", "track.png", "world.png", "poses.png", "samples.png", "scale.png",
                        "trajectory.png", "merge.png")  # fmt: skip
# report/inputs/NN-NAME/ of a merged dataset: the NN-th input's own report, linked whole (dataset.merge._keep_reports)
_MERGED_REPORT = re.compile(r"^\d{2,}-.+$")
# a training cache in a dataset's cache/: <size>-<fingerprint> (dataset.cache._cache_dir), derived data pose2rgbd owns
_CACHE_DIR = re.compile(r"^\d+-[0-9a-f]+$")
# the names DatasetWriter gives a frame's files (rgb/000000.png or .jpg, depth/000000.npy)
_FRAME_FILE = {"rgb": re.compile(r"^(\d{6,})\.(png|jpg)$"), "depth": re.compile(r"^(\d{6,})\.npy$")}


def _files_under(folder: Path, rel: str) -> Iterator[str]:
    """``rel/...``: the relative path of everything under ``folder`` but its folders (files, links; a link to a folder
    is not followed), pose2rgbd's hidden siblings left out at every level; ``rel`` itself where ``folder`` is no
    folder (or a link to one)."""
    if not _real_dir(folder):
        yield rel
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _HIDDEN_SIBLING.match(d)]
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        base = Path(rel) / Path(root).relative_to(folder)
        for name in files + links:
            if not _HIDDEN_SIBLING.match(name):
                yield (base / name).as_posix()


def _frames_listed(path: Path) -> tuple[set[str], int]:
    """The rgb and depth files the dataset's frames.csv lists (relative paths, normalized) and its full rows (a torn
    last line left out, as an appending writer drops it); nothing where it cannot be read."""
    try:
        data = (path / "frames.csv").read_bytes()
    except OSError:
        return set(), 0
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]  # a recorder killed within a row: its files are the frame's below
    listed: set[str] = set()
    rows = 0
    try:
        for row in csv.DictReader(io.StringIO(data.decode("utf-8", "replace"), newline="")):
            rows += 1
            for col in ("rgb", "depth"):
                v = row.get(col)
                if isinstance(v, str) and v:
                    listed.add(posixpath.normpath(v))
    except csv.Error:
        pass
    return listed, rows


def _dataset_inside(path: Path) -> list[str]:
    """The files inside the subfolders of the dataset at ``path`` that pose2rgbd did not write there: in rgb/ and
    depth/ those its frames.csv does not list (but a frame's files a writer stopped within its row had written, named
    as DatasetWriter names them, from the first frame the table has no row of); in report/ all but
    :data:`DATASET_REPORT_FILES` and a merge's inputs/NN-NAME/ folders; in cache/ all but the training caches
    (``<size>-<fingerprint>/``). Relative paths, unsorted."""
    found: list[str] = []
    if any(_real_dir(path / sub) for sub in _FRAME_FILE):
        listed, rows = _frames_listed(path)
        for sub, named in _FRAME_FILE.items():
            folder = path / sub
            if not _real_dir(folder):
                continue
            for rel in _files_under(folder, sub):
                m = named.match(rel[len(sub) + 1 :])
                if rel not in listed and not (m and int(m.group(1)) >= rows):
                    found.append(rel)
    for sub, ours in (("report", _report_entry_ours), ("report/inputs", _merged_report_ours),
                      ("cache", _cache_entry_ours)):  # fmt: skip
        folder = path / sub
        if not _real_dir(folder) or (sub == "report/inputs" and not _real_dir(path / "report")):
            continue
        for e in folder.iterdir():
            if not _HIDDEN_SIBLING.match(e.name) and not ours(e):
                found.extend(_files_under(e, f"{sub}/{e.name}"))
    return found


def _real_dir(p: Path) -> bool:
    """A folder, not a link to one."""
    return p.is_dir() and not p.is_symlink()


def _report_entry_ours(e: Path) -> bool:
    """An entry of a dataset's report/ that pose2rgbd writes: a file it names so, a merge's inputs/ folder (its entries
    are asked by :func:`_merged_report_ours`)."""
    return e.name == "inputs" if _real_dir(e) else e.name in DATASET_REPORT_FILES


def _merged_report_ours(e: Path) -> bool:
    """An entry of a merged dataset's report/inputs/ that the merge writes: an input's report, inputs/NN-NAME/,
    whatever it holds (the input's report/ as it was, linked)."""
    return bool(_MERGED_REPORT.match(e.name)) and _real_dir(e)


def _cache_entry_ours(e: Path) -> bool:
    """An entry of a dataset's cache/ that pose2rgbd writes: a training cache, <size>-<fingerprint>/."""
    return bool(_CACHE_DIR.match(e.name)) and _real_dir(e)


# a dataset (docs/dataset-format.md): what DatasetWriter writes, the conversion's report, the training cache `train`
# adds, the depth network `convert video` keeps (convert.stages.depth_export.KEPT_NETWORK); its manifest.yaml says
# what it is (format: pose2rgbd-dataset), and inside rgb/, depth/, report/ and cache/ only pose2rgbd's files
DATASET = OutputKind("dataset", True, ("manifest.yaml",),
                     contents=("manifest.yaml", "frames.csv", "rgb", "depth", "report", "cache",
                               "depth_network.pt"),
                     not_ours=_dataset_not_ours, inside=_dataset_inside)  # fmt: skip
# a training run: a folder holding the files a run writes (pose2rgbd.training.run_folder.RUN_FILES: the run's
# config, data split, checkpoints, log, TensorBoard events, the hybrid's keyframe map). Named, not any *.pt: a folder
# of the user's with a detector.pt in it is no run. Their names only: run_folder.RUN adds the checks of what they
# hold (a config.yaml or log.csv of the user's is not a run's), which need the layers above. A dataset is never one.
TRAINING_RUN = OutputKind("training run", True,
                          ("config.yaml", "split.json", "last.pt", "best.pt", "log.csv", "tb", "keyframes"),
                          excludes=("manifest.yaml",))  # fmt: skip
EVALUATION = OutputKind("evaluation", True, ("metrics.json", "metrics.md"))
# the simulator's posed images (sim.export_posed)
POSED_IMAGES = OutputKind("posed images", True, ("transforms.json",),
                          contents=("transforms.json", "images", "depth", "ground_truth.npz"))  # fmt: skip
VIDEO = OutputKind("video", False, suffixes=(".mp4", ".avi", ".mkv"))
# a file named as a video (upper or lower case: a GoPro's .MP4): one given where posed images or a folder of images
# are expected is said to be a video, with the command that takes it
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".mts", ".m2ts", ".webm")
RENDERS = OutputKind("render", True, ("rgb_000000.png", "depth_000000.npy"),  # render trajectory's folder
                     contents=("rgb_*.png", "depth_*.png", "depth_*.npy", "depth_sigma_*.npy", "poses.csv",
                               "camera.yaml", "README_pose2rgbd.txt"))  # fmt: skip
# `convert gps-odom --report`'s folder (pose2rgbd.convert.gps_odom); a dataset's own report/ lies inside a dataset
GPS_ODOM_REPORT = OutputKind("GPS-odometry report", True, ("summary.json",), excludes=("manifest.yaml",),
                             contents=("sync.png", "track.png", "summary.json"))  # fmt: skip
FILE = OutputKind("file", False)
# a checkpoint file written whole (`export --bundle`, `map link`)
CHECKPOINT = OutputKind("checkpoint", False, suffixes=(".pt",))


def _resolved(p: str | Path) -> Path:
    return Path(os.path.realpath(Path(p).expanduser()))


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def overlap(a: str | Path, b: str | Path) -> str:
    """How the path ``a`` stands to ``b`` (symlinks resolved): ``"is"``, ``"lies inside"``, ``"contains"``, or ""
    where neither holds the other."""
    ra, rb = _resolved(a), _resolved(b)
    if ra == rb:
        return "is"
    return "lies inside" if _within(ra, rb) else "contains" if _within(rb, ra) else ""


def check_output(
    out: str | Path,
    kind: OutputKind,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> Path:
    """Raise :class:`OutputError` if writing ``out`` (an output of ``kind``) could destroy an input or a
    foreign file; returns ``out`` as a Path. See the module docstring for the rules."""
    p = Path(out)
    check_links(p)
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        how = overlap(p, inp)
        if how:
            why = ("pose2rgbd never writes into what it reads" if how == "lies inside"
                   else "writing it would destroy the input")  # fmt: skip
            raise OutputError(
                f"output {p} {how} the input {inp}; {why}. Choose an output path outside the input (nothing was "
                "written)"
            )
    if overwrite and (p.exists() or p.is_symlink()):
        if kind.is_dir and p.is_dir() and not any(p.iterdir()):
            return p  # an empty folder holds nothing to lose
        if not kind.matches(p):
            refuted = kind.refuted(p)
            if refuted:  # it has the kind's marker, but someone else's
                raise OutputError(
                    f"{p} exists and holds {refuted}; --overwrite only replaces an earlier {kind.name}. Choose another "
                    f"output path or move {p} away yourself (nothing was written)"
                )
            what = "a folder" if p.is_dir() else "a file"
            if kind.is_dir:
                looks = f"a {kind.name} folder has {' or '.join(kind.markers)}"
            else:
                looks = f"a {kind.name} is a file" + (f" ending in {', '.join(kind.suffixes)}" if kind.suffixes else "")
                if kind.first_lines:
                    looks += " whose first line starts " + " or ".join(repr(h) for h in kind.first_lines)
            raise OutputError(
                f"{p} exists and is {what} that is not a {kind.name} ({looks}); --overwrite only replaces an "
                f"earlier {kind.name}. Choose another output path or move {p} away yourself (nothing was written)"
            )
        foreign = kind.foreign_entries(p)
        if foreign:
            names = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputError(
                f"{p} is an earlier {kind.name}, but it also holds {names}, which no {kind.name} written by pose2rgbd "
                f"has; --overwrite replaces the folder whole and would delete {'them' if len(foreign) > 1 else 'it'}. "
                f"Move {'them' if len(foreign) > 1 else 'it'} out of {p}, or choose another output path (nothing was "
                "written)"
            )
    return p


def check_checkpoint_output(out: str | Path, *, inputs: Iterable[str | Path | None], overwrite: bool) -> Path:
    """The checks of a :data:`CHECKPOINT` written whole: :func:`check_output`'s; a training run's own checkpoint
    (``last.pt`` or ``best.pt`` beside the run's ``config.yaml`` and its ``log.csv`` or ``split.json``:
    :data:`pose2rgbd.training.run_folder.RUN_FILES`) refused whatever ``overwrite`` says, since replacing it would
    lose that training (its weights, its optimizer state for ``--resume``); then :func:`refuse_existing`."""
    p = check_output(out, CHECKPOINT, inputs=inputs, overwrite=overwrite)
    run = p.parent
    if (
        p.name in ("last.pt", "best.pt")
        and p.is_file()
        and (run / "config.yaml").is_file()
        and ((run / "log.csv").is_file() or (run / "split.json").is_file())
    ):
        raise OutputError(
            f"{p} is a checkpoint of the training run in {run} (beside its config.yaml), not an earlier output of this "
            "command; --overwrite would lose that training. Choose another --out (nothing was written)"
        )
    return refuse_existing(p, overwrite=overwrite)


def check_links(path: str | Path, name: str = "output") -> None:
    """Refuse an output that is, or lies under, a symbolic link to nothing (a dangling link) or a link loop:
    writing there fails only after the work, with a bare OS error. ``name``: what the path is to the user (an
    ``output``, a ``--cache-root``)."""
    p = Path(path)
    for anc in (p, *p.parents):
        if not anc.is_symlink():
            continue
        try:
            os.stat(anc)
        except OSError as e:
            target = os.readlink(anc)
            loop = e.errno == errno.ELOOP
            what = "a symbolic link loop" if loop else f"a symbolic link to {target}, which does not exist"
            where = "is" if anc == p else f"lies under {anc}, which is"
            fix = "remove the link" if loop else "create its target, remove the link"
            raise OutputError(
                f"{name} {p} {where} {what}; {fix}, or choose another {name} path (nothing was written)"
            ) from None


def check_writable(path: str | Path, *, flag: str = "--out") -> None:
    """Refuse an output that cannot be written where it is to go, before any work: the folder it goes into (or, where
    that is still to be made, the nearest folder above it that exists) must let a file be made in it -- its writer
    makes its hidden sibling there and renames it into place -- and no path above it may be a file. Tried, not
    guessed from the mode bits: a temporary file is made there and closed (unnamed where the file system allows,
    else removed at once: nothing is left beside the user's files), so a read-only file system, permissions, ACLs
    and root's rights are the kernel's answer. ``flag``: the option that names the output, for the message (what to
    do: choose another)."""
    p = Path(path)
    for anc in (p.parent, *p.parent.parents):
        try:
            st = os.stat(anc)
        except (FileNotFoundError, NotADirectoryError):
            continue  # still to be made (or under a file, named when the walk reaches it)
        except OSError as e:
            err = OutputError(f"output {p} cannot be written: {anc} cannot be reached ({e.strerror}); choose another "
                              f"{flag} (nothing was written)")  # fmt: skip
            err.says_what_to_do = True
            raise err from e
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(
                f"output {p} cannot be written: {anc} is a file, not a folder; choose another {flag}, or move {anc} "
                "away (nothing was written)"
            )
        try:
            with tempfile.TemporaryFile(dir=anc):
                pass
        except OSError as e:
            where = f"its folder {anc}" if anc == p.parent else f"{p.parent} would be made in {anc}, which"
            if e.errno == errno.EROFS:
                why, todo = "is on a read-only file system", f"choose another {flag} on a writable disk"
            elif e.errno in (errno.EACCES, errno.EPERM):
                why, todo = "is not writable", f"choose another {flag}, or make {anc} writable (e.g. chmod u+w {anc})"
            else:
                why, todo = "does not take a new file", f"choose another {flag}"
            err = OutputError(f"output {p} cannot be written: {where} {why} ({e.strerror}); {todo} (nothing was "
                              "written)")  # fmt: skip
            err.says_what_to_do = True  # not also the CLI's advice for the OS error it wraps
            raise err from e
        return


def check_not_foreign_dir(path: str | Path, kind: OutputKind, *, what_to_do: str) -> None:
    """Refuse to write *into* an existing non-empty folder that is not of ``kind`` (e.g. appending frames to a
    folder that is not a dataset would overwrite the user's files)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p} is a file, not a {kind.name} folder; {what_to_do}")
    if p.is_dir() and any(p.iterdir()) and not kind.matches(p):
        refuted = kind.refuted(p)
        if refuted:
            raise OutputError(f"{p} is a folder that holds {refuted}; {what_to_do} (nothing was written)")
        raise OutputError(
            f"{p} is a folder with other files in it and not a pose2rgbd {kind.name} "
            f"(no {' or '.join(kind.markers)}); {what_to_do} (nothing was written)"
        )


def is_empty_folder(p: Path) -> bool:
    """An existing empty folder (not a link, not a mount point): what an output put in place whole may replace
    without ``--overwrite`` (:func:`check_replaced_whole`, and a writer's second look before its rename)."""
    return p.is_dir() and not p.is_symlink() and not any(p.iterdir()) and not os.path.ismount(p)


def check_replaced_whole(
    out: str | Path,
    kind: OutputKind,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    holds: str = "",
) -> Path:
    """The checks of an output folder (or file) that its writer puts in place whole: :func:`check_output`'s, then
    an existing path that is not of ``kind`` is refused with or without ``overwrite`` (naming what it is not), an
    earlier output of ``kind`` without it (:func:`refuse_existing`; ``holds``: what it holds, for the message). An
    empty folder is taken as it is; the folder the command runs in (or one holding it) is refused: it cannot be
    moved aside."""
    p = check_output(out, kind, inputs=inputs, overwrite=overwrite)
    cwd = _resolved(Path.cwd())
    if p.exists() and _within(cwd, _resolved(p)):
        how = "is" if cwd == _resolved(p) else "holds"
        raise OutputError(
            f"output {p} {how} the folder the command runs in, which cannot be moved aside; name a folder for the "
            "output, e.g. ./out (nothing was written)"
        )
    if is_empty_folder(p):
        return p  # an empty folder holds nothing to lose (a mount point: refuse_existing says why it cannot be one)
    if p.exists() and (overwrite or not kind.matches(p)):
        check_output(p, kind, overwrite=True)  # not of the kind, or one holding the user's files: refused, named
    return refuse_existing(p, overwrite=overwrite, holds=holds)


def refuse_existing(
    out: str | Path,
    *,
    overwrite: bool,
    holds: str = "",
    instead: str = "",
    nothing: str = "nothing was written",
    renamed_into_place: bool = True,
    kind: OutputKind | None = None,
) -> Path:
    """The one overwrite policy: raise :class:`OutputExistsError` if ``out`` exists and ``overwrite`` is not
    set. ``holds``: what is there, when worth saying (``an earlier training run (config.yaml, last.pt)``);
    ``instead``: the other ways on (``pass --resume to continue it, ``); ``nothing``: what the refusal left as
    it was. An earlier output that a killed run had moved aside is put back first
    (:func:`pose2rgbd.atomic.sweep_stale_siblings`). A mount point is refused whatever ``overwrite`` says where the
    output is put in place by a rename (``renamed_into_place``; a writer that adds files to the folder, a training
    run, passes False): a rename cannot replace it. ``kind``: an output replaced whole; an existing path that is no
    earlier output of it (a folder of the user's files) is refused without the advice to pass ``--overwrite``,
    which would be refused too (:func:`check_output`)."""
    p = Path(out)
    sweep_stale_siblings(p)
    if renamed_into_place and os.path.ismount(p):  # a rename cannot replace a mount point (EBUSY, after the work)
        raise OutputError(
            f"{p} is a mount point (a drive or a mounted folder), which cannot be moved aside to put the new output in "
            f"its place; write into a folder inside it, e.g. {p / 'out'} ({nothing})"
        )
    if overwrite or not (p.exists() or p.is_symlink()):
        return p
    if kind is not None and not (kind.is_dir and p.is_dir() and not any(p.iterdir())) and not kind.matches(p):
        refuted = kind.refuted(p)
        kind_of = "a folder" if p.is_dir() else "a file"
        what = f"holds {refuted}" if refuted else f"is {kind_of} that is not a {kind.name}"
        raise OutputExistsError(
            f"{p} exists and {what}; --overwrite only replaces an earlier {kind.name}. Choose another output path or "
            f"move {p} away yourself ({nothing})"
        )
    what = f"holds {holds}" if holds else "exists"
    raise OutputExistsError(f"{p} {what}; {instead}pass --overwrite to replace it ({nothing})")
