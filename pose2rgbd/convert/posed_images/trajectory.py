"""An image folder + a trajectory file (KITTI odometry poses, TUM) -> :class:`PosedImages`.

KITTI odometry (``poses/XX.txt``): one pose per line, 12 numbers, the 3x4 row-major ``T_world_cam`` of the left
grey camera (camera 0), whose frame is already optical; the world is camera 0's frame at the first pose (so
world up is -y). Poses are matched to the sorted images by index (the counts must agree). Intrinsics: the
``P<N>`` line of ``calib.txt`` (``--calib``; N from an ``image_N`` folder or ``--kitti-camera``; a camera other
than 0 gets its baseline from ``P<N>``; a calib.txt without ``P0:`` labels is read by row, in KITTI's order), or
flags. Stamps: ``times.txt`` when present, else index x interval.

TUM (``timestamp tx ty tz qx qy qz qw``, seconds, ``T_world_cam``): images are matched by time. Each image's
time is its file name (``1305031102.175304.png``) or comes from a ``timestamp filename`` list (``rgb.txt``; its
names relative to ``--images`` or, where the files are there instead, to the list's folder).
Matching rule: an image needs a pose within ``tolerance_s`` of its time; its pose is interpolated (position
linear, rotation slerp) between the two poses around the image time, or is the nearest pose at either end of
the trajectory. Refused: more than a few images (2, or 5 %) outside the trajectory's span that would all get
the same end pose (a tolerance far beyond the sample spacing); an error on unmatched images says when the
images' times are evidently not capture times (consecutive whole numbers: frame numbers; all before or after the
trajectory). Intrinsics from flags. The camera frame is optical unless ``--camera-axes`` says otherwise.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from pose2rgbd.convert.posed_images.common import (
    ImagesConfig,
    PosedImages,
    SourceCamera,
    check_rotations,
    image_files,
    image_size,
    missing_images,
    stamps_from_interval,
)
from pose2rgbd.convert.posed_images.errors import PoseImportError
from pose2rgbd.geometry.camera_axes import axes_matrix
from pose2rgbd.geometry.transforms import T_from_tq

log = logging.getLogger(__name__)


def read_table(path: Path, what: str) -> tuple[np.ndarray, list[int]]:
    """Numbers of a whitespace (or comma) separated text file, skipping blank and ``#`` lines; the line numbers."""
    if not path.is_file():
        raise PoseImportError(f"{path}: {what} not found")
    rows, lines = [], []
    width = None
    for ln, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.replace(",", " ").split()
        try:
            vals = [float(x) for x in parts]
        except ValueError:
            raise PoseImportError(f"{path}:{ln}: not a line of numbers: {s[:60]!r}") from None
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise PoseImportError(f"{path}:{ln}: {len(vals)} numbers, the first line had {width}")
        rows.append(vals)
        lines.append(ln)
    if not rows:
        raise PoseImportError(f"{path}: no data lines ({what})")
    return np.asarray(rows, dtype=np.float64), lines


def columns(path: Path) -> int | None:
    """The number of columns of the first data line of a text file (for format detection), or None."""
    try:
        with open(path, errors="replace") as f:
            for raw in f:
                s = raw.strip()
                if s and not s.startswith("#"):
                    parts = s.replace(",", " ").split()
                    try:
                        [float(x) for x in parts]
                    except ValueError:
                        return None
                    return len(parts)
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------------------- KITTI
def _kitti_calib(cfg: ImagesConfig, poses: Path, img_dir: Path) -> Path | None:
    if cfg.calib:
        if not Path(cfg.calib).is_file():
            raise PoseImportError(f"{cfg.calib}: calib file not found")
        return Path(cfg.calib)
    for d in (poses.parent, img_dir.parent, img_dir):
        if (d / "calib.txt").is_file():
            return d / "calib.txt"
    return None


def _kitti_P(calib: Path, n: int) -> tuple[np.ndarray, str]:
    """The 3x4 projection matrix of camera ``n`` and which line it came from: the ``P<n>:`` line, or -- in a file
    without labels (four bare 3x4 rows, as tutorials ship it) -- row ``n`` in KITTI's order P0 P1 P2 P3."""
    text = [ln.strip() for ln in calib.read_text(errors="replace").splitlines()]
    text = [ln for ln in text if ln and not ln.startswith("#")]

    def numbers(rest: str, what: str) -> np.ndarray:
        try:
            v = np.asarray([float(x) for x in rest.split()], dtype=np.float64)
        except ValueError:
            raise PoseImportError(f"{calib}: {what} is not 12 numbers") from None
        if v.size != 12:
            raise PoseImportError(f"{calib}: {what} has {v.size} numbers, expected 12 (3x4 row-major)")
        return v.reshape(3, 4)

    if any(":" in ln for ln in text):
        for ln in text:
            key, _, rest = ln.partition(":")
            if key.strip() == f"P{n}":
                return numbers(rest, f"line P{n}"), f"line P{n}"
        raise PoseImportError(f"{calib}: no 'P{n}:' line; pick the camera with --kitti-camera or give --fx ...")
    if n >= len(text):
        raise PoseImportError(
            f"{calib}: no labels (P0: ...) and {len(text)} row(s), so there is no row for camera {n} (rows are "
            "taken in KITTI's order P0 P1 P2 P3); pick the camera with --kitti-camera or give --fx ..."
        )
    what = f"row {n + 1} of {len(text)} (no 'P0:' labels: rows taken in KITTI's order P0 P1 P2 P3, so P{n})"
    return numbers(text[n], what), what


def read_kitti(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    poses = Path(path)
    if not cfg.images:
        raise PoseImportError(f"{poses}: a KITTI pose file needs the image folder: --images DIR (e.g. image_0)")
    img_dir = Path(cfg.images)
    rows, lines = read_table(poses, "KITTI pose file")
    if rows.shape[1] != 12:
        raise PoseImportError(
            f"{poses}: {rows.shape[1]} numbers per line; KITTI poses have 12 (3x4 row-major T_world_cam)"
        )
    images = image_files(img_dir, "KITTI images")
    if len(images) != len(rows):
        raise PoseImportError(
            f"{poses}: {len(rows)} poses but {len(images)} images in {img_dir}; KITTI poses are matched to the "
            "sorted images by index, so the counts must agree (remove the extra images or poses)"
        )
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    T[:, :3, :4] = rows.reshape(-1, 3, 4)
    T = check_rotations(T, [f"{poses}:{ln}" for ln in lines])
    notes = ["KITTI poses: 3x4 row-major T_world_cam of camera 0, camera frame optical, matched to images by index"]
    n = cfg.kitti_camera
    if n < 0:
        m = re.fullmatch(r"image_(\d)", img_dir.name)
        n = int(m.group(1)) if m else 0
    w, h = image_size(images[0])
    calib = _kitti_calib(cfg, poses, img_dir)
    if cfg.has_intrinsics():
        cam = cfg.flag_camera(w, h, "a KITTI pose file")
        notes.append("intrinsics from the flags")
        if n != 0:
            notes.append(f"images of camera {n} but no calib.txt used: its baseline to camera 0 is NOT applied")
    elif calib is not None:
        P, line = _kitti_P(calib, n)
        K = P[:, :3]
        cam = SourceCamera(w, h, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                           *cfg.flag_distortion())  # fmt: skip
        notes.append(f"intrinsics from {calib.name} {line}" + (", distortion from --distortion" if cam.dist else ""))
        if n != 0:
            # rectified cameras: P_n = K [I | t_n] with t_n the position of camera 0's origin in camera n's frame
            t_n = np.linalg.solve(K, P[:, 3])
            T_camn_cam0 = np.eye(4)
            T_camn_cam0[:3, 3] = t_n
            T = T @ np.linalg.inv(T_camn_cam0)
            notes.append(f"poses moved from camera 0 to camera {n} by its baseline {np.round(-t_n, 4).tolist()} m")
    else:
        raise PoseImportError(
            f"{poses}: no calib.txt beside the poses or the images; give --calib FILE, or --fx/--fy/--cx/--cy, "
            "or --hfov DEG"
        )
    times = Path(cfg.times) if cfg.times else (calib.parent / "times.txt" if calib is not None else None)
    if times is not None and times.is_file():
        t, _ = read_table(times, "KITTI times.txt")
        if t.shape[1] != 1 or len(t) != len(rows):
            raise PoseImportError(f"{times}: expected one time per line and {len(rows)} lines, got {t.shape}")
        stamps = np.round(t[:, 0] * 1e9).astype(np.int64)
        notes.append(f"stamps from {times.name}")
    elif cfg.times:
        raise PoseImportError(f"{cfg.times}: times file not found")
    else:
        stamps = stamps_from_interval(len(rows), cfg.frame_interval_s)
        notes.append(f"no times.txt: stamps are index x {cfg.frame_interval_s} s")
    T = T @ axes_matrix(cfg.camera_axes)
    if cfg.camera_axes != "optical":
        notes.append(f"camera axes '{cfg.camera_axes}' converted to optical")
    notes.append("the world frame is camera 0 at the first pose (y down, z forward; not ENU, no datum)")
    return PosedImages(
        kind="kitti", source=poses, images=images, T_world_cam=T, stamps_ns=stamps, cameras=[cam] * len(images),
        up_hint=np.array([0.0, -1.0, 0.0]) if cfg.camera_axes == "optical" else None,
        convention="KITTI poses are T_world_cam of camera 0 in its optical frame (no axis change)",
        assumptions=notes,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------------ TUM
_STAMP = re.compile(r"^(\d+(?:\.\d+)?)$")


def stamp_ns(text: str) -> int | None:
    """Seconds as written (``1305031102.175304``, also ``1.3e9``) -> int nanoseconds, exactly (decimal, no float
    rounding); None when ``text`` is not a finite number or the time does not fit int64 nanoseconds (beyond the
    year 2262)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    ns = int((d * 1_000_000_000).to_integral_value())
    return ns if -(2**63) <= ns < 2**63 else None


def stamp_of_name(stem: str) -> int | None:
    """The time (int ns) a file stem names in seconds (``1305031102.175304``, as TUM RGB-D names its images), or
    None."""
    return stamp_ns(stem) if _STAMP.match(stem) else None


def read_stamped_list(lst: Path, base: Path, what: str) -> tuple[list[Path], np.ndarray]:
    """A TUM ``timestamp filename`` list (``rgb.txt``, ``depth.txt``; blank and ``#`` lines skipped): the files
    (names relative to ``base``) and their stamps (int64 ns), in the list's order. ``what`` names the list."""
    if not lst.is_file():
        raise PoseImportError(f"{lst}: {what} not found")
    paths, ts = [], []
    for ln, raw in enumerate(lst.read_text(errors="replace").splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        t = stamp_ns(parts[0])
        if t is None or len(parts) < 2:
            raise PoseImportError(f"{lst}:{ln}: expected 'timestamp filename', got {s[:60]!r}")
        ts.append(t)
        paths.append(base / parts[1])
    if not paths:
        raise PoseImportError(f"{lst}: no 'timestamp filename' lines ({what})")
    return paths, np.asarray(ts, dtype=np.int64)


def associate_stamps(a_ns: np.ndarray, b_ns: np.ndarray, tol_ns: int, *, reuse: bool = False) -> np.ndarray:
    """For each stamp of ``a``: the index into ``b`` of the stamp paired with it, or -1 (none within ``tol_ns``).

    One-to-one (the default; the rule of TUM's ``associate.py``): of all pairs within ``tol_ns`` the closest in
    time is taken first, then the closest of the rest whose two members are both still free, and so on; ties go to
    the earlier ``a``, then the earlier ``b``. ``reuse``: every ``a`` takes its nearest ``b`` within ``tol_ns`` (the
    earlier on a tie), whether or not another ``a`` has it too."""
    a = np.asarray(a_ns, dtype=np.int64)
    b = np.asarray(b_ns, dtype=np.int64)
    out = np.full(len(a), -1, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return out
    ob = np.argsort(b, kind="stable")
    bs = b[ob]
    lo = np.searchsorted(bs, a - tol_ns, side="left")
    hi = np.searchsorted(bs, a + tol_ns, side="right")
    cnt = hi - lo
    if not cnt.any():
        return out
    # every candidate pair (a index, sorted-b index) within the tolerance, closest first
    ia = np.repeat(np.arange(len(a)), cnt)
    jb = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
    order = np.lexsort((jb, a[ia], np.abs(a[ia] - bs[jb])))
    ia, jb = ia[order], jb[order]
    if reuse:
        first = np.unique(ia, return_index=True)[1]  # each a's closest candidate
        out[ia[first]] = ob[jb[first]]
        return out
    free_b = np.ones(len(bs), dtype=bool)
    for i, j in zip(ia.tolist(), jb.tolist(), strict=True):
        if out[i] < 0 and free_b[j]:
            out[i] = ob[j]
            free_b[j] = False
    return out


def _list_base(lst: Path, names: list[Path], images: str) -> tuple[Path, str, str]:
    """The folder the names of an image list are relative to: ``--images`` when given and the files are there,
    else the list's own folder when they are there instead (TUM RGB-D's rgb.txt names ``rgb/<t>.png``, relative to
    the sequence folder, so ``--images SEQ/rgb`` with it would double ``rgb/``). With the note that says which
    was used, and the hint for an error on missing files (both bases tried)."""
    bases = list(dict.fromkeys([Path(images), lst.parent] if images else [lst.parent]))
    found = [sum((b / n).is_file() for n in names) for b in bases]
    k = 1 if len(bases) > 1 and found[1] > found[0] else 0
    if len(bases) == 1:
        return bases[0], "", f"; names in an image list are relative to its folder ({bases[0]}) or --images DIR"
    other = f"relative to {bases[1 - k]} {found[1 - k]} of them exist"
    if k == 1:
        note = (f"the names in {lst.name} are relative to its own folder ({lst.parent}), not to --images "
                f"({images}), where {found[0]} of the {len(names)} files exist: {lst.parent} used")  # fmt: skip
        return bases[1], note, f"; names in {lst.name} taken relative to its folder {lst.parent} ({other})"
    hint = (f"; names in {lst.name} taken relative to --images {images} ({other}): give --images the folder the "
            f"names are relative to, or leave --images out to take the list's folder ({lst.parent})")  # fmt: skip
    return bases[0], "", hint


def _tum_images(cfg: ImagesConfig, traj: Path) -> tuple[list[Path], np.ndarray, str, str]:
    """The images and their stamps (int64 ns): a ``timestamp filename`` list (``--image-list``), else the folder's
    files, each named by its time in seconds; with a note (which folder a list's names are relative to) and the
    hint for an error on missing files."""
    if cfg.image_list:
        lst = Path(cfg.image_list)
        names, ns = read_stamped_list(lst, Path(), "image list")
        base, note, hint = _list_base(lst, names, cfg.images)
        return [base / n for n in names], ns, note, hint
    if not cfg.images:
        raise PoseImportError(f"{traj}: a TUM trajectory needs the images: --images DIR (and/or --image-list rgb.txt)")
    files = image_files(Path(cfg.images), "TUM images")
    ts = []
    for f in files:
        t = stamp_of_name(f.stem)
        if t is None:
            raise PoseImportError(
                f"{f}: no timestamp in the file name (expected seconds, e.g. 1305031102.175304.png); give a "
                "'timestamp filename' list with --image-list"
            )
        ts.append(t)
    return files, np.asarray(ts, dtype=np.int64), "", ""


FRAME_NUMBER_MAX_S = 10**6  # image "times" that are consecutive whole numbers below this: frame numbers


def _not_times_hint(cfg: ImagesConfig, paths: list[Path], ns_img: np.ndarray, ns_p: np.ndarray) -> str:
    """Why the images' times cannot be capture times, when they evidently are not -- whole consecutive numbers
    from a small one (``000000.png`` ...: frame numbers, KITTI's naming), or all before / after the trajectory --
    with what to do; empty otherwise."""
    src = f"the list {Path(cfg.image_list).name}" if cfg.image_list else "the file names"
    s = np.sort(ns_img)
    sec = 1_000_000_000
    numbered = (len(s) > 1 and bool(np.all(s % sec == 0)) and bool(np.all(np.diff(s) == sec))
                and s[0] < FRAME_NUMBER_MAX_S * sec)  # fmt: skip
    if numbered:
        why = (f"The image times from {src} are the consecutive whole numbers {s[0] // sec} .. {s[-1] // sec}: they "
               "look like frame numbers, not capture times in seconds")  # fmt: skip
    elif s[-1] < ns_p[0] or s[0] > ns_p[-1]:
        why = (f"The image times from {src} ({s[0] / 1e9:.3f} .. {s[-1] / 1e9:.3f} s) lie wholly "
               f"{'before' if s[-1] < ns_p[0] else 'after'} the trajectory ({ns_p[0] / 1e9:.3f} .. "
               f"{ns_p[-1] / 1e9:.3f} s): they are not times on the trajectory's clock")  # fmt: skip
    else:
        return ""
    same = (f" The trajectory has {len(ns_p)} poses for the {len(paths)} images: if it is one pose per image in "
            "their order, an --image-list whose line k holds the time of pose k and the k-th image's name pairs "
            "them by index." if len(ns_p) == len(paths) else "")  # fmt: skip
    return (
        f"{why}. Give each image its capture time on the trajectory's clock with --image-list FILE ('timestamp "
        f"filename' lines, as TUM RGB-D's rgb.txt).{same} (Poses one per image in order can also be written as a "
        "KITTI pose file, 12 numbers per line, the 3x4 T_world_cam, which --format kitti matches to the sorted "
        "images by index.)"
    )


SAME_POSE_SHARE = 0.05  # more images than this share (and more than 2) given one end pose of a trajectory: refused


def _check_same_pose(traj: Path, cfg: ImagesConfig, paths: list[Path], ti: np.ndarray, tp: np.ndarray,
                     hint: str) -> None:  # fmt: skip
    """Refuse when many images outside the trajectory's time span would all get the same end pose: nearest-time
    matching with a --tolerance far beyond the trajectory's sample spacing (each of them is a different view,
    never taken at that pose)."""
    before, after = ti < tp[0], ti > tp[-1]
    groups = [("before the trajectory's first pose", before), ("after the trajectory's last pose", after)]
    if len(tp) == 1:
        groups = [("away from the trajectory's only pose", before | after)]
    for where, g in groups:
        m = int(g.sum())
        if m <= max(2, SAME_POSE_SHARE * len(paths)):
            continue
        far = float(np.abs(ti[g] - (tp[0] if where.startswith("before") else tp[-1])).max()) / 1e9
        spacing = (f"far beyond the trajectory's sample spacing (median {float(np.median(np.diff(tp))) / 1e9:.3f} s)"
                   if len(tp) > 1 else "with a single pose")  # fmt: skip
        shown = ", ".join([p.name for p, k in zip(paths, g, strict=True) if k][:3]) + (" ..." if m > 3 else "")
        raise PoseImportError(
            f"{traj}: {m} of {len(paths)} images ({shown}) lie {where}, up to {far:.3f} s away, and would all "
            f"get that one pose: --tolerance {cfg.tolerance_s} s reaches {spacing}, so nearest-time matching gives "
            "different images the same pose, and the dataset would be wrong. "
            + (hint + " " if hint else "Check that images and poses share a clock. ")
            + "Otherwise lower --tolerance to about the sample spacing and pass --skip-unmatched to leave those "
            "images out"
        )


def _tum_depths(cfg: ImagesConfig, paths: list[Path], ns: np.ndarray) -> tuple[list[Path | None], str, str]:
    """Each image's depth image from ``--depth-list`` (None: none within ``depth_tolerance_s``; see
    :func:`associate_stamps`), why each unpaired image has none, and the note for the report."""
    lst = Path(cfg.depth_list)
    dpaths, dns = read_stamped_list(lst, lst.parent, "depth list")
    tol_ns = round(cfg.depth_tolerance_s * 1e9)
    k = associate_stamps(ns, dns, tol_ns, reuse=cfg.depth_list_reuse)
    paired = k >= 0
    depths: list[Path | None] = [dpaths[j] if j >= 0 else None for j in k.tolist()]
    used = [p for p in depths if p is not None]
    gone = [p for p in dict.fromkeys(used) if not p.is_file()]
    if gone:
        shown = ", ".join(str(p) for p in gone[:3]) + (" ..." if len(gone) > 3 else "")
        raise PoseImportError(
            f"{lst}: {len(gone)} of the depth images it lists (paired with images) are missing: {shown}; names "
            f"in a depth list are relative to its folder ({lst.parent})"
        )
    why = ""
    if not paired.all():
        bad = np.flatnonzero(~paired).tolist()
        near = [int(np.abs(dns - ns[i]).min()) for i in bad]  # to the nearest depth image, paired or not
        taken = sum(d <= tol_ns for d in near)  # its nearest depth image went to a nearer image
        named = [
            f"{paths[i].name} (its nearest depth image, {d / 1e9:.3f} s away, is paired with a nearer image)"
            if d <= tol_ns
            else f"{paths[i].name} (nearest depth image {d / 1e9:.3f} s away)"
            for i, d in zip(bad[:3], near[:3], strict=True)
        ]
        n_bad = int((~paired).sum())
        why = (
            f"{n_bad} of {len(paths)} images have no depth image within {cfg.depth_tolerance_s} s of their "
            f"timestamp ({', '.join(named)}{' ...' if n_bad > 3 else ''}); the depth list covers "
            f"{dns.min() / 1e9:.3f} .. {dns.max() / 1e9:.3f} s"
            + (f"; {taken} of them lost their nearest depth image to a nearer image (each depth image is used once; "
               "--set depth_list_reuse=true lets images share one)" if taken else "")
        )  # fmt: skip
    if paired.any():
        dt = np.abs(ns[paired] - dns[k[paired]]) / 1e9
        how = ("each image's nearest depth image (depth_list_reuse: one may serve several images)"
               if cfg.depth_list_reuse else "each depth image used once (TUM's associate.py rule)")  # fmt: skip
        note = (
            f"depth images from {lst.name} paired by time: {int(paired.sum())} pairs within "
            f"{cfg.depth_tolerance_s} s (median {1e3 * float(np.median(dt)):.1f} ms, max "
            f"{1e3 * float(dt.max()):.1f} ms), {how}"
        )
    else:
        note = ""
    return depths, why, note


TUM_DEPTH_SCALE = 5000.0  # TUM RGB-D's 16-bit depth PNGs: units per metre (its dataset's documentation)


def _kept(
    keep: np.ndarray, paths: list[Path], ti: np.ndarray, ns_img: np.ndarray, depths: list[Path | None] | None
) -> tuple[list[Path], np.ndarray, np.ndarray, list[Path | None] | None]:
    """The images ``keep`` (bool, one per image) selects, with their times and depth files, in order."""
    kept = [p for p, k in zip(paths, keep, strict=True) if k]
    kept_depths = None if depths is None else [d for d, k in zip(depths, keep, strict=True) if k]
    return kept, ti[keep], ns_img[keep], kept_depths


def read_tum(path: str | Path, cfg: ImagesConfig) -> PosedImages:
    traj = Path(path)
    ns_p, Tp, lines = read_tum_poses(traj)  # the one reader of TUM lines: exact int ns, rotations checked
    order = np.argsort(ns_p, kind="stable")
    ns_p, Tp, lines = ns_p[order], Tp[order], [lines[i] for i in order]
    keep = np.concatenate([[True], np.diff(ns_p) > 0])  # a repeated stamp: its first line
    ns_p, Tp, lines = ns_p[keep], Tp[keep], [ln for ln, k in zip(lines, keep, strict=True) if k]
    paths, ns_img, base_note, missing_hint = _tum_images(cfg, traj)
    order_i = np.argsort(ns_img, kind="stable")
    paths = [paths[i] for i in order_i]
    ns_img = ns_img[order_i]
    not_times = _not_times_hint(cfg, paths, ns_img, ns_p)
    notes = [base_note] if base_note else []
    if base_note:
        log.info("%s", base_note)
    depths: list[Path | None] | None = None
    if cfg.depth_list:  # depth paired by time first, over all the images (as associate.py pairs rgb.txt, depth.txt)
        depths, why, note = _tum_depths(cfg, paths, ns_img)
        notes += [note] if note else []
        if why:
            if not cfg.skip_unmatched:
                raise PoseImportError(
                    f"{cfg.depth_list}: {why}. Check that the images and the depth list share a clock, raise "
                    "--depth-tolerance, or pass --skip-unmatched to leave those frames out"
                )
            has = np.array([d is not None for d in depths])
            notes.append(f"{why.split(' (')[0]} and were dropped (skip_unmatched)")
            paths, ns_img = [p for p, k in zip(paths, has, strict=True) if k], ns_img[has]
            depths = [d for d in depths if d is not None]
            if not paths:
                raise PoseImportError(f"{cfg.depth_list}: no image has a depth image within {cfg.depth_tolerance_s} s")
    # int ns relative to the first pose, both as written (no float seconds)
    tp = ns_p - ns_p[0]
    ti = ns_img - ns_p[0]
    j = np.clip(np.searchsorted(tp, ti), 1, len(tp) - 1) if len(tp) > 1 else np.zeros(len(ti), np.int64)
    near = np.where(np.abs(tp[j - 1] - ti) <= np.abs(tp[j] - ti), j - 1, j) if len(tp) > 1 else j
    dt = np.abs(tp[near] - ti) / 1e9
    ok = dt <= cfg.tolerance_s
    notes.insert(
        0, "TUM lines: timestamp tx ty tz qx qy qz qw, T_world_cam; images matched by time: a pose within "
        f"{cfg.tolerance_s} s is required, the pose is interpolated between the poses around the image time"
    )  # fmt: skip
    if not ok.all():
        bad_i = np.flatnonzero(~ok)
        shown = ", ".join(f"{paths[k].name} ({dt[k]:.3f} s)" for k in bad_i[:3]) + (" ..." if len(bad_i) > 3 else "")
        if not cfg.skip_unmatched:
            raise PoseImportError(
                f"{traj}: {len(bad_i)} of {len(paths)} images have no pose within {cfg.tolerance_s} s of their "
                f"timestamp (nearest pose: {shown}); the trajectory covers {ns_p[0] / 1e9:.3f} .. "
                f"{ns_p[-1] / 1e9:.3f} s. "
                + (not_times or "Check that images and poses share a clock, raise --tolerance, or pass "
                   "--skip-unmatched")
            )  # fmt: skip
        notes.append(f"{len(bad_i)} images without a pose within {cfg.tolerance_s} s were dropped (skip_unmatched)")
        paths, ti, ns_img, depths = _kept(ok, paths, ti, ns_img, depths)
        if not paths:
            raise PoseImportError(
                f"{traj}: no image has a pose within {cfg.tolerance_s} s" + (f"; {not_times}" if not_times else "")
            )
    _check_same_pose(traj, cfg, paths, ti, tp, not_times)
    if cfg.skip_missing:  # images listed but not on disk: left out, named in the notes (as transforms.json's)
        there = np.array([p.is_file() for p in paths], bool)
        if not there.all():
            gone = [p.name for p, k in zip(paths, there, strict=True) if not k]
            shown = ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else "")
            notes.append(f"{len(gone)} of {len(paths)} images left out: image missing (skip_missing): {shown}")
            paths, ti, ns_img, depths = _kept(there, paths, ti, ns_img, depths)
            if not paths:
                raise PoseImportError(f"{traj}: every listed image is missing{missing_hint}")
    missing_images(paths, traj, missing_hint + "; pass --skip-missing to leave those frames out")
    inside = (ti >= tp[0]) & (ti <= tp[-1])
    T = np.empty((len(paths), 4, 4))
    if inside.any() and len(tp) > 1:
        from pose2rgbd.geometry.interpolation import interpolate_poses
        from pose2rgbd.geometry.transforms import tq_from_T

        tt, qq = tq_from_T(Tp)
        t_i, q_i = interpolate_poses(tp, tt, qq, ti[inside])
        T[inside] = T_from_tq(t_i, q_i)
    out = ~inside
    if out.any():
        nearest = np.clip(np.searchsorted(tp, ti[out]), 0, len(tp) - 1)
        T[out] = Tp[nearest]
    T = T @ axes_matrix(cfg.camera_axes)
    if cfg.camera_axes != "optical":
        notes.append(f"camera axes '{cfg.camera_axes}' converted to optical")
    w, h = image_size(paths[0])
    cams, how = cfg.flag_or_exif_cameras(paths, w, h, "a TUM trajectory")
    notes += [how, "the world frame is the trajectory's own (not ENU, no datum)"]
    # a depth list is TUM RGB-D's layout, whose 16-bit depth PNGs hold 5000 units per metre (--depth-scale wins)
    tum_png = depths is not None and all(d is not None and d.suffix.lower() == ".png" for d in depths)
    return PosedImages(
        kind="tum", source=traj, images=paths, T_world_cam=T, stamps_ns=ns_img, cameras=cams,
        convention="TUM poses are T_world_cam of the camera's optical frame (no axis change)", depths=depths,
        quaternion_order="xyzw", quaternion_axes=axes_matrix(cfg.camera_axes),
        assumptions=notes, depth_scale=TUM_DEPTH_SCALE if tum_png else None,
        depth_scale_note="TUM RGB-D's depth scale (the PNGs of a --depth-list)" if tum_png else "",
    )  # fmt: skip


def read_tum_poses(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The poses of a TUM trajectory as written, in file order: the stamps (int64 ns, from the first column as
    written, exactly: :func:`stamp_ns`; seconds in TUM RGB-D, the image index in a ``localize images`` .tum),
    ``T_world_cam`` (N, 4, 4) in the file's own camera axes, and the 1-based line of each pose. Lines are
    ``timestamp tx ty tz qx qy qz qw`` (quaternion x y z w, Hamilton, unit length to 1e-3, else refused with the
    hint "is w first?"), whitespace (or comma) separated, blank and ``#`` lines skipped; rotations checked as every
    importer's (:func:`check_rotations`). Not sorted, repeats kept: time order is the caller's business (``render
    trajectory`` renders the lines in file order; :func:`read_tum` sorts)."""
    traj = Path(path)
    rows, lines = read_table(traj, "TUM trajectory")
    if rows.shape[1] != 8:
        raise PoseImportError(f"{traj}: {rows.shape[1]} numbers per line; TUM has 8 (timestamp tx ty tz qx qy qz qw)")
    if not np.all(np.isfinite(rows)):
        bad_row = int(np.argmax(~np.isfinite(rows).all(axis=1)))
        raise PoseImportError(f"{traj}:{lines[bad_row]}: NaN or inf")
    q = rows[:, 4:8]
    nq = np.linalg.norm(q, axis=1)
    bad = np.flatnonzero(~(np.abs(nq - 1.0) <= 1e-3))
    if bad.size:
        raise PoseImportError(
            f"{traj}:{lines[bad[0]]}: quaternion (qx qy qz qw) has length {nq[bad[0]]:.4f}, not 1; TUM lines are "
            "'timestamp tx ty tz qx qy qz qw' (is w first?)"
        )
    T = check_rotations(T_from_tq(rows[:, 1:4], q / nq[:, None]), [f"{traj}:{ln}" for ln in lines])
    text = traj.read_text(errors="replace").splitlines()
    stamps = []
    for ln in lines:
        first = text[ln - 1].strip().replace(",", " ").split()[0]
        ns = stamp_ns(first)
        if ns is None:
            raise PoseImportError(f"{traj}:{ln}: timestamp {first!r} is not a time in seconds that fits int64 ns")
        stamps.append(ns)
    return np.asarray(stamps, dtype=np.int64), T, lines
