"""``pose2rgbd experiments``, planning: the settings (:class:`ExperimentsConfig`), the paper's values, the runs
they make (:func:`planned_runs`) and each run's model config."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, replace
from typing import Any

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
