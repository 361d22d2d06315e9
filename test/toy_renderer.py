"""The toy pose -> RGB model kind of the tests that register a trainable kind of their own (the training driver,
the model registry, `pose2rgbd train --method`, a killed and resumed run), and its training recipe.

A test names its kind with a subclass (``class TinyRenderer(ToyRenderer): kind = "tiny-render"``) and registers a
:class:`~pose2rgbd.models.ModelFamily` with ``build=`` that class and ``train=lambda: toy_recipe(TinyRenderer)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pose2rgbd.models import ModelBase, PoseNormalizer, PoseToImage


@dataclass
class ToyRendererConfig:
    size: int = 8


class ToyRenderer(PoseToImage, ModelBase):
    """Normalized 6dof-quat pose (N, 7) -> RGB (N, 3, size, size) in [-1, 1]: one linear layer and a tanh; a config
    with ``hidden`` > 0 puts a tanh hidden layer of that width before it, one with ``scale`` scales the output
    (a config without those fields, like :class:`ToyRendererConfig`: one layer, scale 1)."""

    kind = "toy-render"

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization("6dof-quat")
        out, hidden = 3 * config.size**2, getattr(config, "hidden", 0)
        layers = [nn.Linear(7, hidden), nn.Tanh(), nn.Linear(hidden, out)] if hidden > 0 else [nn.Linear(7, out)]
        self.body = nn.Sequential(*layers)

    image_hw = property(lambda self: (self.config.size, self.config.size))
    has_rgb = property(lambda self: True)
    has_depth = property(lambda self: False)

    def forward(self, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        y = getattr(self.config, "scale", 1.0) * torch.tanh(self.body(pose))
        return {"rgb": y.view(-1, 3, self.config.size, self.config.size)}

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["pose"])

    def get_loss_dict(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"rgb_mse": F.mse_loss(outputs["rgb"], batch["rgb"])}


def toy_recipe(cls: type[ToyRenderer], description: str = "toy") -> Callable[[Any], Any]:
    """The training recipe of a toy kind: the dataset's training cache at the model's size, the run's split, a new
    ``cls`` (its pose normalizer fitted on the training poses) or the context's model, pose -> RGB items."""

    def prepare(ctx: Any) -> Any:
        from pose2rgbd.dataset import build_cache
        from pose2rgbd.training import TrainingSetup, split_for

        cache = build_cache(ctx.dataset, ctx.model_config.size, cache_root=ctx.cache_root, progress=False)
        split = split_for(cache, ctx.train_config)
        model = ctx.model or cls(ctx.model_config)
        if ctx.model is None:
            model.set_pose_normalizer(PoseNormalizer.fit(cache.T_world_cam[split.train], "6dof-quat"))
        x = model.normalize_poses(cache.T_world_cam)

        def items(idx: np.ndarray) -> list[dict[str, Any]]:
            rgb = [torch.from_numpy(np.array(cache.rgb[i])).permute(2, 0, 1).float() / 127.5 - 1 for i in idx]
            return [{"pose": torch.from_numpy(x[i]), "rgb": r} for i, r in zip(idx, rgb)]

        return TrainingSetup(model, items(split.train), items(split.val), split, cache.camera, description)

    return prepare
