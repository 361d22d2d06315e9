"""Benchmark the Pose2RGBD presets on this machine.

1. The paper's Table 4: parameters, memory added by a forward pass, inference FPS at batch 1 / 5 / 10
   (default 512x512, depth output, 6dof-quat, fp32; one fresh process per measurement).
2. Training throughput: milliseconds per training sample (forward + backward + AdamW step) per preset at the
   experiments' resolution, with and without bf16 autocast -- what sizes ``pose2rgbd experiments``' budget.

Usage::

    .venv/bin/python bench/bench_models.py                    # both parts
    .venv/bin/python bench/bench_models.py --skip-train --size 512 --min-seconds 5
    .venv/bin/python bench/bench_models.py --skip-table4 --train-size 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def train_throughput(presets: list[str], size: int, batch: int, steps: int) -> list[dict]:
    import torch

    from pose2rgbd.methods.pose2rgbd import build_model, preset_config

    rows = []
    for amp in ("off", "bf16"):
        for p in presets:
            torch.manual_seed(0)
            model = build_model(preset_config(p, size=size, outputs="rgbd"))
            opt = torch.optim.AdamW(model.parameters(), lr=0.01)
            b = {
                "pose": torch.rand(batch, 7) * 2 - 1,
                "rgb": torch.rand(batch, 3, size, size) * 2 - 1,
                "depth": torch.rand(batch, 1, size, size) * 100,
            }
            t = 0.0
            for i in range(steps + 1):  # the first step warms up (oneDNN kernel creation) and is not timed
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
                    out = model.get_outputs(b)
                    loss = sum(model.get_loss_dict(out, b).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i:
                    t += time.perf_counter() - t0
            rows.append(
                {"preset": p, "amp": amp, "size": size, "batch": batch, "ms_per_sample": 1000 * t / (steps * batch)}
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="Table 4 resolution")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="Table 4: time each row at least this long")
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--presets", nargs="+", default=["base", "slice10", "slice32", "slice64"])
    ap.add_argument("--skip-table4", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    from pose2rgbd.experiments.machine import machine_description
    from pose2rgbd.experiments.table4 import run_table4, table4_markdown
    from pose2rgbd.methods.pose2rgbd import PAPER_PARAMETERS

    out: dict = {"machine": machine_description()}
    m = out["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)")
    print(f"cuda: {m['cuda']}\n")
    if not args.skip_table4:
        rows = run_table4(args.presets, size=args.size, min_seconds=args.min_seconds)
        out["table4"] = rows
        print(f"Table 4 analog ({args.size}x{args.size}, depth output, fp32, no grad)\n")
        print(table4_markdown(rows, PAPER_PARAMETERS))
    if not args.skip_train:
        rows = train_throughput(args.presets, args.train_size, args.train_batch, args.train_steps)
        out["train"] = rows
        print(f"\nTraining throughput at {args.train_size}x{args.train_size}, batch {args.train_batch}, RGBD output\n")
        print("| preset | fp32 (ms/sample) | bf16 autocast (ms/sample) |\n|---|---:|---:|")
        for p in args.presets:
            f = next(r for r in rows if r["preset"] == p and r["amp"] == "off")["ms_per_sample"]
            b = next(r for r in rows if r["preset"] == p and r["amp"] == "bf16")["ms_per_sample"]
            print(f"| {p} | {f:.1f} | {b:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
