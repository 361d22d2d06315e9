"""Depth for a video without a depth sensor, against the simulator's ground truth: Algorithm 2's network, plane-sweep
multi-view stereo from the metric poses (:mod:`pose2rgbd.geometry.mvs`) and the two combined (stereo where it is
verified across views, the network scaled to it elsewhere, nothing beyond 1.5 x the verified depth).

The poses are the chain's metric poses (``--metric-poses``: COLMAP aligned to noisy GPS by the robust Sim(3), the
``metric_poses.npz`` that ``bench/bench_selfsup_depth.py --pose-source metric`` writes), or the simulator's
(``--poses truth``). The sweep's depth range comes from the metric poses' triangulated points (as in
``convert video --depth mvs``), else ``--depth-range``. The network's rows need a selfsup-depth ``--checkpoint``
(its depth x its metres per unit, resized to the dataset). Frames ``--frames A:B`` of the dataset (every frame
has ground truth). Prints a Markdown table with the machine (``lscpu``) and the command; ``--out`` a JSON copy.

    pose2rgbd sim --out S --no-bag --no-video --size 128 96 --duration 120 --route-duration 30 --stride 3 \
        --routes survey                                     # (--realism: the sensor-realism mode)
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_selfsup_depth.py --dataset S/dataset --out M --minutes 4 \
        --batch-size 4 --threads 1 --pose-source metric --backends ""
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_video_depth.py --dataset S/dataset --frames 300:420 \
        --metric-poses M/metric_poses.npz --checkpoint M/run-metric-v0/last.pt
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.experiments.machine import cpu_line


def metrics(pred: np.ndarray, gt: np.ndarray, max_m: float) -> dict[str, float]:
    """AbsRel and delta<1.25 over the pixels with ground truth (finite, below ``max_m``) where ``pred`` is finite;
    ``coverage``: that share of the ground-truth pixels."""
    has = np.isfinite(gt) & (gt > 0) & (gt < max_m)
    m = has & np.isfinite(pred) & (pred > 0)
    if not m.any():
        return {"abs_rel": float("nan"), "delta_1.25": float("nan"), "coverage": 0.0}
    p, g = pred[m], gt[m]
    ratio = np.maximum(p / g, g / p)
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "delta_1.25": float(np.mean(ratio < 1.25)),
            "coverage": float(m.sum() / max(has.sum(), 1))}  # fmt: skip


def network_depth(checkpoint: Path, ds: Any, idx: np.ndarray) -> tuple[np.ndarray, float]:
    """The selfsup-depth model's metric depth (N, H, W) of frames ``idx`` at the dataset size, and its unit."""
    import cv2
    import torch

    from pose2rgbd.models import load_checkpoint

    model: Any = load_checkpoint(checkpoint).model.eval()
    mc = model.config
    unit = float(model.metric_unit) if model.metric_unit > 0 else 1.0
    W, H = ds.camera.width, ds.camera.height
    out = np.empty((len(idx), H, W), np.float32)
    with torch.no_grad():
        for a in range(0, len(idx), 16):
            rgb = np.stack([cv2.resize(ds.read_rgb(int(i)), (mc.width, mc.height), interpolation=cv2.INTER_AREA)
                            for i in idx[a : a + 16]])  # fmt: skip
            d = model.depth(torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0))[:, 0].numpy()
            out[a : a + len(d)] = [cv2.resize(x, (W, H), interpolation=cv2.INTER_LINEAR) * unit for x in d]
    return out, unit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="a simulator dataset (ground-truth depth)")
    ap.add_argument("--frames", default="0:120", help="A:B, the frames evaluated (and matched)")
    ap.add_argument("--metric-poses", type=Path, help="metric_poses.npz of the chain (else --poses truth)")
    ap.add_argument("--poses", choices=("metric", "truth"), default="metric")
    ap.add_argument("--checkpoint", type=Path, help="selfsup-depth checkpoint: the network's and the combined rows")
    ap.add_argument("--depth-range", type=float, nargs=2, metavar=("NEAR", "FAR"), help="sweep range (metres)")
    ap.add_argument("--max-depth-m", type=float, default=400.0, help="evaluate ground truth below this")
    ap.add_argument("--mvs-set", action="append", default=[], metavar="KEY=VALUE", help="an MvsConfig field")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    a = ap.parse_args()

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.geometry.mvs import MvsConfig, combine_frame, depth_range_from_points, mvs_sequence

    ds = Dataset(a.dataset)
    lo, hi = (int(x) for x in a.frames.split(":"))
    idx = np.arange(lo, min(hi, len(ds)))
    fields = MvsConfig.__dataclass_fields__
    kw = {k: type(getattr(MvsConfig(), k))(v) for k, v in (s.split("=", 1) for s in a.mvs_set) if k in fields}
    cfg = MvsConfig(**kw)
    gt = np.stack([ds.read_depth(int(i)) for i in idx])
    mp = None
    if a.poses == "metric":
        if a.metric_poses is None:
            sys.exit("--poses metric needs --metric-poses (metric_poses.npz), or give --poses truth")
        from pose2rgbd.methods.selfsup_depth.metric import MetricPoses

        mp = MetricPoses.load(a.metric_poses)
        T, ok = mp.T_world_cam[idx], mp.ok[idx]
        err = np.linalg.norm(T[ok, :3, 3] - ds.frames.translation[idx][ok], axis=1)
        pose_note = (
            f"metric poses ({int(ok.sum())} of {len(idx)} frames; {np.sqrt(np.mean(err**2)):.2f} m RMS vs truth)"
        )
    else:
        T, ok = ds.frames.T_world_cam[idx], np.ones(len(idx), bool)
        pose_note = "the simulator's poses"
    if a.depth_range:
        rng = (float(a.depth_range[0]), float(a.depth_range[1]))
    elif mp is not None:
        rng = depth_range_from_points(np.concatenate([mp.points[int(i)][:, 2] for i in idx if int(i) in mp.points]))
    else:
        sys.exit("give --depth-range NEAR FAR (no sparse points without --metric-poses)")
    t0 = time.monotonic()
    res = mvs_sequence(lambda j: ds.read_rgb(int(idx[j])), ds.camera.K, T, ok, cfg, depth_range=rng)
    mvs_s = time.monotonic() - t0
    rows: dict[str, dict[str, float]] = {"multi-view stereo (verified pixels)": metrics(res.depth, gt, a.max_depth_m)}
    if a.checkpoint is not None:
        net, _ = network_depth(a.checkpoint, ds, idx)
        rows["Algorithm 2's network"] = metrics(net, gt, a.max_depth_m)
        comb = np.stack([combine_frame(res.depth[k], net[k], far_factor=cfg.far_factor).depth
                         for k in range(len(idx))])  # fmt: skip
        rows["combined (stereo + network scaled to it)"] = metrics(comb, gt, a.max_depth_m)
    cmd = " ".join(shlex.quote(x) for x in sys.argv)
    print(f"\n`{cmd}`\n")
    print(f"Machine: {cpu_line()}; 1 thread (OMP_NUM_THREADS={__import__('os').environ.get('OMP_NUM_THREADS', '?')})")
    print(f"Frames {lo}..{idx[-1]} of {a.dataset} ({ds.camera.width}x{ds.camera.height}), {pose_note}; sweep "
          f"{rng[0]:.1f}-{rng[1]:.1f} m, {cfg.planes} planes, {cfg.sources} sources; stereo {mvs_s:.1f} s "
          f"({mvs_s / len(idx):.2f} s per frame)\n")  # fmt: skip
    print("| depth | AbsRel | δ<1.25 | pixels with depth |\n|---|---:|---:|---:|")
    for name, m in rows.items():
        print(f"| {name} | {m['abs_rel']:.3f} | {m['delta_1.25']:.3f} | {100 * m['coverage']:.1f} % |")
    if a.out:
        a.out.write_text(json.dumps({"command": cmd, "machine": cpu_line(), "rows": rows, "mvs": res.info,
                                     "seconds": mvs_s, "poses": pose_note}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
