"""``pose2rgbd experiments``: reproduce the paper's Tables 1, 2 and 4 at CPU scale."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "experiments",
        help="reproduce the paper's Tables 1, 2 and 4 at CPU scale (about 35 min on 2 cores)",
        description="Trains and evaluates every model of the paper's Tables 1 and 2 on the synthetic world (random "
        "and route splits, with the nearest-pose baseline) and benchmarks inference (Table 4). Writes "
        "OUT/results.md (docs-ready), OUT/results.json and one directory per run. Re-running reuses finished runs.",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dataset", type=Path, help="use this dataset instead of exporting the synthetic world")
    p.add_argument("--size", type=int, help="resolution (default 128)")
    p.add_argument("--sim-stride", type=int, help="keep every k-th simulated camera frame (default 15)")
    p.add_argument("--epochs-table1", type=int, help="epochs of the Table 1 runs (default 6)")
    p.add_argument("--epochs-table2", type=int, help="epochs of the Table 2 runs (default 3)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate of the runs (default 0.001; the paper: 0.01)")
    p.add_argument("--seed", type=int)
    p.add_argument("--splits", nargs="+", choices=("random", "route"))
    p.add_argument("--tables", nargs="+", choices=("1", "2", "4"))
    p.add_argument("--eval-max-frames", type=int)
    p.add_argument("--bench-size", type=int, help="Table 4 resolution (default 512)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose2rgbd import config as cfgmod
    from pose2rgbd.experiments.runner import ExperimentsConfig, run_experiments

    d: dict = {}
    for flag in ("size", "sim_stride", "epochs_table1", "epochs_table2", "batch_size", "lr", "seed", "splits", "tables",
                 "eval_max_frames", "bench_size"):  # fmt: skip
        v = getattr(args, flag)
        if v is not None:
            d[flag] = v
    if args.dataset is not None:
        d["dataset"] = str(args.dataset)
    cfg = cfgmod.from_dict(ExperimentsConfig, d, where="experiments")
    command = "pose2rgbd " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "pose2rgbd experiments"
    run_experiments(args.out, cfg, command=command, progress=not args.no_progress)
    print((Path(args.out) / "results.md").read_text())
    return 0
