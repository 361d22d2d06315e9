"""--overwrite and what lies inside an earlier dataset (pose2rgbd.output_guard.DATASET): the user's files in its
subfolders (rgb/holiday.jpg, report/my_analysis.md) are refused like those at its top level, and a folder whose
manifest.yaml is someone else's (a Kubernetes manifest) is no earlier dataset at all.

Each command runs as a user would (``pose2rgbd.cli.main.main``); the refused folder is byte-identical afterwards.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from output_helpers import run_cli, tree_hash

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LAT, LON, ALT = 47.3977, 8.5456, 488.0


@pytest.fixture(scope="module")
def flight_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path_factory.mktemp("bags") / "flight"
    write_flight_bag(bag, duration_s=1.0, size=32)
    return bag


def _flight(path: Path, *, seed: int, n: int = 5, start_ns: int = 10**18, report: bool = True) -> Path:
    """A small dataset whose cameras fly over known GPS positions (of one datum: two of them merge), with the report
    of a conversion (summary.json, sync.png) unless ``report`` is False."""
    from pose2rgbd.dataset import DatasetWriter, Manifest
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.geometry.geodesy import Datum

    rng = np.random.default_rng(seed)
    datum = Datum(LAT, LON, ALT)
    cam = PinholeCamera(24, 18, 20.0, 20.0, 12.0, 9.0)
    man = Manifest(f"flight{seed}", cam, depth_kind="metric", datum=datum, world_frame="enu",
                   sources=[{"id": 0, "kind": "bag", "name": f"f{seed}"}])  # fmt: skip
    with DatasetWriter(path, man) as w:
        for i in range(n):
            lla = (LAT + 1e-5 * i + 1e-4 * seed, LON + 2e-5 * i, ALT + 10.0)
            T = np.eye(4)
            T[:3, 3] = datum.to_world(*lla)
            rgb = rng.integers(0, 255, (cam.height, cam.width, 3), dtype=np.uint8)
            w.add_frame(start_ns + i * 10**8, T, rgb, np.full((cam.height, cam.width), 5.0 + i, np.float32),
                        latlonalt=lla)  # fmt: skip
    if report:
        (path / "report").mkdir()
        (path / "report" / "summary.json").write_text(f'{{"frames": {{"written": {n}}}}}\n')
        (path / "report" / "sync.png").write_bytes(b"a conversion's sync plot")
    return path


# ------------------------------------------------------------------ the user's files inside an earlier dataset
def test_convert_overwrite_refuses_the_users_files_in_the_datasets_subfolders(
    flight_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A photo put into rgb/, notes into report/, a file into depth/ or cache/: --overwrite would delete them with the
    folder. They are named (relative paths) and nothing is written; without them the same command replaces the
    dataset (so the conversion's report and the training cache `train` adds are known as pose2rgbd's)."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.dataset.cache import build_cache
    from pose2rgbd.output_guard import DATASET

    out = tmp_path / "conv"
    argv = ["convert", "bag", flight_bag, "--out", out, "--no-progress"]
    rc, text = run_cli(capsys, *argv)
    assert rc == 0, text
    build_cache(Dataset(out), 16, progress=False)
    assert DATASET.foreign_entries(out) == []
    mine = {
        "rgb/holiday.jpg": b"holiday",
        "report/my_analysis.md": b"mine",
        "depth/keep.txt": b"keep",
        "cache/notes.txt": b"why the cache",
        "report/drafts/plot.py": b"print(1)",
    }
    for rel, data in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    before = tree_hash(out)
    rc, text = run_cli(capsys, *argv, "--overwrite")
    assert rc == 2, text
    assert (
        f"{out} is an earlier dataset, but it also holds cache/notes.txt, depth/keep.txt, report/drafts/plot.py, "
        "report/my_analysis.md, rgb/holiday.jpg, which no dataset written by pose2rgbd has; --overwrite replaces the "
        f"folder whole and would delete them. Move them out of {out}, or choose another output path (nothing was "
        "written)" in " ".join(text.split())
    ), text
    assert tree_hash(out) == before
    for rel in mine:
        (out / rel).unlink()
    shutil.rmtree(out / "report" / "drafts")
    rc, text = run_cli(capsys, *argv, "--overwrite")
    assert rc == 0, text
    assert not (out / "cache").exists()  # replaced whole


def test_merge_overwrite_refuses_the_users_files_but_replaces_a_merge_with_its_inputs_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A merge writes report/merge.png and report/inputs/NN-NAME/ (the inputs' own reports): an earlier merge is
    replaced, a merge of merges too; the user's report/notes.md, depth/keep.txt and a file of theirs in
    report/inputs/ are refused and named."""
    a = _flight(tmp_path / "a", seed=0)
    b = _flight(tmp_path / "b", seed=1, start_ns=2 * 10**18)
    out = tmp_path / "m"
    argv = ["dataset", "merge", a, b, "--out", out, "--no-progress"]
    for extra in ((), ("--overwrite",)):
        rc, text = run_cli(capsys, *argv, *extra)
        assert rc == 0, text
    assert (out / "report" / "inputs" / "00-a" / "sync.png").is_file()
    mm = tmp_path / "mm"  # a merge of a merge: report/inputs/00-m/inputs/00-a/...
    c = _flight(tmp_path / "c", seed=2, start_ns=3 * 10**18)
    for extra in ((), ("--overwrite",)):
        rc, text = run_cli(capsys, "dataset", "merge", out, c, "--out", mm, "--no-progress", *extra)
        assert rc == 0, text
    assert (mm / "report" / "inputs" / "00-m" / "inputs" / "01-b" / "summary.json").is_file()

    (out / "report" / "notes.md").write_text("the second flight was windy\n")
    (out / "depth" / "keep.txt").write_text("keep\n")
    (out / "report" / "inputs" / "mine.txt").write_text("mine\n")
    before = tree_hash(out)
    rc, text = run_cli(capsys, *argv, "--overwrite")
    assert rc == 2, text
    flat = " ".join(text.split())
    assert (f"{out} is an earlier dataset, but it also holds depth/keep.txt, report/inputs/mine.txt, report/notes.md, "
            "which no dataset written by pose2rgbd has") in flat, text  # fmt: skip
    assert "would delete them" in flat and "nothing was written" in flat, text
    assert tree_hash(out) == before


def test_the_files_of_a_dataset_pose2rgbd_wrote_are_its_own(tmp_path: Path) -> None:
    """In rgb/ and depth/: what frames.csv lists, and a frame's files that a recorder stopped within its row had
    written (named as the writer names them, from the first frame without a full row); the writers' temporary
    files. Anything else is named: another image, a frame-named file in a subfolder, a link, even one the table
    lists no more."""
    from pose2rgbd.output_guard import DATASET

    ds = _flight(tmp_path / "ds", seed=0, n=3)
    assert DATASET.foreign_entries(ds) == []
    # a recorder killed after frame 3's files, within its row
    (ds / "rgb" / "000003.png").write_bytes(b"frame 3")
    (ds / "depth" / "000003.npy").write_bytes(b"frame 3")
    with open(ds / "frames.csv", "a") as f:
        f.write("3,1000000000300000000,0.0,0.0,0.0,0.0,0.0,0.0,1.0,,,,0,rgb/0000")
    (ds / "rgb" / ".000004.png.tmp").write_bytes(b"being written")
    (ds / "report" / ".summary.json.tmp-123").write_text("{}")
    (ds / "cache" / "16-0123456789abcdef").mkdir(parents=True)
    (ds / "cache" / "16-0123456789abcdef" / "rgb.npy").write_bytes(b"derived")
    assert DATASET.foreign_entries(ds) == []
    (ds / "rgb" / "000000.jpg").write_bytes(b"mine")  # the dataset's images are png
    (ds / "rgb" / "edited").mkdir()
    (ds / "rgb" / "edited" / "000001.png").write_bytes(b"mine")
    (ds / "depth" / "labels.csv").write_text("frame,label\n")
    os.symlink(tmp_path, ds / "rgb" / "elsewhere")
    (ds / "cache" / "README").write_text("mine")
    (ds / "report" / "inputs").mkdir()  # a merge's folder: only its NN-NAME folders are pose2rgbd's
    (ds / "report" / "inputs" / "00-x").mkdir()
    (ds / "report" / "inputs" / "00-x" / "sync.png").write_bytes(b"an input's report")
    (ds / "report" / "inputs" / "todo.txt").write_text("mine")
    assert DATASET.foreign_entries(ds) == [
        "cache/README", "depth/labels.csv", "report/inputs/todo.txt", "rgb/000000.jpg", "rgb/edited/000001.png",
        "rgb/elsewhere",
    ]  # fmt: skip


def test_a_refusal_names_a_few_files_and_counts_the_rest(
    flight_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _flight(tmp_path / "ds", seed=0)
    for i in range(9):
        (out / "rgb" / f"holiday_{i}.jpg").write_bytes(b"holiday")
    before = tree_hash(out)
    rc, text = run_cli(capsys, "convert", "bag", flight_bag, "--out", out, "--overwrite", "--no-progress")
    assert rc == 2, text
    flat = " ".join(text.split())
    names = ", ".join(f"rgb/holiday_{i}.jpg" for i in range(5))
    assert f"holds {names} and 4 more, which no dataset written by pose2rgbd has" in flat, text
    assert tree_hash(out) == before


# ------------------------------------------------------------------- a folder with someone else's manifest.yaml
@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        ("apiVersion: v1\nkind: Pod\n", "'format' is None, expected 'pose2rgbd-dataset'"),
        ("hello: world\n", "'format' is None, expected 'pose2rgbd-dataset'"),
        ("format: helm-chart\n", "'format' is 'helm-chart', expected 'pose2rgbd-dataset'"),
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("key: [unclosed\n", "is not YAML"),
    ],
)
def test_a_folder_with_someone_elses_manifest_yaml_is_no_earlier_dataset(
    manifest: str, why: str, flight_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest.yaml is a dataset's only where it says format: pose2rgbd-dataset: `convert` (with --overwrite or
    without), `dataset merge --overwrite` and `record bag` refuse a folder holding another one, and say so (not
    "an earlier dataset", not "pass --overwrite"); the manifest.yaml is left as it was."""
    k8s = tmp_path / "k8s"
    k8s.mkdir()
    (k8s / "manifest.yaml").write_text(manifest)
    a = _flight(tmp_path / "a", seed=0, report=False)
    b = _flight(tmp_path / "b", seed=1, start_ns=2 * 10**18, report=False)
    for extra in ((), ("NOTES.txt",)):
        for name in extra:
            (k8s / name).write_text("mine\n")
        before = tree_hash(k8s)
        for argv in (
            ["convert", "bag", flight_bag, "--out", k8s, "--overwrite", "--no-progress"],
            ["convert", "bag", flight_bag, "--out", k8s, "--no-progress"],
            ["dataset", "merge", a, b, "--out", k8s, "--overwrite", "--no-progress"],
            ["record", "bag", "--bag", flight_bag, "--out", k8s],
        ):
            rc, text = run_cli(capsys, *argv)
            assert rc == 2, (argv, text)
            flat = " ".join(text.split())
            assert f"{k8s} " in flat and "holds a manifest.yaml that is not a pose2rgbd dataset's" in flat, text
            assert why in flat and "nothing was written" in flat, text
            assert "earlier dataset," not in flat and "pass --overwrite" not in flat, text
            assert tree_hash(k8s) == before, argv


def test_a_dataset_of_another_version_is_still_an_earlier_dataset(tmp_path: Path) -> None:
    """Only the format says whose a manifest.yaml is: a dataset of another version is pose2rgbd's (the reader names
    the version), and a folder without manifest.yaml is refused as before."""
    from pose2rgbd.output_guard import DATASET, OutputError, check_output

    ds = _flight(tmp_path / "ds", seed=0)
    text = (ds / "manifest.yaml").read_text().replace("version: 1", "version: 2")
    (ds / "manifest.yaml").write_text(text)
    assert DATASET.matches(ds) and check_output(ds, DATASET, overwrite=True) == ds
    (ds / "manifest.yaml").unlink()
    with pytest.raises(OutputError, match="is a folder that is not a dataset"):
        check_output(ds, DATASET, overwrite=True)


def test_the_writer_looks_again_before_it_replaces_the_earlier_dataset(tmp_path: Path) -> None:
    """A conversion checks its output before minutes of work: a file the user puts into the earlier dataset in the
    meantime is named at close too, the new dataset is not kept and the earlier one is left as it was."""
    from pose2rgbd.dataset import Dataset, DatasetWriter
    from pose2rgbd.output_guard import OutputError

    earlier = _flight(tmp_path / "ds", seed=0)
    man = Dataset(earlier).manifest
    w = DatasetWriter(earlier, man, overwrite=True)
    w.add_frame(10**18, np.eye(4), np.zeros((18, 24, 3), np.uint8), np.ones((18, 24), np.float32))
    (earlier / "report" / "notes.md").write_text("written while the conversion ran\n")
    before = tree_hash(earlier)
    with pytest.raises(OutputError, match=r"also holds report/notes\.md, which no dataset written by pose2rgbd has"):
        w.close()
    assert tree_hash(earlier) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # the new dataset's staging folder is gone


def test_the_guards_dataset_names_are_the_formats() -> None:
    """output_guard (a lower layer) spells the dataset's manifest name and format itself: they are the format's."""
    from pose2rgbd.dataset.format import FORMAT_NAME, MANIFEST
    from pose2rgbd.output_guard import DATASET, DATASET_FORMAT, DATASET_MANIFEST

    assert (DATASET_MANIFEST, DATASET_FORMAT) == (MANIFEST, FORMAT_NAME) and DATASET.markers == (MANIFEST,)
