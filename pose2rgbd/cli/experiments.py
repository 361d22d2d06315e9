"""``pose2rgbd experiments``: reproduce the paper's Tables 1, 2 and 4 at CPU scale."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args

ALIASES = (
    Alias("--sim-stride", "sim_stride"),
    Alias("--epochs-table1", "epochs_table1"),
    Alias("--epochs-table2", "epochs_table2"),
    Alias("--batch-size", "batch_size"),
    Alias("--splits", "splits", nargs="+", metavar="SPLIT"),
    Alias("--tables", "tables", nargs="+", metavar="TABLE"),
    Alias("--eval-max-frames", "eval_max_frames"),
    Alias("--bench-size", "bench_size"),
    Alias("--seeds", "seeds", nargs="+", metavar="SEED"),
    Alias("--budget-minutes", "budget_minutes"),
    Alias("--max-steps", "max_steps"),
    Alias("--patience", "patience"),
    Alias("--min-delta", "min_delta"),
    Alias("--reprojection-k", "reprojection_k"),
    Alias("--variants", "geometry_variants", nargs="+", metavar="LABEL=PRESET[:KEY=VALUE...]"),
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "experiments",
        help="reproduce the paper's Tables 1, 2 and 4 at CPU scale (about 35 min on 2 cores)",
        description="Trains and evaluates every model of the paper's Tables 1 and 2 on the synthetic world (random "
        "and route splits, with the nearest-pose and reprojection baselines), optionally the geometry-aware variants "
        "(--tables g, --variants), and benchmarks inference (Table 4). Budgets per run: epochs, --budget-minutes, "
        "--max-steps, early stopping (--patience, --min-delta); --seeds repeats every run and the tables show mean "
        "± std. Writes OUT/results.md (docs-ready), OUT/results.json, OUT/progress.json and one directory per run. "
        "Re-running reuses finished runs and resumes interrupted ones from their last.pt.",
        allow_abbrev=False,
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-progress", action="store_true")
    add_config_flags(p, _schema, ALIASES, config_help="YAML with ExperimentsConfig keys; flags and --set override it")
    p.set_defaults(func=_run)


def _schema() -> Schema:
    from pose2rgbd.experiments.runner import ExperimentsConfig

    return Schema(ExperimentsConfig)


def _run(args: argparse.Namespace) -> int:
    from pose2rgbd.experiments.runner import run_experiments

    cfg = config_from_args(args)
    command = "pose2rgbd " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "pose2rgbd experiments"
    run_experiments(args.out, cfg, command=command, progress=not args.no_progress)
    print((Path(args.out) / "results.md").read_text())
    return 0
