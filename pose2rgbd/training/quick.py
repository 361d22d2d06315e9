"""A few-minute training run of any pose -> image model kind (the demo's training stage).

:func:`train_quick` builds the kind's config from a preset (setting ``size`` / ``outputs`` / ``encoding`` where the
kind's config has those fields), trains for a wall-time budget with a validation every few epochs, and returns
the checkpoint the driver selected. Every kind trains through the same driver
(:func:`pose2rgbd.training.train.train`), so a new kind is available here without code of its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pose2rgbd.errors import ConfigError
from pose2rgbd.models.registry import get_family
from pose2rgbd.training.config import TrainConfig
from pose2rgbd.training.train import train


def quick_model_config(kind: str, preset: str | None, *, size: int, outputs: str = "rgbd",
                       encoding: str = "6dof-quat", **overrides: Any) -> Any:  # fmt: skip
    """The model config of ``kind``'s ``preset`` (its default preset when ``None``) at ``size``; ``outputs`` and
    ``encoding`` are applied where the kind's config has those fields. Refuses kinds that do not render poses."""
    fam = get_family(kind)
    if fam.data != "pose_to_image":
        raise ConfigError(f"{kind!r} is not a pose -> image model kind (it trains on {fam.data}); choose a renderer")
    names = {f.name for f in dataclasses.fields(fam.config_cls)}
    common = {"size": size, "outputs": outputs, "encoding": encoding}
    return fam.make_config(preset, **{k: v for k, v in common.items() if k in names}, **overrides)


def train_quick(
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    kind: str = "pose2rgbd",
    preset: str | None = None,
    size: int = 64,
    minutes: float = 2.5,
    outputs: str = "rgbd",
    encoding: str = "6dof-quat",
    split: str = "route",
    batch_size: int = 16,
    seed: int = 0,
    lr: float | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Train ``kind`` / ``preset`` for about ``minutes`` of wall time; returns the checkpoint path.

    The epoch count is an upper bound (200); the time budget ends training, with a validation and a checkpoint.
    ``split='route'`` holds out the non-survey routes so the fly-through shows unseen poses. ``lr`` sets the
    learning rate of every optimizer group (``None``: the kind's own defaults). ``overwrite``: replace an earlier
    run in ``out_dir``.
    """
    mc = quick_model_config(kind, preset, size=size, outputs=outputs, encoding=encoding)
    given: dict[str, object] = dict(
        epochs=200, batch_size=batch_size, split=split, seed=seed, max_minutes=minutes, val_every=5, progress=progress,
        tensorboard=True, **({} if lr is None else {"lr": lr}),
    )  # fmt: skip
    # the kind's own training values (the hybrid's lr) under what is given here, as `pose2rgbd train` takes them
    tc = TrainConfig(**{**get_family(kind).train_defaults, **given})  # type: ignore[arg-type]
    return train(kind, dataset_dir, out_dir, mc, tc, overwrite=overwrite).checkpoint
