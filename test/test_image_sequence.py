"""Sequence localization in the inference layer (pose2rgbd.inference.image_sequence) and the calibration reader
beside the calibration type (pose2rgbd.inference.calibration), which reads without torch."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from unwritable_outputs import FAULTS, unwritable_output

from pose2rgbd.inference.calibration import compute_calibration, save_calibration
from pose2rgbd.inference.image_sequence import (
    CSV_STRUCTURE,
    IMAGE_SUFFIXES,
    ImageResult,
    ModelPose,
    ModelRows,
    SequenceSummary,
    StructureRows,
)
from pose2rgbd.inference.structure import Fix

REPO = Path(__file__).resolve().parents[1]


def _fix(ok: bool, x: float = 0.0, *, reason: str = "", flag: str = "", confidence: float = 0.9) -> Fix:
    T = np.eye(4)
    T[0, 3] = x
    cov = np.diag([0.04, 0.09, 0.16, math.radians(1) ** 2, math.radians(2) ** 2, math.radians(3) ** 2])
    if not ok:
        T, cov = np.full((4, 4), np.nan), np.full((6, 6), np.nan)
    return Fix(ok, reason, T, cov, confidence if ok else 0.0, inliers=40 if ok else 5, flag=flag,
               confidence_bound_m=2.0 if ok else 0.0)  # fmt: skip


def _results() -> list[ImageResult]:
    return [
        ImageResult(0, Path("a.png"), _fix(True, 1.0), "", True, 0.010),
        ImageResult(1, Path("b,c.png"), _fix(True, 2.0, flag="far from the map"), "", True, 0.020),
        ImageResult(2, Path("d.png"), _fix(True, 3.0, confidence=0.1), "", True, 0.030),
        ImageResult(3, Path("e.png"), _fix(False, reason="too few inliers"), "", True, 0.040),
        ImageResult(4, Path("f.png"), None, "f.png: not a decodable image", False, 0.001),
        ImageResult(5, Path("g.png"), None, "g.png: another aspect ratio", True, 0.002),
    ]


def test_structure_rows_csv_and_summary(tmp_path: Path) -> None:
    """poses.csv: a row per image in order; a fix has its pose, the six standard deviations, the flag and
    out_of_distribution by the gate's flag or a confidence below the threshold; an image without a fix keeps its
    row with empty pose fields and why. The summary counts fixes, flagged rows and the reasons by kind."""
    out = tmp_path / "poses.csv"
    rows, summary = StructureRows(out, "map", threshold=0.5), SequenceSummary()
    for r in _results():
        summary.add(r, rows.add(r))
    rows.write()
    table = list(csv.DictReader(out.read_text().splitlines()))
    assert ",".join(table[0].keys()) == CSV_STRUCTURE
    assert [r["image"] for r in table] == ["a.png", "b,c.png", "d.png", "e.png", "f.png", "g.png"]
    assert [r["fix"] for r in table] == ["true"] * 3 + ["false"] * 3
    assert [r["out_of_distribution"] for r in table[:3]] == ["false", "true", "true"]
    assert float(table[0]["tx"]) == 1.0 and float(table[0]["qw"]) == 1.0 and table[0]["confidence_bound_m"] == "2"
    sig = [float(table[0][k]) for k in ("sigma_x_m", "sigma_y_m", "sigma_z_m", "sigma_rx_deg", "sigma_ry_deg",
                                        "sigma_rz_deg")]  # fmt: skip
    assert np.allclose(sig, [0.2, 0.3, 0.4, 1.0, 2.0, 3.0])
    assert table[1]["flag"] == "far from the map"
    assert table[3]["reason"] == "too few inliers" and table[3]["inliers"] == "5" and table[3]["tx"] == ""
    assert table[4]["reason"] == "f.png: not a decodable image" and table[4]["inliers"] == "0"
    assert (summary.images, summary.fixes, summary.flagged) == (6, 3, 2)
    assert summary.no_fix == {"too few inliers": 1, "unreadable file": 1, "image not usable: another aspect ratio": 1}
    assert summary.percentile_ms(50) == pytest.approx(15.0) and summary.percentile_ms(99) > 30.0


def test_structure_rows_tum_and_model_rows(tmp_path: Path) -> None:
    """TUM: a line per fix (its index in name order), a comment line per image without one and per fix out of
    distribution (flagged, or below the threshold: a TUM reader skips it; its pose and why in the comment); the
    model's rows have no fix columns and an empty out_of_distribution without a threshold."""
    out = tmp_path / "poses.tum"
    rows = StructureRows(out, "enu")
    for r in _results():
        rows.add(r)
    rows.write()
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# index tx ty tz qx qy qz qw") and "world frame: enu" in lines[0]
    assert "fixes out of distribution, are comment lines" in lines[0]
    assert lines[1].split()[0] == "0" and lines[3].split()[0] == "2"  # no threshold: a low confidence is a fix
    assert lines[2].startswith("# 1 b,c.png: out of distribution (far from the map): 1 2.0 ")
    assert lines[4:] == ["# 3 e.png: no fix (too few inliers)", "# 4 f.png: no fix (f.png: not a decodable image)",
                         "# 5 g.png: no fix (g.png: another aspect ratio)"]  # fmt: skip
    rows = StructureRows(out, "enu", threshold=0.5)
    assert [rows.add(r) for r in _results()[:3]] == [False, True, True]
    assert rows.lines[3].startswith("# 2 d.png: out of distribution (confidence 0.1 below 0.5): 2 3.0 ")
    tum = ModelRows(tmp_path / "m.tum", "map", threshold=0.5)
    tum.add(ModelPose(0, "a.png", np.eye(4), 0.9))
    tum.add(ModelPose(1, "b.png", np.eye(4), 0.25))
    assert tum.lines[1].startswith("0 0.0") and tum.lines[2].startswith("# 1 b.png: out of distribution (confidence")
    m = ModelRows(tmp_path / "m.csv", "map")
    m.add(ModelPose(0, "x,y.png", np.eye(4), 0.25))
    m.write()
    assert (tmp_path / "m.csv").read_text().splitlines() == [
        "image,tx,ty,tz,qx,qy,qz,qw,confidence,out_of_distribution",
        '"x,y.png",0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.25,',
    ]


def test_the_command_keeps_its_names_and_suffixes() -> None:
    """The command lists the same image suffixes in its help as the folder reader takes, and the names that moved
    are still importable from it."""
    import pose2rgbd.cli.localize as cli
    from pose2rgbd.inference import image_sequence

    assert cli.IMAGE_SUFFIXES == IMAGE_SUFFIXES
    assert cli.CSV_STRUCTURE is CSV_STRUCTURE and cli.read_rgb_image is image_sequence.read_rgb_image


def _no_torch(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code += "\nimport sys\nprint('TORCH=' + str('torch' in sys.modules))\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _calibration(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    T_true = np.tile(np.eye(4), (40, 1, 1))
    T_est = T_true.copy()
    T_est[:, :3, 3] += rng.normal(0, 0.3, (40, 3))
    return save_calibration(compute_calibration(T_est, T_true, rng.uniform(0, 1, 40)), tmp / "cal.yaml")


def test_reading_a_calibration_does_not_import_torch(tmp_path: Path) -> None:
    """The calibration reader, and the localize node reading its covariance_file, do without torch."""
    cal = _calibration(tmp_path)
    out = _no_torch(
        "from pose2rgbd.inference.calibration import load_calibration\n"
        "from pose2rgbd.nodes.localizer.config import LocalizerConfig\n"
        "from pose2rgbd.nodes.localizer.resources import load_node_calibration\n"
        f"c = load_calibration({str(cal)!r})\n"
        f"n = load_node_calibration(LocalizerConfig(covariance_file={str(cal)!r}))\n"
        "assert n is not None and n.ood_threshold == c.ood_threshold > 0\n"
    )
    assert "TORCH=False" in out


def test_localize_images_with_a_calibration_file_does_not_import_torch(map_world: dict, tmp_path: Path) -> None:
    """`localize images --map M --calibration C` (the structure localizer, no model): the whole command runs
    without importing torch, and its rows are the folder's images in name order."""
    from pose2rgbd.dataset import Dataset

    ds = Dataset(map_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(np.flatnonzero(ds.frames.source_id == 1)[:3]):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    cal, out = _calibration(tmp_path), tmp_path / "poses.csv"
    argv = ["localize", "images", str(folder), "--map", str(map_world["map"]), "--calibration", str(cal),
            "--out", str(out), "--no-progress"]  # fmt: skip
    text = _no_torch(f"from pose2rgbd.cli.main import main\nassert main({argv!r}) == 0\n")
    assert "TORCH=False" in text and f"covariance calibration: {cal}" in text
    assert [r["image"] for r in csv.DictReader(out.read_text().splitlines())] == ["f00.png", "f01.png", "f02.png"]


@pytest.mark.parametrize("command", [["bag", "--bag", "b", "--out", "o"], ["images", "d", "--out", "o.csv"]])
def test_map_is_one_flag_for_every_localize_command(command: list[str], tmp_path: Path) -> None:
    """`--map M` is the flag of `localize bag`, `images` and `calibrate`; for `bag` it is the node config's `map`
    key, which a YAML file (`--config`) still sets, and the flag wins over the file."""
    from pose2rgbd.cli.main import build_parser
    from pose2rgbd.config_cli import config_from_args

    parser = build_parser()
    extra = ["--dataset", "d", "--out", "c.yaml"]
    assert parser.parse_args(["localize", "calibrate", "--map", "m1", *extra]).map == Path("m1")
    args = parser.parse_args(["localize", *command, "--map", "m1"])
    cfg = config_from_args(args)
    assert (cfg.map if command[0] == "bag" else args.map) == "m1"
    if command[0] == "bag":
        yaml_file = tmp_path / "loc.yaml"
        yaml_file.write_text("map: m2\n")
        assert config_from_args(parser.parse_args(["localize", *command, "--config", str(yaml_file)])).map == "m2"
        both = parser.parse_args(["localize", *command, "--config", str(yaml_file), "--map", "m1"])
        assert config_from_args(both).map == "m1"


def test_localize_images_overwrite_replaces_only_an_earlier_poses_file(
    map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--overwrite replaces a poses file `localize images` wrote (CSV or TUM), not a table of the user's that only
    shares its suffix (it was replaced: a thesis.txt, a budget.csv)."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset

    ds = Dataset(map_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(np.flatnonzero(ds.frames.source_id == 1)[:2]):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    for name in ("poses.csv", "poses.txt"):
        out = tmp_path / name
        argv = ["localize", "images", str(folder), "--map", str(map_world["map"]), "--out", str(out), "--no-progress"]
        assert main(argv) == 0
        assert main([*argv, "--overwrite"]) == 0  # an earlier poses file: replaced
        mine = tmp_path / f"mine_{name}"
        mine.write_text("month,amount\njan,1200\n")
        capsys.readouterr()
        assert main([*argv[:-2], str(mine), "--no-progress", "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"{mine} exists and is a file that is not a poses file" in err and "whose first line starts" in err, err
        assert mine.read_text() == "month,amount\njan,1200\n"


COVERAGE_FLAG = ("beyond the map's coverage (3.1x the keyframe spacing in position, 3.4x in pose; calibrated up to "
                 "2.0x / 2.5x)")  # fmt: skip
FOCAL_FLAG = "camera focal: this fix's matches fit 1.31 x the given focal length"


def _flagged_results() -> list[ImageResult]:
    """Six images: a fix, two fixes the gate flags (one also by the camera check), one below a threshold of 0.5, one
    without a fix, one unreadable file."""
    return [
        ImageResult(0, Path("a.png"), _fix(True, 1.0), "", True, 0.01),
        ImageResult(1, Path("b.png"), _fix(True, 2.0, flag=COVERAGE_FLAG), "", True, 0.01),
        ImageResult(2, Path("c.png"), _fix(True, 3.0, flag=f"{COVERAGE_FLAG}; {FOCAL_FLAG}"), "", True, 0.01),
        ImageResult(3, Path("d.png"), _fix(True, 4.0, confidence=0.1), "", True, 0.01),
        ImageResult(4, Path("e.png"), _fix(False, reason="too few inliers"), "", True, 0.01),
        ImageResult(5, Path("f.png"), None, "f.png: not a decodable image", False, 0.01),
    ]


@pytest.mark.parametrize("name", ["poses.tum", "poses.csv"])
def test_the_summary_says_which_images_have_no_pose_line_why_and_where_they_are(name: str, tmp_path: Path) -> None:
    """A TUM file has no column for the flag: a fix out of distribution is a comment line there, not a pose. The
    summary counts the poses the file holds as poses (a user counting its lines finds that many), says how many
    images are comment lines instead and why -- the flagged fixes per kind of reason, without their figures, the
    images without a fix per reason -- and where to see them (the comment lines; poses.csv's columns)."""
    from pose2rgbd.inference.image_sequence import ood_kind

    out = tmp_path / name
    rows, summary = StructureRows(out, "map", threshold=0.5), SequenceSummary()
    for r in _flagged_results():
        flagged = rows.add(r)
        summary.add(r, flagged, ood_kind(r.fix, 0.5) if flagged and r.fix is not None else "")
    rows.write()
    lines = out.read_text().splitlines()
    text = "\n".join(summary.left_out_lines(out))
    assert (summary.fixes, summary.flagged) == (4, 3)
    assert summary.flagged_why == {"beyond the map's coverage": 1, "beyond the map's coverage; camera focal": 1,
                                   "confidence below 0.5": 1}  # fmt: skip
    assert "3 fix(es) out of distribution" in text and "beyond the map's coverage; camera focal" in text
    assert "2 images without a fix" in text and "too few inliers" in text and "unreadable file" in text
    if name.endswith(".tum"):
        poses = [line for line in lines if not line.startswith("#")]
        assert summary.poses(out) == len(poses) == 1  # the one unflagged fix
        assert len(lines) - 1 - len(poses) == 5  # the header, the pose, five comment lines
        assert f"5 of the 6 images are comment lines in {out}, not poses: 3 fix(es) out of distribution, 2 without " \
               "a fix" in text, text  # fmt: skip
        assert f"--out {tmp_path / 'poses.csv'} keeps every image as a row" in text
        assert "each a comment line '# INDEX NAME: out of distribution (WHY): INDEX tx ty tz qx qy qz qw'" in text
        assert "each a comment line '# INDEX NAME: no fix (REASON)'" in text
    else:
        assert summary.poses(out) == 4 and len(lines) == 7  # every image a row; the flagged fixes keep their pose
        assert "comment line" not in text
        assert "3 fix(es) out of distribution, rows with out_of_distribution true, why in the flag column:" in text
        assert "2 images without a fix:" in text
    summary_ok = SequenceSummary()
    summary_ok.add(_flagged_results()[0])
    assert summary_ok.left_out_lines(out) == [] and summary_ok.poses(out) == 1


def test_the_model_rows_count_the_poses_a_tum_file_holds_as_comment_lines(tmp_path: Path) -> None:
    """An image -> pose model's poses below a calibration's threshold: comment lines in TUM, not poses, and the
    summary's line says how many, why and where; in poses.csv they are rows with out_of_distribution true."""
    for name in ("m.tum", "m.csv"):
        rows = ModelRows(tmp_path / name, "map", threshold=0.5)
        for k, c in enumerate((0.9, 0.25, 0.1)):
            rows.add(ModelPose(k, f"{k}.png", np.eye(4), c))
        rows.write()
        lines = (tmp_path / name).read_text().splitlines()
        line = rows.left_out_line()
        assert rows.count == 3 and "confidence below 0.5, the calibration's threshold" in line
        if name == "m.tum":
            assert rows.poses == 1 == len([x for x in lines if not x.startswith("#")])
            assert f"2 pose(s) out of distribution (confidence below 0.5, the calibration's threshold) are comment " \
                   f"lines in {tmp_path / name}, not poses" in line  # fmt: skip
            assert f"--out {tmp_path / 'm.csv'} keeps them as rows" in line
        else:
            assert rows.poses == 3 and line.endswith("2 pose(s) (confidence below 0.5, the calibration's threshold), "
                                                     "rows with out_of_distribution true")  # fmt: skip
    assert ModelRows(tmp_path / "n.tum", "map").left_out_line() == ""


@pytest.mark.parametrize("name", ["poses.tum", "poses.csv"])
def test_localize_images_summary_says_how_many_fixes_are_comment_lines_and_why(
    name: str, map_world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`localize images --map M --out poses.tum`: a fix the localizer flags (here: beyond the map's coverage) is a
    comment line, not a pose; the summary counts the poses the file holds, and says how many images were left out of
    the trajectory that way, why, and where to see them. With poses.csv the flagged fix keeps its pose in its row."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureLocalizer

    ds = Dataset(map_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(np.flatnonzero(ds.frames.source_id == 0)[:3]):  # the map's own frames: each one a fix
        cv2.imwrite(str(folder / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    (folder / "f03.png").write_bytes(b"not a png")
    real = StructureLocalizer.localize_one
    calls: list[Fix] = []

    def flag_the_second(self: StructureLocalizer, image: np.ndarray, *a: object, **k: object) -> Fix:
        fix = real(self, image, *a, **k)
        calls.append(fix)
        if len(calls) == 2:  # as the gate flags a fix beyond the map's coverage (finish_fix)
            assert fix.ok
            fix.flag = COVERAGE_FLAG
        return fix

    monkeypatch.setattr(StructureLocalizer, "localize_one", flag_the_second)
    out = tmp_path / name
    capsys.readouterr()
    assert main(["localize", "images", str(folder), "--map", str(map_world["map"]), "--out", str(out),
                 "--no-sequence", "--no-progress"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    lines = out.read_text().splitlines()[1:]
    assert len(calls) == 3 and all(f.ok for f in calls) and len(lines) == 4  # a line per image
    if name.endswith(".tum"):
        poses = [line for line in lines if not line.startswith("#")]
        assert len(poses) == 2 and lines[1].startswith("# 1 f01.png: out of distribution (beyond the map's coverage")
        assert f"{out}: 2 poses from 4 images" in text, text
        assert f"2 of the 4 images are comment lines in {out}, not poses: 1 fix(es) out of distribution, 1 without " \
               "a fix" in text, text  # fmt: skip
        assert "1 fix(es) out of distribution, each a comment line '# INDEX NAME: out of distribution (WHY)" in text
        assert "1 images without a fix, each a comment line '# INDEX NAME: no fix (REASON)'" in text
    else:
        assert f"{out}: 3 poses from 4 images" in text, text
        assert "1 fix(es) out of distribution, rows with out_of_distribution true, why in the flag column:" in text
        assert "comment line" not in text
    assert re.search(r"\n +1  beyond the map's coverage\n", text), text
    assert re.search(r"\n +1  unreadable file\n", text), text


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("method", ["structure", "posegan"])
def test_localize_images_refuses_an_output_it_cannot_write_before_the_work(
    fault: str, method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An output whose folder is a file, is read-only, or lies on a read-only file system: refused before the map or
    the model is loaded or any image is read (before: the error came after every image was localized, or as a
    traceback), naming the path, the problem and what to do; nothing is written."""
    import pose2rgbd.inference as inference
    import pose2rgbd.inference.image_sequence as image_sequence
    import pose2rgbd.inference.structure_load as structure_load
    from pose2rgbd.cli.main import main

    def never(*a: object, **k: object) -> None:
        raise AssertionError("the work started before the output was checked")

    for module, name in ((structure_load, "load_structure_localizer"), (inference, "load_engine"),
                         (image_sequence, "list_images")):  # fmt: skip
        monkeypatch.setattr(module, name, never)
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"an image")
    out, says = unwritable_output(fault, tmp_path, monkeypatch, "poses.tum", folder="results", nested=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    by = ["--map", str(tmp_path / "map")] if method == "structure" else ["--checkpoint", str(tmp_path / "m.pt")]
    capsys.readouterr()
    assert main(["localize", "images", str(folder), *by, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"pose2rgbd localize: error: output {out} cannot be written: " in err and says in err, err
    assert err.rstrip().endswith("(nothing was written)") and "Traceback" not in err  # one instruction, no more
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["poses.tum", "poses.csv"])
def test_ctrl_c_keeps_the_images_localized_so_far(
    name: str, map_world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during `localize images`: the rows of the images done so far are written (a TUM file says where it
    stopped) and the message names them; an earlier output is never replaced by part of a new one."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureLocalizer

    ds = Dataset(map_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(np.flatnonzero(ds.frames.source_id == 0)[:4]):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    real = StructureLocalizer.localize_one
    calls = [0]

    def ctrl_c_at_the_third(self: StructureLocalizer, image: np.ndarray, *a: object, **k: object) -> Fix:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(self, image, *a, **k)

    monkeypatch.setattr(StructureLocalizer, "localize_one", ctrl_c_at_the_third)
    out = tmp_path / name
    args = ["localize", "images", str(folder), "--map", str(map_world["map"]), "--out", str(out), "--no-sequence",
            "--no-progress"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"interrupted; kept {out} (2 of 4 images localized, in name order; to localize them all, run the command " \
           "again with --overwrite)" in err, err  # fmt: skip
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 2 + (1 if name.endswith(".tum") else 0), lines  # the header, two images
    if name.endswith(".tum"):
        assert lines[-1] == "# interrupted after 2 of 4 images (in name order); the rest were not localized"
    else:
        assert [row["image"] for row in csv.DictReader(lines)] == ["f00.png", "f01.png"]
    # again with --overwrite, interrupted again: the earlier (partial) output stays as it was
    before = out.read_bytes()
    calls[0] = 0
    assert main([*args, "--overwrite"]) == 130
    assert "nothing half-written was kept" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_keep_interrupted_writes_a_models_rows_only_where_nothing_was(tmp_path: Path) -> None:
    """The image -> pose model's rows (`localize images --checkpoint`) kept on Ctrl-C the same way: written where
    nothing was, noted for the message; not before the first image, never over an earlier output."""
    from pose2rgbd.atomic import take_kept
    from pose2rgbd.inference.image_sequence import ModelPose, ModelRows, keep_interrupted

    take_kept()
    out = tmp_path / "poses.tum"
    rows = ModelRows(out, "map")
    keep_interrupted(rows, 0, 5)
    assert not out.exists() and take_kept() == []
    rows.add(ModelPose(0, "a.png", np.eye(4), 0.9))
    keep_interrupted(rows, 1, 5)
    assert out.read_text().splitlines()[-2:] == [
        "0 0.0 0.0 0.0 0.0 0.0 0.0 1.0",
        "# interrupted after 1 of 5 images (in name order); the rest were not localized",
    ]
    assert take_kept() == [f"{out} (1 of 5 images localized, in name order; to localize them all, run the command "
                           "again with --overwrite)"]  # fmt: skip
    before = out.read_bytes()
    rows.add(ModelPose(1, "b.png", np.eye(4), 0.9))
    keep_interrupted(rows, 2, 5)  # an earlier output is there: left as it was
    assert out.read_bytes() == before and take_kept() == []


def test_an_image_of_another_aspect_ratio_is_refused_without_the_unknown_camera_warning(
    map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A 3:2 photo against a map of another aspect ratio (square), no --camera: it is refused (its row and the console
    say why), not first announced as "taken as the map's camera scaled to its size"; an image of the map's aspect
    ratio gets that warning."""
    import logging

    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset

    ds = Dataset(map_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    rgb = ds.read_rgb(int(np.flatnonzero(ds.frames.source_id == 0)[0]))
    assert rgb.shape[0] == rgb.shape[1]
    cv2.imwrite(str(folder / "wide.png"), cv2.resize(rgb, (240, 160))[..., ::-1])
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        main(["localize", "images", str(folder), "--map", str(map_world["map"]), "--out", str(tmp_path / "p.csv"),
              "--no-progress"])  # fmt: skip
    assert not [r for r in caplog.records if "query camera not given" in r.getMessage()]
    text = capsys.readouterr().out
    assert "image not usable: the image is 240x160 and the map's camera is" in text and "aspect ratio" in text, text
    cv2.imwrite(str(folder / "wide.png"), rgb[..., ::-1])  # the map's own size: taken as its camera, and warned
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        main(["localize", "images", str(folder), "--map", str(map_world["map"]), "--out", str(tmp_path / "q.csv"),
              "--no-progress"])  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if "query camera not given" in r.getMessage()]
    assert warned and "topics.camera_info naming the camera's CameraInfo topic" in warned[0]  # the node's way too


@pytest.mark.parametrize("name", ["poses.tum", "poses.csv"])
def test_a_trajectory_without_a_pose_exits_1(
    name: str, map_world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every fix flagged out of distribution: a TUM file holds no pose (each is a comment line), so the command
    exits 1 as when no image has a fix; poses.csv keeps the flagged poses as rows and exits 0."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.structure import StructureLocalizer

    ds = Dataset(map_world["dataset"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, i in enumerate(np.flatnonzero(ds.frames.source_id == 0)[:2]):
        cv2.imwrite(str(folder / f"f{k:02d}.png"), ds.read_rgb(int(i))[..., ::-1])
    real = StructureLocalizer.localize_one

    def flag_all(self: StructureLocalizer, image: np.ndarray, *a: object, **k: object) -> Fix:
        fix = real(self, image, *a, **k)
        assert fix.ok
        fix.flag = COVERAGE_FLAG
        return fix

    monkeypatch.setattr(StructureLocalizer, "localize_one", flag_all)
    out = tmp_path / name
    rc = main(["localize", "images", str(folder), "--map", str(map_world["map"]), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    if name.endswith(".tum"):
        assert rc == 1 and f"{out}: 0 poses from 2 images" in text, text
    else:
        assert rc == 0 and f"{out}: 2 poses from 2 images" in text, text


def test_images_of_another_place_get_no_fix_and_the_summary_says_what_that_likely_means(
    map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Images no keyframe matches (noise here; a user's: another place) get no fix each; the summary says that no
    image was localized and what that likely means, and the exit status is 1."""
    from pose2rgbd.cli.main import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        cv2.imwrite(str(folder / f"n{k}.png"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    out = tmp_path / "p.csv"
    rc = main(["localize", "images", str(folder), "--map", str(map_world["map"]), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1 and "no image got a fix (exit status 1)" in text and "another place than the map" in text, text
