"""View synthesis / frame interpolation: the route geometry (linear, parabolic, slerp), and `pose2rgbd interpolate`
with the analytic ground-plane checkpoint between two poses and between two dataset frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.cli.main import main
from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation.view_synthesis import interpolate_route, pose_from_values
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw
from pose2rgbd.models import save_checkpoint
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint, render_ground_plane


def test_routes_linear_parabolic_and_slerp() -> None:
    A = look_down_pose(0.0, 0.0, 30.0, 0.0)
    B = look_down_pose(20.0, 0.0, 40.0, 1.0)
    lin = interpolate_route(A, B, 5, mode="linear")
    par = interpolate_route(A, B, 5, mode="parabolic", bulge=0.25)
    for r in (lin, par):
        np.testing.assert_allclose(r[0], A, atol=1e-9)
        np.testing.assert_allclose(r[-1], B, atol=1e-9)
    np.testing.assert_allclose(lin[2, :3, 3], [10.0, 0.0, 35.0], atol=1e-9)
    chord = np.linalg.norm(B[:3, 3] - A[:3, 3])
    # peak offset at s = 0.5: 0.25 * chord, horizontal, left of travel (travel +x -> left is +y)
    np.testing.assert_allclose(par[2, :3, 3], [10.0, 0.25 * chord, 35.0], atol=1e-9)
    np.testing.assert_allclose(par[1, 1, 3], 4 * 0.25 * 0.75 * 0.25 * chord, atol=1e-9)
    # slerp: half of the rotation from A to B at the middle
    full = Rotation.from_matrix(A[:3, :3].T @ B[:3, :3]).magnitude()
    half = Rotation.from_matrix(A[:3, :3].T @ lin[2, :3, :3]).magnitude()
    assert half == pytest.approx(full / 2, abs=1e-9)
    with pytest.raises(ConfigError, match="not one of"):
        interpolate_route(A, B, 5, mode="cubic")
    with pytest.raises(ConfigError, match="at least 2 frames"):
        interpolate_route(A, B, 1)
    with pytest.raises(ConfigError, match="unit norm"):
        pose_from_values([0, 0, 0, 0, 0, 0, 2.0])


@pytest.fixture
def gp_checkpoint(tmp_path: Path) -> Path:
    ck = make_ground_plane_checkpoint(24)
    return save_checkpoint(tmp_path / "gp.pt", ck.model, dataset_fingerprint="stub", camera=ck.camera)


def _video_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def _pose_args(T: np.ndarray) -> list[str]:
    q = matrix_to_quat_xyzw(T[:3, :3])
    return [repr(float(v)) for v in (*T[:3, 3], *q)]


def test_interpolate_between_two_poses(gp_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    A = look_down_pose(-20.0, -10.0, 30.0, 0.0)
    B = look_down_pose(25.0, 15.0, 35.0, 0.8)
    out = tmp_path / "vs"
    argv = ["interpolate", "--checkpoint", str(gp_checkpoint), "--from-pose", *_pose_args(A),
            "--to-pose", *_pose_args(B), "--out", str(out), "--frames", "7", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "linear: 7 frames" in capsys.readouterr().out
    for mode in ("linear", "parabolic"):
        video = out / f"route_{mode}.mp4"
        if video.exists():
            frames = _video_frames(video)
            assert len(frames) == 7 and frames[0].shape[0] >= 256
            assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5  # the view changes
        else:
            assert (out / f"route_{mode}.gif").exists()  # OpenCV without an MP4 encoder
        sheet = cv2.imread(str(out / f"sheet_{mode}.png"))
        assert sheet is not None and sheet.shape[1] > 256
        rows = (out / f"poses_{mode}.csv").read_text().splitlines()
        assert len(rows) == 8 and rows[0].startswith("frame,tx")
    # the route's first frame is the model's render at the start pose (the RGB half of the tile)
    ck = make_ground_plane_checkpoint(24)
    expect = render_ground_plane(ck, np.stack([A, B]))["rgb"]
    assert expect is not None
    if (out / "route_linear.mp4").exists():
        frames = _video_frames(out / "route_linear.mp4")
        tile = frames[0].shape[0]
        first = frames[0][20:, :tile].astype(int)  # below the label, RGB half (BGR from OpenCV)

        def diff(img: np.ndarray) -> float:
            ref = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_NEAREST)[20:, :, ::-1].astype(int)
            return float(np.abs(first - ref).mean())

        assert diff(expect[0]) < 12 and diff(expect[0]) < 0.5 * diff(expect[1])
    assert (out / "interpolation.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    # an earlier run is not replaced silently
    assert main(argv) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_interpolate_between_dataset_frames(gp_checkpoint: Path, tmp_path: Path) -> None:
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=6, n_route=3, size=16)
    out = tmp_path / "frames"
    argv = ["interpolate", "--checkpoint", str(gp_checkpoint), "--dataset", str(ds), "--from-frame", "0",
            "--to-frame", "4", "--out", str(out), "--frames", "4", "--mode", "linear", "--device", "cpu"]  # fmt: skip
    rc = main(argv)
    assert rc == 0
    assert (out / "sheet_linear.png").exists() and not (out / "sheet_parabolic.png").exists()
    # the real start and end tiles show the dataset's depth beside its image (before: a white half), in colour
    sheet = cv2.imread(str(out / "sheet_linear.png"))
    h = (sheet.shape[0] - 4) // 2 - 4  # two rows of tiles (real start, 4 renders, real end in columns of 5)
    start_depth = sheet[4 + 20 : 4 + h, 4 + h : 4 + 2 * h]  # below the label, the right half of the first tile
    assert start_depth.std() > 1 or start_depth.mean() < 250, start_depth.mean()
    import json

    info = json.loads((out / "interpolation.json").read_text())
    assert info["from_frame"] == 0 and info["to_frame"] == 4 and info["modes"] == ["linear"]
    # the two poses also as --from-pose / --to-pose take them: the same route rendered again by pose
    again = tmp_path / "by_pose"
    assert main(["interpolate", "--checkpoint", str(gp_checkpoint), "--from-pose",
                 *map(str, info["from_pose_xyz_qxyzw"]), "--to-pose", *map(str, info["to_pose_xyz_qxyzw"]),
                 "--out", str(again), "--frames", "4", "--mode", "linear", "--device", "cpu"]) == 0  # fmt: skip
    by_pose = json.loads((again / "interpolation.json").read_text())
    np.testing.assert_allclose(by_pose["from_pose"], info["from_pose"], atol=1e-9)
    np.testing.assert_allclose(by_pose["to_pose"], info["to_pose"], atol=1e-9)
    # poses and frames at the same time, or a frame out of range: clear errors
    assert main(["interpolate", "--checkpoint", str(gp_checkpoint), "--dataset", str(ds), "--from-frame", "0",
                 "--to-frame", "99", "--out", str(tmp_path / "x")]) != 0  # fmt: skip
    assert main(["interpolate", "--checkpoint", str(gp_checkpoint), "--out", str(tmp_path / "y")]) != 0
