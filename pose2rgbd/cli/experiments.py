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
        "± std. Writes OUT/results.md (docs-ready), OUT/results.json, OUT/progress.json, "
        "OUT/validation_<split>.png (the runs' validation curves, with early stopping) and one directory per run. "
        "Re-running reuses finished runs and resumes interrupted ones from their last.pt.",
        allow_abbrev=False,
    )
    p.add_argument("--out", type=Path, help="output folder (required)")
    p.add_argument("--no-progress", action="store_true")
    add_config_flags(p, _schema, ALIASES, config_help="YAML with ExperimentsConfig keys; flags and --set override it")
    p.set_defaults(func=_run)
    studies = p.add_subparsers(dest="study", metavar="<study>")
    loc = studies.add_parser(
        "localization",
        help="PoseGAN Tables 1 and 2 analogs: PoseGAN, configA/B/C, retrieval, PoseGAN + refinement",
        description="Trains the localizer presets (kind and presets are settings) on the synthetic world (random "
        "and route splits) within a per-run budget (--steps / --minutes), evaluates them with the image-retrieval "
        "baseline on the same test frames, in colour and grayscale, refines the main model's estimates by "
        "render-and-compare, and writes OUT/localization.md, OUT/localization.json and figures. Re-running "
        "reuses finished runs.",
        allow_abbrev=False,
    )
    loc.add_argument("--out", type=Path, required=True, help="output folder")
    loc.add_argument("--no-progress", action="store_true")
    add_config_flags(
        loc, _loc_schema, LOC_ALIASES, config_help="YAML with LocalizationExperimentsConfig keys; flags override it"
    )
    loc.set_defaults(func=_run_localization)


LOC_ALIASES = (
    Alias("--splits", "splits", nargs="+", metavar="SPLIT"),
    Alias("--presets", "presets", nargs="+", metavar="PRESET"),
    Alias("--seeds", "seeds", nargs="+", metavar="SEED"),
    Alias("--batch-size", "batch_size"),
    Alias("--eval-max-frames", "eval_max_frames"),
    Alias("--refine-frames", "refine_frames"),
    Alias("--sim-stride", "sim_stride"),
)


def _loc_schema() -> Schema:
    from pose2rgbd.experiments.localization import LocalizationExperimentsConfig

    return Schema(LocalizationExperimentsConfig)


def _command() -> str:
    return "pose2rgbd " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "pose2rgbd experiments"


def _run_localization(args: argparse.Namespace) -> int:
    from pose2rgbd.experiments.localization import run_localization_experiments

    cfg = config_from_args(args)
    run_localization_experiments(args.out, cfg, command=_command(), progress=not args.no_progress)
    print((Path(args.out) / "localization.md").read_text())
    return 0


def _schema() -> Schema:
    from pose2rgbd.experiments.runner import ExperimentsConfig

    return Schema(ExperimentsConfig)


def _run(args: argparse.Namespace) -> int:
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.experiments.runner import run_experiments

    if args.out is None:
        raise ConfigError("experiments: --out is required (the output folder)")
    cfg = config_from_args(args)
    data = run_experiments(args.out, cfg, command=_command(), progress=not args.no_progress)
    if cfg.shard:
        print(
            f"shard {cfg.shard}: {len(data['runs'])} runs finished in {args.out}/runs; run the same command "
            "without shard for the tables"
        )
    else:
        print((Path(args.out) / "results.md").read_text())
    return 0
