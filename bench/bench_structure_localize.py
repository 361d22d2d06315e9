"""Structure localizer benchmark (not a test): image in -> pose out against a place map, and what the map costs.

    .venv/bin/python bench/bench_structure_localize.py --dataset D --map M [--queries 200] [--note "under load"]
    .venv/bin/python bench/bench_structure_localize.py --build-only --dataset D --map M --split route

Latency per query image is the structure localizer's own (:meth:`StructureLocalizer.localize_one`: SIFT on the
image, place recognition, matching against the candidate keyframes read lazily from the map, pycolmap LO-RANSAC
PnP + refinement, verification, covariance), one image at a time as the node sees them, in three modes: no prior,
a sequence (the previous fix as prior) and a GPS-like prior (true position + 1.5 m noise). Queries are the
dataset's frames that are not keyframes of the map (the held-out routes of a route-split map), evenly spread; the
first ``--skip`` are left out of the statistics (warm-up, page faults). The map's build time and size come from its
manifest (``--build-only`` builds it first and times it). Resident memory (VmRSS, VmHWM) is read from /proc.
``--profile`` also runs each mode once more under cProfile and prints the share of the time per stage (SIFT, place
recognition, candidate selection, matching, PnP, covariance, the rest).

Every run prints the machine (CPU model, SIMD flags, cores) and the same cores' float32 matrix-product GFLOP/s
measured in the run, so that numbers from machines of other speeds can be compared by ratio.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from bench_common import matmul_gflops, resident_mib, settle_free_page_reporting  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--map", type=Path, required=True)
    p.add_argument("--build-only", action="store_true", help="build the map (timed), print its size, stop")
    p.add_argument("--split", default="route", help="with --build-only: the split whose training frames are mapped")
    p.add_argument("--stride", type=int, default=1, help="with --build-only: every N-th selected frame")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--skip", type=int, default=5)
    p.add_argument("--max-side", type=int, default=0, help="query SIFT on images downscaled to this longer side")
    p.add_argument("--note", default="", help="load note for the output, e.g. 'under load'")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--profile", action="store_true", help="also print the share of time per stage (cProfile) per mode")
    args = p.parse_args()

    import dataclasses

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.experiments.machine import machine_description
    from pose2rgbd.inference.structure import Prior, StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, PlaceMap, build_map

    m = machine_description()
    gf = matmul_gflops()
    out: dict = {"machine": m, "matmul_gflops": gf, "command": "python " + shlex.join(sys.argv), "note": args.note}
    print(f"machine: {m['cpu']} ({m.get('cpu_flags', '')}), {m['cores']} cores; float32 matmul {gf:.0f} GFLOP/s"
          + (f"; {args.note}" if args.note else ""))  # fmt: skip
    if args.build_only:
        t0 = time.perf_counter()
        cfg = MapBuildConfig(selection=MapSelection(split=args.split, stride=args.stride))
        build_map(args.dataset, args.map, cfg, overwrite=True, progress=False)
        out["build_wall_s"] = time.perf_counter() - t0
    pm = PlaceMap(args.map)
    info = pm.info()
    out["map"] = {k: info[k] for k in ("keyframes", "image", "features", "size_mb_per_1000_keyframes", "build_s",
                                       "build_s_per_1000_keyframes")}  # fmt: skip
    # the keyframe store (what grows with the keyframes), as measured before map info counted fused/ as well
    out["map"]["size_bytes"] = info["size_parts"]["keyframe_store"]
    h, w = pm.image_hw
    print(f"map: {info['keyframes']} keyframes at {w}x{h}, {out['map']['size_bytes'] / 1e6:.1f} MB "
          f"({info['size_mb_per_1000_keyframes']:.0f} MB per 1,000), built in {info['build_s']:.0f} s "
          f"({info['build_s_per_1000_keyframes']:.0f} s per 1,000 keyframes; {gf:.0f} GFLOP/s matmul)")  # fmt: skip
    if args.build_only:
        _dump(args.json, out)
        return
    ds = Dataset(args.dataset)
    f = ds.frames
    rows = np.setdiff1d(np.arange(len(ds)), pm.frames)
    rows = rows[np.linspace(0, len(rows) - 1, min(args.queries, len(rows))).round().astype(int)]
    rows = rows[np.lexsort((f.stamp_ns[rows], f.source_id[rows]))]
    imgs = [ds.read_rgb(int(i)) for i in rows]
    T = f.T_world_cam[rows]
    base = StructureConfig()
    base = dataclasses.replace(base, features=dataclasses.replace(base.features, max_side=args.max_side))
    rng = np.random.default_rng(0)
    cam = pm.camera(0)  # the queries are frames of the map's dataset: its camera
    modes = {
        "no prior": (StructureLocalizer(pm, dataclasses.replace(base, use_previous_fix=False), cam), None),
        "sequence": (StructureLocalizer(pm, base, cam), None),
        "GPS prior": (StructureLocalizer(pm, dataclasses.replace(base, use_previous_fix=False), cam),
                      [Prior(t[:3, 3] + rng.normal(0, 1.5, 3), source="gps") for t in T]),
    }  # fmt: skip
    out["modes"] = {}
    print(f"before timing, {settle_free_page_reporting()}")  # a build just before freed gigabytes (bench_common)
    print(f"{len(rows)} queries at {ds.camera.width}x{ds.camera.height} (frames outside the map, in time order)")
    print("| mode | with a fix | median pos (m) | median rot (deg) | p50 ms | p99 ms | images/s | RSS MB (peak) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (loc, priors) in modes.items():
        lat, ok, pe, re_ = [], [], [], []
        prev = None
        for k, img in enumerate(imgs):
            if f.source_id[rows[k]] != prev:
                loc.reset()
                prev = f.source_id[rows[k]]
            t0 = time.perf_counter()
            fx = loc.localize_one(img, None if priors is None else priors[k])
            dt = time.perf_counter() - t0
            if k >= args.skip:
                lat.append(dt * 1e3)
            ok.append(fx.ok)
            if fx.ok:
                from pose2rgbd.evaluation.localization import pose_errors

                a, b = pose_errors(fx.T_world_cam[None], T[k][None])
                pe.append(float(a[0]))
                re_.append(float(b[0]))
        if args.profile:
            r_prof = stage_profile(loc, imgs, priors, f.source_id[rows])
            out.setdefault("profile", {})[name] = r_prof
        lat_a = np.asarray(lat)
        rss, hwm = resident_mib("VmRSS"), resident_mib("VmHWM")
        r = {"fix_rate": float(np.mean(ok)), "median_pos_m": float(np.median(pe)) if pe else float("nan"),
             "median_rot_deg": float(np.median(re_)) if re_ else float("nan"),
             "p50_ms": float(np.percentile(lat_a, 50)), "p99_ms": float(np.percentile(lat_a, 99)),
             "per_s": 1000.0 / float(np.mean(lat_a)), "rss_mb": rss, "peak_rss_mb": hwm}  # fmt: skip
        out["modes"][name] = r
        print(f"| {name} | {100 * r['fix_rate']:.1f} % | {r['median_pos_m']:.3f} | {r['median_rot_deg']:.3f} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['per_s']:.1f} | {rss:.0f} ({hwm:.0f}) |")  # fmt: skip
    out["map_cache"] = pm.cache_stats()
    if args.profile:
        print("\nshare of the time per stage (cProfile, a second pass over the same queries):\n")
        print("| stage | " + " | ".join(out["profile"]) + " |\n|---|" + "---:|" * len(out["profile"]))
        for stage in STAGES:
            cells = [f"{100 * p[stage] / p['total']:.0f} % ({1000 * p[stage] / p['images']:.1f} ms)"
                     for p in out["profile"].values()]  # fmt: skip
            print(f"| {stage} | " + " | ".join(cells) + " |")
        cells = [f"{100 * p['other'] / p['total']:.0f} % ({1000 * p['other'] / p['images']:.1f} ms)"
                 for p in out["profile"].values()]  # fmt: skip
        print("| other (image checks, verification, bookkeeping) | " + " | ".join(cells) + " |")
    _dump(args.json, out)


# the stages of StructureLocalizer.localize_one by the functions that do them, (file, function) -> cumulative time
# (the per-keyframe loop of earlier versions -- match_ratio, _root -- counts as matching too: before / after runs;
# earlier versions computed the covariance outside finish_fix, in information_covariance: not counted here)
STAGES = {
    "SIFT (query features)": [("features.py", "extract")],
    "place recognition (VLAD)": [("place.py", "describe")],
    "candidate selection": [("structure.py", "_places"), ("structure.py", "_prior_candidates")],
    "matching (ratio test)": [("structure_match.py", "match"), ("features.py", "match"), ("features.py", "match_ratio"),
                              ("structure.py", "_root")],
    "PnP (LO-RANSAC + refinement)": [("~", "<built-in method pycolmap._core.estimate_and_refine_absolute_pose>")],
    "covariance + calibration": [("structure_calibration.py", "finish_fix")],  # the covariance is computed in it
}  # fmt: skip


def stage_profile(loc, imgs: list, priors: list | None, source: np.ndarray) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Seconds per stage of :data:`STAGES` over one pass of the queries (``other``: the rest), under cProfile."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prev = None
    t0 = time.perf_counter()
    prof.enable()
    for k, img in enumerate(imgs):
        if source[k] != prev:
            loc.reset()
            prev = source[k]
        loc.localize_one(img, None if priors is None else priors[k])
    prof.disable()
    total = time.perf_counter() - t0
    st = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = {"total": total, "images": len(imgs)}
    for stage, funcs in STAGES.items():
        out[stage] = sum(v[3] for (file, _, fn), v in st.items() if any(file.endswith(a) and fn == b for a, b in funcs))
    out["other"] = total - sum(out[s] for s in STAGES)
    return out


def _dump(path: Path | None, data: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=float))


if __name__ == "__main__":
    main()
