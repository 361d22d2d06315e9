"""Join datasets of one place into one: ``pose2rgbd dataset merge A B ... --out M``.

Several flights or recordings of one place (each converted or recorded on its own) become one training dataset,
so that one model learns the place from all of them:

- **One camera, one depth kind, one image codec, poses in metres.** Frames of another camera or depth kind do not
  belong in one dataset (convert or record them again at one ``--size``); poses up to an unknown scale (structure
  from motion without GPS) are each in a frame of their own and are refused.
- **One world frame.** The first dataset's frame is the merged dataset's. A dataset with a GPS datum whose world
  frame is not the first's -- converted with its own datum (its first fix, the default), or into a robot's TF frame
  that started elsewhere -- has its poses moved into the first's frame through the Earth
  (:func:`~pose2rgbd.geometry.geodesy.T_world_world`: exact, the shift and turn are said); where both name one frame
  and their GPS fits place a fix within :data:`SAME_FRAME_TOL_M` of each other the poses are kept as they are.
  Datasets without a datum have nothing that relates their frames: refused, unless ``same_frame`` says they share
  one (motion capture of one room, one SLAM map).
- **Flights kept apart.** Each dataset's sources are numbered after the previous dataset's, so time order holds
  within each; ``train --split blocks`` trains on every flight and holds out time blocks of each, ``--split
  route`` trains on source 0 (the first dataset's first) and holds out the others.
- **A view once.** A later dataset's frame that an earlier one holds already (the same image, or the same instant
  and pose: :mod:`pose2rgbd.dataset.same_views`) is left out.
- **A picture** (``report/merge.png``): every dataset's camera path from above in the merged frame, and where a
  moved dataset's path was before its move.
- **The inputs' reports kept.** Each input's own ``report/`` (its conversion's sync plot, camera path, summary) is
  linked into ``report/inputs/NN-NAME/`` (NN its place among the inputs, NAME its folder's name).
- **Files as they are.** Images and depth are hard-linked (copied across file systems), never decoded again; the
  result is written atomically beside its place and appears whole or not at all.

The manifest keeps what the datasets say alike, the largest stated ``pose_error`` (the poses are as good as the
worst), the worst import pose check, and under ``extra.merge`` each input (path, name, fingerprint, frames kept).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose2rgbd.dataset.format import Dataset, Manifest
from pose2rgbd.dataset.same_views import SameViews
from pose2rgbd.dataset.writer import DatasetWriter, camera_text
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.geodesy import T_world_world, fit_gap_m
from pose2rgbd.progress import bar

log = logging.getLogger(__name__)

# two datasets naming one world frame whose GPS fits place a fix within this of each other are in one frame (their
# poses kept as they are): the GPS fits' own disagreement, not two frames (pose2rgbd.placemap.merge's tolerance)
SAME_FRAME_TOL_M = 0.5
# a dataset none of whose cameras comes this close to an earlier dataset's is warned of: flights of one place pass
# over or beside each other; one this far from all of them is most likely of another place (a folder mixed up)
APART_WARN_M = 500.0
# the import pose check's verdicts, best first (pose2rgbd.convert.pose_check)
_VERDICTS = ("ok", "check", "suspect")


@dataclass(frozen=True)
class MergedInput:
    """One input of a merge: its frames, how many were kept, and how far its poses were moved (None: not)."""

    path: str
    name: str
    fingerprint: str
    frames: int
    kept: int
    shift_m: float | None = None
    turn_deg: float | None = None
    # the move itself, T_merged_input as x, y, z, qx, qy, qz, qw (quaternion x, y, z, w); None: not moved
    move_xyz_qxyzw: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, object]:
        """The manifest's ``extra.merge.datasets`` entry."""
        moved = None
        if self.shift_m is not None:
            moved = {"shift_m": self.shift_m, "turn_deg": self.turn_deg,
                     "T_merged_input_xyz_qxyzw": list(self.move_xyz_qxyzw or ())}  # fmt: skip
        return {"path": self.path, "name": self.name, "fingerprint": self.fingerprint, "frames": self.frames,
                "kept": self.kept, "moved": moved}  # fmt: skip


@dataclass
class MergeResult:
    """What :func:`merge_datasets` wrote."""

    path: Path
    frames: int
    inputs: list[MergedInput]
    notes: list[str] = field(default_factory=list)
    depth_kind: str = "metric"  # the merged dataset's (its inputs' one kind)


def merge_datasets(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    same_frame: bool = False,
    name: str = "",
    progress: bool = False,
) -> MergeResult:
    """Merge the datasets ``inputs`` into a new dataset at ``out`` (see the module docstring). ``same_frame``: the
    datasets without a GPS datum share one world frame (the user says so). Raises :class:`ConfigError` for inputs
    that cannot be one dataset, naming what differs and what to do."""
    paths = [Path(p) for p in inputs]
    if len(paths) < 2:
        raise ConfigError("dataset merge needs two datasets or more (the first's world frame is the merged one's)")
    resolved = [p.resolve() for p in paths]
    for k, r in enumerate(resolved):
        if r in resolved[:k]:
            raise ConfigError(f"{paths[k]} is given twice: give each dataset once")
    dss = [Dataset(p) for p in paths]
    _check_alike(dss)
    notes: list[str] = []
    moves = [np.eye(4)] + [_frame_move(dss[0], ds, same_frame, notes) for ds in dss[1:]]
    poses = [T @ ds.frames.T_world_cam for T, ds in zip(moves, dss, strict=True)]  # each in the merged frame
    _warn_apart(paths, poses, notes)
    kept = _kept_frames(dss, poses, progress)
    summary = _inputs(dss, [len(k) for k in kept], moves)
    for p, s in zip(paths, summary, strict=True):
        if s.kept == 0:
            log.warning(f"{p} adds no frame to the merge: every one of its {s.frames} frames is a view an earlier "
                        "dataset holds already (the same image, or the same instant and pose)")  # fmt: skip
        if s.kept < s.frames:
            notes.append(
                f"{p.name}: {s.frames - s.kept} of its {s.frames} frames left out, the same views as frames of an "
                "earlier dataset (the same image, or the same instant and pose)"
            )
    if not any(len(k) for k in kept[1:]):
        raise ConfigError(
            f"no dataset after {paths[0]} adds a frame to it (every frame is a view it holds already): nothing to "
            "merge; the first dataset is the dataset"
        )
    used = [ds for ds, k in zip(dss, kept, strict=True) if len(k)]
    manifest, id_maps = _manifest(dss, kept, name or f"merged from {len(used)} datasets", notes)
    manifest.extra["merge"] = {"datasets": [s.to_dict() for s in summary], "notes": notes}

    writer = DatasetWriter(out, manifest, overwrite=overwrite, inputs=paths)
    try:
        with bar(total=sum(len(k) for k in kept), progress=progress, desc="merge (link)", unit="frame") as pbar:
            for k, ds in enumerate(dss):
                f = ds.frames
                T = poses[k]
                for i in kept[k]:
                    lla = f.latlonalt[i]
                    writer.add_frame_files(
                        int(f.stamp_ns[i]), T[i], ds.path / f.rgb[i], ds.path / f.depth[i] if f.depth[i] else None,
                        latlonalt=None if np.isnan(lla).all() else (float(lla[0]), float(lla[1]), float(lla[2])),
                        source_id=id_maps[k][int(f.source_id[i])],
                    )  # fmt: skip
                    pbar.update(1)
        if writer.copied_bytes:
            notes.append(
                f"{writer.copied_bytes / 1e6:.1f} MB of images and depth copied, not linked: "
                f"{'; '.join(sorted(writer.copy_reasons))} (a link takes no space; a copy does)"
            )
        _plot_paths(writer.root / "report" / "merge.png", dss, poses, summary)
        kept_reports = _keep_reports(writer.root / "report" / "inputs", paths)
        if kept_reports:
            notes.append(f"the inputs' reports are in report/inputs/ ({', '.join(kept_reports)})")
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    return MergeResult(path, sum(len(k) for k in kept), summary, notes, manifest.depth_kind)


def _keep_reports(into: Path, paths: Sequence[Path]) -> list[str]:
    """Link (or copy) each input's ``report/`` files into ``into/NN-NAME/`` (NN: the input's place, from 00; NAME:
    its folder's name), as the frames' files are; returns the folders made. Links and other non-files are left
    out."""
    from pose2rgbd.dataset.writer import link_or_copy

    made = []
    for k, p in enumerate(paths):
        report = p / "report"
        files = sorted(f for f in report.rglob("*") if f.is_file() and not f.is_symlink()) if report.is_dir() else []
        if not files:
            continue
        name = f"{k:02d}-{p.resolve().name}"
        for f in files:
            dst = into / name / f.relative_to(report)
            dst.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(f, dst)
        made.append(name)
    return made


def _warn_apart(paths: Sequence[Path], poses: Sequence[np.ndarray], notes: list[str]) -> None:
    """Warn of a dataset whose cameras all lie over :data:`APART_WARN_M` from every earlier dataset's (in the merged
    frame): most likely another place, not another flight of this one."""
    from scipy.spatial import cKDTree

    seen = poses[0][:, :3, 3]
    for k in range(1, len(poses)):
        p = poses[k][:, :3, 3]
        gap = float(cKDTree(seen).query(p)[0].min())
        if gap > APART_WARN_M:
            text = (
                f"{paths[k]}: none of its cameras comes within {gap:.0f} m of the cameras of the datasets before it "
                f"(over {APART_WARN_M:.0f} m): most likely another place, not another flight of this one; merged as "
                "asked (a model of two places far apart learns each from its own frames alone)"
            )
            log.warning(text)
            notes.append(text)
        seen = np.concatenate([seen, p])


def _kept_frames(dss: Sequence[Dataset], poses: Sequence[np.ndarray], progress: bool) -> list[np.ndarray]:
    """Per dataset, the rows kept: all but the views an earlier dataset holds already (:class:`SameViews`: an
    image's bytes hashed where another input has a file of its size, each pose in the merged frame)."""
    views = SameViews()
    out: list[np.ndarray] = []
    # an image is hashed only where another input holds a file of its very size: the same bytes are the same size,
    # so the others cannot match, and a merge of flights reads next to nothing instead of every image
    sizes = [[(ds.path / r).stat().st_size for r in ds.frames.rgb] for ds in dss]
    inputs_of: dict[int, set[int]] = {}
    for k, ks in enumerate(sizes):
        for size in ks:
            inputs_of.setdefault(size, set()).add(k)
    with bar(total=sum(len(ds) for ds in dss), progress=progress, desc="merge (compare)", unit="frame") as pbar:
        for k, ds in enumerate(dss):
            f, T = ds.frames, poses[k]
            rows = []
            for i in range(len(ds)):
                shared = len(inputs_of[sizes[k][i]]) > 1
                digest = hashlib.sha1((ds.path / f.rgb[i]).read_bytes()).digest() if shared else b""
                if views.offer(k, digest, int(f.stamp_ns[i]), T[i]):
                    rows.append(i)
                pbar.update(1)
            out.append(np.asarray(rows, np.int64))
    return out


def _check_alike(dss: Sequence[Dataset]) -> None:
    """Refuse datasets that cannot be one: another camera, depth kind or image codec, or poses without scale."""
    first = dss[0]
    a = first.manifest
    for ds in dss:
        m = ds.manifest
        if m.resolved_pose_units != "m":
            raise ConfigError(
                f"{ds.path}: its poses are up to an unknown scale (pose units {m.resolved_pose_units!r}: structure "
                "from motion without GPS), each such dataset in a frame and scale of its own; only datasets in metres "
                "merge. Give it a scale first: geo-register the model (COLMAP's model_aligner) or import it with "
                "metric depth (--depth DIR), docs/byod.md"
            )
    for ds in dss[1:]:
        m = ds.manifest
        if m.camera != a.camera:
            e, n = a.camera, m.camera
            how = (
                f"it is the same camera at another size: convert or record it again with --size {e.width}x{e.height}"
                if e.is_resized(n)
                else "frames of another camera do not belong in one dataset: train a model of each, or convert both "
                "from one camera"
            )
            raise ConfigError(
                f"{ds.path} has another camera ({camera_text(n)}) than {first.path} ({camera_text(e)}); {how}"
            )
        if m.depth_kind != a.depth_kind:
            raise ConfigError(
                f"{ds.path} has depth of kind {m.depth_kind!r}, {first.path} {a.depth_kind!r}: one dataset holds one "
                "depth kind; convert them alike (the same --depth for videos, the same --depth-topic or none for "
                "bags), or merge only those of one kind"
            )
        if m.rgb_encoding != a.rgb_encoding:
            raise ConfigError(
                f"{ds.path} stores its images as {m.rgb_encoding}, {first.path} as {a.rgb_encoding}: a dataset has one "
                "image codec; convert one of them again with --set output.rgb_encoding="
                f"{a.rgb_encoding}"
            )
        src_a, src_b = _depth_source(first), _depth_source(ds)
        if src_a != src_b:

            def say(src: str | None) -> str:
                return f"estimated ({src})" if src else "measured (or not said)"

            raise ConfigError(
                f"{ds.path}'s depth is {say(src_b)}, {first.path}'s {say(src_a)}: depth of one "
                "source in one dataset, so that it is scored as what it is; merge datasets whose depth came alike"
            )


def _depth_source(ds: Dataset) -> str | None:
    depth = ds.manifest.extra.get("depth")
    src = depth.get("source") if isinstance(depth, dict) else None
    return str(src) if src else None


def _frame_move(first: Dataset, ds: Dataset, same_frame: bool, notes: list[str]) -> np.ndarray:
    """``T_first_ds``: what moves ``ds``'s poses into ``first``'s world frame (identity where they share it)."""
    da, db = first.manifest.datum, ds.manifest.datum
    wa, wb = first.manifest.world_frame, ds.manifest.world_frame
    if da is None or db is None:
        if same_frame:
            notes.append(
                f"{ds.path.name} and {first.path.name} taken to share one world frame (--same-frame): their poses are "
                f"kept as they are{'' if wa == wb else f' (frames named {wb!r} and {wa!r})'}"
            )
            return np.eye(4)
        has = first if db is None and da is not None else ds if da is None and db is not None else None
        why = (
            f"{has.path} has a GPS datum and {(ds if has is first else first).path} none"
            if has is not None
            else f"neither {first.path} nor {ds.path} has a GPS datum"
        )
        raise ConfigError(
            f"{why}: nothing relates their world frames. Convert both with GPS (one --datum for both is simplest), or, "
            "where their poses are in one frame already (motion capture of one room, one SLAM map), say so with "
            "--same-frame"
        )
    T = T_world_world(da, db)
    gap = fit_gap_m(np.concatenate([first.frames.translation, ds.frames.translation]), da, db) if wa == wb else math.inf
    if gap <= SAME_FRAME_TOL_M:  # one frame: the GPS fits agree (the same datum, or one robot frame fitted twice)
        if gap > 0.01:
            notes.append(
                f"{ds.path.name} and {first.path.name} name one frame {wa!r} and their GPS fits place a fix up to "
                f"{gap:.2f} m apart in it (within {SAME_FRAME_TOL_M} m: one frame, the poses kept as they are)"
            )
        return np.eye(4)
    shift = float(np.linalg.norm(T[:3, 3]))
    turn = _turn_deg(T)
    why = (
        f"its world frame {wb!r} is not {first.path.name}'s {wa!r}"
        if wa != wb
        else f"its datum ({db.lat_deg:.7f}, {db.lon_deg:.7f}, {db.alt_m:.2f} m) places its frame elsewhere"
    )
    notes.append(
        f"{ds.path.name}: {why}; its poses were moved into {first.path.name}'s frame through the GPS "
        f"({shift:.2f} m, {turn:.4f} deg): as right as each dataset's GPS fit"
    )
    return T


def _turn_deg(T: np.ndarray) -> float:
    """The rotation angle of ``T`` in degrees."""
    from pose2rgbd.geometry.rotations import rotation_angle_between

    return math.degrees(float(rotation_angle_between(np.eye(3), T[:3, :3])))


def input_labels(paths: Sequence[Path]) -> list[str]:
    """A short name per input that tells the inputs apart: its folder's name, with as many of the folders above as
    make the names differ (``sim1/dataset`` and ``sim2/dataset``, not ``dataset`` twice)."""
    parts = [p.resolve().parts for p in paths]
    for n in range(1, max(len(q) for q in parts) + 1):
        labels = ["/".join(q[-n:]) for q in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def _manifest(
    dss: Sequence[Dataset], kept: Sequence[np.ndarray], name: str, notes: list[str]
) -> tuple[Manifest, list[dict[int, int]]]:
    """The merged manifest and, per dataset, its source ids -> the merged ones: the sources that keep a frame, each
    naming the dataset it came from (its folder's name, with the folders above it that tell the inputs apart:
    :func:`input_labels`; or the name a merged input's source already had)."""
    a = dss[0].manifest
    sources: list[dict[str, object]] = []
    id_maps: list[dict[int, int]] = []
    for ds, rows, label in zip(dss, kept, input_labels([ds.path for ds in dss]), strict=True):
        ids: dict[int, int] = {}
        used = set(ds.frames.source_id[rows].tolist())
        declared = list(ds.manifest.sources)
        # a manifest may declare no sources (optional): its frames' ids stand for themselves
        have = {int(s["id"]) for s in declared}
        declared += [{"id": i, "kind": "unknown", "name": f"source {i}"} for i in sorted(used - have)]
        for s in declared:
            if int(s["id"]) in used:
                ids[int(s["id"])] = len(sources)
                sources.append({**s, "id": len(sources), "dataset": s.get("dataset") or label})
        id_maps.append(ids)
    ms = [ds.manifest for ds, rows in zip(dss, kept, strict=True) if len(rows)]  # the datasets that add frames
    if any(m.camera_frame != a.camera_frame for m in ms):
        names = sorted({m.camera_frame for m in ms})
        notes.append(f"the datasets name their camera frame differently ({', '.join(names)}): the merged dataset "
                     f"names it {a.camera_frame!r}, the first's")  # fmt: skip
    extras = [m.extra for m in ms]
    extra = {k: v for k, v in extras[0].items() if all(k in e and e[k] == v for e in extras[1:])}
    if "depth" not in extra and _depth_source(dss[0]):
        extra["depth"] = {"source": _depth_source(dss[0]), "datasets": [e.get("depth") for e in extras]}
    verdicts = [e.get("pose_check") for e in extras if e.get("pose_check") in _VERDICTS]
    if verdicts:
        extra["pose_check"] = max(verdicts, key=_VERDICTS.index)
    errors = [m.pose_error for m in ms if m.pose_error_sigmas() is not None]
    pose_error: dict[str, object] = {}
    if errors:
        h = max(float(e["horizontal_m"]) for e in errors)  # type: ignore[arg-type]
        v = max(float(e["vertical_m"]) for e in errors)  # type: ignore[arg-type]
        pose_error = {"horizontal_m": h, "vertical_m": v, "source": "the largest of the merged datasets'"}
        if len(errors) < len(ms):
            notes.append(
                f"the poses' own error is stated by {len(errors)} of the {len(ms)} datasets; the merged dataset states "
                "the largest of theirs"
            )
    cameras: list[dict[str, object]] = []
    for m in ms:
        cameras += [c for c in m.source_cameras if c not in cameras]
    merged = Manifest(
        name=name,
        camera=a.camera,
        depth_kind=a.depth_kind,
        rgb_encoding=a.rgb_encoding,
        world_frame=a.world_frame,
        camera_frame=a.camera_frame,
        datum=a.datum,
        sources=sources,
        extra=extra,
        pose_units="m",
        source_cameras=cameras,
        pose_error=pose_error,
    )
    return merged, id_maps


def _inputs(dss: Sequence[Dataset], kept: Sequence[int], moves: Sequence[np.ndarray]) -> list[MergedInput]:
    from pose2rgbd.geometry.transforms import tq_from_T

    out = []
    for ds, k, T in zip(dss, kept, moves, strict=True):
        shift = turn = move = None
        if not np.allclose(T, np.eye(4)):
            shift = round(float(np.linalg.norm(T[:3, 3])), 4)
            turn = round(_turn_deg(T), 5)
            t, q = tq_from_T(T)
            move = tuple(float(x) for x in (*t, *q))
        out.append(MergedInput(str(ds.path.resolve()), ds.manifest.name, ds.fingerprint(), len(ds), int(k), shift,
                               turn, move))  # fmt: skip
    return out


def _plot_paths(
    path: Path, dss: Sequence[Dataset], poses: Sequence[np.ndarray], summary: Sequence[MergedInput]
) -> None:
    """``report/merge.png``: the datasets' camera positions from above (x, y of the merged world frame), one colour
    each; a moved dataset's positions before the move faint and dashed, so that a wrong frame shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    labels = input_labels([ds.path for ds in dss])
    for k, (ds, moved, s) in enumerate(zip(dss, poses, summary, strict=True)):
        colour = f"C{k % 10}"
        label: str | None = f"{labels[k]}: {s.kept} of {s.frames} frames"
        if s.shift_m is not None:
            label = f"{label}, moved {s.shift_m:.2f} m (dashed: before)"
        marker = "oxs+^v"[k % 6]  # each its own marker: paths that overlap, as they should, stay told apart
        every = max(1, len(ds) // 80)  # markers on a long flight's path: some, not a solid band
        for sid in np.unique(ds.frames.source_id):  # each source (route, recording) its own line: none joined
            rows = np.flatnonzero(ds.frames.source_id == sid)
            p, q = ds.frames.translation[rows], moved[rows, :3, 3]
            if s.shift_m is not None:
                ax.plot(p[:, 0], p[:, 1], ls="--", lw=0.8, alpha=0.4, color=colour)
            ax.plot(q[:, 0], q[:, 1], ls="-", marker=marker, ms=5, mfc="none", lw=0.8, color=colour, label=label,
                    markevery=every)  # fmt: skip
            label = None  # one legend entry per dataset
    first = dss[0].manifest
    ax.set_xlabel(f"x (m), {first.world_frame!r} of {labels[0]}")
    ax.set_ylabel("y (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{len(dss)} datasets merged: camera positions from above")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
