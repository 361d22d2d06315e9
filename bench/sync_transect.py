"""Algorithm 1 on simulated mapping flights: the ``transect`` route, gimbal-stabilized camera, GPS 10 Hz / 1.5 m.

For each seed, the first ``--duration`` seconds of the transect (straight lines with speed changes, hovers and
turns in place at the line ends) are exported as a bag with GPS offset +0.7 s and read back by the converter
(``load_bag_streams`` + ``plan_poses``, i.e. the code ``pose2rgbd convert bag`` runs). Per seed it prints:

* the lag of the GPS speed (local line fit over ``speed_window_s``) against the TRUE speed: the GPS-side
  error alone, with a perfect image-side signal (right answer 0; in camera frames);
* for each converter variant, the error of the estimate in frames (GPS re-stamped to -2.0, -0.5, 0, +0.7,
  +1.5 s: the errors barely differ, the GPS noise realization is the same), verdict and confidence.

Variants (``ConvertConfig`` overrides): ``default``; ``no-rotation-mask`` (``sync.max_rotation_dps: 0``, the
behaviour before the mask); ``quantile`` (``sync.flow.statistic: quantile``, for nadir mapping cameras).

Usage: ``.venv/bin/python bench/sync_transect.py --seeds 0,1,2,3,4,5,6,7 --duration 120``
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.sources.bag import load_bag_streams
from pose2rgbd.convert.stages.time_offset import plan_poses
from pose2rgbd.geometry import Datum
from pose2rgbd.sim import SimConfig, export_bag
from pose2rgbd.sim.export import flight_plan
from pose2rgbd.sync import SyncConfig, correlate_signals, speed_from_positions

OFFSETS = (-2.0, -0.5, 0.0, 0.7, 1.5)
TRUE = 0.7
VARIANTS = {
    "default": {},
    "no-rotation-mask": {"sync": {"max_rotation_dps": 0.0}},
    "quantile": {"sync": {"flow": {"statistic": "quantile"}}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--pitch", type=float, default=90.0, help="camera pitch below the horizon (90 = nadir)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--surrogates", type=int, default=200, help="surrogates of the p-value (0 = faster)")
    a = ap.parse_args()
    fr = 30.0
    summary: dict[str, list[tuple[float, str]]] = {v: [] for v in a.variants.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(x) for x in a.seeds.split(",")):
            cfg = SimConfig(seed=seed, width=a.size, height=a.size, routes=["transect"], route_duration_s=a.duration,
                            gps_noise_h_m=1.5, gps_rate_hz=10.0, gps_time_offset_s=TRUE, bag_routes=["transect"],
                            video_routes=["transect"], shadows=False, stabilized=True, camera_pitch_deg=a.pitch,
                            ground_truth_topics=False)  # fmt: skip
            t0 = time.perf_counter()
            bag = export_bag(cfg, Path(tmp) / f"s{seed}", "transect", progress=False)
            plan = flight_plan(cfg, "transect")
            vt = np.arange(0.0, plan.duration_s, 0.01)
            true = np.linalg.norm(plan.twist_at(vt)[0], axis=1)
            base = ConvertConfig()
            s = load_bag_streams(bag, base, progress=False)
            enu = Datum(s.lat[0], s.lon[0], s.alt[0]).to_enu(s.lat, s.lon, s.alt)
            gps = speed_from_positions(s.gps_t - TRUE, enu, base.speed_window_s, horizontal=False)
            rg = correlate_signals(vt, true, s.gps_t - TRUE, gps, SyncConfig(n_surrogates=0))
            print(f"seed {seed}: {a.duration:.0f} s, {a.size} px, pitch {a.pitch:.0f}; GPS speed "
                  f"({base.speed_window_s:g} s window) vs true speed {rg.estimate_s * fr:+.2f} frames",
                  flush=True)  # fmt: skip
            for name in summary:
                over = copy.deepcopy(VARIANTS[name])
                over.setdefault("sync", {})["n_surrogates"] = a.surrogates
                c = ConvertConfig(sync=SyncConfig(**{k: v for k, v in over["sync"].items() if k != "flow"}))
                if "flow" in over["sync"]:
                    from pose2rgbd.sync.flow import FlowConfig

                    c.sync.flow = FlowConfig(**over["sync"]["flow"])
                    s_v = load_bag_streams(bag, c, progress=False)
                else:
                    s_v = s
                cells = []
                for d in OFFSETS:
                    s2 = copy.copy(s_v)
                    s2.gps_t = s_v.gps_t + (d - TRUE)
                    r = plan_poses(s2, c).sync
                    assert r is not None
                    err = (r.estimate_s - d) * fr
                    cells.append(f"{err:+.2f} {r.verdict} {r.confidence:.2f}")
                    if d == TRUE:
                        summary[name].append((err, r.verdict))
                print(f"   {name:17s} | " + " | ".join(cells), flush=True)
            print(f"   [{time.perf_counter() - t0:.0f} s]", flush=True)
    print("\nsummary over seeds (estimate at the true offset, frames):")
    for name, rows in summary.items():
        e = np.array([x for x, _ in rows])
        ok = np.array([v == "ok" for _, v in rows])
        wrong = int(np.sum(ok & (np.abs(e) > 1.0)))
        worst = e[np.argmax(np.abs(e))]
        print(f"  {name:17s} rms {np.sqrt(np.mean(e**2)):.2f}, within 1 frame {np.mean(np.abs(e) <= 1):.0%}, "
              f"verdict ok {ok.sum()}/{ok.size}, ok but > 1 frame off {wrong}, worst {worst:+.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
