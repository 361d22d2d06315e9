"""Training on cameras that look straight down: the paper's pose encodings jump there at every heading, and training
says so and names the continuous encoding, which trains without the warning (docs/models.md, "Pose encodings")."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.cli.main import main


@pytest.fixture(scope="module")
def nadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy dataset's images, with cameras looking straight down at headings all around, wobbling by 0.3 deg."""
    from scipy.spatial.transform import Rotation

    from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest
    from pose2rgbd.experiments.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("nadir")
    src = Dataset(make_toy_dataset(root / "toy", n_survey=40, n_route=10, size=32))
    rng = np.random.default_rng(0)
    out = root / "ds"
    m = Manifest(name="nadir", camera=src.camera, depth_kind="metric", sources=src.manifest.sources)
    with DatasetWriter(out, m) as w:
        f = src.frames
        for i in range(len(src)):
            h = rng.uniform(-np.pi, np.pi)
            x, z = np.array([np.cos(h), np.sin(h), 0.0]), np.array([0.0, 0.0, -1.0])
            T = np.array(f.T_world_cam[i])
            T[:3, :3] = np.stack([x, np.cross(z, x), z], 1) @ Rotation.from_rotvec(rng.normal(0, 0.005, 3)).as_matrix()
            w.add_frame(int(f.stamp_ns[i]), T, src.read_rgb(i), src.read_depth(i), source_id=int(f.source_id[i]))
    return out


@pytest.mark.parametrize(("encoding", "warned"), [("6dof-quat", True), ("6dof-rot6d", False)])
def test_training_warns_where_the_cameras_sit_on_the_encodings_jump(
    nadir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, encoding: str, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING):
        rc = main(["train", "--method", "pose2rgbd", "--dataset", str(nadir), "--out", str(tmp_path / "run"),
                   "--size", "64", "--encoding", encoding, "--set", "train.max_steps=1", "--no-progress",
                   "--no-tensorboard"])  # fmt: skip
    assert rc == 0
    said = [r.getMessage() for r in caplog.records if "far apart in this encoding" in r.getMessage()]
    assert bool(said) == warned, said
    if warned:
        assert f"pose input {encoding}" in said[0] and "--encoding 6dof-rot6d" in said[0]
