"""Algorithm 1 on simulated mapping lines: the ``transect`` route, gimbal-stabilized camera, GPS 10 Hz / 1.5 m.

For each seed, one straight leg of the transect (from the start hover to just before the first turn in place,
at most ``--max-duration`` s) is exported as a bag with GPS offset +0.7 s and read back by the converter. It
prints, per seed:

* the lag of the converter's flow signal against the TRUE speed and of the GPS speed (line fit over
  ``speed_window_s``) against the TRUE speed (right answer 0 for both; in camera frames);
* ``plan_poses`` (the converter's sync step) for the GPS re-stamped to offsets -2.0, -0.5, 0, +0.7, +1.5 s:
  error of the raw estimate in frames, verdict, confidence; with the default 2 s speed window and with 3 s.

Usage: ``.venv/bin/python bench/sync_transect.py --seeds 0,1,2,3,4,5 --pitch 90 --size 96``
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from pose2rgbd.convert.bag import load_bag_streams
from pose2rgbd.convert.core import ConvertConfig, plan_poses
from pose2rgbd.geometry import Datum
from pose2rgbd.sim import FlightPlan, SimConfig, export_bag
from pose2rgbd.sim.export import flight_plan
from pose2rgbd.sync import SyncConfig, correlate_signals, speed_from_positions
from pose2rgbd.sync.flow import flow_times

OFFSETS = (-2.0, -0.5, 0.0, 0.7, 1.5)
TRUE = 0.7


def first_turn_s(seed: int, horizon: float = 120.0) -> float:
    p = FlightPlan("transect", 300.0, horizon, seed, stabilized=True)
    t = np.arange(0.0, horizon - 1.0, 0.05)
    w = np.degrees(np.abs(p.twist_at(t)[1][:, 2]))
    return float(t[np.argmax(w > 2.0)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--pitch", type=float, default=90.0, help="camera pitch below the horizon (90 = nadir)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--duration", type=float, default=0.0, help="clip length (0 = up to the first turn)")
    ap.add_argument("--max-duration", type=float, default=60.0)
    a = ap.parse_args()
    fr = 30.0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(x) for x in a.seeds.split(",")):
            dur = a.duration or min(first_turn_s(seed) - 0.5, a.max_duration)
            cfg = SimConfig(seed=seed, width=a.size, height=a.size, routes=["transect"], route_duration_s=dur,
                            gps_noise_h_m=1.5, gps_rate_hz=10.0, gps_time_offset_s=TRUE, bag_routes=["transect"],
                            video_routes=["transect"], shadows=False, stabilized=True, camera_pitch_deg=a.pitch,
                            ground_truth_topics=False)  # fmt: skip
            t0 = time.perf_counter()
            bag = export_bag(cfg, Path(tmp) / f"s{seed}", "transect", progress=False)
            s, _ = load_bag_streams(bag, ConvertConfig(), progress=False)
            plan = flight_plan(cfg, "transect")
            tf = flow_times(s.frame_t, 3)
            ok = np.isfinite(s.flow)
            vt = np.arange(0.0, plan.duration_s, 0.01)
            true = np.linalg.norm(plan.twist_at(vt)[0], axis=1)
            enu = Datum(s.lat[0], s.lon[0], s.alt[0]).to_enu(s.lat, s.lon, s.alt)
            gps = speed_from_positions(s.gps_t - TRUE, enu, 2.0, horizontal=False)
            quick = SyncConfig(n_surrogates=0)
            rf = correlate_signals(tf[ok], s.flow[ok], vt, true, quick)
            rg = correlate_signals(vt, true, s.gps_t - TRUE, gps, quick)
            print(f"seed {seed}: {dur:.1f} s, {a.size} px, pitch {a.pitch:.0f}; flow vs true speed "
                  f"{rf.estimate_s * fr:+.2f} frames (NCC {rf.peak_ncc:.2f}); GPS speed vs true speed "
                  f"{rg.estimate_s * fr:+.2f} frames  [{time.perf_counter() - t0:.0f} s]")  # fmt: skip
            for win in (2.0, 3.0):
                cells = []
                for d in OFFSETS:
                    s2 = copy.copy(s)
                    s2.gps_t = s.gps_t + (d - TRUE)
                    r = plan_poses(s2, ConvertConfig(speed_window_s=win)).sync
                    assert r is not None
                    cells.append(f"{d:+.1f}: {(r.estimate_s - d) * fr:+.2f} f {r.verdict} {r.confidence:.2f}")
                print(f"   speed window {win:.0f} s | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
