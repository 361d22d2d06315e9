"""Localize node benchmark (not a test): throughput and latency of the node logic, offline over a bag.

    .venv/bin/python bench/bench_localize.py                                   # toy-localizer at 128x128
    .venv/bin/python bench/bench_localize.py --checkpoint runs/posegan/best.pt --camera 640x480 --compressed

A bag of ``--images`` camera images (``--camera`` WxH, rgb8 or jpeg with ``--compressed``; smooth random
content) is replayed through the localize node (:data:`pose2rgbd.nodes.localizer.LOCALIZER`) by the offline
runner, as fast as possible, one image at a time (no batching: each image is localized when it arrives, as live).
Latency per image is the node's own: decode, fit to the model input (resize / centre-crop), the forward pass,
the covariance and the messages (``last_latency_ms``); the first ``--skip`` images are left out (warm-up).
Throughput is localized images per second of node time (sum of the latencies), and also per wall second of the
whole replay (bag reading and writing included). Targets: 10 images/s at 128x128 on the CPU, p99 under
100 ms without refinement.

Without ``--checkpoint`` a ``toy-localizer`` (a tiny untrained network, :mod:`pose2rgbd.testing.toy_localizer`)
of ``--size`` is used: it measures the serving path, not a real model. Prints a Markdown row with the command and
the machine.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_engine import _machine  # noqa: E402


def _images(n: int, w: int, h: int, seed: int = 0) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8), (w, h)) for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None, help="image -> pose checkpoint (default: toy-localizer)")
    p.add_argument("--size", type=int, default=128, help="toy-localizer input size (without --checkpoint)")
    p.add_argument("--camera", default="128x128", help="camera image size WxH in the bag")
    p.add_argument("--compressed", action="store_true", help="jpeg CompressedImage instead of rgb8 Image")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--skip", type=int, default=5, help="first images left out of the latency statistics")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="the network's CPU threads (0: the engine's auto, one fewer than torch's default)",
    )
    p.add_argument("--note", default="", help="load note for the table, e.g. 'under load'")
    args = p.parse_args()

    from pose2rgbd.inference import EngineConfig
    from pose2rgbd.models.checkpoint import save_checkpoint
    from pose2rgbd.nodes.localizer import LOCALIZER, LocalizerConfig
    from pose2rgbd.runtime.offline import run_node_bag
    from pose2rgbd.testing.flight_bag import write_image_bag

    w, h = (int(v) for v in args.camera.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_localize_") as tmp:
        t = Path(tmp)
        ckpt = args.checkpoint
        what = str(ckpt)
        if ckpt is None:
            from pose2rgbd.testing.toy_localizer import make_toy_localizer_checkpoint

            ck = make_toy_localizer_checkpoint(args.size)
            ckpt = save_checkpoint(t / "toy.pt", ck.model, dataset_fingerprint="bench", camera=ck.camera)
            what = f"toy-localizer {args.size}x{args.size}"
        bag = t / "cam"
        write_image_bag(bag, _images(args.images, w, h), compressed=args.compressed)
        cfg = LocalizerConfig(
            engine=EngineConfig(
                checkpoint=str(ckpt), device=args.device, precision=args.precision, threads=args.threads, warmup=2
            ),
            image_type="compressed" if args.compressed else "raw",
            covariance_source="default",
        )
        t0 = time.perf_counter()
        stats = run_node_bag(LOCALIZER, cfg, bag, t / "out")
        wall = time.perf_counter() - t0
    lat = np.asarray(stats.latency_ms[args.skip :])
    if len(lat) == 0:
        sys.exit("no image was localized")
    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
    node_rate = len(lat) / (lat.sum() / 1e3)
    wall_rate = stats.counters["frames"] / wall
    cmd = "python bench/bench_localize.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"command: `{cmd}`\nmachine: {_machine(args)}{' (' + args.note + ')' if args.note else ''}\n")
    print("| model | camera | images | p50 ms | p99 ms | images/s (node) | images/s (wall, incl. bag I/O) |")
    print("|---|---|---|---|---|---|---|")
    kind = "jpeg" if args.compressed else "rgb8"
    print(f"| {what} | {w}x{h} {kind} | {len(lat)} | {p50:.1f} | {p99:.1f} | {node_rate:.1f} | {wall_rate:.1f} |")
    ok = node_rate >= 10 and p99 < 100
    print(f"\ntarget (10 images/s, p99 < 100 ms): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
