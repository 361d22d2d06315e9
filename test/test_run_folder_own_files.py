"""A training run's folder is judged by what its files hold, not by their names (docs/reliability.md): a config.yaml,
log.csv or *.pt of the user's is never moved aside by `train --overwrite` nor written beside; a run stopped before
its first checkpoint leaves nothing of its own behind; a model larger than the dataset's images is said to upsample
them."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from output_helpers import fake_run_files, make_toy, run_cli, tree_hash

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy(tmp_path_factory)


TRAIN = ("--epochs", "1", "--size", "64", "--no-progress")


# ---------------------------------------------------------------- 1: files named as a run's that are the user's
@pytest.mark.parametrize("flag", [None, "--overwrite", "--resume"])
def test_a_users_config_yaml_and_log_csv_are_not_an_earlier_run(
    flag: str | None, toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of the user's notes, a config.yaml and a log.csv of their own: refused with or without --overwrite
    and for --resume, naming the files and saying they are not a run's; nothing moved or deleted (--overwrite used to
    move them into previous-run-* and delete them when the new run finished)."""
    mine = tmp_path / "myfiles"
    mine.mkdir()
    (mine / "notes.txt").write_text("important notes\n")
    (mine / "config.yaml").write_text("survey: my own\n")
    (mine / "log.csv").write_text("a,b\n")
    before = tree_hash(mine)
    rc, out = run_cli(capsys, "train", "--dataset", toy_dataset, "--out", mine, *TRAIN, *([flag] if flag else []))
    assert rc == 2, out
    assert f"{mine} holds config.yaml and log.csv, which are not a pose2rgbd training run's" in out, out
    assert "config.yaml: it has no 'model', 'train' or 'dataset_fingerprint' entry" in out, out
    assert "log.csv: its first line is 'a,b'" in out and "nothing was moved or deleted" in out, out
    assert tree_hash(mine) == before and not list(mine.glob("previous-run-*"))


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("config.yaml", b"train:\n  epochs: 1\nmodel:\n  size: 64\n", "no 'dataset_fingerprint' entry"),
        ("last.pt", b"fake", "last.pt: not a torch file"),
        ("best.pt", None, "best.pt: a torch file that is not a pose2rgbd checkpoint"),
        ("split.json", b'{"mine": 1}', "split.json: not a run's data split"),
        ("tb", None, "tb: it holds my_plot.png, which TensorBoard does not write"),
        ("keyframes", None, "keyframes: no map.json"),
    ],
)
def test_one_file_of_the_users_among_a_runs_refuses_the_folder(
    name: str, content: bytes | None, why: str, tmp_path: Path
) -> None:
    """Beside an earlier run's own files, one named as a run's that is not one (the user's --config file, a torch
    file of another program, a tb/ with their plot in it, a keyframes/ of photos) refuses the folder, whatever
    --resume / --overwrite say; the run's own files are recognised as the run's."""
    from pose2rgbd.output_guard import OutputError
    from pose2rgbd.training.run_folder import RUN_FILES, check_out_dir, not_the_runs

    run = fake_run_files(tmp_path / "run", RUN_FILES)
    assert not_the_runs(run) == {}
    p = run / name
    if p.is_dir():
        for f in list(p.iterdir()):
            f.unlink()
    else:
        p.unlink()
    if name == "best.pt":
        torch.save({"weights": torch.zeros(2)}, p)
    elif name == "tb":
        (p / "my_plot.png").write_bytes(b"a plot of mine")
    elif name == "keyframes":
        (p / "photo.jpg").write_bytes(b"a photo of mine")
    else:
        assert content is not None
        p.write_bytes(content)
    before = tree_hash(run)
    for resume, overwrite in ((False, False), (False, True), (True, False)):
        with pytest.raises(OutputError, match="not a pose2rgbd training run's") as e:
            check_out_dir(run, tmp_path / "ds", [], resume=resume, overwrite=overwrite)
        assert why in str(e.value), str(e.value)
        assert tree_hash(run) == before


def test_an_earlier_runs_own_files_are_still_replaced_with_overwrite(tmp_path: Path) -> None:
    """The files a run writes, as it writes them: an earlier run that --overwrite replaces (all of them named)."""
    from pose2rgbd.output_guard import OutputExistsError
    from pose2rgbd.training.run_folder import RUN_FILES, check_out_dir

    run = fake_run_files(tmp_path / "run", RUN_FILES)
    (run / "log.csv").write_bytes(b"")  # a run stopped before its header was flushed
    with pytest.raises(OutputExistsError, match=r"holds an earlier training run \(config.yaml, split.json, last.pt"):
        check_out_dir(run, tmp_path / "ds", [], resume=False, overwrite=False)
    assert check_out_dir(run, tmp_path / "ds", [], resume=False, overwrite=True) == list(RUN_FILES)
    assert check_out_dir(run, tmp_path / "ds", [], resume=True, overwrite=False) == []


# ---------------------------------------------------------------- 2: a folder of the user's files with a *.pt in it
def test_a_finders_dot_file_in_tb_is_no_one_s_and_a_dangling_link_is_named_as_one(tmp_path: Path) -> None:
    """A .DS_Store in tb/ (a file browser's) does not make a run the user's; a run file that is a link to nothing is
    said to be that, not "a folder, where a run has a file"."""
    from pose2rgbd.training.run_folder import RUN_FILES, not_the_runs

    run = fake_run_files(tmp_path / "run", RUN_FILES)
    (run / "tb" / ".DS_Store").write_bytes(b"\0")
    assert not_the_runs(run) == {}
    (run / "best.pt").unlink()
    (run / "best.pt").symlink_to(tmp_path / "gone.pt")
    assert not_the_runs(run) == {"best.pt": f"a link to nothing ({tmp_path / 'gone.pt'})"}


@pytest.mark.parametrize("flag", [None, "--overwrite"])
def test_a_folder_of_the_users_files_with_a_pt_is_not_a_run(
    flag: str | None, toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """notes.txt and a detector.pt of the user's: a folder of other files, never written into (training wrote its
    config.yaml, best.pt, last.pt beside them, as any *.pt made a folder a run)."""
    mine = tmp_path / "myfiles5"
    mine.mkdir()
    (mine / "detector.pt").write_bytes(b"fake\n")
    (mine / "notes.txt").write_text("notes\n")
    before = tree_hash(mine)
    rc, out = run_cli(capsys, "train", "--dataset", toy_dataset, "--out", mine, *TRAIN, *([flag] if flag else []))
    assert rc == 2, out
    assert "not a pose2rgbd training run" in out or "that is not a training run" in out, out
    assert tree_hash(mine) == before


# ---------------------------------------------------------------- 3: a run stopped before its first checkpoint
class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop", [KeyboardInterrupt, _Stop])
def test_a_run_stopped_at_start_up_removes_what_it_wrote(
    stop: type[BaseException], toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or an error) while the run starts up -- the hybrid writes its keyframe map into OUT first --: the
    files the run had written go, and OUT too where the run made it, so that "nothing half-written was kept" is true
    and the same command, --resume or --overwrite is not refused a folder of leftovers (docs/reliability.md)."""
    import importlib

    train_mod = importlib.import_module("pose2rgbd.training.train")
    from pose2rgbd.models.registry import get_family

    family = get_family("pose2rgbd")
    real = family.load_recipe()

    def recipe(ctx: Any) -> Any:
        setup = real(ctx)
        (ctx.out_dir / "keyframes").mkdir()  # what the hybrid's recipe writes before training starts
        (ctx.out_dir / "keyframes" / "map.json").write_text(json.dumps({"format": "pose2rgbd-map"}))
        return setup

    def fit(*a: object, **k: object) -> None:
        raise stop()

    monkeypatch.setattr(type(family), "load_recipe", lambda self: recipe)
    monkeypatch.setattr(train_mod.Trainer, "fit", fit)
    out = tmp_path / "R"
    with pytest.raises(stop):
        train_mod.train("pose2rgbd", toy_dataset, out)
    assert not out.exists()  # keyframes/, config.yaml, split.json removed, then the folder the run made
    # an empty folder the user made for the run: the run's files go, the folder stays
    out.mkdir()
    with pytest.raises(stop):
        train_mod.train("pose2rgbd", toy_dataset, out)
    assert out.is_dir() and not any(out.iterdir())
    # --overwrite of an earlier run: its files back, the stopped run's keyframes/ (the earlier had none) gone
    run = fake_run_files(tmp_path / "run")
    before = tree_hash(run)
    with pytest.raises(stop):
        train_mod.train("pose2rgbd", toy_dataset, run, overwrite=True)
    assert tree_hash(run) == before


def test_a_killed_runs_partial_output_is_recognised_as_the_runs(
    toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill (nothing runs after it) during the hybrid's start-up leaves its keyframe map, config.yaml, an empty
    log.csv: a run's own files, which --resume continues and --overwrite replaces (they were refused as a folder of
    other files, so the user had to delete them by hand)."""
    from pose2rgbd.training.run_folder import check_out_dir

    out = fake_run_files(tmp_path / "R", ("keyframes",))
    rc, text = run_cli(capsys, "train", "--dataset", toy_dataset, "--out", out, *TRAIN)
    assert rc == 2 and "holds the files of a training run stopped before its first checkpoint (keyframes)" in text
    assert "pass --resume to continue it, or pass --overwrite" in text, text
    assert check_out_dir(out, toy_dataset, [], resume=False, overwrite=True) == ["keyframes"]
    assert check_out_dir(out, toy_dataset, [], resume=True, overwrite=False) == []


# ---------------------------------------------------------------- 4: a model larger than the dataset's images
def test_training_above_the_datasets_image_size_warns_once(
    toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 16x16 dataset at --size 128: upsampled, said once at the start with the size to use (the smallest the
    family takes, here); the message's arithmetic for 64x64 images at 128 and 256; nothing where the size fits."""
    import importlib

    train_mod = importlib.import_module("pose2rgbd.training.train")
    from pose2rgbd.models.registry import get_family

    def fit(*a: object, **k: object) -> None:
        raise _Stop()

    monkeypatch.setattr(train_mod.Trainer, "fit", fit)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.training.train"), pytest.raises(_Stop):
        train_mod.train("pose2rgbd", toy_dataset, tmp_path / "R")
    said = [r.getMessage() for r in caplog.records if "upsamples" in r.getMessage()]
    assert said == [
        "the dataset's images are 16x16; --size 128 upsamples them (64x the pixels, no detail gained): use --size 64, "
        "the smallest model kind 'pose2rgbd' takes"
    ], said

    ds: Any = SimpleNamespace(manifest=SimpleNamespace(camera=SimpleNamespace(width=64, height=64)))
    for kind, size, expect in (
        ("pose2rgbd", 128, "the dataset's images are 64x64; --size 128 upsamples them (4x the pixels, no detail "
                           "gained): use --size 64"),
        ("pose2rgbd", 256, "--size 256 upsamples them (16x the pixels, no detail gained): use --size 64"),
        ("hybrid", 128, "--size 128 upsamples them (4x the pixels, no detail gained): use --size 64"),
        ("pose2rgbd", 64, ""),
        ("hybrid", 64, ""),  # the hybrid's default
    ):  # fmt: skip
        fam = get_family(kind)
        mc = dataclasses.replace(fam.make_config(), size=size)
        got = train_mod.upsampling_warning(fam, mc, ds)
        assert (expect in got) if expect else got == "", (kind, size, got)
