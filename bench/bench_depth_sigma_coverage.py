"""Whether a render's depth uncertainty holds as often far from the keyframes as near them (not a test).

    .venv/bin/python bench/bench_depth_sigma_coverage.py --checkpoint W/hybrid-sig/best.pt --dataset W/dataset \
        [--json out.json]

The checkpoint renders its own split's validation and test frames through the render engine as ``evaluate`` does
(precision as trained). On the validation frames it fits the depth uncertainty twice, as ``train`` does
(:func:`pose2rgbd.models.depth_uncertainty.fit_depth_uncertainty`): without the frames' coverage distance (one bound
at every distance, the fit before the growth) and with it (the bound grows with the distance: the default). Per
block and fit it prints the share of scored pixels whose |error| is within ``depth_sigma`` (the level: 68.3 %) over
all frames and per quarter of the frames by coverage distance (the engine's: to the nearest keyframe the model warps,
or training camera; position plus the scene's median depth times the angle), with the median ``depth_sigma`` as a
share of the depth. A bound honest at every distance holds about as often in each quarter; the checkpoint itself is
not changed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--dataset", required=True, type=Path)
    p.add_argument("--json", type=Path, help="write the numbers here")
    args = p.parse_args()

    from bench_common import matmul_gflops

    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.evaluation.evaluate import evaluation_engine, predict
    from pose2rgbd.experiments.machine import machine_description
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.models.depth_uncertainty import fit_depth_uncertainty, scored_pixels
    from pose2rgbd.training.splits import split_from_config

    m = machine_description()
    print(f"machine: {m['cpu']} ({m.get('cpu_flags', '')}), {m['cores']} cores; float32 matmul "
          f"{matmul_gflops():.0f} GFLOP/s; python {shlex.join(sys.argv)}")  # fmt: skip
    loaded = load_checkpoint(args.checkpoint)
    engine = evaluation_engine(loaded, "cpu", "trained")
    if engine.coverage_poses is None:
        sys.exit(f"{args.checkpoint}: carries neither keyframes nor training cameras to measure coverage against")
    cache = build_cache(Dataset(args.dataset), engine.model.image_hw[0])
    split = split_from_config(cache.source_id, cache.stamp_ns, loaded.train_config)
    rng = engine.model.depth_range_m
    max_depth = np.inf if rng is None else float(rng[1])

    def render(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        depth, truth, conf, dist = [], [], [], []
        for s in range(0, len(frames), 8):
            idx = np.sort(frames[s : s + 8])
            got = predict(engine, cache.T_world_cam[idx], batch_size=8)
            depth.append(got["depth"])
            truth.append(np.asarray(cache.depth[idx]))
            conf.append(got["confidence"])
            dist.append(engine.coverage_poses.coverage(cache.T_world_cam[idx]).distance)  # type: ignore[union-attr]
        c = None if conf[0] is None else np.concatenate(conf)
        return np.concatenate(depth), np.concatenate(truth), c, np.concatenate(dist)

    blocks = {"validation": render(split.val), "test": render(split.test)}
    vd, vt, vc, vx = blocks["validation"]
    per_pixel = np.repeat(vx, vd.shape[1] * vd.shape[2]).reshape(vd.shape)
    fits = {
        "one bound": fit_depth_uncertainty(vd, vt, vc, max_depth=max_depth),
        "grows with distance": fit_depth_uncertainty(vd, vt, vc, distance_m=per_pixel, max_depth=max_depth),
    }
    grown = fits["grows with distance"]
    if grown is None or fits["one bound"] is None:
        sys.exit("too few scored validation pixels to fit")
    print(f"{len(split.val)} validation / {len(split.test)} test frames; the growth fitted: {grown.describe()}")
    out: dict[str, object] = {"command": "python " + shlex.join(sys.argv), "machine": m,
                              "growth_per_m": grown.growth_per_m, "fitted_on": grown.fitted_on}  # fmt: skip
    print("| block | fit | all frames | each quarter by coverage distance: its range, share within, median sigma |")
    print("|---|---|---:|---|")
    for block, (d, t, c, x) in blocks.items():
        for name, u in fits.items():
            assert u is not None
            sigma = u.sigma(d, c, x)
            scored = scored_pixels(d, t, max_depth) & np.isfinite(sigma)
            inside = np.abs(d - t) <= sigma
            quarters = []
            for q in np.array_split(np.argsort(x), 4):
                s = scored[q]
                rel = float(np.median(sigma[q][s] / d[q][s]))
                quarters.append((float(x[q].min()), float(x[q].max()), float(inside[q][s].mean()), rel))
            share = float(inside[scored].mean())
            cells = "; ".join(f"{a:.2f}-{b:.2f} m: {100 * w:.1f} % ({100 * r:.1f} %)" for a, b, w, r in quarters)
            print(f"| {block} | {name} | {100 * share:.1f} % | {cells} |")
            out[f"{block}/{name}"] = {"share_within": share, "quarters": quarters}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
