"""``pose2rgbd experiments``: the paper's Tables 1, 2 and 4 at CPU scale on the synthetic world.

* Table 1: Base model, 6dof-euler vs 6dof-quat input, Depth / RGB / RGBD outputs.
* Table 2: Base vs Slice-10 / 32 / 64 (6dof-quat), Depth and RGBD outputs.
* Both on the random 80/20 split (the paper's) and on the route split (held-out routes), each beside the
  nearest-pose retrieval baseline.
* Table 4: parameters, memory added by a forward pass, CPU FPS at batch 1 / 5 / 10 at 512x512.

Every run lives in ``OUT/runs/<split>/<name>/`` (checkpoint, logs, evaluation); a finished run is reused when
the command is repeated with the same settings, so an interrupted experiment continues where it stopped. All
runs share the dataset's training cache. ``OUT/results.md`` is docs-ready Markdown, ``OUT/results.json`` has
every number.

This module runs them (the dataset, each run, the progress file, the written results); the settings and the runs
they make are in :mod:`pose2rgbd.experiments.plan`, the tables in :mod:`~pose2rgbd.experiments.tables`, the
figures in :mod:`~pose2rgbd.experiments.figures`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pose2rgbd import config as cfgmod
from pose2rgbd.experiments.figures import _validation_figures
from pose2rgbd.experiments.plan import (  # noqa: F401  (also importable from here, as before)
    PAPER_LR,
    ExperimentsConfig,
    RunSpec,
    _model_config,
    parse_variant,
    planned_runs,
)
from pose2rgbd.experiments.tables import _steps, aggregate, results_markdown  # noqa: F401
from pose2rgbd.jsonio import json_text

log = logging.getLogger(__name__)


def prepare_dataset(cfg: ExperimentsConfig, out: Path, *, progress: bool = True) -> Path:
    if cfg.dataset:
        return Path(cfg.dataset)
    from pose2rgbd.sim import SimConfig, export_dataset

    target = out / "data" / "sim"
    sim = SimConfig(
        seed=cfg.sim_seed,
        width=cfg.size,
        height=cfg.size,
        dataset_stride=cfg.sim_stride,
        survey_duration_s=cfg.sim_survey_s,
        route_duration_s=cfg.sim_route_s,
        bag_routes=[],
        video_routes=[],
    )
    stamp = target.parent / "sim_config.json"
    want = json.dumps(cfgmod.to_dict(sim), sort_keys=True)
    with _exclusive(target.parent / ".lock"):  # shards started together: one exports, the others wait
        if target.exists() and stamp.exists() and stamp.read_text() == want:
            return target
        log.info("exporting the synthetic world (%dx%d, stride %d) to %s", cfg.size, cfg.size, cfg.sim_stride, target)
        export_dataset(sim, target, overwrite=True, progress=progress)
        stamp.write_text(want)
    return target


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock file (``fcntl.flock``) held for the block: parallel shards of one OUT take turns."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_one(spec: RunSpec, cfg: ExperimentsConfig, dataset: Path, out: Path, *, progress: bool) -> dict[str, Any]:
    from pose2rgbd.atomic import write_text_atomic as atomic_write_text
    from pose2rgbd.evaluation import evaluate
    from pose2rgbd.training import TrainConfig, train_model
    from pose2rgbd.training.early_stopping import EarlyStopping

    run_dir = out / "runs" / spec.split / spec.name
    done = run_dir / "result.json"
    key = {"spec": spec.as_dict(), "size": cfg.size, "batch_size": cfg.batch_size, "dataset": str(dataset),
           "eval_max_frames": cfg.eval_max_frames, "budget_minutes": cfg.budget_minutes,
           "max_steps": cfg.max_steps, "patience": cfg.patience, "min_delta": cfg.min_delta,
           "val_every": cfg.val_every if cfg.patience else 0, "reprojection_k": cfg.reprojection_k}  # fmt: skip
    if cfg.patience:
        # best.pt selected on validation, validations by epochs only (earlier runs: last.pt, at most one a minute)
        key["evaluated"] = "best.pt"
        key["val_min_seconds"] = 0.0

    def run_eval(checkpoint: Path) -> tuple[Any, float]:
        t0 = time.monotonic()
        ev = evaluate(
            checkpoint,
            dataset,
            spec.split,
            out_dir=run_dir / "eval",
            max_frames=cfg.eval_max_frames,
            fly_frames=cfg.fly_frames,
            reprojection_frames=cfg.reprojection_k if spec.outputs == "rgbd" else 0,
            fused_baseline=False,  # the tables do not report it; `evaluate` does
            progress=progress,
        )
        return ev, time.monotonic() - t0

    def eval_fields(ev: Any) -> dict[str, Any]:
        return {
            "test_frames": ev.frames,
            "split": ev.info["split"],
            "model": ev.metrics["model"],
            "baseline": ev.metrics.get("baseline", {}),
            # the reprojection baseline on the same test frames (evaluate --reprojection-frames k)
            "reprojection": {**ev.metrics["reprojection"], "k": float(cfg.reprojection_k)}
            if "reprojection" in ev.metrics
            else {},
            "depth_unit": ev.depth_unit,
            "files": {k: str(v) for k, v in ev.files.items()},
            "bn_recalibrated": True,
        }

    if done.exists():
        prev: dict[str, Any] = json.loads(done.read_text())
        if prev.get("key") == key:
            if prev.get("bn_recalibrated"):
                log.info("reusing finished run %s", run_dir)
                return prev
            # A run trained before the trainer recalibrated BatchNorm at the end: apply that same final
            # pass to its checkpoint and evaluate again (the weights, hence the training, are unchanged).
            from pose2rgbd.training import recalibrate_checkpoint

            log.info("recalibrating BatchNorm of %s and evaluating it again", run_dir)
            recalibrate_checkpoint(run_dir / "last.pt", dataset, batch_size=cfg.batch_size)
            ev, prev["eval_s"] = run_eval(run_dir / "last.pt")
            prev.update(eval_fields(ev))
            atomic_write_text(done, json_text(prev, nan_as_null=False, default=float))
            return prev
    mc = _model_config(spec, cfg.size)
    tc = TrainConfig(
        epochs=spec.epochs,
        batch_size=cfg.batch_size,
        lr=spec.lr,
        seed=spec.seed,
        split=spec.split,
        # Without early stopping nothing is selected on validation: the paper's 80/20 two-way split is unbiased,
        # keeps the tables comparable with earlier runs, and the evaluation below is the validation. Early
        # stopping selects on validation frames, so those runs hold out a separate test set.
        val_fraction=0.1 if cfg.patience else 0.2,
        test_fraction=0.2 if cfg.patience else 0.0,
        val_every=cfg.val_every if cfg.patience else 0,
        # Early stopping counts validations: at a fixed epoch cadence, never waiting for training time
        # (the trainer's val_min_seconds), so when a run stops does not depend on the machine or its load.
        val_min_seconds=0.0,
        max_minutes=cfg.budget_minutes,
        max_steps=cfg.max_steps,
        tensorboard=False,
        progress=progress,
    )
    callbacks = [EarlyStopping(cfg.patience, cfg.min_delta)] if cfg.patience else []
    # An interrupted run of the same settings continues from its last.pt; anything else starts over. The run's
    # settings are written beside its folder before training starts (inside, the training driver would take the
    # folder for someone else's), so a run killed during training resumes.
    started = run_dir.with_name(run_dir.name + ".key.json")
    resume = (run_dir / "last.pt").exists() and started.exists() and json.loads(started.read_text()) == key
    t0 = time.monotonic()
    if resume:
        log.info("resuming interrupted run %s", run_dir)
        tr = train_model(dataset, run_dir, mc, tc, resume=True, callbacks=callbacks)
    else:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        done.unlink(missing_ok=True)  # the runner's own file; it was for other settings
        atomic_write_text(started, json_text(key, indent=None, nan_as_null=False, default=float))
        tr = train_model(dataset, run_dir, mc, tc, overwrite=True, callbacks=callbacks)
    t_train = time.monotonic() - t0
    # With early stopping the runs hold out a test set and the checkpoint is the one validation selected
    # (best.pt, BatchNorm recalibrated at that validation); without it, the final weights.
    evaluated = tr.checkpoint if cfg.patience else tr.last
    best_step = tr.steps
    if evaluated != tr.last:
        from pose2rgbd.models.checkpoint import read_checkpoint_dict

        best_step = int(read_checkpoint_dict(evaluated).get("step", tr.steps))
    ev, eval_s = run_eval(evaluated)
    res = {
        "key": key,
        "spec": spec.as_dict(),
        "name": spec.name,
        "parameters": tr.parameters,
        "steps": tr.steps,
        "epochs": tr.epochs,
        "evaluated": evaluated.name,
        "evaluated_step": best_step,
        "stop_reason": getattr(tr, "stop_reason", ""),
        # a resumed run: the trainer's training time summed over its invocations, not only this one's
        "train_s": max(t_train, float(tr.elapsed_s)) if resume else t_train,
        "eval_s": eval_s,
        "train_frames": len(tr.split.train),
        **eval_fields(ev),
    }
    atomic_write_text(done, json_text(res, nan_as_null=False, default=float))
    return {**res, "_trained": True}


def run_experiments(
    out_dir: str | Path, cfg: ExperimentsConfig, *, command: str = "", progress: bool = True
) -> dict[str, Any]:
    """Run everything; writes OUT/results.md and OUT/results.json and returns the JSON content."""
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.experiments.machine import machine_description
    from pose2rgbd.experiments.table4 import run_table4

    t0 = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    results: list[dict[str, Any]] = []
    dataset_info = ""
    runs = planned_runs(cfg) if ({"1", "2", "g"} & set(cfg.tables)) else []
    shard = cfg.shard_index()
    if shard is not None:
        runs = runs[shard[0] :: shard[1]]
    if runs:
        dpath = prepare_dataset(cfg, out, progress=progress)
        ds = Dataset(dpath)
        with _exclusive(out / "data" / ".cache.lock"):
            build_cache(ds, cfg.size, progress=progress)  # built once, shared by every run (and shard)
        n_src = {int(s["id"]): str(s.get("name", s["id"])) for s in ds.manifest.sources}
        dataset_info = f"`{dpath}` ({len(ds)} frames, sources {n_src}, depth {ds.manifest.depth_kind})"
        t_runs, n_trained = 0.0, 0
        for i, spec in enumerate(runs):
            eta = f", about {t_runs / n_trained * (len(runs) - i) / 60:.0f} min left" if n_trained else ""
            log.info("[%d/%d] %s / %s%s", i + 1, len(runs), spec.split, spec.name, eta)
            _progress(out, i, len(runs), spec.split + "/" + spec.name, time.monotonic() - t0, shard)
            t_run = time.monotonic()
            res = _run_one(spec, cfg, dpath, out, progress=progress)
            if res.get("_trained"):
                t_runs += time.monotonic() - t_run
                n_trained += 1
            results.append({k: v for k, v in res.items() if k != "_trained"})
            if shard is None:
                _write(out, cfg, results, [], machine, dataset_info, command, time.monotonic() - t0)
        _progress(out, len(runs), len(runs), "", time.monotonic() - t0, shard)
    if shard is not None:
        log.info("shard %d/%d done: %d runs; run the command without shard for the tables", *shard, len(runs))
        return {"runs": results, "shard": cfg.shard}
    table4: list[dict[str, Any]] = []
    if "4" in cfg.tables:
        table4 = run_table4(size=cfg.bench_size, min_seconds=cfg.bench_min_seconds, progress=progress)
    return _write(out, cfg, results, table4, machine, dataset_info, command, time.monotonic() - t0)


def _progress(out: Path, done: int, total: int, current: str, wall_s: float, shard: tuple[int, int] | None) -> None:
    """``OUT/progress.json`` (a shard: ``OUT/progress.shardK.json``): runs finished (or reused) / planned, the
    run under way, wall time so far."""
    from pose2rgbd.atomic import write_text_atomic

    state = {"done": done, "total": total, "current": current, "wall_s": round(wall_s, 1)}
    name = "progress.json" if shard is None else f"progress.shard{shard[0]}.json"
    write_text_atomic(out / name, json.dumps(state))


def _write(out: Path, cfg: ExperimentsConfig, results: list[dict[str, Any]], table4: list[dict[str, Any]],
           machine: dict[str, Any], dataset_info: str, command: str, wall_s: float) -> dict[str, Any]:  # fmt: skip
    data = {
        "config": cfgmod.to_dict(cfg),
        "machine": machine,
        "command": command,
        "dataset": dataset_info,
        "wall_s": wall_s,
        "runs": results,
        "table4": table4,
    }
    from pose2rgbd.atomic import write_text_atomic

    write_text_atomic(out / "results.json", json_text(data, nan_as_null=False, default=float))
    write_text_atomic(
        out / "results.md", results_markdown(cfg, results, table4, machine, dataset_info, command, wall_s)
    )
    try:
        _validation_figures(out, cfg, results)
    except Exception as e:  # a damaged log.csv or a plotting error must not cost the tables
        log.warning("validation figures not written: %s", e)
    return data
