"""Does a GoPro's gyroscope (GPMF GYRO) describe the image rotation between frames?

For each pair of consecutive frames: the small-angle rotation fitted to the DIS optical flow (the model of the
``derotated`` flow statistic, pinhole camera from ``--hfov``) and the gyro integrated over the same interval.
The gyro axes are mapped to the optical frame by each of the 48 signed axis permutations; the best one (lowest
median difference) is printed with the per-axis correlation. A gyro that could replace the fitted rotation
needs a clear correlation on all three axes.

Run: .venv/bin/python bench/gpmf_gyro_vs_flow.py CLIP.mp4 [--hfov 118]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np


def main() -> None:
    from pose2rgbd.convert.gopro import read_gpmf
    from pose2rgbd.convert.sources.video import read_video_frames
    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.sync.flow import FlowConfig, FlowMagnitude, to_flow_gray

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("--hfov", type=float, default=118.0)
    a = ap.parse_args()
    g = read_gpmf(a.clip).imu["GYRO"]
    cfg = FlowConfig(frame_step=1)
    fm = FlowMagnitude(cfg)
    fitted, spans, cam, prev = [], [], None, None
    for _, t, bgr in read_video_frames(a.clip):
        gray = to_flow_gray(bgr, cfg.width, is_bgr=True)
        if cam is None:
            cam = PinholeCamera.from_fov(bgr.shape[1], bgr.shape[0], a.hfov).scaled(gray.shape[1], gray.shape[0])
            yy, xx = np.mgrid[0 : gray.shape[0] : 2, 0 : gray.shape[1] : 2].astype(np.float64)
            x, y = (xx - cam.cx) / cam.fx, (yy - cam.cy) / cam.fy
            basis = np.concatenate([
                (np.stack([x * y, -(1 + x * x), y], -1) * cam.fx).reshape(-1, 3),
                (np.stack([1 + y * y, -x * y, -x], -1) * cam.fy).reshape(-1, 3),
            ])  # fmt: skip
        if prev is not None:
            fl = fm._flow(prev[1], gray)[::2, ::2]
            b = np.concatenate([fl[..., 0].ravel(), fl[..., 1].ravel()])
            fitted.append(np.linalg.lstsq(basis, b, rcond=None)[0])
            spans.append((prev[0], t))
        prev = (t, gray)
    om = np.asarray(fitted)
    cum = np.concatenate([[np.zeros(3)], np.cumsum(0.5 * (g.data[1:] + g.data[:-1]) * np.diff(g.t_s)[:, None], 0)])
    ta, tb = np.asarray(spans).T
    theta = np.stack([np.interp(tb, g.t_s, cum[:, k]) - np.interp(ta, g.t_s, cum[:, k]) for k in range(3)], -1)
    rows = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            pred = theta @ m.T
            err = float(np.median(np.linalg.norm(om - pred, axis=1)))
            corr = [float(np.corrcoef(om[:, k], pred[:, k])[0, 1]) for k in range(3)]
            rows.append((err, perm, signs, corr))
    err, perm, signs, corr = min(rows, key=lambda r: r[0])
    print(f"{a.clip}: {len(om)} frame pairs; median |fitted rotation| {np.median(np.linalg.norm(om, axis=1)):.4f} rad,"
          f" median |gyro rotation| {np.median(np.linalg.norm(theta, axis=1)):.4f} rad")  # fmt: skip
    print(
        f"  best axis map {perm} signs {signs}: median difference {err:.4f} rad, correlation per axis "
        + ", ".join(f"{c:+.2f}" for c in corr)
    )
    _, perm, signs, corr = max(rows, key=lambda r: float(np.mean(r[3])))
    print(
        f"  highest mean correlation over the 48 maps: {np.mean(corr):+.2f} ({perm} signs {signs}: "
        + ", ".join(f"{c:+.2f}" for c in corr)
        + ")"
    )


if __name__ == "__main__":
    main()
