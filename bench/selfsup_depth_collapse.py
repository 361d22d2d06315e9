"""Does the self-supervised depth network collapse to the far plane? Trains ``selfsup-depth`` on the survey of a
simulator dataset (route split) with one ``model.stride`` (0: automatic) and measures, on 120 evenly spread frames
of the survey and of the held-out routes: the spread of the predicted depth
(:func:`pose2rgbd.methods.selfsup_depth.net.depth_spread`), depth AbsRel / delta<1.25 with per-image median
scaling (scale-free: it shows whether the depth has structure) and, on the same frames and pixels, the floor of a
constant-depth predictor with the same scaling (what a collapsed network scores). Writes ``<out>/collapse-*.json``.

    nice -n 10 .venv/bin/python bench/selfsup_depth_collapse.py --dataset /tmp/ssd/sim/dataset --out /tmp/dc \
        --stride 0 --steps 250 --minutes 9 --batch-size 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    p, g = pred[mask], gt[mask]
    r = np.maximum(p / g, g / p)
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "delta_1.25": float(np.mean(r < 1.25))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stride", type=int, default=0, help="model.stride (0: automatic)")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--minutes", type=float, default=9.0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-depth-m", type=float, default=400.0)
    ap.add_argument("--eval-frames", type=int, default=120)
    ap.add_argument("--resume", action="store_true", help="continue the run of the same settings in --out")
    ap.add_argument("--set", nargs="*", default=[], help="extra model settings key=value (floats)")
    a = ap.parse_args()

    import cv2

    from pose2rgbd.convert.stages.depth_predict import predict
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.sequences import SequenceFrames, load_sequence_frames
    from pose2rgbd.methods.selfsup_depth.net import depth_spread, is_collapsed
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.training.config import TrainConfig
    from pose2rgbd.training.train import train

    torch.set_num_threads(a.threads)
    ds = Dataset(a.dataset)
    extra = {k: float(v) for k, v in (s.split("=", 1) for s in a.set)}
    mc = get_family("selfsup-depth").make_config(stride=a.stride, **extra)
    tc = TrainConfig(epochs=1000, batch_size=a.batch_size, groups={"model": {"lr": 2e-4}}, split="route",
                     max_minutes=a.minutes, max_steps=a.steps, val_every=0, progress=False,
                     tensorboard=False)  # fmt: skip
    tag = f"s{a.stride}" + "".join(f"-{k}{v:g}" for k, v in extra.items())
    run = a.out / f"run-{tag}"
    t0 = time.monotonic()
    res = train("selfsup-depth", ds, run, mc, tc, resume=a.resume, overwrite=not a.resume)
    train_s = time.monotonic() - t0
    model = load_checkpoint(res.last).model
    fr = load_sequence_frames(ds, mc.width, mc.height)
    out: dict = {"stride_setting": a.stride, "stride_used": model.used_stride, "steps": res.steps,
                 "seconds": round(train_s, 1), "batch_size": a.batch_size, "extra": extra, "sources": {}}  # fmt: skip
    f = ds.frames
    for sid in np.unique(f.source_id):
        idx = np.flatnonzero(f.source_id == sid)
        ev = idx[np.unique(np.linspace(0, len(idx) - 1, min(a.eval_frames, len(idx))).round().astype(int))]
        sub = SequenceFrames(fr.rgb[ev], fr.camera, fr.stamp_ns[ev], fr.source_id[ev], fr.T_world_cam[ev])
        d = predict(model, sub).depth
        sp = depth_spread(torch.from_numpy(d), mc.min_depth, mc.max_depth)
        G = np.stack([ds.read_depth(int(i)) for i in ev])
        P = np.stack([cv2.resize(x, (G.shape[2], G.shape[1])) for x in d]) if d.shape[1:] != G.shape[1:] else d
        m = np.isfinite(G) & (G > 0) & (a.max_depth_m > G)
        gmed = np.array([np.median(G[k][m[k]]) for k in range(len(G))])
        s = gmed / np.array([np.median(P[k][m[k]]) for k in range(len(P))])
        out["sources"][int(sid)] = {
            "spread": sp,
            "gt_log_std": float(np.median([np.log(G[k][m[k]]).std() for k in range(len(G))])),
            "collapsed": is_collapsed(sp),
            "per_image_median_scaled": metrics(P * s[:, None, None], G, m),
            "constant_floor_per_image_median": metrics(np.broadcast_to(gmed[:, None, None], G.shape), G, m),
            "constant_floor_global_median": metrics(np.full_like(G, np.median(G[m])), G, m),
        }
    out["machine"] = platform.processor() or platform.machine()
    a.out.mkdir(parents=True, exist_ok=True)
    p = a.out / f"collapse-{tag}.json"
    p.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
