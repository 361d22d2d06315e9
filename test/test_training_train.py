"""The training driver ``train(method, ...)`` is generic: a toy kind with its own recipe trains through it, writes
the usual outputs, resumes, and a checkpoint of another kind cannot be resumed into it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from pose2rgbd.dataset import build_cache
from pose2rgbd.errors import CheckpointError
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.models import ModelBase, ModelFamily, PoseNormalizer, PoseToImage, load_checkpoint
from pose2rgbd.models.registry import register_family, unregister_family
from pose2rgbd.training import RecipeContext, TrainConfig, TrainingSetup, split_for, train


@dataclass
class TinyConfig:
    size: int = 8


class TinyRenderer(PoseToImage, ModelBase):
    kind = "tiny-render"

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization("6dof-quat")
        self.linear = nn.Linear(7, 3 * config.size**2)

    image_hw = property(lambda self: (self.config.size, self.config.size))
    has_rgb = property(lambda self: True)
    has_depth = property(lambda self: False)

    def forward(self, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"rgb": torch.tanh(self.linear(pose)).view(-1, 3, self.config.size, self.config.size)}

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["pose"])

    def get_loss_dict(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"rgb_mse": F.mse_loss(outputs["rgb"], batch["rgb"])}


def prepare(ctx: RecipeContext) -> TrainingSetup:
    cache = build_cache(ctx.dataset, ctx.model_config.size, cache_root=ctx.cache_root, progress=False)
    split = split_for(cache, ctx.train_config.split, ctx.train_config.seed, ctx.train_config.val_fraction)
    model = ctx.model or TinyRenderer(ctx.model_config)
    if ctx.model is None:
        model.set_pose_normalizer(PoseNormalizer.fit(cache.T_world_cam[split.train], "6dof-quat"))
    x = model.normalize_poses(cache.T_world_cam)

    def items(idx: np.ndarray) -> list[dict[str, Any]]:
        rgb = [torch.from_numpy(np.array(cache.rgb[i])).permute(2, 0, 1).float() / 127.5 - 1 for i in idx]
        return [{"pose": torch.from_numpy(x[i]), "rgb": r} for i, r in zip(idx, rgb)]

    return TrainingSetup(model, items(split.train), items(split.val), split, cache.camera, "tiny")


FAMILY = ModelFamily(
    kind="tiny-render", config_cls=TinyConfig, build=TinyRenderer, data="pose_to_image", engine="render",
    train=lambda: prepare,
)  # fmt: skip


@pytest.fixture
def tiny():
    register_family(FAMILY)
    yield FAMILY
    unregister_family(FAMILY.kind)


def test_driver_trains_and_resumes_any_kind(tiny: ModelFamily, tmp_path: Path) -> None:
    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=16)
    tc = TrainConfig(epochs=1, batch_size=4, split="random", progress=False, tensorboard=False, device="cpu")
    r1 = train("tiny-render", ds, tmp_path / "run", TinyConfig(), tc, cache_root=tmp_path / "cache")
    assert r1.method == "tiny-render" and r1.epochs == 1 and r1.last.exists()
    assert r1.parameters == 7 * 192 + 192 and "val/loss" in r1.final_val
    meta = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert meta["method"] == "tiny-render" and meta["model"] == {"size": 8}
    assert (tmp_path / "run" / "split.json").exists() and (tmp_path / "run" / "log.csv").exists()
    ck = load_checkpoint(r1.last, expect_kind="tiny-render")
    assert type(ck.model) is TinyRenderer and ck.camera is not None and ck.camera.width == 8
    tc2 = TrainConfig(epochs=2, batch_size=4, split="random", progress=False, tensorboard=False, device="cpu")
    r2 = train("tiny-render", ds, tmp_path / "run", TinyConfig(), tc2, resume=True, cache_root=tmp_path / "cache")
    assert r2.epochs == 2 and r2.steps == 2 * r1.steps
    # the resumed model kept the transforms it was trained with
    np.testing.assert_array_equal(load_checkpoint(r2.last).model.pose_min.numpy(), ck.model.pose_min.numpy())
    with pytest.raises(CheckpointError, match="cannot resume, it holds a 'tiny-render' model, not 'pose2rgbd'"):
        train("pose2rgbd", ds, tmp_path / "run", None, tc2, resume=True, cache_root=tmp_path / "cache")
    # BatchNorm recalibration of an old checkpoint rebuilds the data through the kind's own recipe
    from pose2rgbd.training import recalibrate_checkpoint

    recalibrate_checkpoint(r2.last, ds)
    again = load_checkpoint(r2.last)
    assert again.extra["bn_recalibrated"] is True and again.step == r2.steps
