"""Fault injection, outputs: nothing the user owns is lost, and bad values end in a message, not a traceback.

One test per row of the outputs table in docs/reliability.md. Each runs the command as a user would
(``pose2rgbd.cli.main.main``), asserts the message, and that the input and any earlier output are
byte-identical afterwards (the trees are hashed before and after).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from output_helpers import fake_run_files, make_toy, run_cli, tree_hash

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def flight_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path_factory.mktemp("bags") / "flight"
    write_flight_bag(bag, duration_s=1.0, size=32)
    return bag


@pytest.fixture
def bag(flight_bag: Path, tmp_path: Path) -> Path:
    b = tmp_path / "flight"
    shutil.copytree(flight_bag, b)
    return b


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy(tmp_path_factory)


def _foreign_dir(path: Path) -> Path:
    """A user's folder that is not a pose2rgbd output."""
    (path / "rgb").mkdir(parents=True)
    (path / "rgb" / "000000.png").write_bytes(b"my own picture")
    (path / "frames.csv").write_text("my,own,columns\n1,2,3\n")
    return path


# ------------------------------------------------------------------------------------------ 1: --overwrite vs inputs
@pytest.mark.parametrize(
    ("row", "argv", "guarded", "match"),
    [
        ("convert --out PARENT_OF_INPUT", ["convert", "bag", "{proj}/flight", "--out", "{proj}"], "proj", "contains the input"),  # noqa: E501
        ("convert --out INPUT", ["convert", "bag", "{bag}", "--out", "{bag}"], "bag", "is the input"),
        ("render bag --out INPUT", ["render", "bag", "--bag", "{bag}", "--out", "{bag}", "--checkpoint", "{tmp}/m.pt"], "bag", "is the input"),  # noqa: E501
        ("record --out-bag INPUT", ["record", "bag", "--bag", "{bag}", "--out-bag", "{bag}"], "bag", "is the input"),
        ("record --out-bag INSIDE_INPUT", ["record", "bag", "--bag", "{bag}", "--out-bag", "{bag}/synced"], "bag", "lies inside the input"),  # noqa: E501
        ("record --out INPUT", ["record", "bag", "--bag", "{bag}", "--out", "{bag}"], "bag", "is the input"),
        ("convert --out FOREIGN_DIR", ["convert", "bag", "{bag}", "--out", "{foreign}"], "foreign", "not a dataset"),
        ("render bag --out FOREIGN_DIR", ["render", "bag", "--bag", "{bag}", "--out", "{foreign}", "--checkpoint", "{tmp}/m.pt"], "foreign", "not a bag"),  # noqa: E501
        ("train --out DATASET", ["train", "--dataset", "{data}", "--out", "{data}", "--epochs", "1"], "data", "is the input"),  # noqa: E501
    ],
)  # fmt: skip
def test_overwrite_never_destroys_an_input_or_a_foreign_folder(
    row: str,
    argv: list[str],
    guarded: str,
    match: str,
    bag: Path,
    toy_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proj = tmp_path / "proj"
    shutil.copytree(bag, proj / "flight")
    (proj / "notes.txt").write_text("unrelated file\n")
    data = tmp_path / "data"
    shutil.copytree(toy_dataset, data)
    places = {"proj": proj, "bag": bag, "foreign": _foreign_dir(tmp_path / "foreign"), "data": data, "tmp": tmp_path}
    args = [a.format(**places) for a in argv] + ["--overwrite"]
    before = tree_hash(places[guarded])
    rc, out = run_cli(capsys, *args)
    assert rc == 2, out
    assert match in out and str(places[guarded]) in out and "nothing was written" in out, out
    assert tree_hash(places[guarded]) == before, row


def test_overwrite_still_replaces_an_earlier_output_of_the_same_kind(
    bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synced"
    for _ in range(2):
        rc, text = run_cli(capsys, "record", "bag", "--bag", bag, "--out-bag", out, "--overwrite")
        assert rc == 0, text
    assert (out / "metadata.yaml").is_file()


@pytest.fixture(scope="module")
def textured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 simulated survey frames at 64x64 with depth: enough texture for a place map (and a fused geometry)."""
    from pose2rgbd.sim import SimConfig
    from pose2rgbd.sim.export import export_dataset, world_of

    cfg = SimConfig(width=64, height=64, routes=["survey"], frames=40)
    return export_dataset(cfg, tmp_path_factory.mktemp("sim") / "dataset", progress=False, world=world_of(cfg))


def _earlier_output(kind: str, bag: Path, textured: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Write ``out`` as a user would, the richest output of its kind the commands make (a converted dataset with
    the training cache `train` adds to it, a place map with its fused geometry, a bag), and return the command that
    writes it (without --overwrite)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.cache import build_cache

    argv = {
        "dataset": ["convert", "bag", bag, "--out", out, "--no-progress"],
        "bag": ["record", "bag", "--bag", bag, "--out-bag", out],
        "place map": ["map", "build", "--dataset", textured, "--out", out, "--no-progress"],
    }[kind]
    rc, text = run_cli(capsys, *argv)
    assert rc == 0, text
    if kind == "dataset":
        build_cache(Dataset(out), 16, progress=False)
    if kind == "place map":
        rc, text = run_cli(capsys, "map", "fuse", "--map", out, "--no-progress")
        assert rc == 0, text
    return [str(a) for a in argv]


@pytest.mark.parametrize("kind", ["dataset", "bag", "place map"])
def test_overwrite_refuses_an_earlier_output_that_holds_the_users_own_files(
    kind: str, bag: Path, textured: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--overwrite replaces a dataset, a bag or a place map whole: files the user put into the earlier one since
    (labels, notes) would go with it. It refuses and names them; without them the same command replaces the output
    (so everything the commands themselves write there is known as theirs)."""
    from pose2rgbd.output_guard import BAG, DATASET

    out = tmp_path / "out"
    argv = _earlier_output(kind, bag, textured, out, capsys)
    from pose2rgbd.placemap.format import PLACE_MAP

    assert {"dataset": DATASET, "bag": BAG, "place map": PLACE_MAP}[kind].foreign_entries(out) == []
    (out / "labels.csv").write_text("frame,obstacle\n3,tree\n")
    (out / "notes").mkdir()
    (out / "notes" / "flight_log.txt").write_text("wind 5 m/s\n")
    before = tree_hash(out)
    rc, text = run_cli(capsys, *argv, "--overwrite")
    assert rc == 2, text
    assert f"{out} is an earlier {kind}, but it also holds labels.csv, notes" in text, text
    assert "would delete them" in text and "nothing was written" in text, text
    assert tree_hash(out) == before
    shutil.rmtree(out / "notes")
    (out / "labels.csv").unlink()
    rc, text = run_cli(capsys, *argv, "--overwrite")
    assert rc == 0, text


def test_foreign_entries_leave_out_what_pose2rgbd_writes_while_it_writes(tmp_path: Path) -> None:
    """The hidden siblings of pose2rgbd's atomic writers (a stopped `map fuse`'s partial folder, a temporary file)
    are its own; a user's hidden file is not; a kind without a content list checks nothing."""
    from pose2rgbd.output_guard import DATASET, EVALUATION

    ds = tmp_path / "ds"
    ds.mkdir()
    for name in ("manifest.yaml", "frames.csv", ".frames.csv.tmp", ".report.partial-12-x", ".ds.old-7.swap"):
        (ds / name).write_text("x")
    assert DATASET.foreign_entries(ds) == []
    (ds / ".my_notes").write_text("mine")
    (ds / ".labels.old").write_text("mine")  # a user's backup: no writer's pid in its name
    (ds / "eval").mkdir()
    assert DATASET.foreign_entries(ds) == [".labels.old", ".my_notes", "eval"]
    assert EVALUATION.foreign_entries(ds) == []


# ------------------------------------------------------------------------------- 2: train --out an earlier run
def _fake_run(path: Path) -> Path:
    """An earlier run's config.yaml, split.json, checkpoints and log.csv, as a run writes them (a run's folder is
    judged by what its files hold: test_run_folder_own_files)."""
    path.mkdir()
    return fake_run_files(path)


def test_train_refuses_an_earlier_run_without_resume_or_overwrite(
    toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _fake_run(tmp_path / "run")
    before = tree_hash(run)
    rc, out = run_cli(capsys, "train", "--dataset", toy_dataset, "--out", run, "--epochs", "1")
    assert rc == 2
    assert f"{run} holds an earlier training run" in out and "--resume" in out and "--overwrite" in out, out
    assert tree_hash(run) == before


def test_train_with_a_device_that_is_not_one_writes_nothing(
    toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--device gpu` (a typo) is refused before OUT is made: the corrected command is not then told of an earlier
    run (config.yaml, split.json) that never trained."""
    run = tmp_path / "run"
    rc, out = run_cli(capsys, "train", "--dataset", toy_dataset, "--out", run, "--epochs", "1", "--device", "gpu")
    assert rc == 2 and "device 'gpu' is not a torch device" in out, out
    assert not run.exists()


def test_train_overwrite_puts_the_earlier_run_back_when_the_new_one_fails_early(
    toy_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    train_mod = importlib.import_module("pose2rgbd.training.train")

    run = _fake_run(tmp_path / "run")
    before = tree_hash(run)

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.Trainer, "fit", boom)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train("pose2rgbd", toy_dataset, run, overwrite=True)
    assert tree_hash(run) == before


def test_train_refuses_a_foreign_folder(toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = _foreign_dir(tmp_path / "mine")
    before = tree_hash(foreign)
    rc, out = run_cli(capsys, "train", "--dataset", toy_dataset, "--out", foreign, "--epochs", "1")
    assert rc == 2 and "not a pose2rgbd training run" in out, out
    assert tree_hash(foreign) == before


def test_train_refuses_a_dataset_that_keeps_its_depth_network(
    toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A converted video keeps its depth network (depth_network.pt) beside its frames: a .pt does not make a dataset
    a training run that `train --out` (or --overwrite) may write into."""
    import shutil

    data = tmp_path / "converted"
    shutil.copytree(toy_dataset, data)
    (data / "depth_network.pt").write_bytes(b"the depth network")
    before = tree_hash(data)
    for extra in ((), ("--overwrite",)):
        rc, out = run_cli(capsys, "train", "--dataset", toy_dataset, "--out", data, "--epochs", "1", *extra)
        assert rc == 2, out
        assert tree_hash(data) == before


# --------------------------------------------------------------------- 3: record --out a folder that is no dataset
@pytest.mark.parametrize("what", ["rgb/000000.png", "frames.csv"])
def test_record_refuses_a_folder_that_is_not_a_dataset(
    what: str, bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    (mine / what).parent.mkdir(parents=True, exist_ok=True)
    (mine / what).write_bytes(b"the user's own file\n")
    before = tree_hash(mine)
    rc, out = run_cli(capsys, "record", "bag", "--bag", bag, "--out", mine)
    assert rc == 2
    assert f"{mine} is a folder with other files in it and not a pose2rgbd dataset" in out, out
    assert tree_hash(mine) == before


def test_live_recorder_writer_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    """The live record node opens its dataset with DatasetWriter(mode="append"): the same refusal."""
    from pose2rgbd.dataset import DatasetWriter, Manifest
    from pose2rgbd.errors import Pose2RGBDError
    from pose2rgbd.geometry import PinholeCamera

    mine = _foreign_dir(tmp_path / "mine")
    before = tree_hash(mine)
    man = Manifest(name="x", camera=PinholeCamera.from_fov(16, 16, 60.0), depth_kind="none")
    with pytest.raises(Pose2RGBDError, match="not a pose2rgbd dataset"):
        DatasetWriter(mine, man, mode="append")
    from pose2rgbd.messages import default_factory
    from pose2rgbd.nodes.recorder import Recorder, RecorderConfig

    cfg = RecorderConfig()
    cfg.output.dataset = str(mine)
    with pytest.raises(Pose2RGBDError, match="not a pose2rgbd dataset"):  # at configure, before any frame
        Recorder(cfg, default_factory())
    assert tree_hash(mine) == before


# ---------------------------------------------------------------------------- 4: Ctrl-C keeps the dataset and bag
@pytest.mark.parametrize("command", ["record bag", "node record"])
def test_record_interrupted_keeps_and_closes_the_dataset_and_the_bag(
    command: str, bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pose2rgbd.bags import open_bag
    from pose2rgbd.dataset import Dataset, DatasetWriter

    add = DatasetWriter.add_frame
    calls = {"n": 0}

    def add_then_interrupt(self: DatasetWriter, *a: object, **k: object) -> int:
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C while the fifth frame is written
        calls["n"] += 1
        return add(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(DatasetWriter, "add_frame", add_then_interrupt)
    ds, ob = tmp_path / "rec", tmp_path / "synced"
    if command == "record bag":
        rc, out = run_cli(capsys, "record", "bag", "--bag", bag, "--out", ds, "--out-bag", ob)
    else:
        rc, out = run_cli(capsys, "node", "record", "--bag", bag, "--out", ob, "--output.dataset", ds)
    assert rc == 130
    assert "nothing half-written was kept" not in out, out
    assert f"kept {ob} (bag, " in out and f"{ds} (dataset, 4 frames, 4 new;" in out, out
    assert len(Dataset(ds)) == 4
    with open_bag(ob) as r:
        assert r.topics["/synced_frame"].count == 4


# --------------------------------------------------------------------------- 12: checkpoints and non-finite values
@pytest.mark.parametrize(
    ("row", "make", "match"),
    [
        ("text file", lambda p: p.write_text("hello, not a model\n"), "cannot read checkpoint: not a torch file (it starts with b'hell'; a text file?)"),  # noqa: E501
        ("empty file", lambda p: p.write_bytes(b""), "cannot read checkpoint: the file is empty (0 bytes"),
        ("garbage .pt", "garbage", "holds Python objects other than tensors"),
        ("folder", lambda p: (p.mkdir(), (p / "best.pt").write_bytes(b"x")), "is a folder, not a checkpoint file"),
    ],
)  # fmt: skip
def test_bad_checkpoint_files_are_named_clearly(
    row: str, make: object, match: str, bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = tmp_path / "model.pt"
    if make == "garbage":
        import fractions

        import torch

        torch.save({"format": "not ours", "x": fractions.Fraction(1, 2)}, ck)
    else:
        make(ck)  # type: ignore[operator]
    before = tree_hash(ck)
    rc, out = run_cli(capsys, "render", "bag", "--bag", bag, "--out", tmp_path / "o", "--checkpoint", ck)
    assert rc == 2 and match in out, out
    assert "weights_only" not in out and not out.rstrip().endswith("101"), out
    assert tree_hash(ck) == before and not (tmp_path / "o").exists()


def test_fingerprint_mismatch_names_which_is_which() -> None:
    from pose2rgbd.models.checkpoint import Expectations

    (msg,) = Expectations(fingerprint="THIS-DATASET").problems("pose2rgbd", object(), "CHECKPOINTS")
    assert msg.startswith("the checkpoint was trained on dataset fingerprint CHECKPOINTS, but THIS-DATASET is expected")
    assert "evaluate --allow-other-dataset" in msg  # the flag that scores it on another dataset on purpose


@pytest.mark.parametrize(
    ("row", "argv", "match"),
    [
        ("train --lr nan", ["train", "--dataset", "{data}", "--out", "{tmp}/run", "--lr", "nan"], "train.lr: nan is not a usable number"),  # noqa: E501
        ("train --lr inf", ["train", "--dataset", "{data}", "--out", "{tmp}/run", "--lr", "inf"], "train.lr: inf is not a usable number"),  # noqa: E501
        ("convert --time-offset nan", ["convert", "bag", "{bag}", "--out", "{tmp}/d", "--time-offset", "nan"], "time_offset_s: nan is not a usable number"),  # noqa: E501
        ("convert --max-speed -1", ["convert", "bag", "{bag}", "--out", "{tmp}/d", "--max-speed", "-1"], "max_speed_mps must be a speed > 0"),  # noqa: E501
    ],
)  # fmt: skip
def test_non_finite_and_negative_settings_are_refused(
    row: str,
    argv: list[str],
    match: str,
    bag: Path,
    toy_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [a.format(data=toy_dataset, bag=bag, tmp=tmp_path) for a in argv]
    before = tree_hash(bag), tree_hash(toy_dataset)
    rc, out = run_cli(capsys, *args)
    assert rc == 2 and match in out, out
    assert (tree_hash(bag), tree_hash(toy_dataset)) == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------- 14: record bad inputs
@pytest.mark.parametrize(
    ("row", "extra", "match"),
    [
        ("--image-topic /odom", ["--image-topic", "/odom"], "topic '/odom' has type nav_msgs/msg/Odometry, expected"),
        ("--size 0x0", ["--size", "0x0"], "size: '0x0' is too small"),
    ],
)
def test_record_refuses_a_wrong_topic_type_or_size(
    row: str, extra: list[str], match: str, bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_hash(bag)
    rc, out = run_cli(capsys, "record", "bag", "--bag", bag, "--out", tmp_path / "rec", *extra)
    assert rc == 2 and match in out, out
    assert tree_hash(bag) == before and not (tmp_path / "rec").exists()


def test_record_into_a_converted_dataset_with_depth_names_what_differs(
    bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`record bag --out DS` where DS was made by `convert bag` (metric depth) failed with "cannot resume, the existing
    dataset has another camera or depth kind", not saying which nor what to do. It names the depth kinds (the
    record node writes none) and says to record into a new dataset, before the bag is read; DS is untouched."""
    ds = tmp_path / "ds"
    assert run_cli(capsys, "convert", "bag", bag, "--out", ds, "--no-progress")[0] == 0
    before = tree_hash(ds)
    rc, out = run_cli(capsys, "record", "bag", "--bag", bag, "--out", ds)
    assert rc == 2 and f"cannot resume the existing dataset {ds}: its frames have metric depth" in out, out
    assert "the record node writes frames without depth (depth kind none)" in out, out
    assert "Record into a new dataset (another --out" in out, out
    assert tree_hash(ds) == before


def test_record_without_frames_says_no_dataset_was_written(
    bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = tmp_path / "rec"
    rc, out = run_cli(capsys, "record", "bag", "--bag", bag, "--out", rec, "--max-gap", "0.001")
    assert rc == 1 and "recorded 0 frames" in out and f"no dataset was written at {rec}" in out, out
    assert f"dataset: {rec}" not in out and not rec.exists()


def test_train_overwrite_never_deletes_the_config_file_it_reads(
    toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --config RUN/config.yaml --out RUN --overwrite`: the config is an input inside the output."""
    run = _fake_run(tmp_path / "run")
    (run / "config.yaml").write_text("train:\n  epochs: 1\n")
    before = tree_hash(run)
    rc, out = run_cli(
        capsys, "train", "--dataset", toy_dataset, "--out", run, "--overwrite", "--config", run / "config.yaml"
    )
    assert rc == 2 and f"output {run} contains the input {run / 'config.yaml'}" in out, out
    assert tree_hash(run) == before


def test_a_file_kind_with_a_header_matches_only_files_that_start_with_it(tmp_path: Path) -> None:
    """A calibration file pose2rgbd wrote is one (--overwrite may replace it); a YAML of the user's is not."""
    import numpy as np

    from pose2rgbd.inference.calibration import FILE_FIRST_LINE, Calibration, save_calibration
    from pose2rgbd.output_guard import OutputError, OutputKind, check_output

    kind = OutputKind("calibration", False, suffixes=(".yaml",), first_lines=(FILE_FIRST_LINE,))
    ours = save_calibration(Calibration(np.eye(6) * 0.01, n_frames=20), tmp_path / "cal.yaml")
    assert kind.matches(ours) and check_output(ours, kind, overwrite=True) == ours
    mine = tmp_path / "params.yaml"
    mine.write_text("controller:\n  kp: 1.5\n")
    assert not kind.matches(mine)
    with pytest.raises(OutputError, match=r"not a calibration .*whose first line starts '# Localizer covariance"):
        check_output(mine, kind, overwrite=True)
    (tmp_path / "empty.yaml").write_bytes(b"")
    assert not kind.matches(tmp_path / "empty.yaml")


def test_sim_refuses_to_replace_a_sim_config_yaml_of_the_users(tmp_path: Path) -> None:
    """``OUT/sim_config.yaml`` is replaced with each run's outputs; a file of the user's of that name is refused,
    with or without overwrite, before any work; an earlier run's is replaced."""
    from pose2rgbd.errors import OutputError
    from pose2rgbd.sim import SimConfig, simulate

    cfg = SimConfig(frames=2, width=16, height=16)
    out = tmp_path / "sim"
    out.mkdir()
    (out / "sim_config.yaml").write_text("my own yaml notes\n")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"sim_config.yaml exists and is not a simulator config"):
            simulate(cfg, out, dataset=False, bag=False, overwrite=overwrite, progress=False)
    assert (out / "sim_config.yaml").read_text() == "my own yaml notes\n"
    (out / "sim_config.yaml").unlink()
    simulate(cfg, out, dataset=False, bag=False, progress=False)  # its own, then again: replaced
    simulate(SimConfig(frames=2, width=16, height=16, seed=3), out, dataset=False, bag=False, progress=False)
    assert yaml.safe_load((out / "sim_config.yaml").read_text())["seed"] == 3
