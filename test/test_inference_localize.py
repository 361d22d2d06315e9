"""The localize engine (image -> pose) serves a toy image -> pose model: registered, saved, loaded, batches and
single images, poses that depend on the image, clear errors for images of another size or kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.geometry import T_from_tq
from pose2rgbd.inference import EngineConfig, LocalizeEngine, Localizer, RenderEngine, load_engine
from pose2rgbd.models import ImageToPose, ModelBase, ModelFamily, PoseNormalizer, save_checkpoint
from pose2rgbd.models.registry import register_family, unregister_family


@dataclass
class ToyLocConfig:
    size: int = 8


class ToyLocalizer(ImageToPose, ModelBase):
    """Mean colour -> normalized 6dof-quat pose (one linear layer) and a confidence."""

    kind = "toy-localize"

    def __init__(self, config: ToyLocConfig) -> None:
        super().__init__()
        self.config = config
        self.init_pose_normalization("6dof-quat")
        self.head = nn.Linear(3, 8)

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.config.size, self.config.size)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.head(images.mean(dim=(2, 3)))
        return {"pose": torch.tanh(y[:, :7]), "confidence": torch.sigmoid(y[:, 7])}

    def get_outputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self(batch["image"])

    def get_loss_dict(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"pose_mse": ((outputs["pose"] - batch["pose"]) ** 2).mean()}


FAMILY = ModelFamily(
    kind="toy-localize", config_cls=ToyLocConfig, build=ToyLocalizer, data="image_to_pose", engine="localize"
)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    register_family(FAMILY)
    torch.manual_seed(0)
    model = FAMILY.build(ToyLocConfig())
    T = T_from_tq(np.array([[-10.0, -20, 5], [10, 20, 50]]), np.array([[0, 0, 0, 1.0], [1.0, 0, 0, 0]]))
    model.set_pose_normalizer(PoseNormalizer.fit(T, "6dof-quat"))
    yield save_checkpoint(tmp_path / "loc.pt", model, dataset_fingerprint="fp", camera=None, world_frame="odom")
    unregister_family(FAMILY.kind)


def test_localize_engine_serves_an_image_to_pose_model(checkpoint: Path) -> None:
    eng = load_engine(EngineConfig(checkpoint=str(checkpoint), warmup=1, device="cpu", precision="fp32"))
    assert isinstance(eng, LocalizeEngine) and isinstance(eng, Localizer)
    assert eng.input_hw == (8, 8) and eng.world_frame == "odom"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    images[1] = 0  # a black image
    res = eng.localize(images)
    assert len(res) == 3 and res.T_world_cam.shape == (3, 4, 4) and res.T_world_cam.dtype == np.float64
    assert res.confidence.shape == (3,) and res.confidence.dtype == np.float32
    assert np.all((res.confidence >= 0) & (res.confidence <= 1)) and res.latency_s > 0
    R = res.T_world_cam[:, :3, :3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.repeat(np.eye(3)[None], 3, 0), atol=1e-9)
    assert not np.allclose(res.T_world_cam[0], res.T_world_cam[1])  # the pose depends on the image
    # inside the training extremes (the outputs are tanh-bounded normalized poses)
    assert np.all(res.T_world_cam[:, :3, 3] >= [-10, -20, 5]) and np.all(res.T_world_cam[:, :3, 3] <= [10, 20, 50])
    one = eng.localize(images[2])  # a single (H, W, 3) image is a batch of one
    assert len(one) == 1
    np.testing.assert_allclose(one.T_world_cam[0], res.T_world_cam[2], atol=1e-6)
    assert eng.stats == {"calls": 2, "frames": 4}


def test_localize_input_errors_and_engine_kinds(checkpoint: Path) -> None:
    eng = LocalizeEngine.from_config(EngineConfig(checkpoint=str(checkpoint), warmup=0, device="cpu"))
    with pytest.raises(ConfigError, match="the model takes 8x8"):
        eng.localize(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ConfigError, match="uint8"):
        eng.localize(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(CheckpointError) as err:
        RenderEngine.from_config(EngineConfig(checkpoint=str(checkpoint), warmup=0, device="cpu"))
    msg = str(err.value)
    assert "holds a 'toy-localize' model, an image -> pose model, served by the localize engine" in msg
    assert "the render node, `pose2rgbd render`) needs a pose -> image model" in msg
    assert "'pose2rgbd'" in msg and "--method pose2rgbd" in msg


def test_render_checkpoint_refused_by_the_localize_engine() -> None:
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    with pytest.raises(CheckpointError, match="does not localize images"):
        LocalizeEngine(EngineConfig(warmup=0, device="cpu"), make_ground_plane_checkpoint(8))
