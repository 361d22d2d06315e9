"""The training driver: ``train(method, dataset, out_dir, ...)`` trains any registered model kind.

The method's family (:mod:`pose2rgbd.models.registry`) names a *recipe*: a function
``recipe(ctx: RecipeContext) -> TrainingSetup`` that knows the method's data (cache, split, the model's fitted
transforms such as pose / depth normalization, the torch datasets). The driver does the rest, the same for every
method: dataset capability check, the run folder's checks and resume checks (:mod:`pose2rgbd.training.run_folder`),
``config.yaml`` and ``split.json``, loggers, checkpoints (:func:`pose2rgbd.models.save_checkpoint`), the
:class:`~pose2rgbd.training.trainer.Trainer` run and the :class:`TrainResult`.

``train_model(dataset, out_dir, model_cfg, train_cfg)`` trains the kind whose config ``model_cfg`` is. A method's
own data settings (e.g. the Pose2RGBD depth range) are fields of its model config, so a resumed run must keep them
like every other model key.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pose2rgbd import config as cfgmod
from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.dataset import Dataset
from pose2rgbd.dataset.summary import suspect_import_warning
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.coverage import DEFAULT_ROT_WEIGHT_M, median_depth_weight
from pose2rgbd.geometry.transforms import tq_from_T
from pose2rgbd.models import LoadedCheckpoint, ModelBase, count_parameters, load_checkpoint, save_checkpoint
from pose2rgbd.models.checkpoint import save_loaded
from pose2rgbd.models.coverage import DATUM_KEY
from pose2rgbd.models.depth_uncertainty import DepthUncertainty
from pose2rgbd.models.device import resolve_device
from pose2rgbd.models.interfaces import PoseToImage
from pose2rgbd.models.registry import ModelFamily, family_of_config, get_family
from pose2rgbd.training import distributed, run_folder
from pose2rgbd.training.callbacks import CheckpointCallback, CSVLogger, ProgressBar, TensorBoardLogger
from pose2rgbd.training.config import TrainConfig
from pose2rgbd.training.depth_uncertainty import add_to_checkpoint
from pose2rgbd.training.early_stopping import EarlyStopping
from pose2rgbd.training.graceful_stop import stop_after_the_step
from pose2rgbd.training.splits import Split, make_split, split_from_config
from pose2rgbd.training.trainer import Callback, Trainer, seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path  # best.pt when a validation ran, else last.pt
    last: Path
    best: Path | None
    steps: int
    epochs: int
    elapsed_s: float
    stop_reason: str
    parameters: int
    split: Split
    log_csv: Path
    final_val: dict[str, float]
    method: str  # the model kind trained
    best_val: dict[str, float] = field(default_factory=dict)  # the validation that best.pt was saved with


@dataclass
class RecipeContext:
    """What a recipe gets. ``model`` is set when the transforms must not be refitted (a resumed run, a
    BatchNorm recalibration): build the data for that model instead of a new one."""

    dataset: Dataset
    model_config: Any
    train_config: TrainConfig
    cache_root: Path | None = None
    model: ModelBase | None = None
    cache_deep: bool = False  # reuse a training cache only if its files' SHA-256 match (not only size + mtime)
    out_dir: Path | None = None  # the run folder (a recipe may write what the checkpoints refer to into it)

    @property
    def progress(self) -> bool:
        return bool(self.train_config.progress)


@dataclass
class TrainingSetup:
    """What a recipe returns: the model (transforms fitted on the training split) and its data."""

    model: ModelBase
    train_set: Any  # a torch Dataset of dict items
    val_set: Any | None
    split: Split
    camera: PinholeCamera | None  # the dataset camera at the model's resolution (saved with the checkpoints)
    description: str = ""  # short label for the progress bar, e.g. "slice10/rgbd"
    extra: dict[str, Any] = field(default_factory=dict)  # plain values saved in each checkpoint's ``extra``


def split_for(
    cache_or_ds: Any,
    kind: str | TrainConfig,
    seed: int = 0,
    val_fraction: float = 0.2,
    *,
    test_fraction: float = 0.0,
    every_nth: int = 10,
) -> Split:
    """The split of a :class:`TrainingCache` (or :class:`Dataset`) as training makes it: ``split_for(cache, tc)``
    with the run's :class:`TrainConfig` (what the built-in recipes do), or the split settings one by one."""
    src = cache_or_ds.frames if hasattr(cache_or_ds, "frames") else cache_or_ds
    if isinstance(kind, TrainConfig):
        return split_from_config(src.source_id, src.stamp_ns, kind)
    return make_split(src.source_id, src.stamp_ns, kind, seed=seed, val_fraction=val_fraction,
                      test_fraction=test_fraction, every_nth=every_nth)  # fmt: skip


def upsampling_warning(family: ModelFamily, mc: object, ds: Dataset) -> str:
    """What to say where the model's square side (``model.size``) exceeds the dataset's images on both axes: the
    training cache upsamples every frame (more pixels to train and render, no detail gained); with the largest size
    the family takes that does not. Empty where the images are as large, or the model has no ``size``."""
    size = getattr(mc, "size", None)
    cam = ds.manifest.camera
    if not isinstance(size, int) or size <= max(cam.width, cam.height):
        return ""

    def takes(s: int) -> bool:  # the family's config accepts this size (a power of two in its range)
        if not dataclasses.is_dataclass(mc) or isinstance(mc, type):
            return True
        try:
            dataclasses.replace(mc, size=s)
        except (ConfigError, TypeError, ValueError):
            return False
        return True

    side = max(cam.width, cam.height)
    smaller = [1 << k for k in range(size.bit_length() - 1) if takes(1 << k)]  # the sizes below model.size
    factor = size * size / (cam.width * cam.height)
    times = f"{factor:.0f}x" if factor >= 10 or factor == round(factor) else f"{factor:.1f}x"
    within = [s for s in smaller if s <= side]
    if within:
        use = f"use --size {within[-1]}"
    elif smaller:
        use = f"use --size {smaller[0]}, the smallest model kind {family.kind!r} takes"
    else:
        use = f"model kind {family.kind!r} takes no smaller size"
    return (
        f"the dataset's images are {cam.width}x{cam.height}; --size {size} upsamples them ({times} the pixels, no "
        f"detail gained): {use}"
    )


def check_dataset_for(family: ModelFamily, ds: Dataset) -> None:
    """Refuse a dataset that cannot give what ``family`` trains on (ConfigError naming both)."""
    caps = ds.capabilities()
    if family.data not in caps:
        raise ConfigError(
            f"{ds.path}: model kind {family.kind!r} trains on {family.data} data, this dataset gives "
            f"{', '.join(sorted(caps)) or 'nothing usable'}"
        )


def train(
    method: str,
    dataset: str | Path | Dataset,
    out_dir: str | Path,
    model_cfg: Any = None,
    train_cfg: TrainConfig | None = None,
    *,
    resume: bool | str | Path = False,
    cache_root: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
    cache_deep: bool = False,
    stop_on_ctrl_c: bool = False,
) -> TrainResult:
    """:func:`train_one_process` in this process, or in each process ``torchrun`` started (it joins their
    process group here and leaves it at the end; :mod:`pose2rgbd.training.distributed`). Under torchrun only rank
    0 checks and writes ``out_dir`` (logs, checkpoints) and builds the cache first; ``callbacks`` run on rank 0
    only; every rank reads the checkpoint it resumes from (``out_dir`` must be on a shared file system when the
    processes run on several machines). Every rank returns the :class:`TrainResult`."""
    device = (train_cfg or TrainConfig()).device
    _, own_group = distributed.init_from_env(device)
    ended = False
    try:
        result = train_one_process(
            method, dataset, out_dir, model_cfg, train_cfg, resume=resume, cache_root=cache_root,
            callbacks=callbacks, overwrite=overwrite, inputs=inputs, cache_deep=cache_deep,
            stop_on_ctrl_c=stop_on_ctrl_c,
        )  # fmt: skip
        ended = True
        return result
    finally:
        if own_group:
            distributed.destroy(barrier=ended)


def train_one_process(
    method: str,
    dataset: str | Path | Dataset,
    out_dir: str | Path,
    model_cfg: Any = None,
    train_cfg: TrainConfig | None = None,
    *,
    resume: bool | str | Path = False,
    cache_root: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
    cache_deep: bool = False,
    stop_on_ctrl_c: bool = False,
) -> TrainResult:
    """Train a model of kind ``method`` on ``dataset``; writes into ``out_dir``: ``last.pt``, ``best.pt``,
    ``log.csv``, TensorBoard events (``tb/``), ``config.yaml`` and ``split.json``.

    ``model_cfg``: the family's config (default: its default preset); ``train_cfg``: default ``TrainConfig()``.
    ``resume``: ``True`` resumes from ``out_dir/last.pt`` if it exists; a path resumes from that checkpoint
    (the model, dataset and data split must be the same). ``cache_root``: where training caches live
    (default ``<dataset>/cache``); ``cache_deep``: reuse a cache only if the SHA-256 of every image and depth file
    it was built from is unchanged (by default their size and modification time are compared).

    An ``out_dir`` holding an earlier run is refused unless ``resume`` or ``overwrite``; a folder with other
    files in it is always refused. ``overwrite`` moves the earlier run's files into
    ``out_dir/previous-run-<UTC time>/`` when the new run starts and deletes them when it finishes; if the new
    run fails before writing ``last.pt`` they are moved back (else they stay there, and a warning says so).
    ``inputs``: other files this run reads (config files): ``out_dir`` may not be, contain or lie inside one.
    ``stop_on_ctrl_c``: the first Ctrl-C / SIGTERM ends the training after its step, with the final validation and
    ``last.pt`` (:mod:`pose2rgbd.training.graceful_stop`; ``stop_reason`` ``interrupted (Ctrl-C)``), as
    ``pose2rgbd train`` does; off, it raises ``KeyboardInterrupt`` where it lands.
    """
    family = get_family(method)
    mc = family.make_config() if model_cfg is None else model_cfg
    if not isinstance(mc, family.config_cls):
        raise ConfigError(
            f"model config is a {type(mc).__name__}, method {method!r} takes a {family.config_cls.__name__}"
        )
    tc = train_cfg if train_cfg is not None else TrainConfig()
    resolve_device(tc.device)  # a device that does not exist here (`--device gpu`) is refused before OUT is written
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    check_dataset_for(family, ds)
    if (doubt := suspect_import_warning(ds)) and distributed.current().is_main:
        log.warning("%s", doubt)
    if (upsampled := upsampling_warning(family, mc, ds)) and distributed.current().is_main:
        log.warning("%s", upsampled)
    out = Path(out_dir)
    extra = [*inputs, *([resume] if isinstance(resume, (str, Path)) else [])]
    main = distributed.current().is_main  # under torchrun rank 0 checks and writes out_dir, alone
    if not main:
        distributed.barrier()  # wait for rank 0's checks and cache (released below)
    earlier = run_folder.check_out_dir(out, ds.path, extra, resume=bool(resume), overwrite=overwrite) if main else []
    created = main and not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train_in(family, ds, out, mc, tc, resume, cache_root, callbacks, cache_deep, earlier, main,
                         stop_on_ctrl_c)  # fmt: skip
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # made by this run, which wrote nothing into it (e.g. the cache could not be built)
        raise


def _train_in(
    family: ModelFamily,
    ds: Dataset,
    out: Path,
    mc: Any,
    tc: TrainConfig,
    resume: bool | str | Path,
    cache_root: str | Path | None,
    callbacks: Sequence[Callback],
    cache_deep: bool,
    earlier: list[str],
    main: bool,
    stop_on_ctrl_c: bool,
) -> TrainResult:
    fingerprint = ds.fingerprint()

    resumed: LoadedCheckpoint | None = None
    if resume:
        rpath = out / "last.pt" if resume is True else Path(resume)
        if resume is True and not rpath.exists():
            if main:
                run_folder.resume_without_checkpoint(out)  # a killed --overwrite's earlier run: refused
            if (out / "best.pt").is_file():  # stopped before last.pt: best.pt has the weights and state of its step
                rpath = out / "best.pt"
        if rpath.exists() or resume is not True:
            resumed = load_checkpoint(rpath)
            run_folder.check_resume(rpath, resumed, family, mc, tc, fingerprint)
            log.info("resuming from %s (step %s, epoch %s)", rpath, resumed.step, resumed.epoch)

    # the earlier run goes aside before the recipe writes into out (the hybrid's keyframe map): what the new run
    # writes is its own, and a failure anywhere puts the earlier run back
    aside = run_folder.move_aside(out, earlier) if earlier else None
    had = run_folder.present(out)  # a run stopped before its first checkpoint removes only what it wrote
    try:
        recipe = family.load_recipe()
        seed_everything(tc.seed)  # the recipe builds the model: its initial weights follow train.seed
        setup: TrainingSetup = recipe(
            RecipeContext(
                dataset=ds,
                model_config=mc,
                train_config=tc,
                cache_root=None if cache_root is None else Path(cache_root),
                model=None if resumed is None else resumed.model,
                cache_deep=cache_deep,
                out_dir=out,
            )
        )
        if main:
            distributed.barrier()  # the other ranks now find the cache built
        split = setup.split
        log.info("split: %s -> %d train / %d val / %d test frames", split.description, len(split.train), len(split.val),
                 len(split.test))  # fmt: skip
        selects = bool(tc.val_every or tc.val_every_steps or tc.val_every_seconds)  # best.pt picked on validation
        if not split.separate_test and selects:
            log.warning(
                "no separate test set (train.test_fraction 0 or a two-way recipe): best.pt is selected on the frames "
                "that `pose2rgbd evaluate` reports; set train.test_fraction > 0 for an unbiased test"
            )
        train_dict = cfgmod.to_dict(tc)
        return _fit(family, ds, out, mc, tc, setup, resumed, train_dict, fingerprint, callbacks, aside,
                    stop_on_ctrl_c)  # fmt: skip
    except BaseException as e:
        if main:
            run_folder.stopped(out, had, aside, e)  # its own files removed, an earlier run put back
        raise


def training_coverage(ds: Dataset, split: Split, *, depth_frames: int = 32) -> dict[str, Any]:
    """What a checkpoint carries so that serving can say how far a query is from what the model saw
    (:func:`pose2rgbd.models.coverage.training_pose_set`): the training cameras ``training_poses`` ``(N, 7)``
    (x y z qx qy qz qw, float64 tensor) and the rotation weight ``coverage_rot_weight_m`` (median depth of up to
    ``depth_frames`` training frames, :func:`pose2rgbd.geometry.coverage.median_depth_weight`)."""
    import torch

    train = np.asarray(split.train, dtype=np.int64)
    if len(train) == 0:
        return {}
    t, q = tq_from_T(ds.frames.T_world_cam[train])
    weight = DEFAULT_ROT_WEIGHT_M
    if ds.has_depth:
        sel = np.unique(train[np.linspace(0, len(train) - 1, min(depth_frames, len(train))).astype(int)])
        weight = median_depth_weight(ds.read_depth(int(i)) for i in sel)
    return {
        "training_poses": torch.from_numpy(np.concatenate([t, q], axis=1)),
        "coverage_rot_weight_m": float(weight),
    }


def training_datum(ds: Dataset) -> dict[str, dict[str, object]]:
    """What a checkpoint carries so that serving knows where on the Earth its world frame is
    (:func:`pose2rgbd.models.coverage.model_datum`): the dataset's GPS datum, ``datum`` (:data:`DATUM_KEY`,
    :meth:`~pose2rgbd.geometry.geodesy.Datum.to_dict`); nothing for a dataset without one."""
    datum = ds.manifest.datum
    return {} if datum is None else {DATUM_KEY: datum.to_dict()}


def _fit(
    family: ModelFamily,
    ds: Dataset,
    out: Path,
    mc: Any,
    tc: TrainConfig,
    setup: TrainingSetup,
    resumed: LoadedCheckpoint | None,
    train_dict: dict[str, Any],
    fingerprint: str,
    callbacks: Sequence[Callback],
    aside: Path | None,
    stop_on_ctrl_c: bool,
) -> TrainResult:
    split, model = setup.split, setup.model
    dataset_path = str(ds.path.resolve())
    meta = {"dataset": dataset_path, "dataset_fingerprint": fingerprint, "split": split.description}
    main = distributed.current().is_main
    if main:  # each written whole or not at all: a run stopped here never leaves half a config beside a checkpoint
        write_text_atomic(
            out / "config.yaml",
            yaml.safe_dump(
                {"method": family.kind, "model": cfgmod.to_dict(mc), "train": train_dict, **meta}, sort_keys=False
            ),
        )
        write_text_atomic(out / "split.json", json.dumps(split.to_dict()))

    best_val: dict[str, float] = {}  # the validation that selected best.pt (the train summary prints it)
    coverage = {**training_coverage(ds, split), **training_datum(ds)}  # where the model's poses are, and on Earth

    def snapshot(trainer: Trainer) -> Any:
        """Copy what the checkpoint holds now (weights, optimizer states, trainer state: a few tens of ms) so
        that ``write(path)`` can run in a background thread while training changes the originals."""
        model_copy = copy.deepcopy(trainer.model)
        opt_states = copy.deepcopy(trainer.optimizer_states())
        step, epoch = trainer.step, trainer.epoch
        extra = copy.deepcopy(
            {
                **setup.extra,
                **coverage,
                "trainer_state": trainer.trainer_state(),
                "split": split.description,
                "val": dict(trainer.last_val),
                "dataset": dataset_path,
                "pose_units": ds.manifest.resolved_pose_units,  # "m", or "unscaled" (render trajectory says which)
                "bn_recalibrated": bool(tc.recalibrate_bn and trainer.bn_fresh),
            }
        )

        def write(path: Path) -> None:
            if path.name == "best.pt":
                best_val.clear()
                best_val.update(extra["val"])
            save_checkpoint(
                path,
                model_copy,
                dataset_fingerprint=fingerprint,
                camera=setup.camera,
                depth_kind=ds.manifest.depth_kind,
                world_frame=ds.manifest.world_frame,
                train_config=train_dict,
                step=step,
                epoch=epoch,
                optimizers=opt_states,
                extra=extra,
            )

        return write

    ckpt_cb = CheckpointCallback(out, snapshot=snapshot, background=tc.checkpoint_background)
    # early stopping: rank 0 validates and its stop is broadcast to the others (Trainer.fit)
    cbs: list[Callback] = [EarlyStopping(tc.patience, tc.min_delta)] if tc.patience else []
    if main:  # under torchrun: logs, progress and checkpoints on rank 0 only
        cbs.append(CSVLogger(out / "log.csv", every=tc.log_every))
        if tc.tensorboard:
            cbs.append(TensorBoardLogger(out / "tb", every=tc.log_every))
        if tc.progress:
            cbs.append(ProgressBar(desc=setup.description or family.kind))
        cbs += [*callbacks, ckpt_cb]
    trainer = Trainer(model, setup.train_set, tc, val_set=setup.val_set, callbacks=cbs)
    if resumed is not None:
        trainer.load_state(
            model_state=resumed.model.state_dict(),
            optimizers=resumed.optimizers,
            trainer_state=resumed.extra.get("trainer_state") or {"step": resumed.step, "epoch": resumed.epoch},
        )
    try:
        # the command line's: the first Ctrl-C ends the step, and last.pt is written (a caller that trains as one
        # stage of its own work -- convert video's depth network, the demo -- stops as a whole, as before)
        with stop_after_the_step(trainer) if stop_on_ctrl_c else contextlib.nullcontext():
            trainer.fit()
    except BaseException:
        # a background checkpoint write may still be running: let it finish (or fail) before the caller decides
        # whether an earlier run is put back, so it cannot rename a new last.pt over the restored files
        if ckpt_cb.writer is not None:
            try:
                ckpt_cb.writer.join()
            except Exception as e:  # the training error is the one to report
                log.warning("a checkpoint write of the stopped run failed too: %s", e)
        raise
    distributed.barrier()  # rank 0's last checkpoint is written (its writer joined in on_train_end)
    best = ckpt_cb.best_path if ckpt_cb.best_path is not None and ckpt_cb.best_path.exists() else None
    if main:
        _fit_depth_uncertainty([p for p in (best, ckpt_cb.last) if p is not None], setup, tc, trainer)
    distributed.barrier()
    if aside is not None and main:
        shutil.rmtree(aside, ignore_errors=True)  # the new run is complete: the earlier one goes
    return TrainResult(
        out_dir=out,
        checkpoint=best or ckpt_cb.last,
        last=ckpt_cb.last,
        best=best,
        steps=trainer.step,
        epochs=trainer.epoch,
        elapsed_s=trainer.elapsed_s,
        stop_reason=trainer.stop_reason,
        parameters=count_parameters(model),
        split=split,
        log_csv=out / "log.csv",
        final_val=dict(trainer.last_val),
        method=family.kind,
        best_val=dict(best_val) if best_val or best is None else _saved_val(best),
    )


def _fit_depth_uncertainty(paths: Sequence[Path], setup: TrainingSetup, tc: TrainConfig, trainer: Trainer) -> None:
    """Each checkpoint of ``paths`` gets the depth uncertainty of its own weights, fitted on the validation frames
    (:mod:`pose2rgbd.training.depth_uncertainty`; a renderer with depth only). A failure is logged, never raised:
    the training it follows is complete and kept; so is a Ctrl-C / SIGTERM here, which ends the fitting (the trained
    checkpoints are complete: the run ends as finished, and `evaluate --fit-depth-uncertainty` adds what is missing)."""
    val = setup.val_set
    if val is None or len(val) == 0 or not isinstance(setup.model, PoseToImage) or not setup.model.has_depth:
        return
    for path in paths:  # best.pt (where validation chose one), then last.pt
        try:
            fitted = add_to_checkpoint(path, val, batch_size=tc.batch_size, device=str(trainer.device))
        except KeyboardInterrupt:
            log.warning("%s: interrupted while fitting its depth uncertainty; the trained checkpoints are complete, "
                        "without it where it was not written: `pose2rgbd evaluate --checkpoint C --dataset D "
                        "--fit-depth-uncertainty` adds it", path)  # fmt: skip
            return
        except Exception as e:  # any: the trained checkpoint stays as written
            log.warning("%s: its depth uncertainty was not fitted (%s: %s); renders from it carry none", path,
                        type(e).__name__, e)  # fmt: skip
            continue
        if fitted is None:
            log.warning("%s: too few validation pixels with depth to fit its depth uncertainty; renders from it "
                        "carry none", path)  # fmt: skip
        else:
            log.info("%s: depth uncertainty: %s", path.name, fitted.describe())


def _saved_val(path: Path) -> dict[str, float]:
    """The validation a checkpoint was saved with (a resumed run whose best.pt was not beaten)."""
    try:
        return {str(k): float(v) for k, v in (load_checkpoint(path).extra.get("val") or {}).items()}
    except (CheckpointError, OSError, ValueError, TypeError):
        return {}


def train_model(
    dataset: str | Path | Dataset,
    out_dir: str | Path,
    model_cfg: Any,
    train_cfg: TrainConfig,
    *,
    resume: bool | str | Path = False,
    cache_root: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> TrainResult:
    """:func:`train` for the model kind whose config ``model_cfg`` is (e.g. a Pose2RGBD config)."""
    family = family_of_config(model_cfg)
    return train(
        family.kind, dataset, out_dir, model_cfg, train_cfg, resume=resume, cache_root=cache_root,
        callbacks=callbacks, overwrite=overwrite,
    )  # fmt: skip


def _checkpoint_setup(
    path: Path, dataset: str | Path | Dataset, cache_root: str | Path | None = None
) -> tuple[LoadedCheckpoint, TrainingSetup]:
    """The checkpoint at ``path`` (checked against ``dataset``) and its data as its method's recipe builds it for
    the checkpoint's own model and split (same kind, seed and fractions), its cache under ``cache_root``."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    ck = load_checkpoint(path, expect_fingerprint=ds.fingerprint())
    tc = ck.train_config
    split_cfg = TrainConfig(
        split=str(tc.get("split", "random")),
        seed=int(tc.get("seed", 0)),
        val_fraction=float(tc.get("val_fraction", 0.2)),
        test_fraction=float(tc.get("test_fraction", 0.0)),  # a run from before the three-way split: two-way
        every_nth=int(tc.get("every_nth", 10)),
        progress=False,
    )
    setup: TrainingSetup = ck.family.load_recipe()(
        RecipeContext(
            dataset=ds,
            model_config=ck.model_config,
            train_config=split_cfg,
            model=ck.model,
            cache_root=None if cache_root is None else Path(cache_root),
        )
    )
    return ck, setup


def fit_checkpoint_depth_uncertainty(
    checkpoint: str | Path,
    dataset: str | Path | Dataset,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    cache_root: str | Path | None = None,
) -> DepthUncertainty | None:
    """Give a checkpoint written before training fitted its depth uncertainty (or one whose run was stopped) the one
    it would have: fitted on its own validation frames of ``dataset`` (the split it was trained with; the training
    cache under ``cache_root``), rendered on ``device``, and written into it atomically, everything else kept
    (:func:`pose2rgbd.training.depth_uncertainty.add_to_checkpoint`). None (nothing written) for a model without
    depth, or a split without validation frames with depth."""
    path = Path(checkpoint)
    ck, setup = _checkpoint_setup(path, dataset, cache_root)
    if setup.val_set is None or len(setup.val_set) == 0:
        return None
    return add_to_checkpoint(path, setup.val_set, batch_size=batch_size, device=device, loaded=ck)


def recalibrate_checkpoint(
    checkpoint: str | Path, dataset: str | Path | Dataset, *, batch_size: int = 16, max_batches: int = 64
) -> Path:
    """Give a checkpoint written before BatchNorm recalibration existed exact statistics, in place.

    Uses the checkpoint's own training split (same kind and seed) of ``dataset`` as its method's recipe builds
    it, the same pass the trainer now runs at the end of training
    (:func:`pose2rgbd.training.batchnorm.recalibrate_batchnorm`), and writes the checkpoint back atomically (in
    the current format) with ``extra["bn_recalibrated"] = True``. Returns its path.
    """
    from pose2rgbd.training.batchnorm import recalibrate_batchnorm

    path = Path(checkpoint)
    ck, setup = _checkpoint_setup(path, dataset)
    recalibrate_batchnorm(
        ck.model, setup.train_set, batch_size=batch_size, device=resolve_device("cpu"), max_batches=max_batches
    )
    save_loaded(ck, path, extra={**ck.extra, "bn_recalibrated": True}, keep_optimizers=True)  # atomic
    return path
