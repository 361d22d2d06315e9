"""Why the synthetic flights give only peak NCC ~0.6 and why one-frame offsets are out of reach there.

Renders a simulator flight (no bag: poses, depth and GPS straight from ``pose2rgbd.sim``) and measures the lag
of several image-side signals against the TRUE speed (no GPS noise, no clock offset: the right answer is 0):

* ``dis_mean``: the converter's statistic (DIS flow, frame_step 3, mean |flow| over textured pixels);
* ``dis_derot``: the same after subtracting the rotational flow of the TRUE camera rotation (a perfect gyro);
* ``exact_transl``: the exact translational motion field from the ground-truth depth and poses (no flow error);
* and the GPS speed (1.5 m noise, 10 Hz, local line fit over 2 s) against the true speed.

Usage: ``.venv/bin/python bench/sync_sim_diagnosis.py --route crossing --size 96 --duration 60 [--plot out.png]``
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.sim import SimConfig
from pose2rgbd.sim.export import camera_trajectory, flight_plan, gps_track, make_camera, make_datum, world_of
from pose2rgbd.sim.render import Renderer
from pose2rgbd.sync import SyncConfig, correlate_signals, speed_from_positions
from pose2rgbd.sync.flow import FlowMagnitude, flow_times


def rot_flow(cam: PinholeCamera, R_ba: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel displacement of directions at infinity from camera a to camera b (``R_ba`` rotates a-rays into b)."""
    r = np.stack([(xx - cam.cx) / cam.fx, (yy - cam.cy) / cam.fy, np.ones_like(xx)], -1) @ R_ba.T
    return cam.fx * r[..., 0] / r[..., 2] + cam.cx - xx, cam.fy * r[..., 1] / r[..., 2] + cam.cy - yy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--route", default="crossing")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--plot", default="")
    a = ap.parse_args()
    routes = ["survey", a.route] if a.route != "survey" else ["survey"]
    cfg = SimConfig(
        width=a.size, height=a.size, routes=routes, route_duration_s=a.duration, survey_duration_s=a.duration,
        gps_noise_h_m=1.5, shadows=False,
    )  # fmt: skip
    plan = flight_plan(cfg, a.route)
    tr = camera_trajectory(cfg, a.route, plan)
    g = gps_track(cfg, a.route, plan)
    cam = make_camera(cfg)
    t0 = time.perf_counter()
    rgb, depth = Renderer(world_of(cfg), cam, shadows=False).render_batch(tr.T_world_cam)
    print(f"rendered {len(rgb)} frames {a.size}x{a.size} in {time.perf_counter() - t0:.1f} s")
    ft = (tr.stamps_ns - tr.stamps_ns[0]) / 1e9
    Twc = tr.T_world_cam
    step = 3
    fm = FlowMagnitude()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in rgb]
    yy, xx = np.mgrid[0 : a.size, 0 : a.size].astype(np.float64)
    rays = np.stack([(xx - cam.cx) / cam.fx, (yy - cam.cy) / cam.fy, np.ones_like(xx)], -1)
    sig: dict[str, list[float]] = {"dis_mean": [], "dis_derot": [], "exact_transl": [], "exact_full": []}
    for i in range(len(gray)):
        v = fm.add_gray(ft[i], gray[i])
        if i < step:
            continue
        sig["dis_mean"].append(v)
        dt = ft[i] - ft[i - step]
        fl = dis.calc(gray[i - step], gray[i], None).astype(np.float64)
        gx, gy = cv2.Sobel(gray[i], cv2.CV_32F, 1, 0), cv2.Sobel(gray[i], cv2.CV_32F, 0, 1)
        tex = np.abs(gx) + np.abs(gy)
        keep = tex > np.quantile(tex, 0.3)
        Ta, Tb = Twc[i - step], Twc[i]
        ur, vr = rot_flow(cam, Tb[:3, :3].T @ Ta[:3, :3], xx, yy)
        sig["dis_derot"].append(float(np.hypot(fl[..., 0] - ur, fl[..., 1] - vr)[keep].mean() / dt))
        Z = depth[i - step].astype(np.float64)
        ok = np.isfinite(Z) & (Z < 1e4)
        P = rays[ok] * Z[ok, None]
        Pb = (P @ Ta[:3, :3].T + Ta[:3, 3] - Tb[:3, 3]) @ Tb[:3, :3]
        u = cam.fx * Pb[:, 0] / Pb[:, 2] + cam.cx - xx[ok]
        w = cam.fy * Pb[:, 1] / Pb[:, 2] + cam.cy - yy[ok]
        sig["exact_full"].append(float(np.hypot(u, w).mean() / dt))
        sig["exact_transl"].append(float(np.hypot(u - ur[ok], w - vr[ok]).mean() / dt))
    tf = flow_times(ft, step)[step:]
    vt = np.arange(0.0, plan.duration_s, 0.01)
    true = np.linalg.norm(plan.twist_at(vt)[0], axis=1)
    enu = make_datum(cfg).to_enu(g.lat, g.lon, g.alt)
    gps = speed_from_positions(g.measured_s, enu, 2.0, horizontal=False)
    omega = np.linalg.norm(plan.twist_at(vt)[1], axis=1)
    quick = SyncConfig(n_surrogates=0)
    print(f"{'signal':14s} {'corr(speed)':>11s} {'corr(|w|)':>9s} {'lag vs true speed':>18s} {'lag vs GPS speed':>17s}")
    for k, x in sig.items():
        x = np.asarray(x)
        cs = np.corrcoef(x, np.interp(tf, vt, true))[0, 1]
        cw = np.corrcoef(x, np.interp(tf, vt, omega))[0, 1]
        rt = correlate_signals(tf, x, vt, true, quick)
        rg = correlate_signals(tf, x, g.measured_s, gps, SyncConfig())
        print(
            f"{k:14s} {cs:11.2f} {cw:9.2f} {rt.estimate_s:+14.3f} s   {rg.estimate_s:+.3f} s {rg.verdict} "
            f"(NCC {rg.peak_ncc:.2f}, p {rg.p_value:.3f}, jk {rg.uncertainty_s:.2f}, conf {rg.confidence:.2f})"
        )
    r = correlate_signals(vt, true, g.measured_s, gps, quick)
    print(
        f"GPS speed (2 s line fit) vs true speed: lag {r.estimate_s:+.3f} s, NCC {r.peak_ncc:.2f}, "
        f"speed error std {np.std(gps - np.interp(g.measured_s, vt, true)):.2f} m/s"
    )
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
        ax[0].plot(tf, sig["dis_mean"], lw=0.6, label="DIS mean |flow| (converter)")
        ax[0].plot(tf, sig["dis_derot"], lw=0.6, label="DIS, true rotation removed")
        ax[0].set_ylabel("px/s")
        ax[0].legend(loc="upper right", fontsize=8)
        ax[1].plot(vt, true, label="true speed")
        ax[1].plot(g.measured_s, gps, lw=0.6, label="GPS speed, 1.5 m noise, 2 s line fit")
        ax[1].set_ylabel("m/s")
        ax[1].legend(loc="upper right", fontsize=8)
        ax[2].plot(vt, np.degrees(omega), color="C3", label="|angular rate| (tilt into acceleration, yaw)")
        ax[2].set_ylabel("deg/s")
        ax[2].set_xlabel("time (s)")
        ax[2].legend(loc="upper right", fontsize=8)
        fig.suptitle(f"sim {a.route} {a.duration:.0f} s, {a.size} px: flow vs speed")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=80)


if __name__ == "__main__":
    main()
