"""Where the hybrid's depth can still improve on reprojection (not a test): the reprojection baseline's depth error on
held-out routes, split into pixels a keyframe point landed on (the only pixels the hybrid's depth correction touches
with ``hole_depth: nearest``) and holes (filled from the nearest keyframe, as the hybrid keeps them).

    .venv/bin/python bench/bench_hybrid_depth_limit.py --dataset D [--frames 300] [--k 3]

``--dataset``: a dataset with metric depth and several sources (the simulator's: train on the survey, test on the
held-out routes, the route split of the evaluation). Prints, for the test frames: the depth MAE of reprojection with
holes filled from the nearest frame (the evaluation's baseline), the share of the error sum in warped pixels and in
holes, the MAE a perfect correction of the warped pixels would leave (the ceiling of a hole-keeping depth
correction), that of perfect holes, how the warped pixels' error splits into small errors (< 10 % of the depth)
and outliers (a point from the wrong surface: occlusion edges, thin structures), and the holes' error under three
other fills: OpenCV inpainting of the log depth, rings of the farthest neighbour grown into the hole, and the
farther of the surfaces beside the hole in its row (the hybrid's ``hole_depth: background``,
``pose2rgbd.methods.hybrid.hole_depth.background_fill``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def inpaint_fill(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Holes filled from the warped pixels around them: OpenCV's Telea inpainting of the log depth."""
    import cv2

    d = np.where(valid & np.isfinite(depth), depth, 0).astype(np.float32)
    logd = np.where(d > 0, np.log(np.maximum(d, 1e-3)), 0).astype(np.float32)
    out = cv2.inpaint(logd, (~valid).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return np.where(valid, depth, np.exp(out))


def background_fill(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Holes filled with the farthest warped depth around them, grown until none is left: a disocclusion hole shows
    what lay behind the nearer surface that uncovered it."""
    import cv2

    d = np.where(valid & np.isfinite(depth), depth, 0).astype(np.float32)
    known = d > 0
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(max(d.shape)):
        if known.all():
            break
        grown = cv2.dilate(d, kernel)
        new = ~known & (grown > 0)
        d[new] = grown[new]
        known |= new
    return np.where(valid, depth, d)


def row_background_fill(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Holes filled along their row with the farther of the nearest warped surfaces to the left and to the right
    (one side where only one exists): the background side of a disocclusion."""
    d = np.where(valid & np.isfinite(depth), depth, np.nan).astype(np.float64)
    h, w = d.shape
    cols = np.arange(w)
    known = np.isfinite(d)
    left_idx = np.maximum.accumulate(np.where(known, cols[None, :], -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(known, cols[None, :], w)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    left = np.where(left_idx >= 0, d[rows, np.clip(left_idx, 0, w - 1)], np.nan)
    right = np.where(right_idx < w, d[rows, np.clip(right_idx, 0, w - 1)], np.nan)
    fill = np.fmax(left, right)
    return np.where(valid, depth, np.where(np.isfinite(fill), fill, depth))


def main(argv: list[str] | None = None) -> int:
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.splits import make_split
    from pose2rgbd.evaluation.baseline import NearestPoseBaseline, default_rot_weight
    from pose2rgbd.evaluation.reprojection import reproject_nearest
    from pose2rgbd.experiments.machine import machine_description
    from pose2rgbd.methods.hybrid.config import HybridConfig
    from pose2rgbd.models.normalization import DepthNormalizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=300, help="test frames, evenly spread")
    ap.add_argument("--k", type=int, default=3, help="keyframes warped per view")
    a = ap.parse_args(argv)

    ds = Dataset(a.dataset)
    split = make_split(ds.frames.source_id, ds.frames.stamp_ns, "route", test_fraction=0.1)
    train, test = np.asarray(split.train), np.asarray(split.test)
    test = test[np.linspace(0, len(test) - 1, min(a.frames, len(test))).round().astype(int)]
    T = ds.frames.T_world_cam
    depth_train = np.stack([ds.read_depth(i) for i in train])
    rgb_train = np.stack([ds.read_rgb(i) for i in train])
    rot_w = default_rot_weight(depth_train, np.arange(len(train)))
    # the hybrid's depth range (its defaults), as the evaluation uses it: predictions clipped into it, ground truth
    # beyond its far end not scored
    hc = HybridConfig()
    dn = DepthNormalizer.fit(depth_train, indices=np.arange(len(train)), max_m=hc.depth_max or None,
                             max_percentile=hc.depth_max_percentile)  # fmt: skip
    lo, hi = dn.min_m, dn.max_m
    nn = NearestPoseBaseline(T[train], train, rot_weight_m=rot_w)
    pos = {int(f): j for j, f in enumerate(train)}
    src_rows = nn.query_k(T[test], a.k)
    sums = {
        "warped": 0.0,
        "hole": 0.0,
        "warped_small": 0.0,
        "warped_outlier": 0.0,
        "hole_inpaint": 0.0,
        "hole_background": 0.0,
        "hole_row": 0.0,
    }
    counts = {"warped": 0, "hole": 0, "warped_outlier": 0}
    for q, src in zip(test, src_rows, strict=True):
        rows = [pos[int(s)] for s in src]
        r = reproject_nearest(rgb_train[rows], depth_train[rows], T[train[rows]], ds.camera, T[q], fill="nearest")
        gt = ds.read_depth(int(q)).astype(np.float64)
        pred = np.clip(r.depth.astype(np.float64), lo, hi)
        m = np.isfinite(gt) & (gt <= hi) & np.isfinite(pred)
        e = np.where(m, np.abs(pred - gt), 0.0)
        w, h = m & r.valid, m & ~r.valid
        out = w & (e > 0.1 * np.maximum(gt, 1e-6))
        fills = (
            ("hole_inpaint", inpaint_fill),
            ("hole_background", background_fill),
            ("hole_row", row_background_fill),
        )
        for name, fill in fills:
            alt = np.clip(fill(r.depth, r.valid).astype(np.float64), lo, hi)
            sums[name] += float(np.abs(alt - gt)[h & np.isfinite(alt)].sum())
        sums["warped"] += float(e[w].sum())
        sums["hole"] += float(e[h].sum())
        sums["warped_outlier"] += float(e[out].sum())
        sums["warped_small"] += float(e[w & ~out].sum())
        counts["warped"] += int(w.sum())
        counts["hole"] += int(h.sum())
        counts["warped_outlier"] += int(out.sum())
    n = counts["warped"] + counts["hole"]
    total = sums["warped"] + sums["hole"]
    res = {
        "machine": machine_description(),
        "dataset": str(a.dataset),
        "test_frames": len(test),
        "k": a.k,
        "depth_range_m": [lo, hi],
        "depth_mae_m": total / n,
        "hole_pixel_share": counts["hole"] / n,
        "error_share_warped": sums["warped"] / total,
        "error_share_holes": sums["hole"] / total,
        "mae_if_warped_perfect_m": sums["hole"] / n,
        "mae_if_holes_perfect_m": sums["warped"] / n,
        "warped_outlier_pixel_share": counts["warped_outlier"] / max(counts["warped"], 1),
        "warped_error_share_in_outliers": sums["warped_outlier"] / max(sums["warped"], 1e-12),
        "mae_warped_m": sums["warped"] / max(counts["warped"], 1),
        "mae_holes_m": sums["hole"] / max(counts["hole"], 1),
        "mae_holes_inpainted_m": sums["hole_inpaint"] / max(counts["hole"], 1),
        "mae_holes_background_m": sums["hole_background"] / max(counts["hole"], 1),
        "depth_mae_with_inpainted_holes_m": (sums["warped"] + sums["hole_inpaint"]) / n,
        "depth_mae_with_background_holes_m": (sums["warped"] + sums["hole_background"]) / n,
        "mae_holes_row_background_m": sums["hole_row"] / max(counts["hole"], 1),
        "depth_mae_with_row_background_holes_m": (sums["warped"] + sums["hole_row"]) / n,
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
