"""The training driver ``train(method, ...)`` is generic: a toy kind with its own recipe trains through it, writes
the usual outputs, resumes, and a checkpoint of another kind cannot be resumed into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from toy_renderer import ToyRenderer, ToyRendererConfig, toy_recipe

from pose2rgbd.errors import CheckpointError
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.models import ModelFamily, load_checkpoint
from pose2rgbd.models.registry import register_family, unregister_family
from pose2rgbd.training import TrainConfig, train


class TinyRenderer(ToyRenderer):
    kind = "tiny-render"


FAMILY = ModelFamily(
    kind="tiny-render", config_cls=ToyRendererConfig, build=TinyRenderer, data="pose_to_image", engine="render",
    train=lambda: toy_recipe(TinyRenderer, "tiny"),
)  # fmt: skip


@pytest.fixture
def tiny():
    register_family(FAMILY)
    yield FAMILY
    unregister_family(FAMILY.kind)


def test_driver_trains_and_resumes_any_kind(tiny: ModelFamily, tmp_path: Path) -> None:
    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=16)
    tc = TrainConfig(epochs=1, batch_size=4, split="random", progress=False, tensorboard=False, device="cpu")
    r1 = train("tiny-render", ds, tmp_path / "run", ToyRendererConfig(), tc, cache_root=tmp_path / "cache")
    assert r1.method == "tiny-render" and r1.epochs == 1 and r1.last.exists()
    assert r1.parameters == 7 * 192 + 192 and "val/loss" in r1.final_val
    meta = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert meta["method"] == "tiny-render" and meta["model"] == {"size": 8}
    assert (tmp_path / "run" / "split.json").exists() and (tmp_path / "run" / "log.csv").exists()
    ck = load_checkpoint(r1.last, expect_kind="tiny-render")
    assert type(ck.model) is TinyRenderer and ck.camera is not None and ck.camera.width == 8
    tc2 = TrainConfig(epochs=2, batch_size=4, split="random", progress=False, tensorboard=False, device="cpu")
    r2 = train(
        "tiny-render", ds, tmp_path / "run", ToyRendererConfig(), tc2, resume=True, cache_root=tmp_path / "cache"
    )
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
