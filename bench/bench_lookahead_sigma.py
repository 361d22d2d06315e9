"""Whether a frame the look-ahead cache serves for a nearby pose keeps an honest depth uncertainty (not a test).

    .venv/bin/python bench/bench_lookahead_sigma.py --checkpoint out/demo/train/best.pt --dataset out/demo/sim/dataset \
        [--split out/demo/train/split.json] [--every 4] [--tolerance-m 0.05] [--tolerance-deg 0.5 2 4]

For every ``--every``-th test frame (the split's ``test`` indices; without ``--split`` every frame) the checkpoint
renders the frame's own pose B and a pose A offset from it by a random translation and turn, each uniform up to the
tolerance (the look-ahead serves a frame rendered for a predicted pose A to a request B within it). Against B's
ground-truth depth, resized to the model as the evaluation does, it prints the share of scored pixels (finite, within
the model's depth range) whose |error| is within the depth sigma: B's render with its own sigma, A's render with A's
own sigma (what the cache served before its sigma was widened), and A's render with the widened sigma
(``pose2rgbd.inference.poses.depth_sigma_for_offset``, what the engine serves now); then the widening's time on a
512x512 frame. A larger ``--tolerance-deg`` at a small model stands for the default's pixel shift at a larger one
(0.5 deg at 512x512 shifts pixels as far as 4 deg at 64x64).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def offset_poses(T: np.ndarray, tol_m: float, tol_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Each pose moved by a random direction and turned about a random axis, each uniform up to the tolerance."""
    from scipy.spatial.transform import Rotation

    out = T.copy()
    for k in range(len(T)):
        d = rng.normal(size=3)
        a = rng.normal(size=3)
        out[k, :3, 3] += d / np.linalg.norm(d) * rng.uniform(0, tol_m)
        turn = a / np.linalg.norm(a) * np.deg2rad(rng.uniform(0, tol_deg))
        out[k, :3, :3] = T[k, :3, :3] @ Rotation.from_rotvec(turn).as_matrix()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="", help="a training run's split.json (its test frames); default: every frame")
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--tolerance-m", type=float, default=0.05)
    ap.add_argument("--tolerance-deg", type=float, nargs="+", default=[0.5])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from pose2rgbd.dataset.cache import resize_depth_nearest
    from pose2rgbd.dataset.format import Dataset
    from pose2rgbd.experiments.machine import cpu_flags, cpu_model
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.inference.common import EngineConfig
    from pose2rgbd.inference.poses import depth_sigma_for_offset
    from pose2rgbd.inference.render import RenderEngine

    print(f"machine: {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores")
    eng = RenderEngine.from_config(EngineConfig(checkpoint=a.checkpoint))
    if eng.depth_uncertainty is None:
        sys.exit(f"{a.checkpoint} carries no depth uncertainty: nothing to check")
    ds = Dataset(a.dataset)
    frames = json.loads(Path(a.split).read_text())["test"] if a.split else list(range(len(ds)))
    frames = frames[:: a.every]
    T_b = ds.frames.T_world_cam[frames]
    gt = np.stack([resize_depth_nearest(ds.read_depth(i), eng.size) for i in frames])
    lo, hi = eng.depth_range_m or (0.0, np.inf)
    r_b = eng.render(T_b)
    assert r_b.depth is not None and r_b.depth_sigma is not None
    for tol_deg in a.tolerance_deg:
        T_a = offset_poses(T_b, a.tolerance_m, tol_deg, np.random.default_rng(a.seed))
        r_a = eng.render(T_a)
        assert r_a.depth is not None and r_a.depth_sigma is not None
        widened = np.stack(
            [
                depth_sigma_for_offset(r_a.depth[k], r_a.depth_sigma[k], T_a[k], T_b[k], eng.camera)
                for k in range(len(T_b))
            ]
        )
        ok = np.isfinite(gt) & (gt > lo) & (gt < hi) & np.isfinite(r_b.depth) & np.isfinite(r_a.depth)
        ok &= np.isfinite(r_a.depth_sigma) & np.isfinite(r_b.depth_sigma)  # a frame flagged out of bounds: no bound
        e_b, e_a = np.abs(r_b.depth - gt)[ok], np.abs(r_a.depth - gt)[ok]
        at_b, at_a, wide = (100 * np.mean(e <= s) for e, s in ((e_b, r_b.depth_sigma[ok]), (e_a, r_a.depth_sigma[ok]),
                                                                  (e_a, widened[ok])))  # fmt: skip
        factor = np.median(widened[ok] / r_a.depth_sigma[ok])
        print(
            f"{eng.size}x{eng.size}, {len(frames)} test frames, {int(ok.sum())} scored pixels, offsets up to "
            f"{a.tolerance_m} m / {tol_deg} deg: within sigma -- rendered at the request {at_b:.1f} %, served from "
            f"the offset pose {at_a:.1f} %, widened {wide:.1f} % (median widening x{factor:.2f}); depth MAE "
            f"{e_b.mean():.3f} -> {e_a.mean():.3f} m"
        )
    cam = PinholeCamera.from_fov(512, 512, 90.0)
    rng = np.random.default_rng(1)
    d = rng.uniform(5, 80, (512, 512)).astype(np.float32)
    T0 = T_b[0]
    T1 = offset_poses(T0[None], a.tolerance_m, 0.5, rng)[0]
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        depth_sigma_for_offset(d, np.float32(0.02) * d, T0, T1, cam)
        times.append(time.perf_counter() - t0)
    print(f"widening a 512x512 frame: median {1e3 * np.median(times):.2f} ms, max {1e3 * max(times):.2f} ms")


if __name__ == "__main__":
    main()
