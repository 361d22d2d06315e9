"""Checkpoints: round trip, version-1 files, kinds through the registry, expectations, the CheckpointError cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pose2rgbd import config as cfgmod
from pose2rgbd.errors import CheckpointError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.methods.pose2rgbd import Pose2RGBDNet, build_model, preset_config
from pose2rgbd.models import (
    CHECKPOINT_VERSION,
    DepthNormalizer,
    Expectations,
    PoseNormalizer,
    load_checkpoint,
    save_checkpoint,
)

PN = PoseNormalizer("6dof-quat", np.arange(7) - 10.0, np.arange(7) + 10.0)


def _model(preset: str = "slice10", size: int = 64) -> Pose2RGBDNet:
    torch.manual_seed(1)
    model = build_model(preset_config(preset, size=size, outputs="rgbd"), DepthNormalizer(2.0, 300.0), PN)
    # make BN running stats non-trivial so the round trip covers buffers too
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 7) * 2 - 1)
    return model.eval()


def _save(path: Path, preset: str = "slice10", size: int = 64, fingerprint: str = "abc123") -> Pose2RGBDNet:
    model = _model(preset, size)
    save_checkpoint(
        path,
        model,
        dataset_fingerprint=fingerprint,
        camera=PinholeCamera.from_fov(320, 240, 70.0),
        depth_kind="metric",
        world_frame="map",
        train_config={"lr": 0.01, "split": "route"},
        step=7,
        epoch=2,
    )
    return model


def _save_v1(path: Path, model: Pose2RGBDNet, pn: PoseNormalizer = PN) -> None:
    """A checkpoint written the way version 1 wrote it: normalizers as separate entries, no pose buffers."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in ("pose_min", "pose_max")}
    torch.save(
        {
            "format": "pose2rgbd-checkpoint",
            "version": 1,
            "model_kind": "pose2rgbd",
            "model_config": cfgmod.to_dict(model.config),
            "state_dict": state,
            "parameters": 123,
            "pose_normalizer": pn.to_dict(),
            "depth_normalizer": model.depth_normalizer.to_dict(),
            "dataset_fingerprint": "v1fp",
            "camera": PinholeCamera.from_fov(64, 64, 70.0).to_dict(),
            "depth_kind": "metric",
            "world_frame": "odom",
            "train_config": {"split": "random", "seed": 3},
            "step": 11,
            "epoch": 1,
            "optimizers": {},
            "extra": {"split": "random 80/20"},
            "created_utc": "2025-01-01T00:00:00+00:00",
            "pose2rgbd_version": "0.1.0",
        },
        path,
    )


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    model = _save(p)
    ck = load_checkpoint(p, expect=Expectations(kind="pose2rgbd", fingerprint="abc123", size=64, preset="slice10"))
    assert isinstance(ck.model, Pose2RGBDNet) and not ck.model.training
    assert ck.kind == "pose2rgbd" and ck.family.engine == "render" and ck.source_version == CHECKPOINT_VERSION
    assert ck.model_config == model.config
    assert ck.model.depth_normalizer == DepthNormalizer(2.0, 300.0)  # the model's own state
    assert ck.model.pose_normalizer.kind == "6dof-quat"
    np.testing.assert_allclose(ck.model.pose_normalizer.minimum, np.arange(7) - 10.0)
    assert (ck.camera.width, ck.camera.height) == (64, 64)  # scaled to the output size
    assert ck.dataset_fingerprint == "abc123" and ck.depth_kind == "metric" and ck.world_frame == "map"
    assert ck.train_config["split"] == "route" and (ck.step, ck.epoch) == (7, 2)
    x = torch.rand(3, 7) * 2 - 1
    with torch.no_grad():
        a, b = model(x), ck.model(x)
    for k in ("rgb", "depth", "confidence"):
        torch.testing.assert_close(a[k], b[k])
    # plain types only: loadable with weights_only=True; the transforms travel as buffers in the weights
    raw = torch.load(p, weights_only=True)
    assert isinstance(raw["model_config"], dict) and raw["version"] == 2 and raw["model_kind"] == "pose2rgbd"
    assert {"pose_min", "pose_max", "depth_range"} <= set(raw["state_dict"])
    assert "pose_normalizer" not in raw and "depth_normalizer" not in raw
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_version1_checkpoint_is_converted_on_load(tmp_path: Path) -> None:
    model = _model("slice10")
    pn = PoseNormalizer("6dof-quat", np.arange(7) - 3.0, np.arange(7) + 5.0)
    p = tmp_path / "v1.pt"
    _save_v1(p, model, pn)
    ck = load_checkpoint(p, expect_fingerprint="v1fp", expect_preset="slice10", expect_size=64)
    assert ck.source_version == 1 and ck.kind == "pose2rgbd"
    np.testing.assert_allclose(ck.model.pose_normalizer.minimum, pn.minimum)
    np.testing.assert_allclose(ck.model.pose_normalizer.maximum, pn.maximum)
    assert ck.model.depth_normalizer == DepthNormalizer(2.0, 300.0)
    assert ck.world_frame == "odom" and (ck.step, ck.epoch) == (11, 1) and ck.train_config["seed"] == 3
    x = torch.rand(2, 7) * 2 - 1
    with torch.no_grad():
        a, b = model(x), ck.model(x)
    for k in ("rgb", "depth", "confidence"):
        torch.testing.assert_close(a[k], b[k])
    # the model's transforms come from the v1 normalizer entries, not from defaults
    T = np.eye(4)[None]
    np.testing.assert_allclose(ck.model.normalize_poses(T), pn.normalize(T))
    # saving it again writes version 2
    save_checkpoint(tmp_path / "v2.pt", ck.model, dataset_fingerprint="v1fp", camera=ck.camera)
    assert load_checkpoint(tmp_path / "v2.pt").source_version == 2


def test_version1_with_a_pose_normalizer_of_another_encoding_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "v1.pt"
    _save_v1(p, _model(), PoseNormalizer("6dof-euler", np.zeros(6), np.ones(6)))
    with pytest.raises(CheckpointError, match=r"version-1.*'6dof-euler' but the model expects '6dof-quat'"):
        load_checkpoint(p)


def test_mismatches_name_what_differs(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    _save(p)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(p, expect_fingerprint="other")
    with pytest.raises(CheckpointError, match="output size is 64, expected 128"):
        load_checkpoint(p, expect_size=128)
    with pytest.raises(CheckpointError, match="preset is 'slice10', expected 'base'"):
        load_checkpoint(p, expect=Expectations(preset="base"))
    with pytest.raises(CheckpointError, match="model kind is 'pose2rgbd', expected 'posegan'"):
        load_checkpoint(p, expect_kind="posegan")
    # every unmet expectation is named in one message
    with pytest.raises(CheckpointError, match=r"size is 64, expected 32.*preset is 'slice10', expected 'base'"):
        load_checkpoint(p, expect=Expectations(size=32, preset="base"))


def test_expectation_a_kind_cannot_meet(tmp_path: Path) -> None:
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    gp = make_ground_plane_checkpoint(16)
    p = save_checkpoint(tmp_path / "gp.pt", gp.model, dataset_fingerprint="x", camera=gp.camera)
    ck = load_checkpoint(p, expect_size=16)
    assert ck.kind == "ground-plane" and ck.model.__class__.__name__ == "GroundPlaneModel"
    with pytest.raises(CheckpointError, match="model kind 'ground-plane' has no preset"):
        load_checkpoint(p, expect_preset="base")


def test_unknown_kind_and_version(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    _save(p)
    raw = torch.load(p, weights_only=True)
    raw["model_kind"] = "nerf"
    torch.save(raw, tmp_path / "nerf.pt")
    with pytest.raises(CheckpointError, match=r"unknown model kind 'nerf'; known kinds: .*pose2rgbd"):
        load_checkpoint(tmp_path / "nerf.pt")
    raw["model_kind"], raw["version"] = "pose2rgbd", 99
    torch.save(raw, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="version 99; this pose2rgbd reads versions"):
        load_checkpoint(tmp_path / "v99.pt")


def test_save_refuses_a_model_without_a_kind(tmp_path: Path) -> None:
    from pose2rgbd.models import ModelBase

    class Anonymous(ModelBase):
        pass

    with pytest.raises(CheckpointError, match="declares no model kind"):
        save_checkpoint(tmp_path / "x.pt", Anonymous(), dataset_fingerprint="x", camera=None)
    assert not (tmp_path / "x.pt").exists()


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
