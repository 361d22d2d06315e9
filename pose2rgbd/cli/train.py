"""``pose2rgbd train``: train a model of any registered kind (``--method``, default pose2rgbd) on a dataset.

The ``model.*`` keys are those of the chosen method's config class; ``--preset NAME`` picks one of the
method's presets (default: its ``default_preset``), whose values are the base that ``--config`` files, flags
and ``--set`` override. The short model spellings (``--outputs``, ``--size``, ...) exist only for methods whose
config has that key.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pose2rgbd import config as cfgmod
from pose2rgbd.config_cli import FILES, SCHEMA, Alias, Schema, add_config_flags, config_data
from pose2rgbd.errors import ConfigError

DEFAULT_METHOD = "pose2rgbd"


def _square_side(text: str) -> int:
    """``--size``: one number, the side in pixels of the square images the models render."""
    try:
        return int(text)
    except ValueError:
        pass
    what = "WIDTHxHEIGHT" if "x" in text.lower() else "not an integer"
    raise argparse.ArgumentTypeError(
        f"{text!r} is {what}: the models render square images, --size is their side in pixels, one integer (e.g. "
        "--size 128; the dataset's images, of any shape, are resized to it). WIDTHxHEIGHT is what `convert --size` "
        "takes, the size of a dataset's images"
    )


# The short spellings users and docs rely on; each feeds the same keys as --model.* / --train.* / --set.
# A model.* alias is offered only when the chosen method's config has that key.
ALIASES = (
    Alias("--outputs", "model.outputs"),
    Alias("--encoding", "model.encoding"),
    Alias("--size", "model.size", type=_square_side, metavar="SIDE"),
    Alias("--map", "model.map"),
    Alias("--epochs", "train.epochs"),
    Alias("--batch-size", "train.batch_size"),
    Alias("--lr", "train.lr"),
    Alias("--split", "train.split"),
    Alias("--every-nth", "train.every_nth"),
    Alias("--val-fraction", "train.val_fraction"),
    Alias("--test-fraction", "train.test_fraction"),
    Alias("--seed", "train.seed"),
    Alias("--device", "train.device"),
    Alias("--amp", "train.amp"),
    Alias("--max-minutes", "train.max_minutes"),
    Alias("--no-tensorboard", "train.tensorboard", const=False, help="do not write TensorBoard events"),
    Alias("--no-progress", "train.progress", const=False, help="no progress bar"),
)


# Keys that moved from the train section to the Pose2RGBD model section: old spellings get an error naming the
# new key (in --config files, --set and as flags).
WHY_MOVED = "the depth range is a setting of the Pose2RGBD model, saved with it"
MOVED_KEYS = {
    "train.depth_max": ("model.depth_max", WHY_MOVED),
    "train.depth_max_percentile": ("model.depth_max_percentile", WHY_MOVED),
}


def _family(name: str) -> Any:
    from pose2rgbd.models.registry import get_family

    return get_family(name)


def _known_methods() -> str:
    """The kinds that have a training recipe (built-in and registered)."""
    from pose2rgbd.models.registry import family_names, get_family

    return ", ".join(k for k in family_names() if get_family(k).train)


def _train(method: str, dataset: Path, out: Path, model_cfg: Any, train_cfg: Any, **kw: Any) -> Any:
    """Run the training entry of ``method`` (the one call into the training library)."""
    from pose2rgbd.training.train import train

    return train(method, dataset, out, model_cfg, train_cfg, **kw)


def _pre_parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--method", default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--config", action="append", type=Path, default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--resume", action="store_true")
    pre, rest = p.parse_known_args(argv)
    pre.method = pre.method or _method_of_run(pre.out, pre.resume)
    _refuse_moved_keys(pre, rest)
    return pre


def _read_run_config(out: Path) -> tuple[dict[str, object], str]:
    """The config.yaml of the run in ``out`` as written (``method``, ``model``, ``train``, ``dataset``) and ``""``,
    or ``{}`` and why it cannot be read."""
    import yaml

    path = out / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}, "not found" if out.is_dir() else f"not found ({out} does not exist)"
    except (OSError, UnicodeDecodeError) as e:
        return {}, f"cannot be read ({getattr(e, 'strerror', None) or e})"
    except yaml.YAMLError as e:
        return {}, f"is not valid YAML ({str(e).splitlines()[0]})"
    if not isinstance(saved, dict):
        return {}, "is not a training run's config (not a mapping)"
    return saved, ""


def _run_config(out: Path | None) -> dict[str, object]:
    """The config.yaml of the run in ``out`` as written (``method``, ``model``, ``train``), or {} where there is none
    to read (resuming says what is wrong, if anything)."""
    return {} if out is None else _read_run_config(out)[0]


@dataclass(frozen=True)
class RunSettings:
    """What ``train --resume`` takes from the run's own OUT/config.yaml where the command does not give it: the
    dataset, the kind (``method``), the model settings (all of them: a resume keeps the checkpoint's model), the
    training settings that define the data split (:data:`pose2rgbd.training.run_folder.RESUME_FIXED`) and those of
    the run's length (:data:`~pose2rgbd.training.run_folder.RESUME_LENGTH`: its time budget among them)."""

    path: Path | None = None  # OUT/config.yaml; None: not resuming
    problem: str = ""  # why it cannot be read ("" where it was read)
    dataset: Path | None = None
    method: str | None = None
    model: dict[str, object] = field(default_factory=dict)  # top-level model.* keys of the run's method
    train: dict[str, object] = field(default_factory=dict)  # the train.* keys a resume keeps (split, length)


def _run_settings(out: Path | None, resume: bool, method: str, preset: str | None) -> RunSettings:
    """The settings of the run in ``out`` that ``--resume`` continues (:class:`RunSettings`; empty without
    ``resume``): its model settings only where ``method`` is the run's own, less those the ``preset`` the command
    gives sets (the command's preset wins; a real difference is then refused by the resume's check)."""
    if not resume or out is None:
        return RunSettings()
    from dataclasses import fields

    from pose2rgbd.training.run_folder import RESUME_FIXED, RESUME_LENGTH

    saved, problem = _read_run_config(out)
    path = out / "config.yaml"
    if problem:
        return RunSettings(path=path, problem=problem)
    ds, kind = saved.get("dataset"), saved.get("method")
    model: dict[str, object] = {}
    section = saved.get("model")
    if isinstance(kind, str) and kind == method and isinstance(section, dict):
        family = _family(method)
        names = {f.name for f in fields(family.config_cls)}
        by_preset = (set(family.presets.get(preset) or {}) | {"preset"}) if preset is not None else set()
        model = {k: v for k, v in section.items() if k in names and k not in by_preset}
    train = saved.get("train")
    kept = (*RESUME_FIXED, *RESUME_LENGTH)
    fixed = {k: train[k] for k in kept if k in train} if isinstance(train, dict) else {}
    return RunSettings(path=path, dataset=Path(ds) if isinstance(ds, str) and ds else None,
                       method=kind if isinstance(kind, str) else None, model=model, train=fixed)  # fmt: skip


def _method_of_run(out: Path | None, resume: bool) -> str:
    """The kind to train where ``--method`` is not given: with ``--resume``, the one the run in ``out`` was started
    with (its config.yaml), else :data:`DEFAULT_METHOD`."""
    saved = _run_config(out).get("method") if resume else None
    return saved if isinstance(saved, str) and saved else DEFAULT_METHOD


def _refuse_moved_keys(pre: argparse.Namespace, rest: list[str]) -> None:
    """A clear error for a flag or ``--set`` of a key that moved (a ``--config`` file: the schema's ``moved``, as
    the file is read)."""
    used: list[tuple[str, str]] = []
    for tok in rest:
        key = tok.removeprefix("--").split("=", 1)[0]
        if tok.startswith("--") and key in MOVED_KEYS:
            used.append((tok.split("=", 1)[0], key))
    for item in pre.set:
        key = item.split("=", 1)[0].strip()
        if key in MOVED_KEYS:
            used.append((f"--set {key}", key))
    if used:
        where, old = used[0]
        new, why = MOVED_KEYS[old]
        raise ConfigError(f"{where}: '{old}' is now '{new}' ({why}); rename it")


def _schema(pre: argparse.Namespace) -> Schema:
    from pose2rgbd.training.config import TrainConfig

    family = _family(pre.method)
    name = pre.preset if pre.preset is not None else family.default_preset
    base = family.make_config(name) if name is not None else family.config_cls()
    # the preset's values become the defaults the config file, flags and --set override (and --help shows)
    overrides = {k: v for k, v in cfgmod.to_dict(base).items() if k in (family.presets.get(name) or {})}
    # resuming: the run's own settings (OUT/config.yaml) replace them; what the command gives still wins
    run = _run_settings(pre.out, pre.resume, pre.method, pre.preset)
    defaults = {"model": {**overrides, **run.model}, "train": {**family.train_defaults, **run.train}}
    return Schema({"model": family.config_cls, "train": TrainConfig}, defaults=defaults, moved=MOVED_KEYS)


def _length_as_given(method: str, data: dict[str, object], run: RunSettings) -> None:
    """A resume that gives any of ``epochs``, ``max_steps`` and ``max_minutes`` sets the run's length anew: the
    length settings it does not give go back to their defaults instead of the run's own (its ``max_steps`` 3, kept
    beside a given ``--epochs 5``, ended the resumed run before its first step). Without any of them the run's own
    length is kept (:data:`~pose2rgbd.training.run_folder.RESUME_LENGTH`)."""
    from pose2rgbd.training.config import TrainConfig
    from pose2rgbd.training.run_folder import RESUME_LENGTH

    given = data.get("train")
    if not isinstance(given, dict) or not any(k in given for k in ("epochs", "max_steps", "max_minutes")):
        return
    defaults = {**cfgmod.to_dict(TrainConfig()), **_family(method).train_defaults}
    for k in RESUME_LENGTH:
        if k not in given and k in run.train:
            given[k] = defaults[k]


def _shown(value: object) -> str:
    """A setting's value as a flag takes it (a list as ``a,b,c``)."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _taken_from_run(args: argparse.Namespace, run: RunSettings, data: dict[str, object], method_given: bool,
                    dataset_given: bool) -> list[str]:  # fmt: skip
    """What a resume took from the run's config.yaml that the command did not give and that differs from the
    method's own defaults (its preset's values): ``--dataset D``, ``--method M``, ``model.KEY=V``, ``train.KEY=V``."""
    from pose2rgbd.training.config import TrainConfig

    family = _family(args.method)
    name = args.preset if args.preset is not None else family.default_preset
    base = {
        "model": cfgmod.to_dict(family.make_config(name) if name is not None else family.config_cls()),
        "train": {**cfgmod.to_dict(TrainConfig()), **family.train_defaults},
    }
    taken = [] if dataset_given or run.dataset is None else [f"--dataset {run.dataset}"]
    if not method_given and run.method and run.method != DEFAULT_METHOD:
        taken.append(f"--method {run.method}")
    for section, saved in (("model", run.model), ("train", run.train)):
        given = data.get(section)
        given = given if isinstance(given, dict) else {}
        taken += [
            f"{section}.{k}={_shown(v)}" for k, v in saved.items() if k not in given and base[section].get(k) != v
        ]
    return taken


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train",
        help="train a model of any registered kind (--method; default pose2rgbd) on a dataset",
        description="Train a model of the kind --method names on a format-v1 dataset. Writes OUT/last.pt, "
        "OUT/best.pt, OUT/log.csv, OUT/tb/ (tensorboard --logdir OUT/tb), OUT/config.yaml and OUT/split.json. "
        "The --model.* flags are those of the chosen --method (see `pose2rgbd train --method KIND --help`); "
        "--preset picks one of its presets as the base the other settings override. Default method pose2rgbd: "
        "the paper's Base / Slice-S (AdamW, lr 0.01, 6dof-quat input, random split: 80 % train and, unlike the "
        "paper's 80/20, 10 % validation (picks best.pt) and 10 % test (what evaluate reports); resolution 128 "
        "here, 512 in the paper). A dataset without depth trains an RGB-only model (--outputs rgb --preset base).",
        allow_abbrev=False,
    )
    method = p.add_argument(
        "--method",
        default=None,  # None: DEFAULT_METHOD, and a hint where the dataset suits the hybrid better (_run)
        help=f"model kind to train (default {DEFAULT_METHOD}; the known kinds are listed when this command parses)",
    )
    preset = p.add_argument(
        "--preset",
        help="a preset of the method; default: the method's default preset. Its values are the base that "
        "--config, flags and --set override",
    )
    dataset = p.add_argument(
        "--dataset",
        type=Path,
        required=True,  # not with --resume: the run's own, from OUT/config.yaml (schema below)
        help="format-v1 dataset directory (required; with --resume, the run's own from OUT/config.yaml unless given)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt if it exists, with the run's own dataset, --method, model settings, data "
        "split and length (--epochs, --train.max_steps, --max-minutes, early stopping; a length given sets it "
        "anew) from OUT/config.yaml where the command does not give them (what it gives must match the run)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in OUT (its files are moved to OUT/previous-run-*/ and deleted when the new "
        "run finishes; put back if it stops before its first checkpoint)",
    )
    p.add_argument("--cache-root", type=Path, help="where training caches live (default DATASET/cache)")
    p.add_argument(
        "--deep",
        action="store_true",
        help="reuse the training cache only if the content (SHA-256) of every image and depth file is unchanged; "
        "by default their size and modification time are compared (an edit that keeps both is missed)",
    )
    state: dict[str, Schema] = {}

    def schema(pre: argparse.Namespace) -> Schema:
        # the registry is read only when this command parses (it imports torch): then the help can list it
        family = _family(pre.method)
        method.help = f"model kind to train, one of: {_known_methods()} (default {DEFAULT_METHOD})"
        names = " | ".join(family.presets) or "none"
        dflt = family.default_preset or "none: the config defaults"
        preset.help = (
            f"a preset of --method {family.kind}: {names} (default: {dflt}). Its values are the base that "
            "--config, flags and --set override"
        )
        dataset.required = not pre.resume  # a resume takes the run's own dataset (_run says where none is)
        state["schema"] = _schema(pre)
        return state["schema"]

    def aliases() -> list[Alias]:
        keys = state["schema"].leaves
        return [a for a in ALIASES if a.key is None or a.key in keys]

    add_config_flags(
        p, schema, aliases, prepare=_pre_parse,
        config_help="YAML with 'model:' and/or 'train:' sections; flags and --set override it",
    )  # fmt: skip
    p.set_defaults(func=_run)


def _fit_to_dataset(args: argparse.Namespace, mc: Any, data: dict[str, Any], run: RunSettings) -> Any:
    """The method's own policy for a dataset its settings do not suit (the family's ``fit_dataset``, e.g.
    Pose2RGBD on data without depth), given the ``model.*`` settings the user chose (in ``data``, what the config
    was built from) or a resumed run was trained with (``run``); its note is printed."""
    from pose2rgbd.models.registry import get_family

    family = get_family(args.method)
    if not family.fit_dataset:
        return mc
    given = {**run.model, **(data.get("model") or {})}
    if args.preset is not None:
        given["preset"] = args.preset
    mc, note = family.fit_to_dataset(mc, args.dataset, given)
    if note:
        print(f"note: {note}")
    return mc


def _hint_hybrid(dataset: Path) -> None:
    """Where ``--method`` was left at its default and the dataset has metric depth: say that the hybrid renders such
    data far better (the default stays the paper's models, whose presets and flags scripts rely on)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.errors import DatasetError

    try:
        depth_kind = Dataset(dataset, check_files=False).manifest.depth_kind
    except DatasetError:
        return  # training says what is wrong with it
    if depth_kind == "metric":
        print(
            f"note: training --method {DEFAULT_METHOD} (the paper's Base / Slice-S, the default). This dataset has "
            "metric depth: --method hybrid (the nearest training frames warped into the pose, corrected by a "
            'network) renders it far better in minutes of training (docs/results.md, "Real data"); pass '
            f"--method {DEFAULT_METHOD} to keep this choice and silence this note"
        )


def _note_changed_lr(out: Path, lr: float) -> None:
    """On ``--resume``: say so where the run continues at another learning rate than it was started with (the
    flags, or the method's own default, e.g. the hybrid's 1e-3, decide it; the run's config.yaml records the old)."""
    train = _run_config(out).get("train")
    saved = train.get("lr") if isinstance(train, dict) else None
    if isinstance(saved, (int, float)) and abs(float(saved) - lr) > 1e-12 * max(abs(lr), 1.0):
        print(f"note: the run in {out} was started at lr {saved:g}; it continues at lr {lr:g} (pass --lr to choose)")


def _resumed_dataset(out: Path, run: RunSettings) -> Path:
    """The dataset of ``train --resume`` without ``--dataset``: the run's own (its config.yaml), or an error naming
    what to pass."""
    if run.dataset is not None:
        return run.dataset
    why = run.problem or "names no dataset"
    raise ConfigError(
        f"{out / 'config.yaml'}: {why}; --resume takes the run's dataset and settings from it. Pass --dataset DATASET "
        "(and the --method, --preset and settings the run was started with), or check that --out is the run's folder"
    )


def _run(args: argparse.Namespace) -> int:
    method_given, dataset_given = args.method is not None, args.dataset is not None
    if args.method is None:
        args.method = _method_of_run(args.out, args.resume)  # as the schema was built (_pre_parse)
    run = _run_settings(args.out, args.resume, args.method, args.preset)  # as the schema's defaults (_schema)
    if args.dataset is None:  # only with --resume (argparse requires it otherwise)
        args.dataset = _resumed_dataset(args.out, run)
    data = config_data(args)  # --config files (read once), flags, --set
    _length_as_given(args.method, data, run)
    cfg = getattr(args, SCHEMA).build(data)
    mc, tc = cfg["model"], cfg["train"]  # the method's own config class, the preset's values as its base
    taken = _taken_from_run(args, run, data, method_given, dataset_given)
    if taken:
        print(f"note: resuming with the run's own settings from {run.path} (a flag given wins): {', '.join(taken)}")
    mc = _fit_to_dataset(args, mc, data, run)
    if args.resume:
        _note_changed_lr(args.out, tc.lr)
    if not method_given and not args.resume:  # after the settings were taken: not before a message about a flag
        _hint_hybrid(args.dataset)
    res = _train(args.method, args.dataset, args.out, mc, tc, resume=args.resume, cache_root=args.cache_root,
                 overwrite=args.overwrite, inputs=getattr(args, FILES, None) or [], cache_deep=args.deep,
                 stop_on_ctrl_c=True)  # fmt: skip
    what = "/".join(str(getattr(mc, k)) for k in ("preset", "outputs", "encoding") if hasattr(mc, k))
    what = what or (f"{args.method} ({args.preset})" if args.preset else args.method)
    size = f" {mc.size}x{mc.size}" if hasattr(mc, "size") else ""
    print(f"trained {what}{size} ({res.parameters:,} parameters)")
    print(f"  {res.steps} steps, {res.epochs} epochs, {res.elapsed_s / 60:.1f} min ({res.stop_reason})")

    def shown(val: dict[str, float]) -> str:
        return ", ".join(f"{k.removeprefix('val/')}={v:.4g}" for k, v in sorted(val.items()))

    if res.final_val:
        print(f"  last validation: {shown(res.final_val)}")
    if res.best is not None and res.best_val:  # best.pt's own validation, not the last one
        print(f"  checkpoint: {res.checkpoint} (validation: {shown(res.best_val)})")
    else:
        print(f"  checkpoint: {res.checkpoint}")
    from pose2rgbd.training.graceful_stop import interrupted

    if interrupted(res.stop_reason):  # stopped after the step, last.pt written: a script's chain stops here too
        print(f"  stopped by {res.stop_reason.removeprefix('interrupted (').rstrip(')')}: continue it with --resume "
              f"(from {res.last})")  # fmt: skip
        return 143 if "SIGTERM" in res.stop_reason else 130
    return 0
