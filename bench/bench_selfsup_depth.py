"""Self-supervised depth (Algorithm 2) on a synthetic flight, against the simulator's ground truth.

Trains ``selfsup-depth`` on the survey source of a simulator dataset (route split: the other routes are held
out), then measures on held-out frames: relative-pose error (rotation, translation direction) of the pose source,
the GPS scale fitted from noisy GPS positions (``--gps-noise`` m per axis on every frame) and its error against
the oracle scale, depth AbsRel / delta<1.25 after GPS scaling (and, for reference, with per-image median
scaling). Writes ``<out>/results.json``.

    nice -n 10 .venv/bin/python bench/bench_selfsup_depth.py --dataset /tmp/sim/dataset --out /tmp/ssd-bench \
        --minutes 6 --pose-source posenet
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def depth_metrics(pred: np.ndarray, gt: np.ndarray, max_m: float) -> dict[str, float]:
    m = np.isfinite(gt) & (gt > 0) & (gt < max_m)
    p, g = pred[m], gt[m]
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "delta_1.25": float(np.mean(ratio < 1.25)),
        "pixels": int(m.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--pose-source", default="posenet")
    ap.add_argument("--velocity-weight", type=float, default=0.0)
    ap.add_argument("--gps-noise", type=float, default=1.5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-depth-m", type=float, default=400.0, help="evaluate ground truth below this")
    ap.add_argument("--eval-frames", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a machine loaded by other work)")
    a = ap.parse_args()

    from pose2rgbd.convert.scale import ScaleConfig, fit_scale
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.sequences import load_sequence_frames
    from pose2rgbd.methods.selfsup_depth.essential import essential_pose
    from pose2rgbd.methods.selfsup_depth.export import predict
    from pose2rgbd.methods.selfsup_depth.trajectory import (
        ate_sim3,
        compose_poses,
        relative_from_absolute,
        relative_pose_errors,
    )
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.training.config import TrainConfig
    from pose2rgbd.training.train import train

    torch.set_num_threads(a.threads)
    ds = Dataset(a.dataset)
    fam = get_family("selfsup-depth")
    mc = fam.make_config(pose_source=a.pose_source, velocity_weight=a.velocity_weight)
    tc = TrainConfig(epochs=1000, batch_size=a.batch_size, groups={"model": {"lr": a.lr}}, split="route",
                     max_minutes=a.minutes, val_every=0, progress=False, tensorboard=False)  # fmt: skip
    run = a.out / f"run-{a.pose_source}-v{a.velocity_weight:g}"
    t0 = time.monotonic()
    res = train("selfsup-depth", ds, run, mc, tc, overwrite=True)
    train_s = time.monotonic() - t0
    ck = load_checkpoint(res.last)
    model = ck.model
    frames = load_sequence_frames(ds, mc.width, mc.height)
    pred = predict(model, frames)
    f = ds.frames
    out: dict = {"train": {"steps": res.steps, "seconds": round(train_s, 1), "minutes_budget": a.minutes,
                           "batch_size": a.batch_size, "pose_source": a.pose_source,
                           "velocity_weight": a.velocity_weight}}  # fmt: skip
    rng = np.random.default_rng(0)
    per_source = {}
    for sid in np.unique(f.source_id):
        idx = np.flatnonzero(f.source_id == sid)
        T_gt = relative_from_absolute(f.T_world_cam[idx])
        T_net = pred.T_rel[idx[:-1]]
        rot, tdir = relative_pose_errors(T_net, T_gt)
        entry = {
            "frames": len(idx),
            "net_rot_err_deg": float(np.median(rot)),
            "net_tdir_err_deg": float(np.nanmedian(tdir)),
        }
        # the essential-matrix source on the same pairs (at the dataset resolution)
        import cv2

        gray = [cv2.cvtColor(ds.read_rgb(int(i)), cv2.COLOR_RGB2GRAY) for i in idx[: min(len(idx), 200)]]
        ess_rot, ess_t, n_ok = [], [], 0
        for k in range(len(gray) - 1):
            T = essential_pose(gray[k], gray[k + 1], ds.camera.K)
            if T is None:
                continue
            n_ok += 1
            r, t = relative_pose_errors(T[None], T_gt[k][None])
            ess_rot.append(r[0])
            ess_t.append(t[0])
        entry.update({"ess_pairs_usable": f"{n_ok}/{len(gray) - 1}",
                      "ess_rot_err_deg": float(np.median(ess_rot)) if ess_rot else None,
                      "ess_tdir_err_deg": float(np.nanmedian(ess_t)) if ess_t else None})  # fmt: skip
        # GPS scale from noisy positions
        gps = f.translation[idx] + a.gps_noise * rng.standard_normal((len(idx), 3))
        try:
            fit = fit_scale(gps, f.stamp_ns[idx], T_net, ScaleConfig())
            entry["scale"] = fit.summary()
        except Exception as e:  # a short held-out route may not reach the baseline
            fit = None
            entry["scale_error"] = str(e)
        # oracle scale: median of per-pixel gt / pred over the evaluated frames
        ev = idx[np.unique(np.linspace(0, len(idx) - 1, min(a.eval_frames, len(idx))).round().astype(int))]
        preds, gts = [], []
        for i in ev:
            d = pred.depth[i]
            g = ds.read_depth(int(i))
            if d.shape != g.shape:
                d = cv2.resize(d, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_LINEAR)
            preds.append(d)
            gts.append(g)
        P, G = np.stack(preds), np.stack(gts)
        m = np.isfinite(G) & (a.max_depth_m > G)
        oracle = float(np.median(G[m] / P[m]))
        entry["oracle_scale"] = oracle
        if fit is not None:
            entry["scale_rel_error"] = float(fit.scale / oracle - 1.0)
            entry["depth_gps_scaled"] = depth_metrics(P * fit.scale, G, a.max_depth_m)
        entry["depth_oracle_scaled"] = depth_metrics(P * oracle, G, a.max_depth_m)
        med = np.stack([np.median(G[k][m[k]]) / np.median(P[k][m[k]]) for k in range(len(P))])
        entry["depth_per_image_median_scaled"] = depth_metrics(P * med[:, None, None], G, a.max_depth_m)
        pos = compose_poses(T_net)[:, :3, 3]
        rmse, rel = ate_sim3(pos, f.translation[idx])
        entry["ate_sim3_m"], entry["ate_sim3_rel_path"] = rmse, rel
        per_source[int(sid)] = entry
    out["sources"] = per_source
    out["machine"] = platform.processor() or platform.machine()
    a.out.mkdir(parents=True, exist_ok=True)
    p = a.out / f"results-{a.pose_source}-v{a.velocity_weight:g}.json"
    p.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
