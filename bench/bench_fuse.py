"""The fused geometry of a large place (not a test): `pose2rgbd map fuse` timed, its peak memory measured.

    .venv/bin/python bench/bench_fuse.py --work W [--size 320 240] [--duration 360] [--stride 5] [--runs 2]
        [--set tile_blocks=5000 ...] [--map M] [--note "shared machine"]

1. The simulator's survey (``pose2rgbd sim --no-bag --no-video --size W H --duration D --stride S``: 2,161 frames
   with the defaults) and its place map (``map build --sources 0``: the survey's frames as keyframes), made once
   into ``--work`` and reused by later runs; or ``--map`` names a map that has depth.
2. ``pose2rgbd map fuse --map M --overwrite --no-progress [--set ...]`` in a child process, ``--runs`` times: its
   wall time, CPU time and peak resident memory (the child's own ``ru_maxrss``, from ``os.wait4``: imports and
   shared libraries included, as ``/usr/bin/time -v`` reports it), and what ``fused.json`` says (voxel size,
   blocks, tiles, triangles).

The issue's target: 2,000 keyframes in at most 2 minutes and 300 MB on 2 cores. Prints the load average before each
run (another job on the machine lengthens the wall time) and, after the runs, the CPU model and its vector flags;
the results go to ``W/bench_fuse.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's pose2rgbd, not an installed one
from pose2rgbd.experiments.machine import cpu_line  # noqa: E402


def pose2rgbd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pose2rgbd", *args]


def make_map(work: Path, size: tuple[int, int], duration: float, stride: int) -> Path:
    """The survey's place map under ``work`` (made once)."""
    tag = f"{size[0]}x{size[1]}_{duration:g}s_stride{stride}"
    sim, out = work / f"sim_{tag}", work / f"map_{tag}"
    if not (out / "map.json").is_file():
        if not (sim / "dataset").is_dir():
            print(f"making the survey {sim} ...", flush=True)
            subprocess.run(pose2rgbd("sim", "--out", str(sim), "--no-bag", "--no-video", "--size", str(size[0]),
                                     str(size[1]), "--duration", str(duration), "--stride", str(stride)),
                           check=True)  # fmt: skip
        print(f"building the map {out} ...", flush=True)
        subprocess.run(pose2rgbd("map", "build", "--dataset", str(sim / "dataset"), "--out", str(out), "--sources",
                                 "0", "--no-progress"), check=True)  # fmt: skip
    return out


def fuse_once(map_path: Path, sets: list[str], log: Path) -> dict[str, float | int | str | None]:
    """One ``map fuse`` in a child process (its output into ``log``): wall, CPU and peak RSS of that child alone."""
    argv = pose2rgbd("map", "fuse", "--map", str(map_path), "--overwrite", "--no-progress")
    for s in sets:
        argv += ["--set", s]
    with log.open("w") as out:
        t0 = time.monotonic()
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own usage, not every child's so far
        wall = time.monotonic() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"map fuse failed ({child.returncode}):\n{log.read_text()[-3000:]}")
    meta = json.loads((map_path / "fused" / "fused.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # kB on Linux
        **{k: meta.get(k) for k in ("keyframes", "voxel_size_m", "voxel_blocks", "tiles", "triangles", "fuse_s")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="folder for the survey, its map and the results")
    p.add_argument("--map", type=Path, help="fuse this map instead of the survey's")
    p.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--duration", type=float, default=360.0, help="the survey's seconds")
    p.add_argument("--stride", type=int, default=5, help="every n-th simulated frame")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a fusion setting (map fuse --set), repeatable")  # fmt: skip
    p.add_argument("--note", default="")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    map_path = args.map or make_map(args.work, tuple(args.size), args.duration, args.stride)
    runs: list[dict[str, float | int | str | None]] = []
    for r in range(args.runs):
        load = os.getloadavg()[0]
        res = fuse_once(map_path, args.sets, args.work / "bench_fuse.log")
        res["load_before"] = round(load, 2)
        runs.append(res)
        print(f"run {r + 1}: {res['keyframes']} keyframes, {res['voxel_blocks']} blocks in {res['tiles']} tiles, "
              f"{res['triangles']} triangles: {res['wall_s']} s wall, {res['cpu_s']} s CPU, "
              f"{res['peak_rss_mb']} MB peak RSS (load before {load:.2f})", flush=True)  # fmt: skip
    # named without torch (machine_description imports it): a child forked from a process that large reports that
    # process's peak as its own (Linux carries the peak RSS into the child: 47 MB more on a small map)
    machine = cpu_line()
    print(f"CPU: {machine}", flush=True)
    worst = {k: max(float(r[k] or 0.0) for r in runs) for k in ("wall_s", "peak_rss_mb")}
    met = worst["wall_s"] <= 120 and worst["peak_rss_mb"] <= 300
    print(f"worst of {len(runs)}: {worst['wall_s']} s, {worst['peak_rss_mb']} MB -> the target (<= 120 s, <= 300 MB) "
          f"{'met' if met else 'NOT met'}")  # fmt: skip
    (args.work / "bench_fuse.json").write_text(json.dumps({
        "cpu": machine, "map": str(map_path), "sets": args.sets, "note": args.note, "runs": runs, "worst": worst,
        "target_met": met, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
