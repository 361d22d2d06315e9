"""A place map at scale (not a test): build time per worker count, and a map merged from pieces against one build.

    .venv/bin/python bench/bench_map_scale.py --dataset D --work W [--sources 0] [--workers 1 2] [--pieces 2]
        [--note "shared machine"]

1. ``map build`` of the selection with each ``--workers`` count, timed (wall and the CPU seconds of the build and
   its worker processes, from ``resource.getrusage``), each into its own folder under ``--work``; the maps are
   checked to be the same arrays byte for byte.
2. The selection built as ``--pieces`` pieces (``selection.piece K/N``, one process each), merged with
   ``merge_maps``; every frame of the dataset that is not a keyframe (the held-out routes) localized without a prior
   against the one-build map, each piece and the merged map: fix rate, median position / rotation error, largest
   position error.

Prints the CPU model and the load average before and after each build: a machine shared with other jobs gives
each job its share of the cores whatever its process count (Linux ``sched_autogroup``), so a speed-up needs an
idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pose2rgbd.experiments.machine import cpu_line  # noqa: E402


def cpu_s() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True, help="folder for the maps (replaced)")
    p.add_argument("--sources", type=int, nargs="*", default=[0], help="the keyframes' sources (default: 0)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--pieces", type=int, default=2, help="pieces to build and merge (0: time the builds only)")
    p.add_argument("--note", default="")
    args = p.parse_args()

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.evaluation.localization import pose_errors
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, PlaceMap, build_map, merge_maps

    print(f"# {cpu_line()}; {args.note or 'no note'}", flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    sel = MapSelection(sources=list(args.sources))
    built = []
    for n, w in enumerate(args.workers):
        out = args.work / f"build{n + 1}-workers-{w}"
        load0, c0, t0 = os.getloadavg()[0], cpu_s(), time.perf_counter()
        m = build_map(args.dataset, out, MapBuildConfig(selection=sel, workers=w), progress=False)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        print(f"build --workers {w}: {m['keyframes']} keyframes ({m['points']}), wall {wall:.1f} s, CPU {cpu:.1f} s, "
              f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        built.append(out)
    names = ["poses", "kp_offsets", "kp_xy", "kp_desc", "kp_xyz", "global", "images_offsets"]
    for other in built[1:]:
        same = all(
            np.array_equal(np.load(built[0] / f"{n}.npy"), np.load(other / f"{n}.npy"), equal_nan=True) for n in names
        )
        print(f"{other.name} == {built[0].name}: {same}")
    if args.pieces < 2:
        return
    pieces = []
    for k in range(1, args.pieces + 1):
        out = args.work / f"piece-{k}"
        build_map(args.dataset, out, MapBuildConfig(selection=dataclasses.replace(sel, piece=f"{k}/{args.pieces}"),
                                                    workers=1), progress=False)  # fmt: skip
        pieces.append(out)
    merged = args.work / "merged"
    merge_maps(pieces, merged, progress=False)
    ds = Dataset(args.dataset)
    rows = np.setdiff1d(np.arange(len(ds)), PlaceMap(built[0]).frames)
    T_true = ds.frames.T_world_cam[rows]
    images = [ds.read_rgb(int(i)) for i in rows]
    print(f"| map | keyframes | fixed (of {len(rows)}) | median position / rotation error | largest |")
    print("|---|---:|---:|---:|---:|")
    for name, path in (
        [("one build", built[0])]
        + [(f"piece {k + 1}/{len(pieces)}", q) for k, q in enumerate(pieces)]
        + [("pieces merged", merged)]
    ):
        loc = StructureLocalizer(PlaceMap(path), dataclasses.replace(StructureConfig(), use_previous_fix=False))
        fixes = [loc.localize_one(im) for im in images]
        ok = np.array([f.ok for f in fixes])
        pos, rot = pose_errors(np.stack([f.T_world_cam for f in fixes])[ok], T_true[ok])
        print(f"| {name} | {len(PlaceMap(path))} | {ok.sum()} ({100 * ok.mean():.1f} %) | {np.median(pos):.3f} m / "
              f"{np.median(rot):.3f} deg | {pos.max():.2f} m |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
