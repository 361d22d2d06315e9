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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pose2rgbd import config as cfgmod
from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError

log = logging.getLogger(__name__)

# Paper values (Synthetic dataset): Table 1 (Base) and Table 2, as (RGB px, Depth m); None = n/a.
PAPER_TABLE1 = {
    ("6dof-euler", "depth"): (None, 8.2),
    ("6dof-euler", "rgb"): (20.96, None),
    ("6dof-euler", "rgbd"): (21.45, 8.85),
    ("6dof-quat", "depth"): (None, 8.02),
    ("6dof-quat", "rgb"): (20.78, None),
    ("6dof-quat", "rgbd"): (21.13, 8.41),
}
PAPER_TABLE2 = {
    ("base", "depth"): (None, 8.02),
    ("base", "rgbd"): (21.13, 8.41),
    ("slice10", "depth"): (None, 7.23),
    ("slice10", "rgbd"): (20.71, 7.01),
    ("slice32", "depth"): (None, 6.31),
    ("slice32", "rgbd"): (20.39, 6.97),
    ("slice64", "depth"): (None, 6.64),
    ("slice64", "rgbd"): (20.37, 7.1),
}
PRESET_LABEL = {"base": "Base", "slice10": "Slice-10", "slice32": "Slice-32", "slice64": "Slice-64"}


@dataclass
class ExperimentsConfig:
    """Scale of the CPU reproduction (defaults: about 35 minutes on an idle 2-core CPU)."""

    dataset: str = help_field("", "dataset to use; empty: export the synthetic world into OUT/data/sim")
    size: int = help_field(128, "training / evaluation resolution (the paper: 512)")
    sim_seed: int = help_field(0, "seed of the synthetic world")
    sim_stride: int = help_field(15, "keep every k-th 30 Hz camera frame of the simulated routes")
    sim_survey_s: float = help_field(360.0, "duration of the simulated survey route (training route), s")
    sim_route_s: float = help_field(90.0, "duration of each held-out route, s")
    epochs_table1: int = help_field(6, "epochs of the Table 1 runs (Base only, cheap)")
    epochs_table2: int = help_field(3, "epochs of the Table 2 runs (Base re-run at this budget for fairness)")
    batch_size: int = help_field(16, "batch size of every run")
    lr: float = help_field(1e-3, "learning rate of the runs (fixed; the paper's 0.01 does not learn in our budget)")
    paper_lr_control: bool = help_field(True, "also train Base / RGBD / quat at the paper's lr 0.01 (Table 1 epochs)")
    seed: int = help_field(0, "seed of weights, shuffling and the random split (when 'seeds' is empty)")
    seeds: list[int] = help_field(
        [], "seeds to repeat every run with; the tables show mean +- standard deviation over them (empty: [seed])"
    )
    budget_minutes: float = help_field(0.0, "training time limit of each run, minutes (0: none; epochs still bound it)")
    max_steps: int = help_field(0, "optimization step limit of each run (0: none)")
    patience: int = help_field(
        0, "early stopping: validations without a relative val-loss improvement > min_delta before a run stops (0: off)"
    )
    min_delta: float = help_field(0.01, "early stopping: smallest relative val-loss improvement that counts")
    val_every: int = help_field(
        1, "epochs between validations when early stopping is on (patience counts these validations)"
    )
    reprojection_k: int = help_field(
        3, "reprojection baseline: warp this many nearest training frames into each test pose (0: leave it out)"
    )
    geometry_variants: list[str] = help_field(
        ["base=base", "base+=base+", "slice10=slice10", "slice10+=slice10+", "hybrid=hybrid/hybrid"],
        "table g (geometry-aware training): runs LABEL=PRESET[:KEY=VALUE...] (model config overrides), RGBD, "
        "6dof-quat, epochs_table2",
    )
    splits: list[str] = help_field(["random", "route"], "splits to run: random (paper) and/or route (held out)")
    outputs: list[str] = help_field(
        ["depth", "rgb", "rgbd"], "outputs of the Table 1 runs; Table 2 runs the depth / rgbd among them"
    )
    slice_presets: list[str] = help_field(
        ["slice10", "slice32", "slice64"], "Slice models Table 2 trains beside Base (empty: Base only)"
    )
    tables: list[str] = help_field(["1", "2", "4"], "which tables to produce")
    eval_max_frames: int = help_field(300, "evaluate at most this many test frames per run, evenly spread (0: all)")
    fly_frames: int = help_field(60, "frames of each run's fly-through video")
    bench_size: int = help_field(512, "resolution of the Table 4 benchmark")
    bench_min_seconds: float = help_field(2.0, "Table 4: time each (model, batch) at least this long")
    shard: str = help_field(
        "",
        "K/N: train and evaluate only planned runs K, K+N, K+2N, ... (K from 0), so N processes share one OUT "
        "(one GPU, or machines on a shared disk); shards skip Table 4 and the tables. Afterwards run the same "
        "command without shard: it reuses every finished run and writes the tables",
    )

    def __post_init__(self) -> None:
        bad = set(self.splits) - {"random", "route"}
        if bad or not self.splits:
            raise ConfigError(f"experiments.splits {self.splits}: use random and/or route")
        bad = set(self.outputs) - {"depth", "rgb", "rgbd"}
        if bad or not self.outputs:
            raise ConfigError(f"experiments.outputs {self.outputs}: use depth, rgb and/or rgbd")
        bad = set(self.slice_presets) - (set(PRESET_LABEL) - {"base"})
        if bad:
            raise ConfigError(f"experiments.slice_presets {self.slice_presets}: use slice10, slice32, slice64")
        bad = set(self.tables) - {"1", "2", "4", "g"}
        if bad:
            raise ConfigError(f"experiments.tables {self.tables}: use 1, 2, 4, g")
        if self.budget_minutes < 0 or self.max_steps < 0 or self.patience < 0 or self.reprojection_k < 0:
            raise ConfigError("experiments: budget_minutes, max_steps, patience and reprojection_k must be >= 0")
        if self.patience and self.val_every < 1:
            raise ConfigError("experiments: early stopping (patience > 0) needs val_every >= 1")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"experiments.seeds {self.seeds}: each seed once")
        for v in self.geometry_variants:
            parse_variant(v)
        self.shard_index()

    def shard_index(self) -> tuple[int, int] | None:
        """``shard`` as ``(K, N)``; ``None`` when the command runs every planned run."""
        if not self.shard:
            return None
        k, sep, n = str(self.shard).partition("/")
        try:
            ki, ni = int(k), int(n)
        except ValueError:
            ki, ni = -1, 0
        if not sep or ni < 1 or not 0 <= ki < ni:
            raise ConfigError(f"experiments.shard {self.shard!r}: write K/N with 0 <= K < N, e.g. 0/4")
        return ki, ni

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds] or [int(self.seed)]


RUN_SET = ("size", "outputs", "encoding", "preset")  # model settings every run sets (_model_config)


def parse_variant(text: str) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
    """``"LABEL=PRESET[:KEY=VALUE...]"`` -> ``(label, preset, ((key, value), ...))`` (values parsed as YAML).

    ``PRESET`` is a Pose2RGBD preset (``base``, ``slice10+`` ...) or ``KIND/PRESET`` for another pose -> image
    model kind of the registry (e.g. ``hybrid/hybrid``); ``KEY`` is a field of that kind's model config."""
    import yaml

    from pose2rgbd.methods.pose2rgbd.config import PRESETS, Pose2RGBDConfig

    label, sep, rest = str(text).partition("=")
    parts = [p.strip() for p in rest.split(":")] if sep else []
    kind, slash, kind_preset = parts[0].partition("/") if parts else ("", "", "")
    if slash and not label.strip():
        raise ConfigError(f"experiments.geometry_variants {text!r}: write LABEL=KIND/PRESET[:KEY=VALUE...]")
    if slash:
        from pose2rgbd.models.registry import get_family

        fam = get_family(kind)
        if fam.data != "pose_to_image" or kind_preset not in fam.presets:
            raise ConfigError(
                f"experiments.geometry_variants {text!r}: {kind!r} must be a pose -> image kind and "
                f"{kind_preset!r} one of its presets {list(fam.presets)}"
            )
        names = {f.name for f in dataclasses.fields(fam.config_cls)}
    elif not label.strip() or not parts or parts[0] not in PRESETS:
        raise ConfigError(
            f"experiments.geometry_variants {text!r}: write LABEL=PRESET[:KEY=VALUE...] with PRESET one of "
            f"{list(PRESETS)} or KIND/PRESET of another pose -> image model kind"
        )
    else:
        names = set(Pose2RGBDConfig.__dataclass_fields__)
    over = []
    for kv in parts[1:]:
        k, eq, v = kv.partition("=")
        if not eq or k.strip() not in names:
            raise ConfigError(f"experiments.geometry_variants {text!r}: {kv!r} is not KEY=VALUE of a model setting")
        if k.strip() in RUN_SET:
            raise ConfigError(
                f"experiments.geometry_variants {text!r}: {k.strip()!r} is set by the run itself (size, outputs, "
                "encoding from the experiments settings, the preset from PRESET)"
            )
        over.append((k.strip(), yaml.safe_load(v)))
    return label.strip(), parts[0], tuple(over)


PAPER_LR = 0.01


@dataclass(frozen=True)
class RunSpec:
    split: str
    preset: str
    outputs: str
    encoding: str
    epochs: int
    lr: float
    seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()  # model settings beyond the preset (table g)

    @property
    def name(self) -> str:
        enc = "quat" if self.encoding == "6dof-quat" else "euler"
        over = "".join(f"-{k}{v}" for k, v in self.overrides)
        preset = self.preset.replace("/", "-")  # KIND/PRESET of another model kind
        return f"{preset}{over}-{self.outputs}-{enc}-e{self.epochs}-lr{self.lr:g}-s{self.seed}"

    @property
    def group(self) -> tuple[Any, ...]:
        """The run without its seed: runs of one group are averaged in the tables."""
        return (self.split, self.preset, self.outputs, self.encoding, self.epochs, self.lr, self.overrides)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["overrides"] = {k: v for k, v in self.overrides}
        return d


def planned_runs(cfg: ExperimentsConfig) -> list[RunSpec]:
    runs: list[RunSpec] = []
    for split in cfg.splits:
        if "1" in cfg.tables:
            for enc in ("6dof-euler", "6dof-quat"):
                for o in [o for o in ("depth", "rgb", "rgbd") if o in cfg.outputs]:
                    runs.append(RunSpec(split, "base", o, enc, cfg.epochs_table1, cfg.lr))
            if cfg.paper_lr_control and cfg.lr != PAPER_LR and "rgbd" in cfg.outputs:
                runs.append(RunSpec(split, "base", "rgbd", "6dof-quat", cfg.epochs_table1, PAPER_LR))
        if "2" in cfg.tables:
            for p in ["base"] + [p for p in ("slice10", "slice32", "slice64") if p in cfg.slice_presets]:
                for o in [o for o in ("depth", "rgbd") if o in cfg.outputs]:
                    runs.append(RunSpec(split, p, o, "6dof-quat", cfg.epochs_table2, cfg.lr))
        if "g" in cfg.tables:
            for v in cfg.geometry_variants:
                _, preset, over = parse_variant(v)
                runs.append(RunSpec(split, preset, "rgbd", "6dof-quat", cfg.epochs_table2, cfg.lr, 0, over))
    seen, uniq = set(), []
    for r in runs:
        if r not in seen:
            seen.add(r)
            uniq.append(r)
    return [replace(r, seed=s) for r in uniq for s in cfg.seed_list]


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


def _model_config(spec: RunSpec, size: int) -> Any:
    """The model config of a run: a Pose2RGBD preset, or ``KIND/PRESET`` of another pose -> image kind (its
    ``size`` / ``outputs`` / ``encoding`` set where its config has those fields)."""
    kind, slash, preset = spec.preset.partition("/")
    if not slash:
        from pose2rgbd.methods.pose2rgbd import preset_config

        return preset_config(
            spec.preset, size=size, outputs=spec.outputs, encoding=spec.encoding, **dict(spec.overrides)
        )
    from pose2rgbd.training.quick import quick_model_config

    return quick_model_config(kind, preset, size=size, outputs=spec.outputs, encoding=spec.encoding,
                              **dict(spec.overrides))  # fmt: skip


def _run_one(spec: RunSpec, cfg: ExperimentsConfig, dataset: Path, out: Path, *, progress: bool) -> dict[str, Any]:
    from pose2rgbd.atomic import write_text_atomic as atomic_write_text
    from pose2rgbd.evaluation import evaluate
    from pose2rgbd.experiments.early_stopping import EarlyStopping
    from pose2rgbd.training import TrainConfig, train_model

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
            atomic_write_text(done, json.dumps(prev, indent=2, default=float))
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
        atomic_write_text(started, json.dumps(key, default=float))
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
    atomic_write_text(done, json.dumps(res, indent=2, default=float))
    return {**res, "_trained": True}


def _fmt(v: Any, fmt: str) -> str:
    """A number, or ``(mean, std, n)`` of several seeds as ``mean ± std``; ``n/a`` for none / not finite."""
    import math

    if isinstance(v, tuple):
        mean, std, n = v
        if n > 1 and math.isfinite(mean):
            return f"{format(mean, fmt)} ± {format(std, fmt)}"
        v = mean
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _mean_std(values: list[Any]) -> tuple[float, float, int]:
    import math

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return (float("nan"), float("nan"), 0)
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return (m, sd, len(vals))


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs that differ only in their seed -> one row each: every metric of ``model``, ``baseline`` and
    ``reprojection`` as ``(mean, sample std, n)``, ``train_s`` and ``steps`` averaged, ``seeds`` listed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        spec = {k: v for k, v in r["spec"].items() if k != "seed"}
        groups.setdefault(json.dumps(spec, sort_keys=True, default=str), []).append(r)
    rows = []
    for rs in groups.values():
        row = dict(rs[0])
        row["spec"] = {k: v for k, v in rs[0]["spec"].items() if k != "seed"}
        row["seeds"] = [r["spec"].get("seed", 0) for r in rs]
        for part in ("model", "baseline", "reprojection"):
            keys = {k for r in rs for k in (r.get(part) or {})}
            row[part] = {k: _mean_std([(r.get(part) or {}).get(k) for r in rs]) for k in sorted(keys)}
        row["train_s"] = sum(float(r["train_s"]) for r in rs) / len(rs)
        row["steps"] = sum(int(r.get("steps", 0)) for r in rs) / len(rs)
        row["evaluated_step"] = sum(int(r.get("evaluated_step", r.get("steps", 0))) for r in rs) / len(rs)
        rows.append(row)
    return rows


def _steps(row: dict[str, Any]) -> str:
    """Optimization steps of a table row (mean over seeds); with the step of the evaluated checkpoint when
    validation selected one (``best.pt``) earlier than the last step."""
    steps = f"{row.get('steps', 0):.0f}"
    ev = row.get("evaluated_step")
    if row.get("evaluated") == "best.pt" and ev is not None and round(ev) != round(row.get("steps", 0)):
        steps += f" (best {ev:.0f})"
    return steps


def _table(rows: list[dict[str, Any]], first_cols: list[tuple[str, Any]], paper: dict[Any, Any], unit: str) -> str:
    cols = [c for c, _ in first_cols]
    head = (
        "| " + " | ".join(cols) + f" | RGB MAE (px) | depth MAE ({unit}) | PSNR (dB) | SSIM | AbsRel "
        f"| paper RGB (px) | paper depth (m) | steps | train (min) |\n"
        "|" + "---|" * len(cols) + "---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        m = r["model"]
        pk = tuple(f(r) for _, f in first_cols if f is not None)
        prgb, pdep = paper.get(pk[-2:] if len(pk) >= 2 else pk, (None, None))
        cells = [str(f(r)) if f is not None else "" for _, f in first_cols]
        lines.append(
            "| " + " | ".join(cells) + f" | {_fmt(m.get('rgb_mae_px'), '.2f')} | {_fmt(m.get('depth_mae'), '.2f')} "
            f"| {_fmt(m.get('rgb_psnr_db'), '.2f')} | {_fmt(m.get('rgb_ssim'), '.3f')} "
            f"| {_fmt(m.get('depth_absrel'), '.3f')} "
            f"| {_fmt(prgb, '.2f')} | {_fmt(pdep, '.2f')} | {_steps(r)} | {r['train_s'] / 60:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def _baseline_line(rows: list[dict[str, Any]], unit: str) -> str:
    b = next((r["baseline"] for r in rows if r["spec"]["outputs"] == "rgbd" and r.get("baseline")), None)
    if not b:
        return ""
    line = (
        f"\nNearest-pose baseline on the same test frames: RGB MAE {_fmt(b.get('rgb_mae_px'), '.2f')} px, "
        f"depth MAE {_fmt(b.get('depth_mae'), '.2f')} {unit}, PSNR {_fmt(b.get('rgb_psnr_db'), '.2f')} dB, "
        f"SSIM {_fmt(b.get('rgb_ssim'), '.3f')}, AbsRel {_fmt(b.get('depth_absrel'), '.3f')}.\n"
    )
    rp = next((r["reprojection"] for r in rows if r["spec"]["outputs"] == "rgbd" and r.get("reprojection")), None)
    if rp:
        k = rp.get("k")
        k_txt = _fmt(k[0] if isinstance(k, tuple) else k, ".0f")
        hole = rp.get("hole_fraction")
        hole_pct = (hole[0] * 100, hole[1] * 100, hole[2]) if isinstance(hole, tuple) else (hole or 0) * 100
        line += (
            f"Reprojection baseline ({k_txt} nearest training frames warped with their depth, z-buffered; holes "
            f"filled from the nearest frame, hole fraction {_fmt(hole_pct, '.1f')} %): RGB MAE "
            f"{_fmt(rp.get('rgb_mae_px'), '.2f')} px, depth MAE {_fmt(rp.get('depth_mae'), '.2f')} {unit}, PSNR "
            f"{_fmt(rp.get('rgb_psnr_db'), '.2f')} dB, SSIM {_fmt(rp.get('rgb_ssim'), '.3f')}, AbsRel "
            f"{_fmt(rp.get('depth_absrel'), '.3f')}.\n"
        )
    return line


def _geometry_table(cfg: ExperimentsConfig, rows: list[dict[str, Any]], unit: str) -> str:
    """Table g: one row per variant, then retrieval and reprojection on the same test frames."""
    head = (
        "| variant | preset + settings | seeds | RGB MAE (px) | depth MAE (" + unit + ") | PSNR (dB) | SSIM "
        "| AbsRel | RGB vs retrieval | depth vs retrieval | steps | train (min) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    import math

    def first(v: Any) -> Any:
        return v[0] if isinstance(v, tuple) else v

    def gain(m: Any, b: Any) -> str:
        m, b = first(m), first(b)
        if m is None or b is None or math.isnan(b) or math.isnan(m) or b == 0:
            return "n/a"
        return f"{(1 - m / b) * 100:+.0f} %"

    lines, base_row = [], None
    for v in cfg.geometry_variants:
        label, preset, over = parse_variant(v)
        r = next(
            (
                r
                for r in rows
                if r["spec"]["preset"] == preset
                and r["spec"]["outputs"] == "rgbd"
                and r["spec"]["encoding"] == "6dof-quat"
                and r["spec"]["epochs"] == cfg.epochs_table2
                and r["spec"]["lr"] == cfg.lr
                and r["spec"].get("overrides", {}) == dict(over)
            ),
            None,
        )
        if r is None:
            continue
        base_row = base_row or r
        m, b = r["model"], r.get("baseline") or {}
        settings = preset + "".join(f", {k}={val}" for k, val in over)
        lines.append(
            f"| {label} | {settings} | {len(r.get('seeds', [0]))} | {_fmt(m.get('rgb_mae_px'), '.2f')} "
            f"| {_fmt(m.get('depth_mae'), '.2f')} | {_fmt(m.get('rgb_psnr_db'), '.2f')} "
            f"| {_fmt(m.get('rgb_ssim'), '.3f')} | {_fmt(m.get('depth_absrel'), '.3f')} "
            f"| {gain(m.get('rgb_mae_px'), b.get('rgb_mae_px'))} | {gain(m.get('depth_mae'), b.get('depth_mae'))} "
            f"| {_steps(r)} | {r['train_s'] / 60:.1f} |"
        )
    if base_row is not None:
        for name, key in (("nearest-pose retrieval", "baseline"), ("reprojection", "reprojection")):
            m = base_row.get(key) or {}
            if m:
                lines.append(
                    f"| {name} | -- | -- | {_fmt(m.get('rgb_mae_px'), '.2f')} | {_fmt(m.get('depth_mae'), '.2f')} "
                    f"| {_fmt(m.get('rgb_psnr_db'), '.2f')} | {_fmt(m.get('rgb_ssim'), '.3f')} "
                    f"| {_fmt(m.get('depth_absrel'), '.3f')} | | | | |"
                )
    return head + "\n".join(lines) + "\n"


def results_markdown(cfg: ExperimentsConfig, results: list[dict[str, Any]], table4: list[dict[str, Any]],
                     machine: dict[str, Any], dataset_info: str, command: str, wall_s: float) -> str:  # fmt: skip
    from pose2rgbd.experiments.table4 import table4_markdown
    from pose2rgbd.methods.pose2rgbd import PAPER_PARAMETERS

    unit = results[0]["depth_unit"] if results else "m"
    md = ["# Experiments (the paper's Tables 1, 2 and 4 on the synthetic world)\n"]
    gpu = f"GPU {machine['gpu']} (training and evaluation ran on it)" if machine.get("gpu") else "no GPU"
    md.append(
        f"Machine: {machine['cpu']} ({machine.get('cpu_flags') or 'SIMD flags unknown'}), {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB RAM, {gpu}; torch {machine['torch']} ({machine['torch_threads']} threads). "
        f"Total wall time {wall_s / 60:.1f} min"
        + (
            f"; the runs' training and evaluation, summed over runs (earlier invocations and shards included): "
            f"{sum(float(r.get('train_s', 0)) + float(r.get('eval_s', 0)) for r in results) / 60:.1f} min"
            if results
            else ""
        )
        + ".\n"
    )
    md.append(f"Command: `{command}`\n")
    md.append(
        f"Data: {dataset_info}. Resolution {cfg.size}x{cfg.size}, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} "
        f"(fixed), seed {cfg.seed}. Table 1 runs: {cfg.epochs_table1} epochs; "
        f"Table 2 runs: {cfg.epochs_table2} epochs.\n"
    )
    if cfg.lr != PAPER_LR:
        md.append(
            f"Learning rate: {cfg.lr:g} instead of the paper's {PAPER_LR:g} -- with a few epochs the paper's rate "
            "stays at about the mean image"
            + (
                "; the `lr 0.01` rows of Table 1 are the control.\n"
                if cfg.paper_lr_control and "1" in cfg.tables
                else ".\n"
            )
        )
    seeds = cfg.seed_list
    if len(seeds) > 1:
        md.append(
            f"Seeds {seeds}: every number is the mean ± sample standard deviation over the {len(seeds)} seeds "
            "(weights, shuffling and, on the random split, the split itself).\n"
        )
    if cfg.budget_minutes or cfg.max_steps or cfg.patience:
        stop = "off"
        if cfg.patience:
            stop = f"after {cfg.patience} validations without a {cfg.min_delta:g} relative val-loss improvement"
        md.append(
            f"Budget per run: {cfg.budget_minutes:g} min (0: none), {cfg.max_steps} steps (0: none), "
            f"early stopping {stop}.\n"
        )
    reasons: dict[str, int] = {}
    for r in results:
        why = str(r.get("stop_reason") or "epochs done")
        why = "early stopping (validation plateau)" if "early" in why.lower() or "plateau" in why.lower() else why
        why = "time budget" if why.startswith("time budget") else ("step limit" if "step" in why.lower() else why)
        reasons[why] = reasons.get(why, 0) + 1
    if reasons:
        md.append(
            "Why the runs stopped: " + ", ".join(f"{why} {n}" for why, n in sorted(reasons.items()))
            + (" -- runs stopped by a budget had not reached a validation plateau (not converged)."
               if any(k in reasons for k in ("time budget", "step limit")) and cfg.patience else "")
            + "\n"
        )  # fmt: skip
    for split in cfg.splits:
        rs = aggregate([r for r in results if r["spec"]["split"] == split])
        if not rs:
            continue
        desc = rs[0]["split"]
        ntr, nte = rs[0]["train_frames"], rs[0]["test_frames"]
        if "1" in cfg.tables:
            t1 = [
                r
                for r in rs
                if r["spec"]["preset"] == "base"
                and r["spec"]["epochs"] == cfg.epochs_table1
                and not r["spec"].get("overrides")
            ]
            t1.sort(
                key=lambda r: (
                    r["spec"]["lr"] != cfg.lr,
                    r["spec"]["encoding"],
                    ["depth", "rgb", "rgbd"].index(r["spec"]["outputs"]),
                )
            )
            md.append(f"\n## Table 1 analog -- Base, Euler vs quaternion input ({split} split)\n")
            md.append(f"{desc}: {ntr} training / {nte} test frames.\n\n")
            cols = [
                ("lr", lambda r: f"{r['spec']['lr']:g}"),
                ("input", lambda r: r["spec"]["encoding"]),
                ("output", lambda r: r["spec"]["outputs"]),
            ]
            md.append(_table(t1, cols, PAPER_TABLE1, unit))
            md.append(_baseline_line(t1, unit))
        if "2" in cfg.tables:
            t2 = [
                r
                for r in rs
                if r["spec"]["encoding"] == "6dof-quat"
                and r["spec"]["outputs"] in ("depth", "rgbd")
                and not r["spec"].get("overrides")
                and r["spec"]["preset"] in PRESET_LABEL
                and r["spec"]["epochs"] == cfg.epochs_table2
                and r["spec"]["lr"] == cfg.lr
            ]
            order = ["base", "slice10", "slice32", "slice64"]
            t2.sort(key=lambda r: (order.index(r["spec"]["preset"]), r["spec"]["outputs"]))
            md.append(f"\n## Table 2 analog -- Base vs Slice models, 6dof-quat ({split} split)\n")
            md.append(f"{desc}: {ntr} training / {nte} test frames.\n\n")
            cols = [("model", lambda r: r["spec"]["preset"]), ("output", lambda r: r["spec"]["outputs"])]
            md.append(_table(t2, cols, PAPER_TABLE2, unit))
            md.append(_baseline_line(t2, unit))
        if "g" in cfg.tables:
            md.append(f"\n## Geometry-aware training (beyond the paper), RGBD, 6dof-quat ({split} split)\n")
            md.append(
                f"{desc}: {ntr} training / {nte} test frames. 'vs retrieval': how much lower the error is than "
                "nearest-pose retrieval's on the same frames (positive: the model is better).\n\n"
            )
            md.append(_geometry_table(cfg, rs, unit))
    if table4:
        md.append(
            f"\n## Table 4 analog -- inference cost at {cfg.bench_size}x{cfg.bench_size} (depth output, 6dof-quat)\n\n"
        )
        md.append(table4_markdown(table4, PAPER_PARAMETERS))
        md.append(
            "\nRSS added = resident memory after the forward pass (outputs alive) minus before; peak added = peak "
            "resident memory during the pass minus before. fp32, no autograd, one fresh process per row. "
            "GPU columns: not measured: no CUDA device on the benchmark machine.\n"
        )
    return "\n".join(md)


def run_experiments(
    out_dir: str | Path, cfg: ExperimentsConfig, *, command: str = "", progress: bool = True
) -> dict[str, Any]:
    """Run everything; writes OUT/results.md and OUT/results.json and returns the JSON content."""
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.experiments.table4 import machine_description, run_table4

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


def _validation_figures(out: Path, cfg: ExperimentsConfig, results: list[dict[str, Any]]) -> None:
    """``OUT/validation_<split>.png``: every run's validation loss against the step (seeds of one setting share
    a colour), where runs validated (early stopping): it shows whether the curves had flattened."""
    from pose2rgbd.evaluation.plots import validation_curves

    for split in cfg.splits:
        runs = []
        for r in results:
            spec = r["spec"]
            if spec["split"] != split:
                continue
            over = "".join(f" {k}={v}" for k, v in (spec.get("overrides") or {}).items())
            enc = "quat" if spec["encoding"] == "6dof-quat" else "euler"
            label = f"{spec['preset']}{over} {spec['outputs']} {enc} e{spec['epochs']} lr {spec['lr']:g}"
            if r.get("name"):
                runs.append((label, out / "runs" / split / r["name"] / "log.csv"))
        validation_curves(runs, out / f"validation_{split}.png", title=f"validation loss, {split} split")


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

    write_text_atomic(out / "results.json", json.dumps(data, indent=2, default=float))
    write_text_atomic(
        out / "results.md", results_markdown(cfg, results, table4, machine, dataset_info, command, wall_s)
    )
    try:
        _validation_figures(out, cfg, results)
    except Exception as e:  # a damaged log.csv or a plotting error must not cost the tables
        log.warning("validation figures not written: %s", e)
    return data
