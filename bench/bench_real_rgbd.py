"""The training-free renderers on real (or realistic) RGB-D data, held-out time blocks (not a test).

    .venv/bin/python bench/bench_real_rgbd.py --tum PATH/rgbd_dataset_freiburg1_xyz --work /tmp/tum [--stride 2]
    .venv/bin/python bench/bench_real_rgbd.py --dataset DS [--stride 8]       # any pose2rgbd dataset with depth

``--tum``: a TUM RGB-D sequence as its authors publish it (``rgb/``, ``depth/``, ``rgb.txt``, ``depth.txt``,
``groundtruth.txt``; CC BY 4.0), fetched by you: nothing of it enters the repository. It is imported with
``pose2rgbd convert images --format tum --image-list rgb.txt --depth-list depth.txt`` (the sequence's published
intrinsics and distortion, depth at 5000 units per metre, ``--size``) into ``--work``: each colour image with its
nearest depth image within 20 ms, one depth image shared where it is the nearest to two colour images
(``depth_list_reuse``: the frames of docs/results.md's tables; TUM's ``associate.py`` uses each depth image once,
which leaves 692 frames of fr1_rpy instead of 720); colour images without depth or a pose within 20 ms are left out
(``--skip-unmatched``). ``--dataset`` takes a dataset as it is (the simulator's sensor-realism mode:
``pose2rgbd sim --realism --routes survey``).

Frames are subsampled in time (``--stride``), split as ``pose2rgbd train --split route`` splits one recording:
contiguous time blocks, one for validation and one for the test (10 % each); the test block is scored. At the
evaluation's cache size (``--size``, square, like ``evaluate``), for each test pose:

* nearest pose: the training frame nearest in the baseline's pose distance;
* reprojection: the 3 nearest training RGB-D frames warped into the pose, holes from the nearest (as ``evaluate``);
* fused geometry: every training frame's depth fused into one surface (TSDF), ray-cast at the pose, coloured from
  the training frames that see each point, exposure-compensated to the nearest training frame's exposure
  (``pose2rgbd.placemap.fused``); and the same with the colours as shot.

Depth is scored as ``evaluate`` scores a hybrid model's: answers clipped to the hybrid's default depth range over the
training frames, ground truth beyond its far end left out. Prints a Markdown table and the fusion's build time and
memory; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from bench_common import resident_mib  # noqa: E402

# the published calibration of the three TUM RGB-D sensors (fx, fy, cx, cy; k1, k2, p1, p2, k3), 640x480
TUM_CAMERAS = {
    "freiburg1": ((517.3, 516.5, 318.6, 255.3), (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "freiburg2": ((520.9, 521.0, 325.1, 249.7), (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "freiburg3": ((535.4, 539.2, 320.1, 247.6), (0.0, 0.0, 0.0, 0.0, 0.0)),
}


def prepare_tum(seq: Path, work: Path, size: str) -> Path:
    """Import a TUM RGB-D sequence into ``work/dataset`` (once; later runs reuse it)."""
    from pose2rgbd.cli.main import main as cli

    need = ["rgb.txt", "depth.txt", "groundtruth.txt", "rgb", "depth"]
    missing = [n for n in need if not (seq / n).exists()]
    if missing:
        sys.exit(f"{seq}: not a TUM RGB-D sequence folder (missing {', '.join(missing)}); fetch one (e.g. "
                 "rgbd_dataset_freiburg1_xyz, CC BY 4.0) and pass its folder")  # fmt: skip
    out = work / "dataset"
    if (out / "manifest.yaml").exists():
        return out
    kind = next((k for k in TUM_CAMERAS if k in seq.name), None)
    if kind is None:
        sys.exit(f"{seq.name}: cannot tell the sensor (freiburg1/2/3) from the folder name; keep TUM's name")
    (fx, fy, cx, cy), dist = TUM_CAMERAS[kind]
    # each colour image with its nearest depth image within 20 ms, shared where two are nearest to one
    argv = ["convert", "images", str(seq / "groundtruth.txt"), "--format", "tum", "--image-list", str(seq / "rgb.txt"),
            "--depth-list", str(seq / "depth.txt"), "--depth-tolerance", "0.02", "--set", "depth_list_reuse=true",
            "--depth-scale", "5000", "--fx", str(fx), "--fy", str(fy), "--cx", str(cx), "--cy", str(cy),
            "--distortion", ",".join(map(str, dist)), "--size", size, "--skip-unmatched",
            "--out", str(out), "--no-progress"]  # fmt: skip
    if cli(argv) != 0:
        sys.exit("the TUM import failed (see above)")
    return out


def main(argv: list[str] | None = None) -> int:
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.dataset.splits import make_split
    from pose2rgbd.evaluation.baseline import (
        NearestPoseBaseline,
        default_rot_weight,
        nearest_answers,
        training_keyframes,
    )
    from pose2rgbd.evaluation.fused import fused_answers, fused_renderer
    from pose2rgbd.evaluation.metrics import MetricAccumulator
    from pose2rgbd.evaluation.reprojection import reprojection_answers
    from pose2rgbd.experiments.machine import machine_description
    from pose2rgbd.methods.hybrid.config import HybridConfig
    from pose2rgbd.models.normalization import DepthNormalizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tum", type=Path, help="a TUM RGB-D sequence folder (fetched; never copied into the repo)")
    src.add_argument("--dataset", type=Path, help="a pose2rgbd dataset with metric depth")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pose2rgbd-real-rgbd"), help="import and cache folder")
    ap.add_argument("--import-size", default="320x240", help="TUM import size (WxH)")
    ap.add_argument("--size", type=int, default=128, help="evaluation cache size (square, as evaluate)")
    ap.add_argument("--stride", type=int, default=1, help="keep every N-th frame in time")
    ap.add_argument("--k", type=int, default=3, help="reprojection: keyframes warped per view")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split (which time blocks are held out)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    a = ap.parse_args(argv)

    if a.tum is not None:
        if not a.tum.is_dir():
            sys.exit(f"{a.tum}: no such folder; fetch a TUM RGB-D sequence (CC BY 4.0) and pass its folder")
        a.work.mkdir(parents=True, exist_ok=True)
        dataset = prepare_tum(a.tum, a.work, a.import_size)
    else:
        dataset = a.dataset
        if not (dataset / "manifest.yaml").is_file():
            sys.exit(f"{dataset}: not a pose2rgbd dataset (no manifest.yaml)")
    ds = Dataset(dataset)
    if ds.manifest.depth_kind != "metric":
        sys.exit(f"{dataset}: needs metric depth (this one has {ds.manifest.depth_kind!r})")
    cache = build_cache(ds, a.size, cache_root=a.work / "cache", progress=False)
    keep = np.arange(0, len(cache), a.stride)
    sp = make_split(cache.source_id[keep], cache.stamp_ns[keep], "route", seed=a.seed, val_fraction=0.1,
                    test_fraction=0.1)  # fmt: skip
    train, test = keep[sp.train], keep[sp.test]
    depth_train = np.asarray(cache.depth[train]) if cache.depth is not None else None
    rot_w = default_rot_weight(depth_train, np.arange(len(train)))
    hc = HybridConfig()
    dn = DepthNormalizer.fit(depth_train, indices=np.arange(len(train)), max_m=hc.depth_max or None,
                             max_percentile=hc.depth_max_percentile)  # fmt: skip
    rng = (dn.min_m, dn.max_m)
    train_kf = training_keyframes(cache, train, rot_weight_m=rot_w)
    nn = NearestPoseBaseline.of_keyframes(train_kf)
    cov = nn.poses.coverage(cache.T_world_cam[test])

    rss0 = resident_mib("VmRSS")
    t0 = time.monotonic()
    fused = fused_renderer(train_kf)
    build_s = time.monotonic() - t0
    peak_mb = resident_mib("VmHWM")
    meta = fused.geo.meta

    from pose2rgbd.placemap.fused.render import FusedRenderer

    raw = FusedRenderer(fused.kf, fused.geo, neighbours=fused.neighbours, exposure=False)  # the same, colours as shot
    acc = {k: MetricAccumulator(rng[1]) for k in ("nearest", "reprojection", "fused", "fused_raw")}
    holes: dict[str, list[float]] = {"reprojection": [], "fused": [], "fused_raw": []}
    t_render = {"reprojection": 0.0, "fused": 0.0}
    for s in range(0, len(test), 16):
        idx = np.sort(test[s : s + 16])
        gt_rgb, gt_depth = np.asarray(cache.rgb[idx]), np.asarray(cache.depth[idx])
        b_rgb, bd = nearest_answers(train_kf, nn.query(cache.T_world_cam[idx])[0])
        acc["nearest"].add(b_rgb, gt_rgb, np.where(np.isnan(bd), np.nan, np.clip(bd, *rng)),
                           gt_depth)  # fmt: skip
        t = time.monotonic()
        r_rgb, r_depth, h = reprojection_answers(train_kf, cache.T_world_cam[idx], cache.camera, a.k, rng)
        t_render["reprojection"] += time.monotonic() - t
        acc["reprojection"].add(r_rgb, gt_rgb, r_depth, gt_depth)
        holes["reprojection"] += h
        t = time.monotonic()
        f_rgb, f_depth, h = fused_answers(fused, cache.T_world_cam[idx], cache.camera, rng)
        t_render["fused"] += time.monotonic() - t
        acc["fused"].add(f_rgb, gt_rgb, f_depth, gt_depth)
        holes["fused"] += h
        f_rgb, f_depth, h = fused_answers(raw, cache.T_world_cam[idx], cache.camera, rng)
        acc["fused_raw"].add(f_rgb, gt_rgb, f_depth, gt_depth)
        holes["fused_raw"] += h
    res = {k: v.result() for k, v in acc.items()}
    names = {"reprojection": "reprojection baseline", "fused": "fused geometry",
             "fused_raw": "fused geometry, no exposure compensation", "nearest": "nearest-pose baseline"}  # fmt: skip
    print(f"\n{dataset}: {len(keep)} frames (every {a.stride}), {sp.description}; {len(train)} training frames, "
          f"{len(test)} test frames at {a.size}x{a.size}; test pose to the nearest training camera: median "
          f"{np.median(cov.position_m):.2f} m / {np.median(cov.angle_deg):.1f} deg")  # fmt: skip
    print("\n| held-out time block | RGB MAE (px) | PSNR (dB) | depth MAE (m) | AbsRel | holes |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in ("reprojection", "fused", "fused_raw", "nearest"):
        m = res[k]
        hole = f"{100 * np.mean(holes[k]):.1f} %" if k in holes else "-"
        print(f"| {names[k]} | {m['rgb_mae_px']:.2f} | {m['rgb_psnr_db']:.2f} | {m['depth_mae']:.4f} | "
              f"{m['depth_absrel']:.4f} | {hole} |")  # fmt: skip
    e = meta.get("exposure") or {}
    print(f"\nfusion of {meta['keyframes']} keyframes at {a.size}x{a.size}: "
          f"{100 * meta['voxel_size_m']:.2f} cm voxels, {meta['triangles']} triangles, TSDF {meta['fuse_s']:.1f} s "
          f"+ exposure fit, {build_s:.1f} s in all; "
          f"RSS {rss0:.0f} MiB before, process peak {peak_mb:.0f} MiB after; exposure mismatch "
          f"{e.get('rms_before')} -> {e.get('rms_after')} grey levels RMS")  # fmt: skip
    print(f"render per test pose: reprojection {1e3 * t_render['reprojection'] / len(test):.0f} ms, fused "
          f"{1e3 * t_render['fused'] / len(test):.0f} ms")  # fmt: skip
    print(f"machine: {machine_description()}")
    if a.json:
        a.json.write_text(json.dumps({"dataset": str(dataset), "frames": len(keep), "train": len(train),
                                      "test": len(test), "size": a.size, "metrics": res,
                                      "holes": {k: float(np.mean(v)) for k, v in holes.items()},
                                      "fusion": {**meta, "build_s": build_s, "rss_before_mb": rss0,
                                                 "peak_rss_mb": peak_mb},
                                      "machine": machine_description()}, indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
