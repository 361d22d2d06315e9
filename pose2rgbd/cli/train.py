"""``pose2rgbd train``: train a Pose2RGBD model on a format-v1 dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

PRESET_CHOICES = ("base", "slice10", "slice32", "slice64")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train",
        help="train a Pose2RGBD model (Base / Slice-S) on a dataset",
        description="Train f(pose) -> RGB / depth / RGBD. Writes OUT/last.pt, OUT/best.pt, OUT/log.csv, OUT/tb/ "
        "(tensorboard --logdir OUT/tb), OUT/config.yaml and OUT/split.json. Defaults follow the paper "
        "(AdamW, lr 0.01, 6dof-quat input, random 80/20 split) except the resolution (128 here, 512 in the paper).",
    )
    p.add_argument("--dataset", type=Path, required=True, help="format-v1 dataset directory")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--config", type=Path, help="YAML with 'model:' and/or 'train:' sections (flags override it)")
    p.add_argument("--preset", choices=PRESET_CHOICES, help="architecture (default slice10)")
    p.add_argument("--outputs", choices=("rgb", "depth", "rgbd"), help="what to predict (default rgbd)")
    p.add_argument("--encoding", choices=("6dof-euler", "6dof-quat"), help="pose input (default 6dof-quat)")
    p.add_argument("--size", type=int, help="output resolution, power of two in [64, 512] (default 128)")
    p.add_argument("--epochs", type=int, help="epochs (default 100)")
    p.add_argument("--batch-size", type=int, help="batch size (default 16)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.01, fixed)")
    p.add_argument("--split", choices=("random", "route"), help="random 80/20 (default) or held-out routes")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), help="mixed precision (default auto)")
    p.add_argument("--max-minutes", type=float, help="stop after this many minutes of training")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if it exists")
    p.add_argument("--cache-root", type=Path, help="where training caches live (default DATASET/cache)")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import yaml

    from pose2rgbd import config as cfgmod
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.methods.pose2rgbd import Pose2RGBDConfig as ModelConfig
    from pose2rgbd.training import TrainConfig, train_model

    model_d: dict = {}
    train_d: dict = {}
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{args.config}: cannot read YAML: {e}") from e
        unknown = set(data) - {"model", "train"}
        if unknown:
            raise ConfigError(f"{args.config}: unknown section(s) {sorted(unknown)}; use 'model' and 'train'")
        model_d = dict(data.get("model") or {})
        train_d = dict(data.get("train") or {})
    for flag, key in (("preset", "preset"), ("outputs", "outputs"), ("encoding", "encoding"), ("size", "size")):
        if getattr(args, flag) is not None:
            model_d[key] = getattr(args, flag)
    for flag, key in (
        ("epochs", "epochs"),
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("split", "split"),
        ("seed", "seed"),
        ("device", "device"),
        ("amp", "amp"),
        ("max_minutes", "max_minutes"),
    ):
        if getattr(args, flag) is not None:
            train_d[key] = getattr(args, flag)
    if args.no_tensorboard:
        train_d["tensorboard"] = False
    if args.no_progress:
        train_d["progress"] = False
    mc = cfgmod.from_dict(ModelConfig, model_d, where="model")
    tc = cfgmod.from_dict(TrainConfig, train_d, where="train")
    res = train_model(args.dataset, args.out, mc, tc, resume=args.resume, cache_root=args.cache_root)
    print(f"trained {mc.preset}/{mc.outputs}/{mc.encoding} {mc.size}x{mc.size} ({res.parameters:,} parameters)")
    print(f"  {res.steps} steps, {res.epochs} epochs, {res.elapsed_s / 60:.1f} min ({res.stop_reason})")
    if res.final_val:
        print(
            "  validation: " + ", ".join(f"{k.removeprefix('val/')}={v:.4g}" for k, v in sorted(res.final_val.items()))
        )
    print(f"  checkpoint: {res.checkpoint}")
    return 0
