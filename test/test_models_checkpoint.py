"""Checkpoint round trip and the CheckpointError cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pose2rgbd.errors import CheckpointError
from pose2rgbd.geometry import PinholeCamera, PoseNormalizer
from pose2rgbd.models import DepthNormalizer, build_model, load_checkpoint, preset_config, save_checkpoint


def _save(path: Path, preset: str = "slice10", size: int = 64, fingerprint: str = "abc123") -> torch.nn.Module:
    torch.manual_seed(1)
    model = build_model(preset_config(preset, size=size, outputs="rgbd"))
    # make BN running stats non-trivial so the round trip covers buffers too
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 7) * 2 - 1)
    pn = PoseNormalizer("6dof-quat", np.arange(7) - 10.0, np.arange(7) + 10.0)
    save_checkpoint(
        path,
        model=model,
        pose_normalizer=pn,
        depth_normalizer=DepthNormalizer(2.0, 300.0),
        dataset_fingerprint=fingerprint,
        camera=PinholeCamera.from_fov(320, 240, 70.0),
        depth_kind="metric",
        world_frame="map",
        train_config={"lr": 0.01, "split": "route"},
        step=7,
        epoch=2,
    )
    return model.eval()


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    model = _save(p)
    ck = load_checkpoint(p, expect_fingerprint="abc123", expect_size=64, expect_preset="slice10")
    assert not ck.model.training
    assert ck.model_config == model.config
    assert ck.depth_normalizer == DepthNormalizer(2.0, 300.0)
    assert ck.model.depth_normalizer == DepthNormalizer(2.0, 300.0)
    assert ck.pose_normalizer.kind == "6dof-quat"
    np.testing.assert_allclose(ck.pose_normalizer.minimum, np.arange(7) - 10.0)
    assert (ck.camera.width, ck.camera.height) == (64, 64)  # scaled to the output size
    assert ck.dataset_fingerprint == "abc123" and ck.depth_kind == "metric" and ck.world_frame == "map"
    assert ck.train_config["split"] == "route" and (ck.step, ck.epoch) == (7, 2)
    x = torch.rand(3, 7) * 2 - 1
    with torch.no_grad():
        a, b = model(x), ck.model(x)
    for k in ("rgb", "depth", "confidence"):
        torch.testing.assert_close(a[k], b[k])
    # plain types only: loadable with weights_only=True
    raw = torch.load(p, weights_only=True)
    assert isinstance(raw["model_config"], dict)


def test_mismatches_name_what_differs(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    _save(p)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(p, expect_fingerprint="other")
    with pytest.raises(CheckpointError, match="output size is 64, expected 128"):
        load_checkpoint(p, expect_size=128)
    with pytest.raises(CheckpointError, match="preset is 'slice10', expected 'base'"):
        load_checkpoint(p, expect_preset="base")


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)
    p = tmp_path / "m.pt"
    _save(p)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a pose2rgbd checkpoint"):
        load_checkpoint(foreign)


def test_weights_of_another_model_rejected(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    _save(p)
    raw = torch.load(p, weights_only=True)
    raw["model_config"]["preset"] = "slice32"  # weights are slice10
    torch.save(raw, tmp_path / "lie.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(tmp_path / "lie.pt")
