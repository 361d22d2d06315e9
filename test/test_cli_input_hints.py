"""What a command says for an input of the wrong kind: a file as the dataset, a folder as the checkpoint, a
WIDTHxHEIGHT size where a model's square side is taken. Each names what was given and what to give instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pose2rgbd.cli.main import main
from pose2rgbd.errors import CheckpointError, DatasetError


def test_a_file_as_the_dataset_is_named_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.dataset import Dataset

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"PK\x03\x04")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "hybrid", "dataset": "/data/hero7"}))
    assert main(["train", "--dataset", str(run / "best.pt"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'best.pt'}: is a model checkpoint file" in err and "not a dataset" in err, err
    assert "(what --dataset takes) is a folder holding manifest.yaml" in err and "dataset directory" not in err, err
    assert "trained on the dataset /data/hero7" in err, err  # the dataset its run recorded
    other = tmp_path / "poses.csv"
    other.write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"poses\.csv: is a file, not a dataset: a dataset .* is a folder"):
        Dataset(other)
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.yaml").write_text("format: x\n")
    with pytest.raises(DatasetError, match=f"is the manifest.yaml of the dataset {ds}.*; give its folder, {ds}$"):
        Dataset(ds / "manifest.yaml")
    with pytest.raises(DatasetError, match="dataset directory not found"):  # a missing one, as before
        Dataset(tmp_path / "missing")


def test_a_dataset_folder_as_the_checkpoint_points_to_training_not_to_its_depth_network(tmp_path: Path) -> None:
    """A dataset's depth_network.pt is a model no engine serves: suggesting it led to a second refusal."""
    from pose2rgbd.models import load_checkpoint

    ds = tmp_path / "hero7"
    ds.mkdir()
    (ds / "manifest.yaml").write_text("format: x\n")
    (ds / "depth_network.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ds)
    msg = str(e.value)
    assert f"{ds}: is a dataset folder, not a checkpoint file" in msg, msg
    assert f"`pose2rgbd train --dataset {ds} --out RUN`; then pass --checkpoint RUN/best.pt" in msg, msg
    assert "depth_network.pt" not in msg, msg


def test_a_folder_as_the_checkpoint_suggests_only_what_an_engine_serves(tmp_path: Path) -> None:
    from pose2rgbd.models import load_checkpoint, save_checkpoint
    from pose2rgbd.models.registry import get_family

    run = tmp_path / "run"
    pose2rgbd = get_family("pose2rgbd")
    save_checkpoint(run / "best.pt", pose2rgbd.build(pose2rgbd.make_config("base", size=64)), dataset_fingerprint="f",
                    camera=None)  # fmt: skip
    depth = get_family("selfsup-depth")
    assert depth.engine is None  # the kind of a dataset's depth network
    save_checkpoint(run / "depth_network.pt", depth.build(depth.make_config()), dataset_fingerprint="f",
                    camera=None)  # fmt: skip
    (run / "notes.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"it holds best\.pt: pass one of them, e.g. .*best\.pt$"):
        load_checkpoint(run)
    (run / "best.pt").unlink()
    with pytest.raises(CheckpointError, match=r"its depth_network\.pt, notes\.pt hold no model an engine serves$"):
        load_checkpoint(run)


@pytest.mark.parametrize(("size", "why"), [("100x50", "'100x50' is WIDTHxHEIGHT"), ("1.5", "'1.5' is not an integer")])
def test_train_size_says_models_render_square_images(size: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "d", "--out", "o", "--size", size])
    err = " ".join(capsys.readouterr().err.split())
    assert f"argument --size: {why}: the models render square images" in err, err
    assert "WIDTHxHEIGHT is what `convert --size` takes" in err, err


def test_a_checkpoint_as_the_map_is_named_a_checkpoint(tmp_path: Path) -> None:
    from pose2rgbd.placemap.format import MapError, read_manifest

    ck = tmp_path / "best.pt"
    ck.write_bytes(b"x")
    with pytest.raises(
        MapError, match=r"best.pt: a model checkpoint, not a place map .*--checkpoint, a map with --map"
    ):
        read_manifest(ck)
