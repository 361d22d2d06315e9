"""Unordered photos of one place (benchmark, not a test): a map of 80 % of them, the other 20 % localized.

    .venv/bin/python bench/bench_unordered_photos.py PHOTOS [--work DIR] [--query-share 0.2] [--seed 0]

``PHOTOS`` is a folder of photos of one place with their reconstruction: an LLFF ``poses_bounds.npy`` beside an
``images/`` folder, or a COLMAP model (``sparse/0`` with ``cameras``, ``images``, ``points3D`` .bin or .txt) --
whatever ``pose2rgbd convert images`` reads. The photos are never copied into the project; this script builds the
test set from the given copy:

1. the photos, in name order, split reproducibly (``--seed``) into ``--query-share`` queries and the rest for the
   map; the map's share gets a source folder of its own (links to the photos and the rows of their poses);
2. ``pose2rgbd convert images`` of the map share, ``pose2rgbd map build`` of it (no depth: triangulated);
3. the queries localized one at a time, unordered (``localize images --no-sequence``, in this process to time each
   photo: read, SIFT, place recognition, matching, PnP, verification), with the camera the reconstruction gives
   them (``--camera``; ``--no-camera``: the map's camera, with its warning; ``--no-camera --exif``: each photo's
   EXIF focal length where it has one, ``--camera exif``);
4. each fix compared with the reconstruction's pose of that photo: fixed share, wrong fixes (position error over
   ``--wrong`` times the median camera-to-scene distance, in the reconstruction's units), median position and
   rotation error, milliseconds per photo (p50, p99).

Prints the machine (CPU model and SIMD flags, cores, load average) and the commands. Exits with a message when
``PHOTOS`` holds no photos with a reconstruction. A public set that fits: the Statue of Liberty photos of
github.com/vork/StatueOfLiberty-Photogrammetry (135 tourist photos, Flickr / Unsplash, cropped to 800x1200 by that
repository; ``images/`` + ``poses_bounds.npy`` from its COLMAP reconstruction; it states no licence of its own).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pose2rgbd.experiments.machine import cpu_flags  # noqa: E402


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def run(cmd: list[str]) -> float:
    print("  $ " + shlex.join(cmd[2:] if cmd[:3] == [sys.executable, "-m", "pose2rgbd"] else cmd), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {shlex.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def source_of(photos: Path) -> tuple[str, Path]:
    """('llff', poses_bounds.npy) or ('colmap', model folder); exits with a message when neither is there."""
    from pose2rgbd.convert.posed_images.colmap import find_model_dir

    if (photos / "poses_bounds.npy").is_file() and (photos / "images").is_dir():
        return "llff", photos / "poses_bounds.npy"
    model = find_model_dir(photos) if photos.is_dir() else None
    if model is not None:
        return "colmap", model
    sys.exit(
        f"{photos}: no photos with a reconstruction here (want images/ with poses_bounds.npy, or a COLMAP model "
        "sparse/0 with its images). Fetch a set first, e.g. git clone "
        "https://github.com/vork/StatueOfLiberty-Photogrammetry, and pass its folder"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", type=Path, help="folder: images/ + poses_bounds.npy, or a COLMAP project")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_unordered_photos"), help="scratch folder")
    p.add_argument("--query-share", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="which photos are queries (reproducible)")
    p.add_argument("--wrong", type=float, default=0.1, help="wrong fix: error over this x median scene distance")
    p.add_argument("--no-camera", action="store_true", help="queries without their camera (the map's, warned)")
    p.add_argument("--exif", action="store_true", help="with --no-camera: each photo's EXIF focal (--camera exif)")
    p.add_argument("--rebuild", action="store_true", help="build the dataset and the map again")
    p.add_argument("--set", action="append", default=[], help="structure.KEY=VALUE for the localizer (repeatable)")
    p.add_argument("--map-set", action="append", default=[], help="KEY=VALUE for map build (repeatable)")
    p.add_argument("--note", default="", help="load note, e.g. 'under load'")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    from pose2rgbd.convert.posed_images.colmap import read_colmap
    from pose2rgbd.convert.posed_images.common import ImagesConfig
    from pose2rgbd.convert.posed_images.llff import read_llff

    kind, src = source_of(args.photos)
    posed = (read_llff if kind == "llff" else read_colmap)(src, ImagesConfig())
    n = len(posed.images)
    rng = np.random.default_rng(args.seed)
    q = np.sort(rng.choice(n, max(1, round(args.query_share * n)), replace=False))
    is_q = np.zeros(n, bool)
    is_q[q] = True
    print(f"{args.photos}: {n} photos ({kind}), {int(is_q.sum())} queries, {int((~is_q).sum())} in the map "
          f"(seed {args.seed})")  # fmt: skip

    work = args.work
    ds, mp, qdir = work / "dataset", work / "map", work / "queries"
    py = [sys.executable, "-m", "pose2rgbd"]
    if args.rebuild or not (mp / "map.json").is_file():
        import shutil

        if work.exists():
            shutil.rmtree(work)
        (work / "src" / "images").mkdir(parents=True)
        qdir.mkdir()
        for i, f in enumerate(posed.images):
            os.symlink(f.resolve(), (qdir if is_q[i] else work / "src" / "images") / f.name)
        if kind == "llff":
            np.save(work / "src" / "poses_bounds.npy", np.load(src)[~is_q])
            source = work / "src" / "poses_bounds.npy"
        else:  # a COLMAP model of the map's photos only (pycolmap drops the others and their observations)
            import pycolmap

            rec = pycolmap.Reconstruction(str(src))
            keep = {f.name for i, f in enumerate(posed.images) if not is_q[i]}
            for image_id in [k for k, im in rec.images.items() if im.name not in keep]:
                rec.deregister_image(image_id)
            (work / "src" / "sparse" / "0").mkdir(parents=True)
            rec.write(str(work / "src" / "sparse" / "0"))
            source = work / "src"
        run([*py, "convert", "images", str(source), "--out", str(ds), "--no-progress"])
        t_build = run([*py, "map", "build", "--dataset", str(ds), "--out", str(mp), "--no-progress",
                       *[a for kv in args.map_set for a in ("--set", kv)]])  # fmt: skip
        print(f"  map build: {t_build:.1f} s")

    from pose2rgbd.geometry.lens import QueryCamera
    from pose2rgbd.inference.image_sequence import localize_sequence
    from pose2rgbd.inference.structure import StructureConfig
    from pose2rgbd.inference.structure_load import load_structure_localizer

    cfg = StructureConfig(use_previous_fix=False)
    for kv in args.set:
        k, _, v = kv.partition("=")
        *outer, k = k.removeprefix("structure.").split(".")
        obj = cfg.features if outer == ["features"] else cfg
        cur = getattr(obj, k)
        obj = dataclasses.replace(obj, **{k: type(cur)(v) if not isinstance(cur, bool) else v.lower() == "true"})
        cfg = dataclasses.replace(cfg, features=obj) if outer else obj
    loc = load_structure_localizer(mp, cfg)
    loc.use_exif = args.no_camera and args.exif
    files = sorted(qdir.iterdir())
    truth = {f.name: posed.T_world_cam[i] for i, f in enumerate(posed.images)}
    cams = {f.name: posed.cameras[i] for i, f in enumerate(posed.images)}
    centres = posed.T_world_cam[:, :3, 3]
    scene = np.median(np.linalg.norm(centres - np.median(centres, axis=0), axis=1))
    bound = args.wrong * scene
    errs, rots, times, reasons, wrong = [], [], [], {}, 0
    lenses: dict[tuple[float, ...], QueryCamera] = {}  # one object per camera: the localizer judges each camera's
    focal_flags, focal_wrong = 0, 0  # fit over its fixes (inference/focal_check.py) and starts afresh on another
    for f in files:
        if not args.no_camera:
            c = cams[f.name]
            key = (c.fx, c.fy, c.cx, c.cy, c.width, c.height)
            loc.query_lens = lenses.setdefault(key, QueryCamera(c.fx, c.fy, c.cx, c.cy, None, c.width, c.height))
        r = next(iter(localize_sequence(loc, [f])))
        times.append(r.seconds * 1e3)
        fix = r.fix
        if fix is None or not fix.ok:
            why = r.summary_reason
            reasons[why] = reasons.get(why, 0) + 1
            continue
        T = truth[f.name]
        e = float(np.linalg.norm(fix.T_world_cam[:3, 3] - T[:3, 3]))
        dR = fix.T_world_cam[:3, :3].T @ T[:3, :3]
        rots.append(math.degrees(math.acos(np.clip((np.trace(dR) - 1) / 2, -1, 1))))
        errs.append(e)
        wrong += e > bound
        focal_flags += "camera focal" in fix.flag
        focal_wrong += "camera focal" in fix.flag and e > bound
    nq = len(files)
    res = {
        "photos": str(args.photos), "queries": nq, "map_photos": int((~is_q).sum()), "fixed": len(errs),
        "fixed_pct": 100.0 * len(errs) / nq, "wrong_fixes": int(wrong), "wrong_bound": bound, "scene_units": scene,
        "median_error": float(np.median(errs)) if errs else math.nan,
        "median_rot_deg": float(np.median(rots)) if rots else math.nan,
        "ms_p50": float(np.percentile(times, 50)), "ms_p99": float(np.percentile(times, 99)),
        "ms_mean": float(np.mean(times)), "no_fix": reasons, "settings": args.set, "map_settings": args.map_set,
        "focal_scale_median": loc.focal.median, "focal_flagged": focal_flags, "focal_flagged_wrong": focal_wrong,
    }  # fmt: skip
    load = os.getloadavg()
    print(f"machine: {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores, load average {load[0]:.1f} "
          f"{args.note}".rstrip())  # fmt: skip
    print(f"command: {shlex.join([sys.argv[0], *sys.argv[1:]])}")
    print(f"  fixed {res['fixed']} of {nq} ({res['fixed_pct']:.1f} %), wrong fixes {wrong} (error > {bound:.3g} "
          f"units = {args.wrong:g} x the cameras' median distance from their median centre, {scene:.3g})")  # fmt: skip
    print(f"  median error {res['median_error']:.4g} units ({res['median_error'] / scene:.2%} of that distance), "
          f"{res['median_rot_deg']:.3g} deg; per photo p50 {res['ms_p50']:.0f} ms, p99 {res['ms_p99']:.0f} ms, "
          f"mean {res['ms_mean']:.0f} ms")  # fmt: skip
    fit = (f"{loc.focal.cameras} cameras, each judged on its own fixes" if loc.focal.cameras > 1 else
           f"the last fixes' matches fit {loc.focal.median:.3f} x the focal length")  # fmt: skip
    print(f"  camera check: {fit}; {focal_flags} fix(es) flagged for the camera, {focal_wrong} of them wrong")
    if reasons:
        print("  no fix: " + ", ".join(f"{v} {k}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
