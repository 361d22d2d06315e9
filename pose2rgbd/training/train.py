"""Train a Pose2RGBD model on a format-v1 dataset: ``train_model`` (full control) and ``train_quick`` (demo)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pose2rgbd import config as cfgmod
from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.geometry.encoding import PoseNormalizer
from pose2rgbd.models import DepthNormalizer, ModelConfig, build_model, count_parameters, save_checkpoint
from pose2rgbd.models.checkpoint import read_checkpoint_dict
from pose2rgbd.training.callbacks import CheckpointCallback, CSVLogger, ProgressBar, TensorBoardLogger
from pose2rgbd.training.config import TrainConfig
from pose2rgbd.training.splits import Split, make_split
from pose2rgbd.training.trainer import Callback, Trainer

log = logging.getLogger(__name__)

# Train-config fields that must not change when resuming (they define the data the model saw).
_RESUME_FIXED = ("split", "seed", "val_fraction", "depth_max", "depth_max_percentile")


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


def split_for(cache_or_ds: Any, kind: str, seed: int, val_fraction: float) -> Split:
    """The split of a :class:`TrainingCache` (or :class:`Dataset`) as training makes it."""
    if hasattr(cache_or_ds, "frames"):
        return make_split(
            cache_or_ds.frames.source_id, cache_or_ds.frames.stamp_ns, kind, seed=seed, val_fraction=val_fraction
        )
    return make_split(cache_or_ds.source_id, cache_or_ds.stamp_ns, kind, seed=seed, val_fraction=val_fraction)


def train_model(
    dataset: str | Path | Dataset,
    out_dir: str | Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    resume: bool | str | Path = False,
    cache_root: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``model_cfg`` on ``dataset``; writes into ``out_dir``: ``last.pt``, ``best.pt``, ``log.csv``,
    TensorBoard events (``tb/``), ``config.yaml`` and ``split.json``.

    ``resume``: ``True`` resumes from ``out_dir/last.pt`` if it exists; a path resumes from that checkpoint.
    The cache of the dataset at ``model_cfg.size`` is built once and shared (``<dataset>/cache`` or
    ``cache_root``).
    """
    from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_cfg.has_depth and not ds.has_depth:
        raise ConfigError(f"{ds.path}: the dataset has no depth; train with outputs 'rgb'")
    if ds.manifest.depth_kind == "unscaled":
        log.info("depth is unscaled: depth errors are in dataset units, not metres")
    fingerprint = ds.fingerprint()
    cache = build_cache(ds, model_cfg.size, cache_root=cache_root, progress=train_cfg.progress)
    split = split_for(cache, train_cfg.split, train_cfg.seed, train_cfg.val_fraction)
    log.info("split: %s -> %d train / %d val frames", split.description, len(split.train), len(split.val))

    pose_norm = PoseNormalizer.fit(cache.T_world_cam[split.train], model_cfg.encoding)
    depth_norm = None
    if ds.has_depth and cache.depth is not None:
        depth_norm = DepthNormalizer.fit(
            cache.depth,
            indices=split.train,
            max_m=train_cfg.depth_max or None,
            max_percentile=train_cfg.depth_max_percentile,
        )
        log.info(
            "depth range [%.2f, %.2f] (beyond: clipped to the maximum, like sky)", depth_norm.min_m, depth_norm.max_m
        )

    resume_data: dict[str, Any] | None = None
    if resume:
        rpath = out / "last.pt" if resume is True else Path(resume)
        if rpath.exists() or resume is not True:
            resume_data = read_checkpoint_dict(rpath)
            _check_resume(rpath, resume_data, model_cfg, train_cfg, fingerprint)
            pose_norm = PoseNormalizer.from_dict(resume_data["pose_normalizer"])
            if resume_data.get("depth_normalizer") is not None:
                depth_norm = DepthNormalizer.from_dict(resume_data["depth_normalizer"])
            log.info("resuming from %s (step %s, epoch %s)", rpath, resume_data.get("step"), resume_data.get("epoch"))

    model = build_model(model_cfg, depth_norm)
    train_set = PoseRGBDDataset(cache, split.train, pose_norm)
    val_set = PoseRGBDDataset(cache, split.val, pose_norm) if len(split.val) else None
    train_dict = cfgmod.to_dict(train_cfg)
    meta = {"dataset": str(ds.path.resolve()), "dataset_fingerprint": fingerprint, "split": split.description}
    (out / "config.yaml").write_text(
        yaml.safe_dump({"model": cfgmod.to_dict(model_cfg), "train": train_dict, **meta}, sort_keys=False)
    )
    (out / "split.json").write_text(json.dumps(split.to_dict()))

    def save(trainer: Trainer, path: Path) -> None:
        save_checkpoint(
            path,
            model=trainer.model,  # type: ignore[arg-type]
            pose_normalizer=pose_norm,
            depth_normalizer=depth_norm,
            dataset_fingerprint=fingerprint,
            camera=cache.camera,
            depth_kind=ds.manifest.depth_kind,
            world_frame=ds.manifest.world_frame,
            train_config=train_dict,
            step=trainer.step,
            epoch=trainer.epoch,
            optimizers=trainer.optimizer_states(),
            extra={
                "trainer_state": trainer.trainer_state(),
                "split": split.description,
                "val": dict(trainer.last_val),
                "dataset": str(ds.path.resolve()),
                "bn_recalibrated": bool(train_cfg.recalibrate_bn and trainer.bn_fresh),
            },
        )

    ckpt_cb = CheckpointCallback(out, save)
    cbs: list[Callback] = [CSVLogger(out / "log.csv", every=train_cfg.log_every)]
    if train_cfg.tensorboard:
        cbs.append(TensorBoardLogger(out / "tb", every=train_cfg.log_every))
    if train_cfg.progress:
        cbs.append(ProgressBar(desc=f"{model_cfg.preset}/{model_cfg.outputs}"))
    cbs += [*callbacks, ckpt_cb]
    trainer = Trainer(model, train_set, train_cfg, val_set=val_set, callbacks=cbs)
    if resume_data is not None:
        extra = resume_data.get("extra") or {}
        trainer.load_state(
            model_state=resume_data["state_dict"],
            optimizers=resume_data.get("optimizers") or {},
            trainer_state=extra.get("trainer_state")
            or {"step": resume_data.get("step"), "epoch": resume_data.get("epoch")},
        )
    trainer.fit()
    best = ckpt_cb.best_path if ckpt_cb.best_path is not None and ckpt_cb.best_path.exists() else None
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
    )


def _check_resume(path: Path, data: dict[str, Any], mc: ModelConfig, tc: TrainConfig, fingerprint: str) -> None:
    have = data.get("model_config") or {}
    want = cfgmod.to_dict(mc)
    diff = [f"{k}: checkpoint {have.get(k)!r} vs requested {v!r}" for k, v in want.items() if have.get(k) != v]
    if diff:
        raise CheckpointError(f"{path}: cannot resume, the model differs ({'; '.join(diff)})")
    if data.get("dataset_fingerprint") != fingerprint:
        raise CheckpointError(
            f"{path}: cannot resume, trained on dataset {data.get('dataset_fingerprint')}, "
            f"this dataset is {fingerprint}"
        )
    old = data.get("train_config") or {}
    tdict = cfgmod.to_dict(tc)
    diff = [f"{k}: {old.get(k)!r} vs {tdict[k]!r}" for k in _RESUME_FIXED if k in old and old.get(k) != tdict[k]]
    if diff:
        raise CheckpointError(f"{path}: cannot resume with another data split ({'; '.join(diff)})")


def train_quick(
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    size: int = 64,
    minutes: float = 2.5,
    preset: str = "slice10",
    outputs: str = "rgbd",
    encoding: str = "6dof-quat",
    split: str = "route",
    batch_size: int = 16,
    seed: int = 0,
    lr: float | None = None,
    progress: bool = True,
) -> Path:
    """Train a small model for about ``minutes`` of wall time (the demo); returns the checkpoint path.

    The epoch count is an upper bound (200); the time budget ends training, with a validation and a
    checkpoint. ``split='route'`` holds out the non-survey routes so the fly-through shows unseen poses.
    """
    from pose2rgbd.models import preset_config

    mc = preset_config(preset, size=size, outputs=outputs, encoding=encoding)
    tc = TrainConfig(
        epochs=200,
        batch_size=batch_size,
        split=split,
        seed=seed,
        lr=lr if lr is not None else TrainConfig.lr,
        max_minutes=minutes,
        val_every=5,
        progress=progress,
        tensorboard=True,
    )
    return train_model(dataset_dir, out_dir, mc, tc).checkpoint


def recalibrate_checkpoint(
    checkpoint: str | Path, dataset: str | Path | Dataset, *, batch_size: int = 16, max_batches: int = 64
) -> Path:
    """Give a checkpoint written before BatchNorm recalibration existed exact statistics, in place.

    Uses the checkpoint's own training split (same kind and seed) of ``dataset``, the same pass the trainer
    now runs at the end of training (:func:`pose2rgbd.training.trainer.recalibrate_batchnorm`), and writes
    the checkpoint back atomically with ``extra["bn_recalibrated"] = True``. Returns its path.
    """
    from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.models.device import resolve_device
    from pose2rgbd.training.trainer import recalibrate_batchnorm

    path = Path(checkpoint)
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    ck = load_checkpoint(path, expect_fingerprint=ds.fingerprint())
    tc = ck.train_config
    cache = build_cache(ds, ck.size, progress=False)
    split = split_for(cache, str(tc.get("split", "random")), int(tc.get("seed", 0)), float(tc.get("val_fraction", 0.2)))
    device = resolve_device("cpu")
    recalibrate_batchnorm(
        ck.model,
        PoseRGBDDataset(cache, split.train, ck.pose_normalizer),
        batch_size=batch_size,
        device=device,
        max_batches=max_batches,
    )
    save_checkpoint(  # atomic: temporary file, then rename
        path,
        model=ck.model,
        pose_normalizer=ck.pose_normalizer,
        depth_normalizer=ck.depth_normalizer,
        dataset_fingerprint=ck.dataset_fingerprint,
        camera=ck.camera,
        depth_kind=ck.depth_kind,
        world_frame=ck.world_frame,
        train_config=tc,
        step=ck.step,
        epoch=ck.epoch,
        optimizers=ck.optimizers,
        extra={**ck.extra, "bn_recalibrated": True},
    )
    return path
