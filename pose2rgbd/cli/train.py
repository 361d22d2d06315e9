"""``pose2rgbd train``: train a model of one method (default: Pose2RGBD) on a format-v1 dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args

DEFAULT_METHOD = "pose2rgbd"

# The short spellings users and docs rely on; each feeds the same keys as --model.* / --train.* / --set.
ALIASES = (
    Alias("--preset", "model.preset"),
    Alias("--outputs", "model.outputs"),
    Alias("--encoding", "model.encoding"),
    Alias("--size", "model.size"),
    Alias("--epochs", "train.epochs"),
    Alias("--batch-size", "train.batch_size"),
    Alias("--lr", "train.lr"),
    Alias("--split", "train.split"),
    Alias("--seed", "train.seed"),
    Alias("--device", "train.device"),
    Alias("--amp", "train.amp"),
    Alias("--max-minutes", "train.max_minutes"),
    Alias("--no-tensorboard", "train.tensorboard", const=False, help="do not write TensorBoard events"),
    Alias("--no-progress", "train.progress", const=False, help="no progress bar"),
)


def _method_config_cls(name: str) -> type:
    """The model config class of a training method."""
    from pose2rgbd.models.registry import get_family

    return get_family(name).config_cls


def _train(method: str, dataset: Path, out: Path, model_cfg: Any, train_cfg: Any, **kw: Any) -> Any:
    """Run the training entry of ``method`` (the one call into the training library)."""
    from pose2rgbd.training.train import train

    return train(method, dataset, out, model_cfg, train_cfg, **kw)


def _pre_parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--method", default=DEFAULT_METHOD)
    return p.parse_known_args(argv)[0]


def _schema(pre: argparse.Namespace) -> Schema:
    from pose2rgbd.training.config import TrainConfig

    return Schema({"model": _method_config_cls(pre.method), "train": TrainConfig})


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train",
        help="train a model (default method pose2rgbd: Base / Slice-S) on a dataset",
        description="Train f(pose) -> RGB / depth / RGBD. Writes OUT/last.pt, OUT/best.pt, OUT/log.csv, OUT/tb/ "
        "(tensorboard --logdir OUT/tb), OUT/config.yaml and OUT/split.json. Defaults follow the paper "
        "(AdamW, lr 0.01, 6dof-quat input, random 80/20 split) except the resolution (128 here, 512 in the paper). "
        "The --model.* flags are those of the chosen --method.",
        allow_abbrev=False,
    )
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"training method / model kind (default {DEFAULT_METHOD})")
    p.add_argument("--dataset", type=Path, required=True, help="format-v1 dataset directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    p.add_argument("--cache-root", type=Path, help="where training caches live (default DATASET/cache)")
    add_config_flags(
        p, _schema, ALIASES, prepare=_pre_parse,
        config_help="YAML with 'model:' and/or 'train:' sections; flags and --set override it",
    )  # fmt: skip
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    mc, tc = cfg["model"], cfg["train"]
    res = _train(args.method, args.dataset, args.out, mc, tc, resume=args.resume, cache_root=args.cache_root)
    what = "/".join(str(getattr(mc, k)) for k in ("preset", "outputs", "encoding") if hasattr(mc, k)) or args.method
    size = f" {mc.size}x{mc.size}" if hasattr(mc, "size") else ""
    print(f"trained {what}{size} ({res.parameters:,} parameters)")
    print(f"  {res.steps} steps, {res.epochs} epochs, {res.elapsed_s / 60:.1f} min ({res.stop_reason})")
    if res.final_val:
        print(
            "  validation: " + ", ".join(f"{k.removeprefix('val/')}={v:.4g}" for k, v in sorted(res.final_val.items()))
        )
    print(f"  checkpoint: {res.checkpoint}")
    return 0
