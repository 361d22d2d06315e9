"""Render speed of the synthetic world (frames/s, warm: after JIT compile / cache load).

    .venv/bin/python bench/bench_sim.py [--seconds 3] [--sizes 128 512] [--no-shadows]

Poses come from the survey route, so the frames are what a dataset export renders.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from pose2rgbd.experiments.machine import cpu_line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--no-shadows", action="store_true")
    args = ap.parse_args()

    import numba

    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.sim import Renderer, make_world, plan_route

    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {cpu_line()}, numba threads {numba.get_num_threads()}")
    t = time.perf_counter()
    world = make_world(0, 300.0)
    print(f"world: {world.n_buildings} buildings, {len(world.boxes)} boxes, {len(world.ells)} trees "
          f"({time.perf_counter() - t:.3f} s to generate)")  # fmt: skip
    traj = plan_route("survey", world, rate_hz=30, duration_s=360.0, seed=0)
    poses = traj.T_world_cam[:: max(1, len(traj) // 500)]
    t = time.perf_counter()
    Renderer(world, PinholeCamera.from_fov(8, 8, 75)).warmup()
    print(f"first render (JIT compile or cache load): {time.perf_counter() - t:.2f} s")
    for s in args.sizes:
        r = Renderer(world, PinholeCamera.from_fov(s, s, 75), shadows=not args.no_shadows)
        r.render(poses[0])
        n = 0
        t = time.perf_counter()
        while time.perf_counter() - t < args.seconds:
            r.render(poses[n % len(poses)])
            n += 1
        dt = time.perf_counter() - t
        print(f"{s}x{s}: {n / dt:8.1f} frames/s  ({1000 * dt / n:.1f} ms/frame, {n} frames, shadows={r.shadows})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
