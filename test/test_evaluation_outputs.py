"""Evaluation on a tiny set writes every output file; train_quick works; CLI train/evaluate run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pose2rgbd.errors import CheckpointError
from pose2rgbd.evaluation import evaluate
from pose2rgbd.experiments.toy import make_toy_dataset
from pose2rgbd.methods.pose2rgbd import preset_config
from pose2rgbd.training import TrainConfig, train_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "ds", n_survey=30, n_route=10, size=32)


def test_evaluate_writes_every_output(toy: Path, tmp_path: Path) -> None:
    tc = TrainConfig(epochs=1, batch_size=8, max_steps=2, split="route", progress=False, tensorboard=False)
    res = train_model(toy, tmp_path / "run", preset_config("slice10", size=64, outputs="rgbd"), tc)
    ev = evaluate(res.last, toy, out_dir=tmp_path / "eval", fly_frames=6, progress=False)
    for name in ("metrics.json", "metrics.md", "grid.png", "curves.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0, name
    assert ev.files["flythrough"].suffix in (".mp4", ".gif") and ev.files["flythrough"].stat().st_size > 0
    data = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    m, b = data["metrics"]["model"], data["metrics"]["baseline"]
    # the held-out route (10 frames): its first half validated (picked best.pt), its second half is the test
    assert m["frames"] == 5 and b["frames"] == 5
    for k in ("rgb_mae_px", "rgb_psnr_db", "rgb_ssim", "depth_mae", "depth_absrel"):
        assert k in m and k in b
    assert 0 < b["rgb_mae_px"] < 255
    assert "never trained on" in data["info"]["flythrough"]
    md = (tmp_path / "eval" / "metrics.md").read_text()
    assert "nearest-pose baseline" in md and "depth MAE (m)" in md
    # the reprojection baseline (nearest RGB-D frames warped into the test pose) on the same frames
    r = data["metrics"]["reprojection"]
    assert r["frames"] == 5 and 0 <= r["hole_fraction"] < 1 and 0 < r["rgb_mae_px"] < 255 and r["depth_mae"] > 0
    assert "reprojection baseline" in md and "Coverage" in md
    # the fused-geometry baseline (the training frames' depth fused into one surface, coloured from the frames)
    f = data["metrics"]["fused"]
    assert f["frames"] == 5 and 0 <= f["hole_fraction"] < 1 and 0 < f["rgb_mae_px"] < 255 and f["depth_mae"] > 0
    assert "| fused-geometry baseline |" in md and "Fused-geometry baseline: the " in md
    # coverage: per test frame, the distance to the nearest training camera, against the model's error
    assert (tmp_path / "eval" / "coverage.png").stat().st_size > 0
    rows = (tmp_path / "eval" / "per_frame.csv").read_text().splitlines()
    assert (
        rows[0] == "frame,rgb_mae,rgb_psnr_db,depth_mae,coverage_m,coverage_deg,depth_sigma_within" and len(rows) == 6
    )
    # the split's PSNR is the mean of the per-frame (capped) PSNR in per_frame.csv
    psnr_col = [float(r.split(",")[2]) for r in rows[1:]]
    assert m["rgb_psnr_db"] == pytest.approx(sum(psnr_col) / 5, rel=1e-4) and max(psnr_col) <= 60.0
    assert "valid share of the pixels" in md and "capped at 60 dB" in md
    assert "depth_pred_missing_fraction" in m
    assert m["coverage_median_m"] > 0  # a held-out route: never exactly a training camera
    # the checkpoint carries its training cameras: the engine reports 0 at one of them, more away from them
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference import EngineConfig, RenderEngine
    from pose2rgbd.models import load_checkpoint

    ck = load_checkpoint(res.last)
    tq = ck.extra["training_poses"].numpy()
    assert tq.shape == (len(res.split.train), 7) and ck.extra["coverage_rot_weight_m"] > 0
    T = Dataset(toy).frames.T_world_cam
    eng = RenderEngine(EngineConfig(warmup=0), ck)
    out = eng.render(T[[res.split.train[0], res.split.test[-1]]])
    assert out.coverage_m is not None and out.coverage_deg is not None
    assert out.coverage_m[0] == pytest.approx(0.0, abs=1e-5) and out.coverage_deg[0] == pytest.approx(0.0, abs=1e-3)
    assert out.coverage_m[1] > 0.1 and out.frame(1).coverage_m[0] == out.coverage_m[1]
    # an RGB-only model on a random split: depth columns absent, no confidence column needed
    res2 = train_model(
        toy,
        tmp_path / "rgb",
        preset_config("base", size=64, outputs="rgb"),
        TrainConfig(epochs=1, max_steps=1, progress=False, tensorboard=False),
    )
    ev2 = evaluate(res2.last, toy, out_dir=tmp_path / "eval2", fly_frames=3, progress=False)
    assert "depth_mae" not in ev2.metrics["model"] and ev2.split == "random"
    assert (tmp_path / "eval2" / "grid.png").exists()


def test_evaluate_refuses_checkpoint_of_other_dataset(toy: Path, tmp_path: Path) -> None:
    other = make_toy_dataset(tmp_path / "other", n_survey=12, n_route=4, size=32, seed=5)
    tc = TrainConfig(epochs=1, max_steps=1, progress=False, tensorboard=False)
    res = train_model(other, tmp_path / "run", preset_config("base", size=64, outputs="depth"), tc)
    with pytest.raises(CheckpointError, match="fingerprint"):
        evaluate(res.last, toy, progress=False)
    ev = evaluate(res.last, toy, allow_other_dataset=True, write_files=False, progress=False)
    assert ev.split == "all" and "baseline" not in ev.metrics


def test_cli_train_and_evaluate(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.cli.main import main

    out = tmp_path / "cli"
    rc = main(["train", "--dataset", str(toy), "--out", str(out), "--preset", "base", "--outputs", "rgbd",
               "--size", "64", "--epochs", "1", "--split", "route", "--no-progress", "--no-tensorboard"])  # fmt: skip
    assert rc == 0 and (out / "last.pt").exists()
    rc = main(["evaluate", "--checkpoint", str(out / "last.pt"), "--dataset", str(toy), "--out", str(out / "ev"),
               "--fly-frames", "4", "--no-progress"])  # fmt: skip
    assert rc == 0 and (out / "ev" / "metrics.md").exists()
    assert "nearest-pose baseline" in capsys.readouterr().out
    rc = main(["train", "--dataset", str(toy), "--out", str(out), "--preset", "slice10", "--size", "64", "--resume",
               "--no-progress"])  # fmt: skip
    assert rc == 2  # CheckpointError: resuming another model, reported by the CLI


def test_train_quick_then_evaluate(toy: Path, tmp_path: Path) -> None:
    from pose2rgbd.methods.pose2rgbd.recipe import train_quick

    ckpt = train_quick(toy, tmp_path / "q", size=64, minutes=0.01, preset="base", progress=False)
    assert ckpt.exists() and ckpt.parent == tmp_path / "q"
    ev = evaluate(ckpt, toy, out_dir=tmp_path / "q" / "eval", fly_frames=3, progress=False)
    assert ev.split == "route" and ev.files["grid"].exists()


def test_test_frames_that_repeat_a_training_frame_are_left_out_of_the_metrics(tmp_path: Path) -> None:
    """A repeated frame (a camera that re-sent an image) in the test set beside its twin in training: the
    nearest-pose baseline answers it exactly (PSNR at the cap), inflating the baseline. Such frames are found by
    their pixels and left out of every metric, with a note in metrics.md and the frames in metrics.json."""
    import shutil

    import numpy as np

    from pose2rgbd.dataset import Dataset
    from pose2rgbd.evaluation.baseline import NearestPoseBaseline
    from pose2rgbd.evaluation.metrics import PSNR_CAP_DB

    ds_path = make_toy_dataset(tmp_path / "ds", n_survey=30, n_route=10, size=32)
    tc = TrainConfig(epochs=1, batch_size=8, max_steps=2, split="random", progress=False, tensorboard=False)
    res = train_model(ds_path, tmp_path / "run", preset_config("base", size=64, outputs="rgbd"), tc)
    before = evaluate(res.last, ds_path, out_dir=tmp_path / "eval0", fly_frames=4, progress=False)
    test = before.per_frame["frame"]
    assert before.info["test_frames_repeating_training"] == [] and len(test) >= 3
    # two test frames become repeats of the training frame the baseline answers them with (nearest pose)
    ds = Dataset(ds_path)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sorted(split["test"]) == sorted(test.tolist())
    train = np.asarray(split["train"])
    near = NearestPoseBaseline(ds.frames.T_world_cam[train], train, rot_weight_m=before.info["baseline_rot_weight_m"])
    twins, _ = near.query(ds.frames.T_world_cam[test[:2]])
    for t, j in zip(test[:2], twins):
        shutil.copyfile(ds.path / ds.frames.rgb[int(j)], ds.path / ds.frames.rgb[int(t)])
    repeated = sorted(int(t) for t in test[:2])

    after = evaluate(res.last, ds_path, out_dir=tmp_path / "eval1", fly_frames=4, progress=False)
    assert after.info["test_frames_repeating_training"] == repeated
    assert sorted(after.per_frame["frame"]) == sorted(set(test.tolist()) - set(repeated))
    assert after.metrics["model"]["frames"] == after.metrics["baseline"]["frames"] == len(test) - len(repeated)
    assert after.metrics["baseline"]["rgb_psnr_db"] < PSNR_CAP_DB  # no exact answer left in the baseline
    md = (tmp_path / "eval1" / "metrics.md").read_text()
    assert f"{len(repeated)} of {len(test)} test frames have the pixels of a training frame" in md
    assert "left out of every metric" in md
    data = json.loads((tmp_path / "eval1" / "metrics.json").read_text())
    assert data["info"]["test_frames_repeating_training"] == repeated


def test_evaluate_as_served_renders_the_served_model_and_says_so(toy: Path, tmp_path: Path) -> None:
    """``precision`` other than ``trained``: the model as the render node serves it (BatchNorm folded,
    channels-last) at that precision; fp32 served scores what the trained model scores, and the files say which."""
    from pose2rgbd.errors import ConfigError

    tc = TrainConfig(epochs=1, batch_size=8, max_steps=2, split="route", progress=False, tensorboard=False)
    res = train_model(toy, tmp_path / "run", preset_config("base", size=64, outputs="rgbd"), tc)
    kw = {"fly_frames": 2, "progress": False, "reprojection_frames": 0, "fused_baseline": False}
    trained = evaluate(res.last, toy, out_dir=tmp_path / "trained", **kw)
    served = evaluate(res.last, toy, out_dir=tmp_path / "served", precision="fp32", **kw)
    assert trained.info["precision"] == "the trained weights in fp32" and served.info["precision"] == "as served (fp32)"
    assert "rendered as served (fp32)" in (tmp_path / "served" / "metrics.md").read_text()
    for k in ("rgb_mae_px", "depth_mae"):  # BatchNorm folding and the layout change only reorder the arithmetic
        assert served.metrics["model"][k] == pytest.approx(trained.metrics["model"][k], rel=1e-3)
    with pytest.raises(ConfigError, match="precision 'half' is not one of trained"):
        evaluate(res.last, toy, precision="half", **kw)


def test_metrics_table_gives_depth_in_millimetres_indoors() -> None:
    """Indoors depth errors are centimetres: the table keeps three decimals of a metre, not two."""
    from pose2rgbd.evaluation import format_metrics_markdown

    md = format_metrics_markdown(
        [("hybrid", {"rgb_mae_px": 21.0, "depth_mae": 0.0834, "depth_rmse": 0.1216, "depth_absrel": 0.048}),
         ("reprojection", {"rgb_mae_px": 31.0, "depth_mae": 0.1081, "depth_rmse": 0.1702, "depth_absrel": 0.063})],
        "m",
    )  # fmt: skip
    assert "| 0.083 | 0.122 | 0.048 |" in md and "| 0.108 | 0.170 | 0.063 |" in md


def test_metrics_md_says_where_a_training_free_baseline_beats_the_model() -> None:
    """The model behind a baseline in a headline metric (lower MAE, higher PSNR) is said, with both numbers and every
    baseline ahead; a baseline behind, a metric without a value and the dataset's own depth (not a renderer) are not
    named; nothing is said where the model leads everywhere."""
    from pose2rgbd.evaluation.evaluate import baselines_ahead

    rows = [
        ("nearest-pose baseline", {"rgb_mae_px": 13.6, "depth_mae": 0.696, "rgb_psnr_db": 20.0}),
        ("reprojection baseline", {"rgb_mae_px": 13.59, "depth_mae": 0.738, "rgb_psnr_db": 24.5}),
        ("fused-geometry baseline", {"rgb_mae_px": float("nan"), "depth_mae": 0.9}),
        ("the dataset's own depth", {"depth_mae": 0.1}),
    ]
    model = {"rgb_mae_px": 10.4, "depth_mae": 0.885, "rgb_psnr_db": 23.7}
    said = baselines_ahead(rows, model, "m")
    assert said.startswith("the model is behind a training-free baseline here: ")
    want = "depth MAE 0.885 m against the nearest-pose baseline's 0.696 m and the reprojection baseline's 0.738 m"
    assert want in said, said
    assert "PSNR 23.7 dB against the reprojection baseline's 24.5 dB" in said
    assert "RGB MAE" not in said and "fused" not in said and "dataset" not in said
    assert baselines_ahead(rows, {"rgb_mae_px": 10.4, "depth_mae": 0.5, "rgb_psnr_db": 25.0}, "m") == ""


@pytest.mark.parametrize("names", [("loss", "rgb_mae_px", "depth_mae"), ("loss", "rgb_mae_px"), ("loss",)])
def test_training_curves_give_each_validation_error_its_own_panel(tmp_path, names) -> None:
    """The loss, and each validation error the log has in its own panel (on twin axes the RGB and depth errors'
    lines lay on top of each other)."""
    import matplotlib.pyplot as plt

    from pose2rgbd.evaluation.plots import training_curves

    rows = ["wall_s,step,epoch,phase,name,value"]
    for step in (10, 20, 30):
        rows.append(f"1.0,{step},0,train,loss,{1.0 / step}")
        rows += [f"1.0,{step},0,val,{n},{5.0 / step}" for n in names]
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    shown: list[list[str]] = []
    panels: list[set[tuple[float, ...]]] = []
    real_save = plt.Figure.savefig

    def record(fig, *a, **kw):  # type: ignore[no-untyped-def]
        shown.append([ax.get_ylabel() for ax in fig.axes if ax.axison])
        panels.append({tuple(ax.get_position().bounds) for ax in fig.axes if ax.axison})
        return real_save(fig, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", record)
        assert training_curves(log, tmp_path / "curves.png").exists()
    errors = [n for n in names if n != "loss"]
    assert len(shown) == 1 and len(shown[0]) == 1 + len(errors)
    assert len(panels[0]) == len(shown[0])  # no two on one panel (twin axes share their place)
    assert shown[0][0].startswith("loss")
    assert [label.split(" MAE")[0] for label in shown[0][1:]] == [
        {"rgb_mae_px": "val RGB", "depth_mae": "val depth"}[n] for n in errors
    ]


def test_evaluate_refuses_to_replace_the_users_files_of_its_names(
    toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of the user's holding a metrics.md and a grid.png, no evaluation: refused before any work, the files
    kept; a folder of an earlier evaluation is evaluated into again (its files replaced, the rest kept)."""
    from pose2rgbd.errors import OutputError

    mine = tmp_path / "report"
    mine.mkdir()
    (mine / "metrics.md").write_text("my own metrics table")
    (mine / "grid.png").write_text("my own figure")
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds metrics.md, grid.png, which evaluate writes, and no earlier"):
        evaluate(tmp_path / "no-such.pt", toy, out_dir=mine, progress=False)  # refused before the checkpoint is read
    assert (mine / "metrics.md").read_text() == "my own metrics table"
    # with --fit-depth-uncertainty the refusal comes before the fit writes the checkpoint
    from pose2rgbd.cli.main import main

    cmd = ["evaluate", "--checkpoint", str(tmp_path / "no-such.pt"), "--dataset", str(toy), "--out", str(mine)]
    capsys.readouterr()
    assert main([*cmd, "--fit-depth-uncertainty", "--no-progress"]) == 2
    assert "which evaluate writes" in capsys.readouterr().err  # not the missing checkpoint: the fit did not run
    (mine / "metrics.json").write_text('{"my": "own"}')  # a metrics.json of the user's is no evaluation either
    with pytest.raises(OutputError, match=r"holds metrics.json, metrics.md, grid.png"):
        evaluate(tmp_path / "no-such.pt", toy, out_dir=mine, progress=False)
    # an earlier evaluation's folder: no refusal (the missing checkpoint is what stops this one)
    (mine / "metrics.json").write_text('{"metrics": {}, "info": {}}')
    with pytest.raises(CheckpointError):
        evaluate(tmp_path / "no-such.pt", toy, out_dir=mine, progress=False)
    # a folder of other files only: evaluate adds its own beside them
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError):
        evaluate(tmp_path / "no-such.pt", toy, out_dir=other, progress=False)
