"""A dataset without depth: training with the defaults, one message naming every flag when the user asked for
depth, the three-way split saved with the run, and an evaluation that shows only what exists."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pose2rgbd.cli.main import main


@pytest.fixture(scope="module")
def rgb_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest
    from pose2rgbd.experiments.toy import make_toy_dataset

    root = tmp_path_factory.mktemp("rgbonly")
    src = Dataset(make_toy_dataset(root / "toy", n_survey=30, n_route=10, size=32))
    out = root / "ds"
    m = Manifest(name="rgb-only", camera=src.camera, depth_kind="none", sources=src.manifest.sources)
    with DatasetWriter(out, m) as w:
        for i in range(len(src)):
            f = src.frames
            w.add_frame(int(f.stamp_ns[i]), f.T_world_cam[i], src.read_rgb(i), None, source_id=int(f.source_id[i]))
    return out


def test_train_defaults_on_rgb_only_data_then_evaluate(rgb_only: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--dataset", str(rgb_only), "--out", str(out), "--size", "64", "--epochs", "1",
               "--batch-size", "8", "--split", "every-nth", "--every-nth", "4", "--no-tensorboard"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "has no depth" in cap.out and "--outputs rgb --preset base" in cap.out
    assert "--method hybrid" not in cap.out  # no depth: the hybrid cannot train on it, so no hint towards it
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["outputs"] == "rgb" and cfg["model"]["preset"] == "base"
    # the split is saved with the run: three disjoint sets
    sp = json.loads((out / "split.json").read_text())
    assert sp["kind"] == "every-nth" and sp["separate_test"] is True
    assert set(sp["val"]).isdisjoint(sp["test"]) and set(sp["train"]).isdisjoint(sp["val"] + sp["test"])
    # the summary prints best.pt's own validation next to its path
    from pose2rgbd.models import load_checkpoint

    best_val = load_checkpoint(out / "best.pt").extra["val"]
    line = next(ln for ln in cap.out.splitlines() if "checkpoint:" in ln)
    assert str(out / "best.pt") in line and "(validation: " in line
    k, v = sorted(best_val.items())[0]
    assert f"{k.removeprefix('val/')}={v:.4g}" in line
    assert "%|" not in cap.err  # no progress bar on a redirected stderr

    ev = tmp_path / "ev"
    rc = main(["evaluate", "--checkpoint", str(out / "best.pt"), "--dataset", str(rgb_only), "--out", str(ev),
               "--fly-frames", "3", "--grid_rows", "2"])  # fmt: skip
    assert rc == 0
    md = (ev / "metrics.md").read_text()
    assert "n/a" not in md and "depth" not in md.lower().split("baseline:")[0] and "unscaled" not in md
    assert "RGB MAE (px)" in md and "nearest-pose baseline" in md
    assert "10.0 m/rad" in md and "default without depth" in md
    data = json.loads((ev / "metrics.json").read_text())
    assert data["info"]["depth_unit"] == "" and "depth_mae" not in data["metrics"]["model"]
    assert set(data["metrics"]["model"]) >= {"rgb_mae_px", "rgb_psnr_db"}
    assert data["metrics"]["model"]["frames"] == len(sp["test"])  # the test frames, not the validation frames
    # grid: GT RGB | predicted RGB | baseline RGB, nothing else (2.5 in per column at 100 dpi)
    g = cv2.imread(str(ev / "grid.png"))
    assert g is not None and g.shape[1] == 750


def test_depth_settings_on_rgb_only_data_get_one_message(rgb_only: Path, tmp_path: Path, capsys) -> None:
    rc = main(["train", "--dataset", str(rgb_only), "--out", str(tmp_path / "r"), "--preset", "slice10",
               "--epochs", "1", "--no-progress", "--no-tensorboard"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--outputs rgb --preset base" in err and "slice10" in err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_grid_columns_follow_what_exists(tmp_path: Path) -> None:
    from pose2rgbd.evaluation.plots import qualitative_grid

    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    d = np.ones((2, 8, 8), np.float32)
    p = qualitative_grid(tmp_path / "a.png", rgb, rgb, d, d, d, depth_range=(0, 2), baseline_rgb=rgb,
                         baseline_depth=d)  # fmt: skip
    assert cv2.imread(str(p)).shape[1] == 7 * 250
    p = qualitative_grid(tmp_path / "b.png", rgb, rgb, None, None, None, depth_range=(0, 1))
    assert cv2.imread(str(p)).shape[1] == 2 * 250


def test_an_unscaled_place_is_not_measured_in_metres(rgb_only: Path, tmp_path: Path) -> None:
    """Poses without a metric scale (an SfM world without depth: pose_units "unscaled"): the checkpoint keeps the
    units, and evaluate's baseline distance and coverage are in the dataset's units, not metres."""
    from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest
    from pose2rgbd.models import load_checkpoint

    src = Dataset(rgb_only)
    ds = tmp_path / "unscaled"
    m = Manifest(name="sfm", camera=src.camera, depth_kind="none", sources=src.manifest.sources, pose_units="unscaled")
    with DatasetWriter(ds, m) as w:
        for i in range(len(src)):
            f = src.frames
            w.add_frame(int(f.stamp_ns[i]), f.T_world_cam[i], src.read_rgb(i), None, source_id=int(f.source_id[i]))
    out, ev = tmp_path / "run", tmp_path / "ev"
    assert main(["train", "--dataset", str(ds), "--out", str(out), "--size", "64", "--epochs", "1", "--batch-size",
                 "8", "--split", "every-nth", "--every-nth", "4", "--no-tensorboard"]) == 0  # fmt: skip
    assert load_checkpoint(out / "best.pt").extra["pose_units"] == "unscaled"
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--dataset", str(ds), "--out", str(ev),
                 "--fly-frames", "2", "--grid_rows", "1"]) == 0  # fmt: skip
    md = (ev / "metrics.md").read_text()
    assert "10.0 units/rad" in md and " m/rad" not in md
    assert json.loads((ev / "metrics.json").read_text())["info"]["pose_unit"] == "units"


def test_a_depth_model_on_a_dataset_without_depth_says_so(rgb_only: Path, tmp_path: Path) -> None:
    """A model that renders depth, evaluated on frames without depth: metrics.md says there is nothing to score the
    depth against (before: a "Depth metrics over the pixels valid ... valid share: n/a" sentence)."""
    from pose2rgbd.experiments.toy import make_toy_dataset

    src = make_toy_dataset(tmp_path / "toy", n_survey=30, n_route=10, size=32)
    out, ev = tmp_path / "run", tmp_path / "ev"
    assert main(["train", "--dataset", str(src), "--out", str(out), "--size", "64", "--epochs", "1", "--batch-size",
                 "8", "--split", "every-nth", "--every-nth", "4", "--no-tensorboard"]) == 0  # fmt: skip
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--dataset", str(rgb_only), "--out", str(ev),
                 "--fly-frames", "2", "--grid_rows", "1", "--allow-other-dataset"]) == 0  # fmt: skip
    md = (ev / "metrics.md").read_text()
    assert "the dataset has no depth to score the renders against" in md and "n/a" not in md, md
