"""Self-supervised depth (Algorithm 2) on a synthetic flight, against the simulator's ground truth.

The dataset (seed-0 synthetic world, 128x96, 10 Hz: a 120 s survey + three 30 s held-out routes; about a minute;
from a checkout without the ``pose2rgbd`` command: ``python -m pose2rgbd sim ...``):

    pose2rgbd sim --out /tmp/ssd/sim --no-bag --no-video --size 128 96 --duration 120 --route-duration 30 --stride 3

Trains ``selfsup-depth`` on the survey source (route split: the other routes are held out), or evaluates a given
``--checkpoint``, then measures per flight: relative-pose error (rotation, translation direction) of the pose
network and of the essential matrix; the GPS scale fitted from noisy GPS positions (``--gps-noise`` m per axis on
every frame) and its error against the oracle scale (ground truth / predicted depth), its spread over 30 s segments
(``scale_segments``: the fit per segment; ``oracle_segments``: ground truth / predicted depth per segment, the
scale consistency of the depth itself); depth AbsRel / delta<1.25 raw (scale 1: metric only with the velocity loss),
after GPS scaling, with the oracle scale and with per-image median scaling; the video-only trajectory error (ATE
after Sim(3) alignment, % of the path) of each ``--backends`` entry (compose, pose-graph, colmap) on the longest
flight, with its wall time. With ``--velocity-weight`` > 0 the network is trained with the GPS-to-scale
(velocity) loss on the same noisy GPS positions the post-hoc fit uses (``--gps-noise``).

``--pose-source metric``: metric poses first (COLMAP on the training flight aligned to the noisy GPS by the robust
Sim(3)), the depth trained against them; evaluated as is (network depth x metres per unit: ``depth_metric``,
``metric_scale_rel_error``) besides the post-hoc fits.

Writes ``<out>/results.json`` (also ``results-<pose>-v<weight>.json``): once after training, again at the end;
``--minutes`` ends training on time (and Ctrl-C ends it early) and the evaluation still runs. Progress lines go to
stdout (flushed). ``--device auto`` trains on CUDA when there is one.

    nice -n 10 .venv/bin/python bench/bench_selfsup_depth.py --dataset /tmp/ssd/sim/dataset --out /tmp/ssd-bench \
        --minutes 6 --pose-source posenet --velocity-weight 0

g2s (velocity loss) off / on, on a GPU, same budget (``max_depth=1000`` so a metric network can hold 100-400 m;
``--backends compose``: the GPU image may lack pycolmap, and the pose graph costs minutes of CPU):

    python bench/bench_selfsup_depth.py --dataset /tmp/ssd/sim/dataset --out /tmp/ssd/g2s-off --device cuda \
        --minutes 30 --batch-size 8 --threads 8 --velocity-weight 0 --model-set max_depth=1000 --backends compose
    python bench/bench_selfsup_depth.py --dataset /tmp/ssd/sim/dataset --out /tmp/ssd/g2s-on --device cuda \
        --minutes 30 --batch-size 8 --threads 8 --velocity-weight 0.1 --model-set max_depth=1000 --backends compose
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:7.1f} s] {msg}", flush=True)


def depth_metrics(pred: np.ndarray, gt: np.ndarray, max_m: float) -> dict[str, float]:
    m = np.isfinite(gt) & (gt > 0) & (gt < max_m)
    p, g = pred[m], gt[m]
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "delta_1.25": float(np.mean(ratio < 1.25)),
        "pixels": int(m.sum()),
    }


def rel_spread(values: list[float]) -> float | None:
    """Relative spread (std / mean) of per-segment scales; None with fewer than 2."""
    v = np.asarray([x for x in values if np.isfinite(x)])
    return float(np.std(v) / np.mean(v)) if len(v) > 1 else None


def machine() -> str:
    from pose2rgbd.experiments.machine import machine_description

    return str(machine_description()["cpu"]) or platform.machine()


def metric_poses_for(a: argparse.Namespace, ds: Any, gps_all: np.ndarray, out: dict[str, Any]) -> Path:
    """pose_source metric: COLMAP on the training flight (the longest source; the held-out routes are never trained
    on, so they get none), aligned to the noisy GPS ``gps_all`` by the robust Sim(3); written to
    ``<out>/metric_poses.npz``; what it did (and its ATE against the simulator) into ``out["metric_poses"]``."""
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.methods.selfsup_depth.metric import metric_poses_from_sfm
    from pose2rgbd.methods.selfsup_depth.sfm import colmap_poses
    from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig

    f = ds.frames
    sids, counts = np.unique(f.source_id, return_counts=True)
    train_sid = int(sids[np.argmax(counts)])
    idx = np.flatnonzero(f.source_id == train_sid)
    tcfg = TrajectoryConfig(backend="colmap")
    say(f"metric poses: COLMAP on source {train_sid} ({len(idx)} frames, every {tcfg.colmap_every})")
    t0 = time.monotonic()
    runs: dict[int, Any] = {int(s): ConfigError("held out: not trained on") for s in sids}
    try:
        runs[train_sid] = colmap_poses(ds.read_rgb, idx, ds.camera.K, tcfg)
    except ConfigError as e:
        runs[train_sid] = e
    mp = metric_poses_from_sfm(runs, gps_all, f.source_id, colmap_every=tcfg.colmap_every)
    ok = mp.ok
    err = np.linalg.norm(mp.T_world_cam[ok, :3, 3] - f.translation[ok], axis=1) if ok.any() else np.zeros(0)
    pos_err = {"rms": float(np.sqrt(np.mean(err**2))), "median": float(np.median(err))} if len(err) else None
    out["metric_poses"] = {
        "seconds": round(time.monotonic() - t0, 1),
        "metric_frames": mp.n_metric,
        "source": mp.info["sources"][str(train_sid)],
        "position_err_vs_truth_m": pos_err,
    }
    say(f"metric poses: {json.dumps(out['metric_poses'], default=str)}")
    return mp.save(a.out / "metric_poses.npz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    ap.add_argument("--checkpoint", type=Path, help="evaluate this selfsup-depth checkpoint instead of training")
    ap.add_argument("--pose-source", default="posenet", help="posenet | essential | metric (SfM + GPS Sim(3))")
    ap.add_argument("--velocity-weight", type=float, default=0.0, help="g2s / velocity loss weight (0: post-hoc fit)")
    ap.add_argument("--gps-noise", type=float, default=1.5, help="GPS noise, m per axis on every frame")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-depth-m", type=float, default=400.0, help="evaluate ground truth below this")
    ap.add_argument("--eval-frames", type=int, default=120)
    ap.add_argument("--segment-s", type=float, default=30.0, help="segment length for the scale consistency")
    ap.add_argument("--backends", default="compose,pose-graph,colmap",
                    help="video-only trajectory back ends to measure on the longest flight ('' for none)")  # fmt: skip
    ap.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a selfsup-depth model setting (YAML value), e.g. max_depth=1000; repeatable")  # fmt: skip
    ap.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 on a machine loaded by other work)")
    ap.add_argument("--workers", type=int, default=0, help="data loader workers")
    a = ap.parse_args()

    import cv2

    from pose2rgbd.convert.stages.depth_predict import predict, video_trajectory
    from pose2rgbd.convert.stages.scale import ScaleConfig, fit_scale, segment_scales
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.sequences import load_sequence_frames
    from pose2rgbd.methods.selfsup_depth.essential import essential_pose
    from pose2rgbd.methods.selfsup_depth.trajectory import (
        TrajectoryConfig,
        ate_sim3,
        compose_poses,
        relative_from_absolute,
        relative_pose_errors,
    )
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.training.config import TrainConfig
    from pose2rgbd.training.train import train
    from pose2rgbd.training.trainer import Callback

    torch.set_num_threads(a.threads)
    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    a.out.mkdir(parents=True, exist_ok=True)
    tag = f"{a.pose_source}-v{a.velocity_weight:g}" + "".join(f"-{kv}" for kv in a.model_set)
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", tag)  # a plain file name
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    out: dict[str, Any] = {"machine": machine(), "device": device, "torch": torch.__version__, "args": args}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))

    def save() -> None:
        text = json.dumps(out, indent=2, default=str)
        for name in ("results.json", f"results-{tag}.json"):
            tmp = a.out / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(a.out / name)

    ds = Dataset(a.dataset)  # ground truth, for evaluation
    f = ds.frames
    # one GPS realization for everything: the velocity loss trains on it, the post-hoc fit uses it
    gps_all = f.translation + a.gps_noise * np.random.default_rng(0).standard_normal(f.translation.shape)
    fam = get_family("selfsup-depth")
    import yaml

    extra = {k.strip(): yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in a.model_set)}
    if a.pose_source == "metric" and a.checkpoint is None:
        extra["metric_poses"] = str(metric_poses_for(a, ds, gps_all, out))
        save()
    mc = fam.make_config(pose_source=a.pose_source, velocity_weight=a.velocity_weight, **extra)
    if a.checkpoint is None:
        ds_train = Dataset(a.dataset)
        ds_train.frames.translation = gps_all.copy()  # what a GPS-derived dataset holds (the velocity loss reads it)
        tc = TrainConfig(epochs=100000, batch_size=a.batch_size, groups={"model": {"lr": a.lr}}, split="route",
                         max_minutes=a.minutes, val_every=0, progress=False, tensorboard=False, device=device,
                         num_workers=a.workers)  # fmt: skip

        class Progress(Callback):
            def __init__(self) -> None:
                self.last = 0.0

            def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
                now = time.monotonic()
                if now - self.last >= 30.0:
                    self.last = now
                    loss = {k: round(float(v), 4) for k, v in logs.items() if "loss" in k or k in ("velocity",)}
                    say(f"train step {trainer.step}: {loss}")

        class StopOnSigint(Callback):
            stop = False

            def on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
                if StopOnSigint.stop:
                    trainer.should_stop = True

        def on_sigint(signum: int, frame: Any) -> None:
            if StopOnSigint.stop:
                raise KeyboardInterrupt
            StopOnSigint.stop = True
            say("Ctrl-C: training stops after this step, evaluation follows (Ctrl-C again to abort)")

        signal.signal(signal.SIGINT, on_sigint)
        run = a.out / f"run-{tag}"
        say(f"training selfsup-depth ({tag}) on {device} for {a.minutes} min -> {run}")
        t0 = time.monotonic()
        res = train("selfsup-depth", ds_train, run, mc, tc, overwrite=True, callbacks=[Progress(), StopOnSigint()])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        train_s = time.monotonic() - t0
        ckpt = res.last
        out["train"] = {"steps": res.steps, "seconds": round(train_s, 1), "stop_reason": res.stop_reason,
                        "minutes_budget": a.minutes, "batch_size": a.batch_size, "pose_source": a.pose_source,
                        "velocity_weight": a.velocity_weight, "checkpoint": str(ckpt)}  # fmt: skip
        say(f"trained: {res.steps} steps in {train_s:.0f} s ({res.stop_reason})")
        save()
    else:
        ckpt = a.checkpoint
        out["train"] = {"checkpoint": str(ckpt), "note": "evaluated a given checkpoint"}
    model = load_checkpoint(ckpt).model.to(device)
    mc = model.config
    frames = load_sequence_frames(ds, mc.width, mc.height)
    say(f"predicting depth + relative poses of {len(frames)} frames")
    pred = predict(model, frames)
    rng_src = np.unique(f.source_id)
    per_source: dict[int, dict[str, Any]] = {}
    for sid in rng_src:
        idx = np.flatnonzero(f.source_id == sid)
        t_s = (f.stamp_ns[idx] - f.stamp_ns[idx[0]]) / 1e9
        T_gt = relative_from_absolute(f.T_world_cam[idx])
        T_net = pred.T_rel[idx[:-1]]
        rot, tdir = relative_pose_errors(T_net, T_gt)
        entry: dict[str, Any] = {"frames": len(idx), "seconds": float(t_s[-1]),
                                 "net_rot_err_deg": float(np.median(rot)),
                                 "net_tdir_err_deg": float(np.nanmedian(tdir))}  # fmt: skip
        # the essential-matrix source on the same pairs (at the dataset resolution)
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
        # GPS scale from the noisy positions
        try:
            fit = fit_scale(gps_all[idx], f.stamp_ns[idx], T_net, ScaleConfig(segment_s=a.segment_s))
            seg = segment_scales(fit, a.segment_s)
            entry["scale"] = fit.summary()
            entry["scale_segments"] = seg
            entry["scale_segments_rel_spread"] = rel_spread([s["scale"] for s in seg])
        except Exception as e:  # a short held-out route may not reach the baseline
            fit = None
            entry["scale_error"] = str(e)
        # oracle scale: median of per-pixel gt / pred over the evaluated frames; also per segment
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
        ev_t = (f.stamp_ns[ev] - f.stamp_ns[idx[0]]) / 1e9
        oseg = []
        for lo in np.arange(0.0, float(ev_t.max()) + a.segment_s, a.segment_s):
            sel = (ev_t >= lo) & (ev_t < lo + a.segment_s)
            if sel.any() and m[sel].any():
                ratio = G[sel][m[sel]] / P[sel][m[sel]]
                oseg.append({"t_s": float(lo + a.segment_s / 2), "scale": float(np.median(ratio))})
        entry["oracle_segments"] = oseg
        entry["oracle_segments_rel_spread"] = rel_spread([s["scale"] for s in oseg])
        entry["raw_scale_rel_error"] = float(1.0 / oracle - 1.0)  # the network's own scale (metric with g2s)
        entry["depth_raw"] = depth_metrics(P, G, a.max_depth_m)
        unit = float(getattr(model, "metric_unit", 0.0))
        if unit > 0:  # pose_source metric: the depth is metric by construction (network units x metres per unit)
            entry["metres_per_unit"] = unit
            entry["metric_scale_rel_error"] = float(unit / oracle - 1.0)
            entry["depth_metric"] = depth_metrics(P * unit, G, a.max_depth_m)
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
        brief = {k: entry.get(k) for k in ("scale_rel_error", "depth_gps_scaled", "ate_sim3_rel_path",
                                           "metric_scale_rel_error", "depth_metric")}  # fmt: skip
        say(f"source {int(sid)}: {json.dumps(brief, default=str)}")
    out["sources"] = per_source
    save()

    # video-only trajectory back ends on the longest flight
    backends = [b for b in a.backends.split(",") if b]
    if backends:
        sid = int(max(rng_src, key=lambda s: int(np.sum(f.source_id == s))))
        idx = np.flatnonzero(f.source_id == sid)
        sub = load_sequence_frames(ds, mc.width, mc.height)
        keep = np.isin(np.arange(len(sub)), idx)
        from dataclasses import replace

        sub = replace(sub, rgb=sub.rgb[keep], stamp_ns=sub.stamp_ns[keep], source_id=sub.source_id[keep],
                      T_world_cam=sub.T_world_cam[keep])  # fmt: skip
        from pose2rgbd.convert.stages.depth_predict import Prediction

        psub = Prediction(pred.depth[idx], pred.T_rel[idx[:-1]], pred.same_source[idx[:-1]])
        traj: dict[str, Any] = {"source": sid, "frames": len(idx)}
        for b in backends:
            say(f"trajectory back end {b} on source {sid} ({len(idx)} frames)")
            t0 = time.monotonic()
            try:
                T, info = video_trajectory(model, sub, psub, TrajectoryConfig(backend=b),
                                           read_rgb=lambda i: ds.read_rgb(int(idx[i])), K=ds.camera.K)  # fmt: skip
            except Exception as e:
                traj[b] = {"error": str(e)}
                continue
            rmse, rel = ate_sim3(T[:, :3, 3], f.translation[idx])
            traj[b] = {"ate_sim3_m": rmse, "ate_sim3_rel_path": rel, "seconds": round(time.monotonic() - t0, 1),
                       **{k: v for k, v in info["sources"][str(sid)].items() if k != "seconds"}}  # fmt: skip
            say(f"  {b}: ATE {rmse:.2f} m = {100 * rel:.2f} % of the path, {traj[b]['seconds']} s")
            out["trajectory"] = traj
            save()
    save()
    print(json.dumps(out, indent=2, default=str), flush=True)
    say(f"results: {a.out / 'results.json'}")


if __name__ == "__main__":
    main()
