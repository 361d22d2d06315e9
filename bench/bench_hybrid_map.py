"""Hybrid renderer, keyframes embedded in the checkpoint vs read from a place map (not a test): resident memory and
pose-to-images latency as the place grows.

    .venv/bin/python bench/bench_hybrid_map.py --dataset D --map M --size 256 --keyframes 2000 20000 \
        [--preset hybrid-fast] [--poses 200] [--threads 2] [--note "under load"]

``--dataset`` / ``--map``: a dataset with metric depth and a place map of its frames (e.g. the simulated survey at
256x256 with ``pose2rgbd map build``). Each configuration runs in a fresh process (so resident memory is its own):

* ``embedded N``: a hybrid whose keyframe store holds N frames of the dataset at ``--size`` (how every hybrid
  checkpoint carried them before place maps; the store caps at 4,000 by default, here N as asked, from the
  dataset's frames repeated if it has fewer);
* ``map N``: the same network reading its keyframes from a map of N keyframes: the given map, or for N above its
  size a larger one made by tiling it (each copy of the place shifted by 400 m: a bigger place with the same
  content, written with the map writer from the stored files, no re-encoding), LRU of 256 decoded keyframes.

The network (``--preset``, default ``hybrid``) is untrained (speed and memory do not depend on its weights) and
prepared as the render engine prepares it (BatchNorm folded, convolutions channels-last; the keyframe store is
shared, not copied). Poses: the map's own keyframe poses
perturbed by 2 m / 3 deg, in order (a flight through the place). Per configuration: resident memory after
loading and its peak while rendering (VmRSS / VmHWM), p50 / p99 latency of one pose at a time, and the map's cache
hits. Every run prints the machine (CPU model, SIMD flags) and the float32 matmul GFLOP/s measured in the run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def tiled_map(src: Path, n: int, out: Path) -> Path:
    """A map of ``n`` keyframes: ``src`` repeated, copy c shifted by (400 c, 0, 0) m (reused when present)."""
    from pose2rgbd.placemap import PlaceMap
    from pose2rgbd.placemap.format import MapWriter

    if (out / "map.json").exists() and PlaceMap(out).info()["keyframes"] == n:
        return out
    pm = PlaceMap(src)
    m = dict(pm.manifest)
    with MapWriter(out, has_depth=pm.has_depth, image_codec=m["image"]["codec"], image_quality=95) as w:
        T, K, frames, glob = [], [], [], []
        for j in range(n):
            k, c = j % len(pm), j // len(pm)
            f = pm.features(k)
            shift = np.array([400.0 * c, 0.0, 0.0], np.float32)
            w.add_encoded(bytes(pm._img[pm._img_off[k] : pm._img_off[k + 1]]),
                          bytes(pm._depth[pm._depth_off[k] : pm._depth_off[k + 1]]),
                          f.xy, f.desc, f.xyz + shift)  # fmt: skip
            t = pm.T_world_cam[k].copy()
            t[:3, 3] += shift
            T.append(t)
            K.append(pm.intrinsics[k])
            frames.append(pm.frames[k])
            glob.append(pm.global_desc[k])
        w.save_array("poses", np.stack(T))
        w.save_array("intrinsics", np.stack(K))
        w.save_array("frames", np.asarray(frames, np.int64))
        w.save_array("global", np.stack(glob))
        w.save_npz("vocabulary", **pm.describer.arrays())
        m.pop("files", None)
        m["keyframes"] = n
        m["tiled_from"] = str(src)
        w.close({k: v for k, v in m.items() if k not in ("format", "version")}, overwrite=True)
    return out


def run_one(args: argparse.Namespace) -> dict:
    """One configuration in this process (called by the parent with --one)."""
    import torch
    from bench_common import matmul_gflops, resident_mib

    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.placemap import PlaceMap

    torch.set_num_threads(args.threads)
    kind, n = args.one.split(":")
    n = int(n)
    pm = PlaceMap(args.map_for_run)
    fam = get_family("hybrid")
    mc = fam.make_config(args.preset, size=args.size, max_keyframes=max(n, 1))
    torch.manual_seed(0)
    model = fam.build(mc)
    model.set_pose_normalizer(PoseNormalizer.fit(pm.T_world_cam, mc.encoding))
    model.set_depth_normalizer(DepthNormalizer(1.0, 400.0))
    cam = pm.camera(0).scaled(args.size, args.size)
    if kind == "embedded":
        cache = build_cache(Dataset(args.dataset), args.size, progress=False)
        rows = np.resize(np.arange(len(cache.T_world_cam)), n)
        model.set_keyframes(np.asarray(cache.rgb[np.sort(rows)]), np.asarray(cache.depth[np.sort(rows)]),
                            cache.T_world_cam[np.sort(rows)], cam, source_id=np.zeros(n, np.int64),
                            seq_pos=np.arange(n), index=rows, rot_weight_m=float(pm.poses.rot_weight_m))  # fmt: skip
    else:
        model.use_keyframes(pm, camera=cam, rot_weight_m=float(pm.poses.rot_weight_m))
    from pose2rgbd.models.device import prepare_for_inference

    model = prepare_for_inference(model.eval(), torch.device("cpu"))
    rss_loaded = resident_mib("VmRSS")
    rng = np.random.default_rng(0)
    idx = np.linspace(0, min(n, len(pm)) - 1, args.poses).round().astype(int)
    from scipy.spatial.transform import Rotation

    T = pm.T_world_cam[idx].copy()
    T[:, :3, 3] += rng.normal(0, 2.0, (len(idx), 3))
    T[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, np.radians(3.0), (len(idx), 3))).as_matrix() @ T[:, :3, :3]
    pose = torch.from_numpy(model.pose_normalizer.normalize(T)).float()
    lat = []
    with torch.no_grad():
        for k in range(len(T)):
            t0 = time.perf_counter()
            model(pose[k : k + 1], T[k : k + 1])
            lat.append((time.perf_counter() - t0) * 1e3)
    rss, hwm = resident_mib("VmRSS"), resident_mib("VmHWM")
    lat_a = np.asarray(lat[5:])
    out = {"config": args.one, "size": args.size, "keyframes": n, "rss_loaded_mb": rss_loaded, "rss_mb": rss,
           "peak_rss_mb": hwm, "p50_ms": float(np.percentile(lat_a, 50)), "p99_ms": float(np.percentile(lat_a, 99)),
           "matmul_gflops": matmul_gflops()}  # fmt: skip
    mk = model.keyframes
    if mk is not None and kind != "embedded":
        out["cache"] = mk.cache_stats()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--map", type=Path, required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--preset", default="hybrid", help="hybrid preset (hybrid, hybrid-lite, hybrid-fast)")
    p.add_argument("--keyframes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--poses", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_hybrid_map"))
    p.add_argument("--note", default="")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    p.add_argument("--map-for-run", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    from pose2rgbd.experiments.machine import machine_description

    m = machine_description()
    print(
        f"machine: {m['cpu']} ({m.get('cpu_flags', '')}), {m['cores']} cores" + (f"; {args.note}" if args.note else "")
    )
    print(f"command: python {shlex.join(sys.argv)}")
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.keyframes:
        mp = tiled_map(args.map, n, args.work / f"map{n}")
        for kind in ("embedded", "map"):
            if kind == "embedded" and n > 4000:
                continue  # the store's cap (max_keyframes 4000): a larger place does not fit in it
            cmd = [sys.executable, __file__, "--dataset", str(args.dataset), "--map", str(args.map), "--size",
                   str(args.size), "--preset", args.preset, "--poses", str(args.poses), "--threads",
                   str(args.threads), "--one", f"{kind}:{n}", "--map-for-run", str(mp)]  # fmt: skip
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append(res)
            print(f"| {args.preset} | {kind} | {n} | {args.size} | {res['rss_loaded_mb']:.0f} | "
                  f"{res['peak_rss_mb']:.0f} | {res['p50_ms']:.1f} | {res['p99_ms']:.1f} | "
                  f"{res['matmul_gflops']:.0f} |", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": m, "note": args.note, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
