"""End-to-end conversion speed: 640x480 video + GPS CSV -> dataset (decode, flow, sync, write, report).

Run: .venv/bin/python bench/bench_convert.py [--frames 600] [--jpg]
Prints frames per second of the whole ``convert_video`` call (both passes) and of each pass.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def make_video(path: Path, n: int, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> np.ndarray:
    """A textured scene panning with a varying speed; returns the pan speed (px/frame) per frame."""
    rng = np.random.default_rng(0)
    w, h = size
    speed = 2.0 + 6.0 * (0.5 + 0.5 * np.sin(np.arange(n) / fps * 2 * np.pi / 7.0))
    x = np.concatenate([[0.0], np.cumsum(speed)[:-1]])
    tex = cv2.GaussianBlur((rng.random((h, int(x[-1]) + w + 2, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(n):
        xi = int(x[i])
        wr.write(np.ascontiguousarray(tex[:, xi : xi + w]))
    wr.release()
    return speed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--jpg", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.video import convert_video

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        speed = make_video(d / "v.mp4", args.frames)
        t = np.arange(args.frames) / 30.0
        gt = np.arange(-1.0, t[-1] + 1.0, 0.1)
        v = np.interp(gt - 0.4, t, speed) * 0.5  # m/s; the GPS clock is 0.4 s late
        pos = np.cumsum(v) * 0.1
        lat = 44.43 + pos / 111_000.0
        rows = [f"{a:.3f},{b:.8f},26.1,80,{c:.3f},1" for a, b, c in zip(gt, lat, v)]
        (d / "g.csv").write_text("time_s,lat,lon,alt,speed_mps,fix\n" + "\n".join(rows) + "\n")
        cfg = ConvertConfig()
        cfg.output.rgb_encoding = "jpg" if args.jpg else "png"
        t0 = time.perf_counter()
        out = convert_video(d / "v.mp4", d / "g.csv", d / "ds", cfg, progress=False)
        dt = time.perf_counter() - t0
        import json

        s = json.loads((out / "report" / "summary.json").read_text())
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, "
          f"OpenCV {cv2.__version__}, threads {cv2.getNumThreads()}")  # fmt: skip
    enc = "jpg" if args.jpg else "png"
    print(f"{args.frames} frames 640x480 ({enc}): {dt:.2f} s -> {args.frames / dt:.1f} frames/s "
          f"end to end")  # fmt: skip
    est = s["time_offset"]["estimator"]
    print(f"offset estimate {est['estimate_s']:+.3f} s (true +0.400), verdict {est['verdict']}, "
          f"frames kept {s['frames']['kept']}")  # fmt: skip


if __name__ == "__main__":
    main()
