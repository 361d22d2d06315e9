"""`render trajectory`: the trajectory CSV, TUM trajectories and a dataset's frames.csv (told apart by content; a
dataset folder is read as its frames.csv), the TUM lines mapped as `convert images` maps them (a groundtruth.txt line
renders at its dataset frame's pose), the error for a file of no accepted format, the out-of-bounds warning naming the
poses, and the pose table written beside the renders.
(The first CLI test of the command, PNGs and a video from a CSV, is in test_inference_checkpoint.py.)"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from unwritable_outputs import FAULTS, unwritable_output

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw
from pose2rgbd.geometry.transforms import T_from_tq
from pose2rgbd.testing.ground_plane import forward_pose

torch = pytest.importorskip("torch")

CSV_HEADER = "frame,time_s,tx,ty,tz,qx,qy,qz,qw"
FRAMES_HEADER = "index,stamp_ns,tx,ty,tz,qx,qy,qz,qw,lat,lon,alt,source_id,rgb,depth"  # a dataset's frames.csv
TUM_LINE = "timestamp tx ty tz qx qy qz qw"
GL = np.diag([1.0, -1.0, -1.0, 1.0])  # T_opengl_optical (= its inverse)
T0_S = 1305031102.0


def _train_poses() -> np.ndarray:
    """The training cameras of the test checkpoints: a 5 x 5 grid 18-22 m up, looking ahead and down, turning.
    (Not straight down: a camera looking straight down has qw ~ 0, where the 6dof-quat encoding flips sign.)"""
    return np.stack([forward_pose(x, y, 20.0 + 0.1 * x, yaw=0.5 + 0.02 * (x + y), pitch_deg=30.0 + 0.4 * (x - y))
                     for x in range(-20, 21, 10) for y in range(-20, 21, 10)])  # fmt: skip


def _checkpoint(path: Path, T_train: np.ndarray, *, training_poses: bool = True) -> Path:
    """A small Base checkpoint (random weights: a deterministic function of the pose) fitted to ``T_train``;
    with ``training_poses`` it carries the training cameras, as `train` saves them (coverage distances)."""
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer, save_checkpoint

    torch.manual_seed(0)
    mc = preset_config("base", size=64, outputs="rgbd", encoding="6dof-quat")
    model = build_model(mc, DepthNormalizer(1.0, 80.0), PoseNormalizer.fit(T_train, "6dof-quat"))
    extra = None
    if training_poses:
        tq = np.concatenate([T_train[:, :3, 3], matrix_to_quat_xyzw(T_train[:, :3, :3])], axis=1)
        extra = {"training_poses": torch.from_numpy(tq), "coverage_rot_weight_m": 20.0}
    return save_checkpoint(path, model, dataset_fingerprint="fp", camera=PinholeCamera.from_fov(64, 64, 75.0),
                           extra=extra)  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", _train_poses())


def _fields(T: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in (*T[:3, 3], *matrix_to_quat_xyzw(T[:3, :3]))]


def _write_csv(path: Path, T: np.ndarray, t_s: np.ndarray) -> Path:
    rows = [CSV_HEADER] + [",".join([str(i), repr(float(t_s[i])), *_fields(T[i])]) for i in range(len(T))]
    path.write_text("\n".join(rows) + "\n")
    return path


def _write_tum(path: Path, T: np.ndarray, t_s: np.ndarray) -> Path:
    lines = [f"# ground truth trajectory\n# {TUM_LINE}"]
    lines += [f"{t_s[i]:.6f} " + " ".join(_fields(T[i])) for i in range(len(T))]
    path.write_text("\n".join(lines) + "\n")
    return path


def _render(ckpt: Path, traj: Path, out: Path, *extra: str) -> int:
    from pose2rgbd.cli.main import main

    return main(["render", "trajectory", "--checkpoint", str(ckpt), "--device", "cpu", "--trajectory", str(traj),
                 "--out", str(out), *extra])  # fmt: skip


def _table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _table_poses(rows: list[dict[str, str]]) -> np.ndarray:
    t = np.array([[float(r[k]) for k in ("tx", "ty", "tz")] for r in rows])
    q = np.array([[float(r[k]) for k in ("qx", "qy", "qz", "qw")] for r in rows])
    return T_from_tq(t, q)


def _route(n: int) -> np.ndarray:
    """``n`` poses inside the training poses, turning and pitching (all four quaternion parts non-zero)."""
    return np.stack([forward_pose(-10.0 + 4.0 * k, 3.0 - k, 20.0, yaw=0.4 + 0.05 * k, pitch_deg=28.0 + k)
                     for k in range(n)])  # fmt: skip


# ------------------------------------------------------------------------------------------------ TUM input
def test_tum_trajectory_is_read_and_rendered(ckpt: Path, tmp_path: Path) -> None:
    T = _route(3)
    t_s = T0_S + np.array([0.0, 0.1, 0.2])
    for name in ("gt5.txt", "poses.tum"):  # the user's file; what `localize images` writes
        traj = _write_tum(tmp_path / name, T, t_s)
        out = tmp_path / f"out-{name}"
        assert _render(ckpt, traj, out) == 0
        assert sorted(p.name for p in out.glob("rgb_*.png")) == [f"rgb_{k:06d}.png" for k in range(3)]
        for k in range(3):
            npy = np.load(out / f"depth_{k:06d}.npy")
            png = cv2.imread(str(out / f"depth_{k:06d}.png"), cv2.IMREAD_UNCHANGED)
            assert npy.dtype == np.float32 and png.dtype == np.uint16 and npy.shape == png.shape == (64, 64)
            # the units the docs state: .npy metres, PNG millimetres (rounded down)
            mm = np.minimum(np.rint(np.nan_to_num(npy, nan=0.0) * 1000.0), 65535)  # saturated at 65.535 m
            np.testing.assert_array_equal(png, mm.astype(np.uint16))
        rows = _table(out / "poses.csv")
        assert [r["index"] for r in rows] == ["0", "1", "2"] and all(r["frame"] == "" for r in rows)
        assert [int(r["line"]) for r in rows] == [3, 4, 5]  # after the two comment lines
        assert [int(r["stamp_ns"]) for r in rows] == [round(t * 1e9) for t in t_s]
        # quaternion read as qx qy qz qw: the pose rendered is the pose written
        np.testing.assert_allclose(_table_poses(rows), T, atol=1e-12)
        assert [r["out_of_bounds"] for r in rows] == ["false"] * 3
        assert all(0.0 <= float(r["coverage_m"]) < 30.0 and 0.0 <= float(r["coverage_deg"]) < 90.0 for r in rows)
    # a video: the pose table beside it
    assert _render(ckpt, tmp_path / "gt5.txt", tmp_path / "v.mp4") == 0
    assert (tmp_path / "v.mp4").stat().st_size > 0 and len(_table(tmp_path / "v.poses.csv")) == 3


def test_same_pose_as_csv_and_tum_renders_the_same(ckpt: Path, tmp_path: Path) -> None:
    T = _route(4)
    t_s = T0_S + 0.05 * np.arange(4)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _render(ckpt, _write_csv(tmp_path / "traj.csv", T, t_s - T0_S), a) == 0
    assert _render(ckpt, _write_tum(tmp_path / "traj.txt", T, t_s), b) == 0
    for k in range(4):
        for name in (f"rgb_{k:06d}.png", f"depth_{k:06d}.png"):
            np.testing.assert_array_equal(cv2.imread(str(a / name), cv2.IMREAD_UNCHANGED),
                                          cv2.imread(str(b / name), cv2.IMREAD_UNCHANGED), err_msg=name)  # fmt: skip
        np.testing.assert_array_equal(np.load(a / f"depth_{k:06d}.npy"), np.load(b / f"depth_{k:06d}.npy"))
    ra, rb = _table(a / "poses.csv"), _table(b / "poses.csv")
    np.testing.assert_array_equal(_table_poses(ra), _table_poses(rb))
    assert [r["frame"] for r in ra] == ["0", "1", "2", "3"] and [r["line"] for r in ra] == ["2", "3", "4", "5"]
    # the renders depend on the pose: the first and the last differ (else "identical" would prove nothing)
    assert not np.array_equal(np.load(a / "depth_000000.npy"), np.load(a / "depth_000003.npy"))


# ------------------------------------------------------------------------------ a dataset's frames.csv
@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset (two sources, all four quaternion parts non-zero) as `convert` / the simulator write one."""
    from pose2rgbd.experiments.toy import make_toy_dataset

    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "ds", n_survey=4, n_route=3, size=16)


def test_a_datasets_frames_csv_or_folder_is_read_as_the_dataset_reads_it(toy: Path) -> None:
    """A dataset's own frames.csv, and its folder, give the dataset's poses (T_world_cam, optical; quaternion x y z w),
    stamps (int ns, exactly), frame indices and lines: what a video user renders along without a bag. (Before, the
    header was refused: 'lacks the column(s) frame,time_s'.)"""
    from pose2rgbd.convert.trajectories import read_trajectory, trajectory_format
    from pose2rgbd.dataset import Dataset

    want = Dataset(toy).frames
    assert (toy / "frames.csv").read_text().splitlines()[0] == FRAMES_HEADER
    for src in (toy / "frames.csv", toy):
        assert trajectory_format(src) == "dataset"
        traj = read_trajectory(src)
        assert traj.format == "dataset" and traj.timed and traj.path == toy / "frames.csv" and len(traj) == 7
        np.testing.assert_allclose(traj.T_world_cam, want.T_world_cam, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(traj.stamps_ns, want.stamp_ns)
        assert traj.stamps_ns.dtype == np.int64
        assert traj.frames is not None and list(traj.frames) == list(want.index) == list(range(7))
        assert list(traj.lines) == list(range(2, 9)) and traj.label(3) == "frame 3"
    # the columns as written, read as tx ty tz + qx qy qz qw (not w first): the same poses
    rows = _table(toy / "frames.csv")
    t = np.array([[float(r[k]) for k in ("tx", "ty", "tz")] for r in rows])
    q = np.array([[float(r[k]) for k in ("qx", "qy", "qz", "qw")] for r in rows])
    assert (np.abs(q) > 1e-3).all()  # a swapped order would show
    np.testing.assert_allclose(read_trajectory(toy).T_world_cam, T_from_tq(t, q), rtol=0, atol=1e-9)


def test_a_datasets_frames_csv_renders_at_the_datasets_poses(ckpt: Path, toy: Path, tmp_path: Path) -> None:
    from pose2rgbd.dataset import Dataset

    want = Dataset(toy).frames
    for src, out in ((toy / "frames.csv", tmp_path / "a"), (toy, tmp_path / "b")):
        assert _render(ckpt, src, out) == 0
        assert sorted(p.name for p in out.glob("depth_*.npy")) == [f"depth_{k:06d}.npy" for k in range(7)]
        rows = _table(out / "poses.csv")
        assert [r["frame"] for r in rows] == [str(i) for i in want.index]
        assert [int(r["stamp_ns"]) for r in rows] == [int(s) for s in want.stamp_ns]
        np.testing.assert_allclose(_table_poses(rows), want.T_world_cam, rtol=0, atol=1e-9)
    for k in range(7):  # the file and its folder: the same renders
        np.testing.assert_array_equal(np.load(tmp_path / "a" / f"depth_{k:06d}.npy"),
                                      np.load(tmp_path / "b" / f"depth_{k:06d}.npy"))  # fmt: skip


def test_a_datasets_frames_csv_is_refused_with_other_camera_axes_or_without_its_manifest(
    ckpt: Path, toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dataset's poses are optical by definition: --camera-axes opengl is refused, not applied. A frames.csv away
    from its manifest.yaml, and a folder that is not a dataset, get an error naming what is accepted."""
    from pose2rgbd.convert.trajectories import read_trajectory

    with pytest.raises(ConfigError, match=r"frames.csv: a pose2rgbd dataset's frames.csv, whose poses are in the "
                       r"camera's optical frame.*'opengl'"):  # fmt: skip
        read_trajectory(toy, "opengl")
    assert _render(ckpt, toy, tmp_path / "out", "--camera-axes", "opengl") == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "out").exists()
    alone = tmp_path / "copy" / "frames.csv"
    alone.parent.mkdir()
    alone.write_bytes((toy / "frames.csv").read_bytes())
    with pytest.raises(ConfigError, match=r"copy/frames.csv: has the header of a pose2rgbd dataset's frames.csv, "
                       r"which is read with its dataset's manifest.yaml beside it.*accepted: "):  # fmt: skip
        read_trajectory(alone)
    with pytest.raises(ConfigError, match=r"copy: a folder, not a trajectory file, and not a pose2rgbd dataset "
                       r"\(no manifest.yaml\); accepted: .*a pose2rgbd dataset's frames.csv"):  # fmt: skip
        read_trajectory(alone.parent)


# ------------------------------------------------------------------ a groundtruth.txt imported with convert
@pytest.mark.parametrize("axes", ["optical", "opengl"])
def test_groundtruth_line_renders_at_its_dataset_frame(axes: str, tmp_path: Path) -> None:
    """A TUM sequence imported with `convert images` (images named by their timestamps, as TUM RGB-D's rgb/),
    a model of that dataset, then its groundtruth.txt rendered: each line with the timestamp of a dataset frame
    renders at that frame's pose (the pose table), and the images are those of the frame's own pose (given as
    CSV). Trajectory in OpenGL camera axes: imported and rendered with --camera-axes opengl."""
    from pose2rgbd.convert.posed_images import ImagesConfig
    from pose2rgbd.convert.sources.images import convert_images
    from pose2rgbd.dataset import Dataset

    n = 12
    T_opt = np.stack([forward_pose(-1.5 + 0.3 * k, 0.05 * k, 20.0 + 0.02 * k, yaw=0.3 + 0.05 * k,
                                   pitch_deg=30.0 + 0.5 * k) for k in range(n)])  # fmt: skip
    T_file = T_opt @ GL if axes == "opengl" else T_opt  # the file's camera axes
    t_s = T0_S + 0.175304 + 0.1 * np.arange(n)  # written with 6 decimals, as TUM RGB-D's
    gt = _write_tum(tmp_path / "groundtruth.txt", T_file, t_s)
    rng = np.random.default_rng(0)
    (tmp_path / "rgb").mkdir()
    for k in range(0, n, 2):  # an image at every other pose time (as a TUM sequence's rgb/ and groundtruth.txt)
        img = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        assert cv2.imwrite(str(tmp_path / "rgb" / f"{t_s[k]:.6f}.png"), img)
    cfg = ImagesConfig(images=str(tmp_path / "rgb"), fx=30.0, camera_axes=axes)
    ds = Dataset(convert_images(gt, tmp_path / "ds", cfg, progress=False))
    assert len(ds) == n // 2
    ck = _checkpoint(tmp_path / "m.pt", ds.frames.T_world_cam)

    out = tmp_path / "gt"
    assert _render(ck, gt, out, "--camera-axes", axes) == 0
    rows = _table(out / "poses.csv")
    by_stamp = {int(r["stamp_ns"]): i for i, r in enumerate(rows)}
    rendered = _table_poses(rows)
    idx = [by_stamp[int(s)] for s in ds.frames.stamp_ns]  # every dataset frame's timestamp is a line, exactly
    # the same pose: the importer reads the line's time exactly (int ns), so the image sits on the line's pose
    np.testing.assert_allclose(rendered[idx], ds.frames.T_world_cam, atol=1e-9)
    assert all(rows[i]["out_of_bounds"] == "false" and float(rows[i]["coverage_m"]) < 1e-6 for i in idx)
    # the renders of those lines are the renders of the dataset frames' own poses
    frames = _write_csv(tmp_path / "frames.csv", ds.frames.T_world_cam, ds.frames.stamp_ns / 1e9 - T0_S)
    assert _render(ck, frames, tmp_path / "ds-poses") == 0
    for j, i in enumerate(idx):
        want_depth = np.load(tmp_path / "ds-poses" / f"depth_{j:06d}.npy")
        np.testing.assert_allclose(np.load(out / f"depth_{i:06d}.npy"), want_depth, rtol=1e-5, atol=1e-4)
        got = cv2.imread(str(out / f"rgb_{i:06d}.png")).astype(int)
        want = cv2.imread(str(tmp_path / "ds-poses" / f"rgb_{j:06d}.png")).astype(int)
        assert np.abs(got - want).max() <= 1
    if axes == "opengl":  # without the flag the same lines are other poses (the camera turned about its x axis)
        assert _render(ck, gt, tmp_path / "no-flag") == 0
        wrong = _table_poses(_table(tmp_path / "no-flag" / "poses.csv"))
        assert not np.allclose(wrong[idx], ds.frames.T_world_cam, atol=1e-3)
        np.testing.assert_allclose(wrong[idx] @ GL, ds.frames.T_world_cam, atol=1e-6)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("hello world\n", "neither a CSV header nor a TUM line"),
        ("1305031102.0 1 2 3 0 0 0\n", "7 numbers"),
        ("0,0.0,1,2,3,0,0,0,1\n", "9 numbers: a TUM line has 8, and a CSV needs its header row first"),
        ("frame,time_s,tx\n0,0,1\n", "lacks the column(s) ty,tz,qx,qy,qz,qw"),
        ("name,lat,lon\nbench,33.1,-117.3\n", "lacks the column(s) frame,time_s,tx,ty,tz,qx,qy,qz,qw"),
        # a frames.csv of another layout (not exactly the format's header): not taken for a dataset's
        ("index,stamp_ns,tx,ty,tz,qx,qy,qz,qw\n0,0,1,2,3,0,0,0,1\n", "lacks the column(s) frame,time_s"),
        ("# only a comment\n\n", "no poses"),
        # localize images' table of fixes: the way to a trajectory named
        ("image,tx,ty,tz,qx,qy,qz,qw,confidence\n1.png,1,2,3,0,0,0,1,0.9\n", "run it with --out poses.tum"),
    ],
)
def test_a_file_of_neither_format_names_both(
    content: str, why: str, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.convert.trajectories import read_trajectory

    p = tmp_path / "traj.txt"
    p.write_text(content)
    with pytest.raises(ConfigError) as e:
        read_trajectory(p)
    msg = str(e.value)
    assert why in msg and f"header {CSV_HEADER}" in msg and f"'{TUM_LINE}'" in msg, msg
    assert "e.g. '1305031102.175304 1.3434" in msg  # a TUM line to copy
    assert f"a pose2rgbd dataset's frames.csv (header {FRAMES_HEADER}" in msg and "the dataset folder" in msg, msg
    assert _render(ckpt, p, tmp_path / "out") == 2  # a clear error, no traceback, nothing written
    err = capsys.readouterr().err
    assert CSV_HEADER in err and TUM_LINE in err and FRAMES_HEADER in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("1 0 0 20 0 0 0 1\n2 0 0 20 1 0 0 0 5\n", r"traj.txt:2: 9 numbers, the first line had 8"),
        ("1 0 0 20 2 0 0 1\n", r"traj.txt:1: quaternion \(qx qy qz qw\) has length 2.2361, not 1.*is w first\?"),
        ("1 0 0 nan 0 0 0 1\n", r"traj.txt:1: NaN or inf"),
        (f"{CSV_HEADER}\n0,0,1,2,abc,0,0,0,1\n", r"row 2, column tz: 'abc' is not a number"),
        (f"{CSV_HEADER}\n0,0,1,2,3,0,0,0,1\n\n# c\n1,0.1,1,2,3,0,0,0\n", r"row 5 has 8 fields, the header"),
        (f"{CSV_HEADER}\n", r"no rows \(only the header\)"),
    ],
)
def test_bad_lines_are_named(content: str, match: str, tmp_path: Path) -> None:
    from pose2rgbd.convert.trajectories import read_trajectory

    p = tmp_path / "traj.txt"
    p.write_text(content)
    with pytest.raises(ConfigError, match=match):
        read_trajectory(p)


# ------------------------------------------------------------------------------ which poses are outside
def test_the_warning_names_the_poses_outside_and_the_table_flags_them(
    ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pose2rgbd.inference import EngineConfig, load_engine

    T = _route(5)
    T[2:, 0, 3] += np.array([60.0, 80.0, 120.0])  # frames 2, 3, 4 far east of every training camera
    traj = _write_csv(tmp_path / "traj.csv", T, 0.1 * np.arange(5))
    with caplog.at_level(logging.INFO, logger="pose2rgbd.evaluation.trajectory"):
        assert _render(ckpt, traj, tmp_path / "out") == 0
    msg = "\n".join(r.getMessage() for r in caplog.records if "outside the training poses" in r.getMessage())
    assert "3 of 5 poses are outside the training poses" in msg, caplog.text
    eng = load_engine(EngineConfig(checkpoint=str(ckpt), device="cpu", warmup=0))
    m, d = eng.coverage(T)
    assert m is not None and d is not None
    for k in (2, 3, 4):
        assert f"frame {k} ({m[k]:.2f} m, {d[k]:.1f} deg)" in msg, msg
    assert "frame 0" not in msg and "frame 1" not in msg
    assert str(tmp_path / "out" / "poses.csv") in msg
    # every render's distance, flagged or not: the median and the farthest first
    cov = next(r.getMessage() for r in caplog.records if "distance to the nearest training camera:" in r.getMessage())
    assert f"median {np.median(m):.2f} m" in cov and cov.index(f"frame 4 ({m[4]:.2f} m") < cov.index("frame 3 ("), cov
    rows = _table(tmp_path / "out" / "poses.csv")
    assert [r["out_of_bounds"] for r in rows] == ["false", "false", "true", "true", "true"]
    np.testing.assert_allclose([float(r["coverage_m"]) for r in rows], m, rtol=1e-5)
    np.testing.assert_allclose([float(r["coverage_deg"]) for r in rows], d, rtol=1e-5, atol=1e-4)


def test_the_warning_lists_ten_then_counts_and_says_when_distances_are_unknown(tmp_path: Path) -> None:
    from pose2rgbd.evaluation.trajectory import Trajectory, out_of_bounds_message

    n = 15
    T = np.repeat(np.eye(4)[None], n, axis=0)
    stamps = (T0_S * 1e9 + 1e8 * np.arange(n)).astype(np.int64)
    tum = Trajectory(tmp_path / "gt.txt", "tum", stamps, T, np.arange(n) + 2)
    oob = np.ones(n, dtype=bool)
    oob[0] = False  # 14 outside
    m, d = np.arange(n) * 1.5, np.arange(n) * 2.0
    msg = out_of_bounds_message(tum, oob, m, d, tmp_path / "o" / "poses.csv")
    assert msg.startswith("14 of 15 poses are outside the training poses")
    for k in range(1, 11):  # the first ten outside, by line and time (exact, as written), with their distances
        t = f"{T0_S + 0.1 * k:.1f}".removesuffix(".0")
        assert f"line {k + 2} (t {t}) ({1.5 * k:.2f} m, {2.0 * k:.1f} deg)" in msg, (k, msg)
    assert "line 2 (" not in msg and "line 13 (" not in msg and msg.count(" deg)") == 10 and ", and 4 more" in msg
    csv_traj = Trajectory(tmp_path / "t.csv", "csv", stamps, T, np.arange(n) + 2, np.arange(n) + 100.0)
    msg = out_of_bounds_message(csv_traj, oob, None, None)
    assert "the checkpoint carries no training cameras, so no distances" in msg and "frame 101, frame 102" in msg


def test_pose_table_without_training_cameras_has_empty_distances(tmp_path: Path) -> None:
    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.evaluation.trajectory import render_trajectory
    from pose2rgbd.inference import EngineConfig, load_engine

    ck = _checkpoint(tmp_path / "m.pt", _train_poses(), training_poses=False)
    eng = load_engine(EngineConfig(checkpoint=str(ck), device="cpu", warmup=0))
    traj = read_trajectory(_write_tum(tmp_path / "gt.txt", _route(2), T0_S + np.array([0.0, 0.1])))
    res = render_trajectory(eng, traj, tmp_path / "out", progress=False)
    assert res.poses == tmp_path / "out" / "poses.csv" and res.frames == 2
    rows = _table(res.poses)
    assert [(r["coverage_m"], r["coverage_deg"]) for r in rows] == [("", "")] * 2


def test_a_csv_header_written_as_a_comment_is_the_header(tmp_path: Path) -> None:
    """``# frame,time_s,...`` (NumPy's savetxt with a header) is read as the CSV's header row."""
    from pose2rgbd.convert.trajectories import read_trajectory

    p = tmp_path / "traj.csv"
    p.write_text(f"# {CSV_HEADER}\n0,0.0,1,2,3,0,0,0,1\n1,0.1,1,2,4,0,0,0,1\n")
    traj = read_trajectory(p)
    assert traj.format == "csv" and len(traj) == 2 and list(traj.lines) == [2, 3]
    np.testing.assert_allclose(traj.T_world_cam[:, :3, 3], [[1, 2, 3], [1, 2, 4]])


def test_a_localize_images_tum_counts_images_not_seconds(ckpt: Path, tmp_path: Path) -> None:
    """`localize images --out poses.tum` writes the image's index where a time would be: the video's rate is then
    not one frame per second (from the index steps) but the default 10."""
    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.inference.image_sequence import _tum_header

    T = _route(3)
    lines = [_tum_header("map")] + [f"{i} " + " ".join(_fields(T[i])) for i in range(3)]
    p = tmp_path / "poses.tum"
    p.write_text("\n".join(lines) + "\n")
    traj = read_trajectory(p)
    assert traj.format == "tum" and not traj.timed and list(traj.stamps_ns) == [0, 10**9, 2 * 10**9]
    assert read_trajectory(_write_tum(tmp_path / "gt.txt", T, T0_S + np.array([0.0, 0.2, 0.4]))).timed
    for src, fps in ((p, 10.0), (tmp_path / "gt.txt", 5.0)):  # the default (not 1 per index) / 0.2 s between poses
        assert _render(ckpt, src, tmp_path / f"{src.stem}.mp4") == 0
        cap = cv2.VideoCapture(str(tmp_path / f"{src.stem}.mp4"))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps, rel=1e-3)
        cap.release()
    p.write_text("\n".join(["# index tx ty tz qx qy qz qw", *lines[1:]]) + "\n")
    assert not read_trajectory(p).timed


@pytest.mark.parametrize("name", ["frames", "v.mp4"])
def test_a_render_that_fails_midway_leaves_no_partial_output(name: str, tmp_path: Path) -> None:
    """The renders and the pose table appear together at the end: an error in the second batch leaves neither the
    output nor a hidden staging folder, and an earlier output where it was."""
    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.evaluation.trajectory import render_trajectory

    class Engine:  # renders the first batch, then fails
        calls = 0

        def out_of_bounds(self, T: np.ndarray) -> np.ndarray:
            return np.zeros(len(T), bool)

        def render(self, T: np.ndarray) -> object:
            Engine.calls += 1
            if Engine.calls > 1:
                raise RuntimeError("the engine stopped")
            n = len(T)
            return type("R", (), {"rgb": np.zeros((n, 8, 8, 3), np.uint8), "depth": np.ones((n, 8, 8), np.float32),
                                  "__len__": lambda self: n})()  # fmt: skip

    traj = read_trajectory(_write_tum(tmp_path / "gt.txt", _route(4), T0_S + 0.1 * np.arange(4)))
    out = tmp_path / "out" / name
    out.parent.mkdir()
    with pytest.raises(RuntimeError, match="the engine stopped"):
        render_trajectory(Engine(), traj, out, batch=2, progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == []  # nothing, not even a hidden staging folder
    earlier = out / "rgb_000000.png" if name == "frames" else out  # an earlier render at the same place
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_bytes(b"earlier")
    if name != "frames":  # an earlier render video has its pose table beside it
        (out.parent / "v.poses.csv").write_text("frame\n")
    Engine.calls = 0
    with pytest.raises(RuntimeError, match="the engine stopped"):
        render_trajectory(Engine(), traj, out, batch=2, progress=False, overwrite=True)
    kept = [name] if name == "frames" else [name, "v.poses.csv"]
    assert earlier.read_bytes() == b"earlier" and sorted(p.name for p in out.parent.iterdir()) == kept


class _Ok:
    """An engine that renders every pose (8x8, depth 1.5 m) with a known camera."""

    camera = PinholeCamera(8, 8, 10.0, 11.0, 3.5, 3.25)

    def out_of_bounds(self, T: np.ndarray) -> np.ndarray:
        return np.zeros(len(T), bool)

    def render(self, T: np.ndarray) -> object:
        n = len(T)
        return type("R", (), {"rgb": np.zeros((n, 8, 8, 3), np.uint8), "depth": np.full((n, 8, 8), 1.5, np.float32),
                              "__len__": lambda self: n})()  # fmt: skip


@pytest.mark.parametrize("name", ["frames", "v.mp4"])
def test_an_existing_output_is_refused_unless_overwrite_and_the_camera_is_written(name: str, tmp_path: Path) -> None:
    """A directory holding the user's own files is not replaced (before: it was, whole, and they were gone); with
    --overwrite an earlier render is, but not while it holds a file of the user's. The renders' camera comes with
    them as a ROS camera calibration YAML."""
    import yaml

    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.errors import OutputError, OutputExistsError
    from pose2rgbd.evaluation.trajectory import camera_file_path, render_trajectory

    traj = read_trajectory(_write_tum(tmp_path / "gt.txt", _route(3), T0_S + 0.1 * np.arange(3)))
    out = tmp_path / name
    render_trajectory(_Ok(), traj, out, batch=2, progress=False)
    cam = yaml.safe_load(camera_file_path(out).read_text())
    assert (cam["image_width"], cam["image_height"]) == (8, 8)
    assert cam["camera_matrix"]["data"] == [10.0, 0.0, 3.5, 0.0, 11.0, 3.25, 0.0, 0.0, 1.0]
    assert cam["projection_matrix"]["data"][:3] == [10.0, 0.0, 3.5] and cam["distortion_model"] == "plumb_bob"
    mine = out / "notes.txt" if name == "frames" else out
    if name == "frames":
        mine.write_text("mine")
    before = mine.read_bytes()
    with pytest.raises(OutputExistsError, match="holds an earlier render; pass --overwrite"):
        render_trajectory(_Ok(), traj, out, batch=2, progress=False)
    assert mine.read_bytes() == before
    if name == "frames":  # an earlier render is replaced whole: refused while it holds a file of the user's
        with pytest.raises(OutputError, match=r"an earlier render, but it also holds notes\.txt.*would delete it"):
            render_trajectory(_Ok(), traj, out, batch=2, progress=False, overwrite=True)
        assert mine.read_bytes() == before
        mine.unlink()
    render_trajectory(_Ok(), traj, out, batch=2, progress=False, overwrite=True)
    assert out.exists() and camera_file_path(out).is_file()
    if name == "frames":
        assert (out / "rgb_000002.png").is_file()
        foreign = tmp_path / "photos"
        foreign.mkdir()
        (foreign / "holiday.jpg").write_bytes(b"jpeg")
        for ow in (False, True):  # another folder: refused as such, with or without --overwrite
            with pytest.raises(OutputError, match="not a render"):
                render_trajectory(_Ok(), traj, foreign, batch=2, progress=False, overwrite=ow)
        assert (foreign / "holiday.jpg").read_bytes() == b"jpeg"
        empty = tmp_path / "empty"
        empty.mkdir()  # an empty folder is used
        render_trajectory(_Ok(), traj, empty, batch=2, progress=False)
        assert (empty / "rgb_000000.png").is_file()
    else:  # the user's own clip (no pose table beside it): refused as no render, with or without --overwrite
        clip = tmp_path / "my_flight.mp4"
        clip.write_bytes(b"the flight the dataset came from")
        for ow in (False, True):
            with pytest.raises(OutputError, match=r"no video that `render trajectory` wrote .*my_flight\.poses\.csv"):
                render_trajectory(_Ok(), traj, clip, batch=2, progress=False, overwrite=ow)
        assert clip.read_bytes() == b"the flight the dataset came from"


def test_depth_pngs_are_millimetres_rounded_to_the_nearest_and_zero_only_where_there_is_no_depth() -> None:
    from pose2rgbd.evaluation.trajectory import depth_millimetres

    metres = np.array([[1.2346, 1.2344, 0.0004, 70.0], [np.nan, np.inf, 0.0, -1.0]], np.float32)
    np.testing.assert_array_equal(depth_millimetres(metres), [[1235, 1234, 1, 65535], [0, 0, 0, 0]])
    assert depth_millimetres(metres).dtype == np.uint16


class _WithSigma(_Ok):
    """:class:`_Ok` with a depth uncertainty (0.1 m everywhere)."""

    def render(self, T: np.ndarray) -> object:
        res = super().render(T)
        res.depth_sigma = np.full((len(T), 8, 8), 0.1, np.float32)  # type: ignore[attr-defined]
        return res


@pytest.mark.parametrize("engine", [_Ok, _WithSigma])
def test_a_folder_of_renders_says_what_each_file_holds_and_its_units(engine: type, tmp_path: Path) -> None:
    """The folder itself says the depth PNGs are millimetres, the .npy metres (before: only --help said so)."""
    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.evaluation.trajectory import NOTE_NAME, render_trajectory

    traj = read_trajectory(_write_tum(tmp_path / "gt.txt", _route(3), T0_S + 0.1 * np.arange(3)))
    render_trajectory(engine(), traj, tmp_path / "out", batch=2, progress=False)
    note = (tmp_path / "out" / NOTE_NAME).read_text()
    lines = {line.split()[0]: line for line in note.splitlines()[2:]}
    assert "MILLIMETRES" in lines["depth_NNNNNN.png"] and "METRES" in lines["depth_NNNNNN.npy"]
    assert {"rgb_NNNNNN.png", "poses.csv", "camera.yaml"} <= set(lines)
    assert ("depth_sigma_NNNNNN.npy" in lines) == (engine is _WithSigma)  # only the files the folder holds
    if engine is _WithSigma:
        assert "METRES" in lines["depth_sigma_NNNNNN.npy"] and (tmp_path / "out" / "depth_sigma_000002.npy").is_file()
    # an earlier render with its note is replaced as before; a video gets no note beside it
    render_trajectory(engine(), traj, tmp_path / "out", batch=2, progress=False, overwrite=True)
    render_trajectory(engine(), traj, tmp_path / "v.mp4", batch=2, progress=False)
    assert not list(tmp_path.glob("*README*")) and not list(tmp_path.glob(f"v*{NOTE_NAME}"))


def test_depth_beyond_what_a_16_bit_png_holds_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A render whose depth reaches past 65.535 m (an outdoor scene): the PNGs hold 65535 there, and the run says
    what share of the depth that is and that the .npy files keep the metres."""
    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.evaluation.trajectory import render_trajectory

    class Far(_Ok):
        def render(self, T: np.ndarray) -> object:
            r = super().render(T)
            r.depth[:, :2] = 80.0  # 2 of 8 rows: 25 % of the depth
            return r

    traj = read_trajectory(_write_tum(tmp_path / "gt.txt", _route(3), T0_S + 0.1 * np.arange(3)))
    with caplog.at_level("WARNING"):
        render_trajectory(Far(), traj, tmp_path / "out", batch=2, progress=False)
    assert "25.0 % of the rendered depth lies at 65.535 m or farther" in caplog.text, caplog.text
    assert int(cv2.imread(str(tmp_path / "out" / "depth_000000.png"), cv2.IMREAD_UNCHANGED).max()) == 65535
    assert float(np.load(tmp_path / "out" / "depth_000000.npy").max()) == 80.0
    caplog.clear()
    with caplog.at_level("WARNING"):
        render_trajectory(_Ok(), traj, tmp_path / "near", batch=2, progress=False)
    assert "or farther" not in caplog.text


def test_a_mount_point_as_the_output_is_refused_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drive's mount point cannot be moved aside for the new output (EBUSY, after all the work): refused first,
    naming a folder inside it; a writer that adds files to the folder (a training run) still takes one."""
    import os

    from pose2rgbd.dataset import DatasetWriter
    from pose2rgbd.errors import OutputError
    from pose2rgbd.evaluation.trajectory import check_render_output
    from pose2rgbd.output_guard import refuse_existing

    usb = tmp_path / "usb"
    usb.mkdir()
    ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.path.realpath(p) == str(usb) or ismount(p))
    for ow in (False, True):
        with pytest.raises(
            OutputError, match=r"usb is a mount point .* write into a folder inside it, e\.g\. .*usb/out"
        ):
            check_render_output(usb, ow)
        with pytest.raises(OutputError, match="is a mount point"):
            DatasetWriter(usb, None, overwrite=ow)
    assert refuse_existing(usb, overwrite=True, renamed_into_place=False) == usb
    assert list(usb.iterdir()) == []


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", ["frames", "v.mp4"])
def test_an_output_it_cannot_write_is_refused_before_the_checkpoint_is_loaded(
    fault: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`render trajectory --out` in a folder that is a file, is read-only, or lies on a read-only file system: refused
    before the checkpoint is loaded or a pose rendered (before: after the model was loaded, as a traceback where the
    folder was a file), naming the path, the problem and what to do; nothing is written. The library's
    render_trajectory refuses it before its engine renders anything."""

    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.errors import OutputError
    from pose2rgbd.evaluation.trajectory import render_trajectory
    from pose2rgbd.inference import RenderEngine

    traj = _write_tum(tmp_path / "gt.txt", _route(2), T0_S + 0.1 * np.arange(2))
    out, says = unwritable_output(fault, tmp_path, monkeypatch, name, folder="renders", nested=False)

    def never(*a: object, **k: object) -> None:
        raise AssertionError("the checkpoint was loaded before the output was checked")

    monkeypatch.setattr(RenderEngine, "from_config", never)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert _render(tmp_path / "m.pt", traj, out) == 2
    err = capsys.readouterr().err
    assert f"pose2rgbd render: error: output {out} cannot be written: " in err and says in err, err
    assert err.rstrip().endswith("(nothing was written)") and "Traceback" not in err  # one instruction, no more

    class Engine(_Ok):
        def render(self, T: np.ndarray) -> object:
            raise AssertionError("rendered before the output was checked")

    with pytest.raises(OutputError, match="cannot be written"):
        render_trajectory(Engine(), read_trajectory(traj), out, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_renders_of_an_unscaled_place_say_its_units_not_metres(tmp_path: Path) -> None:
    """A checkpoint trained on poses without a metric scale (structure from motion without depth: the dataset's
    pose_units "unscaled", kept by train) gets no metres in the folder's note; the distance line names only poses
    farther than the median (none where all are as near)."""
    from pose2rgbd.convert.trajectories import read_trajectory
    from pose2rgbd.evaluation.trajectory import NOTE_NAME, Trajectory, coverage_message, pose_unit_of, render_trajectory

    class _Unscaled(_Ok):
        loaded = type("L", (), {"extra": {"pose_units": "unscaled"}})()

    assert pose_unit_of(_Unscaled()) == "units" and pose_unit_of(_Ok()) == "m"
    traj = read_trajectory(_write_tum(tmp_path / "gt.txt", _route(3), T0_S + 0.1 * np.arange(3)))
    render_trajectory(_Unscaled(), traj, tmp_path / "out", batch=2, progress=False)
    lines = {line.split()[0]: line for line in (tmp_path / "out" / NOTE_NAME).read_text().splitlines()[2:]}
    assert "tx ty tz (the training dataset's own units" in lines["poses.csv"] and "(METRES)" not in lines["poses.csv"]
    n = 4
    same = Trajectory(tmp_path / "t.tum", "tum", np.arange(n, dtype=np.int64), np.repeat(np.eye(4)[None], n, 0),
                      np.arange(1, n + 1))  # fmt: skip
    msg = coverage_message(same, np.zeros(n), np.zeros(n), unit="units")
    assert msg == "distance to the nearest training camera: median 0.00 units / 0.0 deg", msg


def test_renders_of_squeezed_frames_say_so() -> None:
    """A model trained on 480x271 frames renders 64x64 with non-square pixels (fx != fy): the command says so and
    what the source aspect was; square pixels say nothing."""
    from pose2rgbd.cli.render import squeeze_note

    cam = PinholeCamera(480, 271, 400.0, 400.0, 239.5, 135.0).scaled(64, 64)
    note = squeeze_note(cam)
    assert "64x64 with pixels 1.77 times as wide as tall" in note and "aspect 1.77:1" in note, note
    assert squeeze_note(PinholeCamera(64, 64, 50.0, 50.5, 31.5, 31.5)) == ""
