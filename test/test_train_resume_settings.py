"""`train --out RUN --resume` takes the run's own settings from RUN/config.yaml (dataset, kind, model settings, data
split) where the command does not give them; what the command gives still wins, and a real conflict is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pose2rgbd.cli.main import build_parser, main
from pose2rgbd.config_cli import config_from_args

BUDGET = ["--epochs", "1", "--batch-size", "4", "--train.max_steps", "1", "--device", "cpu", "--amp", "off",
          "--no-progress", "--no-tensorboard"]  # fmt: skip


def _run_folder(tmp_path: Path) -> Path:
    """A run folder whose config.yaml is the one a hybrid run of size 128 on a route split wrote."""
    out = tmp_path / "run"
    out.mkdir()
    config = {
        "method": "hybrid",
        "model": {"preset": "hybrid-fast", "size": 128, "neighbours": 3},
        "train": {"lr": 0.001, "split": "route", "seed": 4, "max_minutes": 2.0},
        "dataset": str(tmp_path / "data"),
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return out


def test_resume_takes_the_runs_settings_the_command_does_not_give(tmp_path: Path) -> None:
    out = _run_folder(tmp_path)
    cfg = config_from_args(build_parser().parse_args(["train", "--out", str(out), "--resume"]))
    model, train = cfg["model"], cfg["train"]
    assert (model.preset, model.size, model.neighbours) == ("hybrid-fast", 128, 3)
    assert (train.split, train.seed) == ("route", 4)
    assert train.max_minutes == 2.0  # the run's length: a plain --resume had trained on to 100 epochs
    args = build_parser().parse_args(["train", "--out", str(out), "--resume", "--max-minutes", "5"])
    assert config_from_args(args)["train"].max_minutes == 5.0  # the command may change it
    # a flag given wins (the resume's check then refuses a real difference)
    args = build_parser().parse_args(["train", "--out", str(out), "--resume", "--size", "64", "--split", "random"])
    cfg = config_from_args(args)
    assert (cfg["model"].size, cfg["model"].neighbours, cfg["train"].split) == (64, 3, "random")
    # a preset given wins for the settings it sets
    args = build_parser().parse_args(["train", "--out", str(out), "--resume", "--preset", "hybrid"])
    assert config_from_args(args)["model"].preset == "hybrid"


def test_resume_without_dataset_trains_on_the_runs_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=8, n_route=2, size=16)
    out, cache = tmp_path / "run", ["--cache-root", str(tmp_path / "cache")]
    first = ["train", "--method", "pose2rgbd", "--dataset", str(ds), "--out", str(out), "--size", "64", "--seed", "3"]
    assert main([*first, *BUDGET, *cache]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", *BUDGET, "--train.max_steps", "2", *cache]) == 0
    printed = capsys.readouterr().out
    note = next(line for line in printed.splitlines() if "run's own settings" in line)
    assert str(out / "config.yaml") in note and f"--dataset {ds.resolve()}" in note, note
    assert "model.size=64" in note and "train.seed=3" in note and "--method" not in note, note  # pose2rgbd: default
    assert "2 steps" in printed
    # a setting given that differs from the run's is still refused, naming it
    assert main(["train", "--out", str(out), "--resume", "--size", "128", *BUDGET, *cache]) == 2
    assert "the model differs (size: checkpoint 64 vs requested 128)" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "no folder", "damaged", "no dataset"])
def test_resume_without_a_readable_config_names_what_to_pass(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    if case != "no folder":
        out.mkdir()
    if case == "damaged":
        (out / "config.yaml").write_text("method: [hybrid\n")
    if case == "no dataset":
        (out / "config.yaml").write_text("method: hybrid\nmodel: {}\n")
    assert main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'config.yaml'}: " in err and "Pass --dataset DATASET" in err, err
    why = {"missing": "not found", "no folder": "does not exist", "damaged": "not valid YAML", "no dataset": "names no"}
    assert why[case] in err, err
    # without --resume, --dataset is required as before
    with pytest.raises(SystemExit):
        main(["train", "--out", str(out)])
    assert "the following arguments are required: --dataset" in capsys.readouterr().err


def test_a_resume_keeps_the_runs_length_unless_it_gives_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A plain --resume keeps the run's own length (it had dropped a --max-minutes budget and trained on to 100
    epochs); a resume of a run that had ended says nothing is trained, and how to train on; a resume that gives a
    length sets it anew (the run's max_steps, kept beside a given --epochs, had ended it before its first step)."""
    import logging

    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=8, n_route=2, size=16)
    out = tmp_path / "run"
    common = ["--out", str(out), "--batch-size", "4", "--device", "cpu", "--amp", "off", "--no-progress",
              "--no-tensorboard", "--cache-root", str(tmp_path / "cache")]  # fmt: skip
    first = ["train", "--method", "pose2rgbd", "--dataset", str(ds), "--size", "64", "--train.max_steps", "2"]
    assert main([*first, *common]) == 0
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--resume", *common]) == 0
    printed = capsys.readouterr().out
    assert "train.max_steps=2" in printed and "2 steps" in printed, printed
    assert "the resumed run had ended already (max_steps 2 reached): nothing is trained" in caplog.text
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 2
    assert main(["train", "--resume", "--epochs", "2", *common]) == 0
    printed = capsys.readouterr().out
    assert "train.max_steps" not in printed and "(done)" in printed and " 2 epochs" in printed, printed
