"""Trainer throughput against the bare training step of the same model and batch, in one run.

For each preset: (1) *bare*: ``model.train_step`` (forward + loss + backward + AdamW step) in a Python loop on
one fixed batch already in memory; (2) *trainer*: ``pose2rgbd.training.train`` with its defaults (memory-mapped
cache, shuffled batches made ahead in a thread, CSV log, TensorBoard, validation at most every 60 s, last.pt every
300 s and best.pt when it improves, written in the background) on a toy set of that size; (3) optionally
*per-epoch*: the trainer set as it was before these defaults (validation, BatchNorm recalibration and a
checkpoint written in the loop after every epoch, batches made in the loop). Samples/s are counted after
``--warmup`` steps, per second of wall time and per second of CPU time of this process (all its threads: on
shared cores the CPU-time rate is what other processes disturb least); "end to end" (wall) includes the final
validation, recalibration and checkpoint write.

Usage::

    .venv/bin/python bench/bench_trainer.py                          # base and slice10, 64x64, batch 16
    .venv/bin/python bench/bench_trainer.py --presets base --steps 60 --per-epoch --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_description() -> str:
    """CPU model and the vector-instruction flags that matter for torch (AVX2, AVX-512, AMX, bf16)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags_line = next((ln.split(":", 1)[1] for ln in out.splitlines() if ln.startswith("Flags")), "")
    keep = [f for f in flags_line.split() if f.startswith(("avx", "amx", "fma")) or f in ("f16c",)]
    cpus = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("CPU(s)")), "?")
    return f"{model}, {cpus} CPUs, flags {' '.join(keep) or 'none of avx/amx'}"


def bare(preset: str, size: int, batch: int, steps: int, warmup: int, cache: Any) -> tuple[float, float]:
    """Samples per second of wall time and per second of CPU time (all threads of this process) of
    ``model.train_step`` on one fixed batch (no data loading, no logs)."""
    import torch
    from torch.utils.data import default_collate

    from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer

    torch.manual_seed(0)
    pn = PoseNormalizer.fit(cache.T_world_cam, "6dof-quat")
    model = build_model(preset_config(preset, size=size, outputs="rgbd"), DepthNormalizer.fit(cache.depth), pn)
    model.train()
    ds = PoseRGBDDataset(cache, list(range(batch)), model)
    b = default_collate([ds[i] for i in range(batch)])
    opts = {"model": torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)}
    t0 = c0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        model.train_step(b, opts, autocast=nullcontext, step=i)
    return steps * batch / (time.perf_counter() - t0), steps * batch / (time.process_time() - c0)


def trainer(
    preset: str, size: int, batch: int, steps: int, warmup: int, ds: Path, per_epoch: bool, overrides: dict
) -> dict:
    """Samples/s of the full training driver, steady state (steps after the warm-up) and end to end."""
    from pose2rgbd.methods.pose2rgbd import preset_config
    from pose2rgbd.training import Callback, TrainConfig, train_model

    marks: dict[str, float] = {}

    class Clock(Callback):
        def on_step_end(self, trainer: Any, logs: dict) -> None:
            if trainer.step == warmup:
                marks["start"], marks["start_cpu"] = time.perf_counter(), time.process_time()
            marks["last_step"], marks["last_step_cpu"] = time.perf_counter(), time.process_time()

        def on_validation_end(self, trainer: Any, logs: dict) -> None:
            marks["validations"] = marks.get("validations", 0) + 1

    old = {"val_min_seconds": 0, "checkpoint_every_epochs": 1, "checkpoint_every_seconds": 0,
           "checkpoint_background": False, "prefetch_batches": 0} if per_epoch else {}  # fmt: skip
    kw = {"batch_size": batch, "max_steps": warmup + steps, "progress": False, "device": "cpu", "amp": "off"}
    tc = TrainConfig(**{**kw, **overrides, **old})
    with tempfile.TemporaryDirectory() as out:
        res = train_model(ds, Path(out) / "run", preset_config(preset, size=size, outputs="rgbd"), tc,
                          callbacks=[Clock()])  # fmt: skip
        end = time.perf_counter()
    n = steps * batch
    return {
        "steady_samples_s": n / (marks["last_step"] - marks["start"]),
        "steady_samples_cpu_s": n / (marks["last_step_cpu"] - marks["start_cpu"]),
        "end_to_end_samples_s": n / (end - marks["start"]),
        "validations": int(marks.get("validations", 0)),
        "steps": res.steps,
        "epochs": res.epochs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["base", "slice10"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=40, help="toy set size (train + validation)")
    ap.add_argument("--steps", type=int, default=40, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--per-epoch", action="store_true", help="also time the old per-epoch settings")
    ap.add_argument(
        "--trainer-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig value for the trainer run, e.g. prefetch_batches=0 (YAML value)",
    )
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in a.trainer_set)}

    import faulthandler
    import signal

    import torch

    from pose2rgbd.dataset import build_cache

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID prints where it is
    from pose2rgbd.experiments.toy import make_toy_dataset

    info = {"cpu": cpu_description(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "trainer_set": overrides}  # fmt: skip
    print(f"# {info['cpu']}; torch {info['torch']}, {info['threads']} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_toy_dataset(Path(tmp) / "ds", n_survey=a.frames - a.frames // 5, n_route=a.frames // 5, size=a.size)
        cache = build_cache(ds, a.size, progress=False)
        for p in a.presets:
            row: dict[str, Any] = {"preset": p, "size": a.size, "batch": a.batch}
            row["bare_samples_s"], row["bare_samples_cpu_s"] = bare(p, a.size, a.batch, a.steps, a.warmup, cache)
            print(f"  {p}: bare {row['bare_samples_s']:.1f} samples/s", flush=True)
            row["trainer"] = trainer(p, a.size, a.batch, a.steps, a.warmup, ds, per_epoch=False, overrides=overrides)
            if a.per_epoch:
                row["per_epoch"] = trainer(p, a.size, a.batch, a.steps, a.warmup, ds, per_epoch=True, overrides={})
            again = bare(p, a.size, a.batch, a.steps, a.warmup, cache)  # load drift
            row["bare_again_samples_s"], row["bare_again_samples_cpu_s"] = again
            rows.append(row)
            b = (row["bare_samples_s"] + row["bare_again_samples_s"]) / 2
            bc = (row["bare_samples_cpu_s"] + row["bare_again_samples_cpu_s"]) / 2
            runs = [("trainer", row["trainer"])] + ([("per-epoch settings", row["per_epoch"])] if a.per_epoch else [])
            print(
                f"{p:8s} bare {row['bare_samples_s']:.1f} / {row['bare_again_samples_s']:.1f} samples/s wall, "
                f"{row['bare_samples_cpu_s']:.1f} / {row['bare_again_samples_cpu_s']:.1f} per CPU-s",
                flush=True,
            )
            for name, r in runs:
                print(
                    f"  {name}: steady {r['steady_samples_s']:.1f} samples/s wall ({r['steady_samples_s'] / b:.0%} of "
                    f"bare), {r['steady_samples_cpu_s']:.1f} per CPU-s ({r['steady_samples_cpu_s'] / bc:.0%}); end to "
                    f"end {r['end_to_end_samples_s']:.1f} ({r['end_to_end_samples_s'] / b:.0%}); "
                    f"{r['validations']} validations",
                    flush=True,
                )
    if a.json:
        a.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
