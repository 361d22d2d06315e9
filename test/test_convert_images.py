"""`convert images`: transforms.json, COLMAP, KITTI and TUM sources made from simulator frames, round trip to
dataset v1, the pose check (an axis-flipped transforms.json is named), undistortion, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.convert.pose_check import check_poses
from pose2rgbd.convert.posed_images import ImagesConfig, PoseImportError
from pose2rgbd.convert.sources.images import convert_images, detect_format
from pose2rgbd.dataset import Dataset
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw

W, H = 40, 30
CAM = PinholeCamera(W, H, 30.0, 31.0, 19.2, 14.7)
GL = np.diag([1.0, -1.0, -1.0, 1.0])


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    from pose2rgbd.sim import look_at

    return look_at(np.asarray(eye, float), np.asarray(target, float))


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    from pose2rgbd.sim import make_world

    return make_world(seed=3, size_m=120)


@pytest.fixture(scope="module")
def ring(world) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """An object capture: 8 cameras on a ring looking at one point. Poses, RGB, depth."""
    from pose2rgbd.sim import Renderer

    a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    T = np.stack([_look_at([50 * np.cos(t), 50 * np.sin(t), 35 + 3 * np.sin(3 * t)], [0, 0, 4]) for t in a])
    rgb, depth = Renderer(world, CAM).render_batch(T)
    return T, rgb, depth


@pytest.fixture(scope="module")
def drive(world) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """A trajectory: 9 cameras moving along x, looking ahead and down, yawing slowly (constant rates)."""
    from pose2rgbd.sim import Renderer

    T = np.stack([_trajectory_pose(0.5 * k) for k in range(9)])
    rgb, _ = Renderer(world, CAM).render_batch(T)
    return T, rgb


def _trajectory_pose(t: float) -> np.ndarray:
    """Position linear in t, rotation at a constant rate about world z: linear / slerp interpolation is exact."""
    from scipy.spatial.transform import Rotation

    T0 = _look_at([-30, -5, 30], [10, -5, 5])
    R = Rotation.from_rotvec([0, 0, 0.05 * t]).as_matrix()
    T = T0.copy()
    T[:3, :3] = R @ T0[:3, :3]
    T[:3, 3] = T0[:3, 3] + np.array([6.0, 1.0, 0.0]) * t
    return T


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _transforms_json(d: Path, T: np.ndarray, rgb: np.ndarray, *, per_frame: bool = False, convert: bool = True,
                     extra: dict | None = None, cam: PinholeCamera = CAM) -> Path:  # fmt: skip
    intr = {"fl_x": cam.fx, "fl_y": cam.fy, "cx": cam.cx + 0.5, "cy": cam.cy + 0.5, "w": cam.width, "h": cam.height}
    intr.update(extra or {})
    frames = []
    for i in range(len(T)):
        M = T[i] @ GL if convert else T[i]
        _write_png(d / "images" / f"frame_{i:03d}.png", rgb[i])
        fr = {"file_path": f"images/frame_{i:03d}.png", "transform_matrix": M.tolist()}
        if per_frame:
            fr.update(intr)
        frames.append(fr)
    doc = {"frames": frames} if per_frame else {**intr, "frames": frames}
    (d / "transforms.json").write_text(json.dumps(doc))
    return d / "transforms.json"


def _poses_of(out: Path) -> np.ndarray:
    return Dataset(out).frames.T_world_cam


def test_transforms_json_round_trip(ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    T, rgb, _ = ring
    src = _transforms_json(tmp_path / "nerf", T, rgb)
    assert detect_format(src) == "transforms-json" and detect_format(src.parent) == "transforms-json"
    out = convert_images(src.parent, tmp_path / "ds", progress=False)
    ds = Dataset(out)
    assert len(ds) == len(T) and ds.manifest.depth_kind == "none"
    np.testing.assert_allclose(ds.frames.T_world_cam, T, atol=1e-6)
    assert ds.camera == CAM  # corner -> centre convention of cx, cy undone exactly
    np.testing.assert_array_equal(ds.read_rgb(3), rgb[3])  # pinhole source: pixels untouched
    s = json.loads((out / "report" / "summary.json").read_text())
    assert s["pose_check"]["verdict"] == "ok", s["pose_check"]
    names = {f["name"]: f["status"] for f in s["pose_check"]["findings"]}
    assert names["common_target"] == "ok" and names["upright"] == "ok"
    np.testing.assert_allclose(s["pose_check"]["target"], [0, 0, 4], atol=3.0)
    assert (out / "report" / "poses.png").stat().st_size > 10_000


def test_transforms_json_per_frame_intrinsics_and_fov(ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    T, rgb, depth = ring
    src = _transforms_json(tmp_path / "a", T, rgb, per_frame=True)
    np.testing.assert_allclose(_poses_of(convert_images(src, tmp_path / "da", progress=False)), T, atol=1e-6)
    # depth maps named as the images: a metric RGB-D dataset (16-bit png in mm: 0 = no measurement)
    (tmp_path / "depth").mkdir()
    for i in range(len(T)):
        if i % 2:
            np.save(tmp_path / "depth" / f"frame_{i:03d}.npy", depth[i])
        else:
            mm = np.where(depth[i] < 65.0, np.round(depth[i] * 1000), 0).astype(np.uint16)  # inf, far: 0
            cv2.imwrite(str(tmp_path / "depth" / f"frame_{i:03d}.png"), mm)
    dd = Dataset(convert_images(src, tmp_path / "dd", ImagesConfig(depth=str(tmp_path / "depth")), progress=False))
    assert dd.manifest.depth_kind == "metric"
    np.testing.assert_array_equal(dd.read_depth(1), depth[1])
    fin = depth[0] < 65.0
    assert 0 < fin.sum() < fin.size
    np.testing.assert_allclose(dd.read_depth(0)[fin], depth[0][fin], atol=6e-4)
    assert np.isnan(dd.read_depth(0)[~fin]).all()
    # camera_angle_x only (Blender synthetic): fx from the angle, centre principal point, w/h from the image
    cam = PinholeCamera.from_fov(W, H, 70.0)
    doc = json.loads(src.read_text())
    for fr in doc["frames"]:
        for k in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
            fr.pop(k)
        fr["file_path"] = fr["file_path"].removesuffix(".png")  # Blender lists paths without the suffix
    doc["camera_angle_x"] = float(np.deg2rad(70.0))
    src.write_text(json.dumps(doc))
    ds = Dataset(convert_images(src, tmp_path / "db", progress=False))
    np.testing.assert_allclose([ds.camera.fx, ds.camera.fy, ds.camera.cx, ds.camera.cy],
                               [cam.fx, cam.fy, cam.cx, cam.cy], atol=1e-9)  # fmt: skip


def test_flipped_transforms_json_is_named(ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    T, rgb, _ = ring
    # the user converted to optical already (or flipped twice): the file holds optical axes as if OpenGL
    src = _transforms_json(tmp_path / "flip", T, rgb, convert=False)
    out = convert_images(src, tmp_path / "ds", progress=False)
    s = json.loads((out / "report" / "summary.json").read_text())
    pc = s["pose_check"]
    assert pc["verdict"] == "suspect"
    target = next(f for f in pc["findings"] if f["name"] == "common_target")
    assert target["status"] == "fail" and "look away" in target["message"] and "OpenGL" in target["message"]
    assert "upside down" in " ".join(pc["mistakes"])  # the y axis is flipped too
    # --strict refuses it and writes nothing
    with pytest.raises(PoseImportError, match="look away"):
        convert_images(src, tmp_path / "strict", ImagesConfig(strict=True), progress=False)
    assert not (tmp_path / "strict").exists()
    # a world flipped upside down (the flip applied on the left): cameras still face the target, upside down
    Tw = np.stack([GL @ t for t in T])
    src2 = _transforms_json(tmp_path / "world", Tw, rgb)
    c2 = json.loads((convert_images(src2, tmp_path / "ds2", progress=False) / "report/summary.json").read_text())
    st = {f["name"]: f["status"] for f in c2["pose_check"]["findings"]}
    assert st["common_target"] == "ok" and st["upright"] == "warn" and c2["pose_check"]["verdict"] == "check"


def test_pose_check_trajectory_backwards_and_points(drive, ring) -> None:  # type: ignore[no-untyped-def]
    T, _ = drive
    ok = check_poses(T)
    assert {f.name: f.status for f in ok.findings}["motion"] == "ok" and ok.verdict == "ok"
    back = check_poses(T @ GL)  # OpenGL poses read as optical
    assert {f.name: f.status for f in back.findings}["motion"] == "warn" and "backwards" in back.mistakes[0]
    assert back.verdict == "check"  # a rear camera is possible
    up = np.array([0.0, 0.0, 1.0])
    assert check_poses(T, up_hint=up).verdict == "ok"
    named = check_poses(T @ GL, up_hint=up)  # backwards and upside down: the OpenGL / optical mix-up
    assert named.verdict == "suspect" and "OpenGL" in named.mistakes[0] and "180 deg" in named.mistakes[0]
    # a car in a turn: its optical axes meet behind it, which is no mistake
    a = np.linspace(0, np.pi / 2, 30)
    arc = np.stack([_look_at([20 * np.cos(t), 20 * np.sin(t), 1.5],
                             [20 * np.cos(t) - np.sin(t), 20 * np.sin(t) + np.cos(t), 1.4]) for t in a])  # fmt: skip
    assert check_poses(arc, up_hint=up).verdict == "ok"
    Tr, _, depth = ring
    pts = np.concatenate([(Tr[i, :3, :3] @ CAM.backproject(depth[i])[::5, ::5].reshape(-1, 3).T).T + Tr[i, :3, 3]
                          for i in range(len(Tr))])  # fmt: skip
    pts = pts[np.isfinite(pts).all(1)]
    assert check_poses(Tr, points=pts).findings[0].status == "ok"
    bad = check_poses(Tr @ GL, points=pts)  # camera axes turned (OpenGL read as optical)
    assert bad.findings[0].status == "fail" and "look away from the scene" in bad.findings[0].message
    assert bad.bad_cameras is not None and bad.bad_cameras.all()


def _qt_wxyz(T_cam_world: np.ndarray) -> list[float]:
    q = matrix_to_quat_xyzw(T_cam_world[:3, :3])
    return [q[3], q[0], q[1], q[2], *T_cam_world[:3, 3]]


def _colmap_text(model: Path, T: np.ndarray, depth: np.ndarray, cam_line: str) -> None:
    """A COLMAP text model: cameras, images (cam_from_world + observations), points3D from the rendered depth."""
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(f"# camera list\n1 {cam_line}\n")
    pts, tracks, obs = [], [], {i: [] for i in range(len(T))}
    for i in range(len(T)):
        for v in range(2, H, 7):
            for u in range(2, W, 7):
                z = float(depth[i, v, u])
                if not np.isfinite(z):
                    continue
                p = T[i, :3, :3] @ (z * np.array([(u - CAM.cx) / CAM.fx, (v - CAM.cy) / CAM.fy, 1.0])) + T[i, :3, 3]
                obs[i].append((u + 0.5, v + 0.5, len(pts) + 1))
                tracks.append((i + 1, len(obs[i]) - 1))
                pts.append(p)
    lines = ["# images"]
    for i in range(len(T)):
        vals = " ".join(repr(float(x)) for x in _qt_wxyz(np.linalg.inv(T[i])))
        lines.append(f"{i + 1} {vals} 1 img_{i:02d}.png")
        lines.append(" ".join(f"{u} {v} {pid}" for u, v, pid in obs[i]))
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    rows = [f"{k + 1} {p[0]:.17g} {p[1]:.17g} {p[2]:.17g} 128 128 128 0.5 {tracks[k][0]} {tracks[k][1]}\n"
            for k, p in enumerate(pts)]  # fmt: skip
    (model / "points3D.txt").write_text("".join(rows))


def test_colmap_round_trip(ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    T, rgb, depth = ring
    proj = tmp_path / "proj"
    _colmap_text(proj / "sparse" / "0", T, depth, f"PINHOLE {W} {H} {CAM.fx} {CAM.fy} {CAM.cx + 0.5} {CAM.cy + 0.5}")
    for i in range(len(T)):
        _write_png(proj / "images" / f"img_{i:02d}.png", rgb[i])
    assert detect_format(proj) == "colmap"
    out = convert_images(proj, tmp_path / "ds", progress=False)  # images/ found beside sparse/
    ds = Dataset(out)
    np.testing.assert_allclose(ds.frames.T_world_cam, T, atol=1e-6)
    assert ds.camera == CAM and ds.manifest.name == "proj"  # named after the project, not sparse/0
    s = json.loads((out / "report" / "summary.json").read_text())
    f = s["pose_check"]["findings"][0]
    assert f["name"] == "points_in_front" and f["status"] == "ok" and f["values"]["median_fraction_in_front"] == 1.0
    # the same model as .bin files (written by pycolmap) reads the same
    import pycolmap

    rec = pycolmap.Reconstruction(str(proj / "sparse" / "0"))
    (tmp_path / "bin").mkdir()
    rec.write_binary(str(tmp_path / "bin"))
    assert (tmp_path / "bin" / "cameras.bin").is_file()
    cfg = ImagesConfig(images=str(proj / "images"))
    np.testing.assert_allclose(_poses_of(convert_images(tmp_path / "bin", tmp_path / "dsb", cfg, progress=False)), T,
                               atol=1e-6)  # fmt: skip
    # an unsupported camera model is named with what to do
    m2 = tmp_path / "fish"
    _colmap_text(m2, T, depth, f"FOV {W} {H} 30 30 20 15 0.5")
    with pytest.raises(PoseImportError, match=r"FOV is not supported.*image_undistorter"):
        convert_images(m2, tmp_path / "d2", ImagesConfig(images=str(proj / "images")), progress=False)
    assert not (tmp_path / "d2").exists()


@pytest.mark.parametrize(
    ("model", "params", "expect"),
    [
        ("SIMPLE_PINHOLE", [50, 32, 24], (50, 50, 31.5, 23.5, ())),
        ("PINHOLE", [50, 51, 32, 24], (50, 51, 31.5, 23.5, ())),
        ("SIMPLE_RADIAL", [50, 32, 24, 0.1], (50, 50, 31.5, 23.5, (0.1, 0, 0, 0))),
        ("RADIAL", [50, 32, 24, 0.1, -0.02], (50, 50, 31.5, 23.5, (0.1, -0.02, 0, 0))),
        ("OPENCV", [50, 51, 32, 24, 0.1, -0.02, 0.001, 0.002], (50, 51, 31.5, 23.5, (0.1, -0.02, 0.001, 0.002))),
        ("FULL_OPENCV", [50, 51, 32, 24, 0.1, -0.02, 0.001, 0.002, 0.01, 0.02, 0.03, 0.04],
         (50, 51, 31.5, 23.5, (0.1, -0.02, 0.001, 0.002, 0.01, 0.02, 0.03, 0.04))),
        ("SIMPLE_RADIAL_FISHEYE", [50, 32, 24, 0.1], (50, 50, 31.5, 23.5, (0.1, 0, 0, 0))),
        ("RADIAL_FISHEYE", [50, 32, 24, 0.1, -0.02], (50, 50, 31.5, 23.5, (0.1, -0.02, 0, 0))),
        ("OPENCV_FISHEYE", [50, 51, 32, 24, 0.1, -0.02, 0.003, 0.004],
         (50, 51, 31.5, 23.5, (0.1, -0.02, 0.003, 0.004))),
    ],
)  # fmt: skip
def test_colmap_camera_models(model: str, params: list[float], expect: tuple) -> None:  # type: ignore[type-arg]
    import pycolmap

    from pose2rgbd.convert.posed_images.colmap import _camera

    c = _camera(pycolmap.Camera(model=model, width=64, height=48, params=params), "cam")
    assert (c.width, c.height) == (64, 48)
    np.testing.assert_allclose([c.fx, c.fy, c.cx, c.cy], expect[:4])
    np.testing.assert_allclose(c.dist, expect[4])
    assert c.model == ("fisheye" if "FISHEYE" in model else "opencv")  # OpenCV's model of the same polynomial


def test_kitti_round_trip_and_camera2(drive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pose2rgbd.cli.main import main

    T, rgb = drive
    seq = tmp_path / "sequences" / "00"
    for i in range(len(T)):
        _write_png(seq / "image_0" / f"{i:06d}.png", rgb[i])
    poses = tmp_path / "poses" / "00.txt"
    poses.parent.mkdir()
    poses.write_text("".join(" ".join(f"{x:.17g}" for x in t[:3].ravel()) + "\n" for t in T))
    P = np.zeros((3, 4))
    P[:, :3] = CAM.K
    (seq / "calib.txt").write_text("P0: " + " ".join(f"{x:.12e}" for x in P.ravel()) + "\n")
    (seq / "times.txt").write_text("".join(f"{0.1 * i:.6e}\n" for i in range(len(T))))
    assert detect_format(poses) == "kitti"
    out = tmp_path / "ds"
    assert main(["convert", "images", str(poses), "--images", str(seq / "image_0"), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    ds = Dataset(out)
    np.testing.assert_allclose(ds.frames.T_world_cam, T, atol=1e-6)
    assert ds.camera == CAM and ds.frames.stamp_ns[3] == 300_000_000
    assert json.loads((out / "report" / "summary.json").read_text())["pose_check"]["verdict"] == "ok"
    # camera 2 (image_2): P2 carries the baseline; poses move by it along camera x
    (seq / "image_0").rename(seq / "image_2")
    P2 = P.copy()
    P2[0, 3] = CAM.fx * 0.06  # camera 0's origin at x = +0.06 m in camera 2: camera 2 sits 0.06 m to the left
    (seq / "calib.txt").write_text("P0: " + " ".join(f"{x:.12e}" for x in P.ravel()) + "\nP2: "
                                   + " ".join(f"{x:.12e}" for x in P2.ravel()) + "\n")  # fmt: skip
    cfg = ImagesConfig(images=str(seq / "image_2"))
    T2 = _poses_of(convert_images(poses, tmp_path / "ds2", cfg, progress=False))
    np.testing.assert_allclose(T2[:, :3, 3], T[:, :3, 3] - 0.06 * T[:, :3, 0], atol=1e-6)
    # count mismatch
    (seq / "image_2" / "000008.png").unlink()
    with pytest.raises(PoseImportError, match="9 poses but 8 images"):
        convert_images(poses, tmp_path / "ds3", cfg, progress=False)


def test_tum_interpolated_by_timestamp(drive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    T, rgb = drive
    t0 = 1305031102.0
    tp = np.arange(0, 4.01, 0.05)  # poses at 20 Hz, images at 2 Hz shifted by 13 ms (between poses)
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for t in tp:
        P = _trajectory_pose(t)
        q = matrix_to_quat_xyzw(P[:3, :3])
        lines.append(f"{t0 + t:.6f} " + " ".join(f"{x:.12f}" for x in (*P[:3, 3], *q)))
    traj = tmp_path / "groundtruth.txt"
    traj.write_text("\n".join(lines) + "\n")
    ti = 0.5 * np.arange(len(T)) + 0.013
    ti[-1] = 4.0  # the last image exactly on the last pose
    truth = np.stack([_trajectory_pose(t) for t in ti])
    for i in range(len(T)):
        _write_png(tmp_path / "rgb" / f"{t0 + ti[i]:.6f}.png", rgb[i])
    assert detect_format(traj) == "tum"
    with pytest.raises(Exception, match="--fx"):
        convert_images(traj, tmp_path / "no", ImagesConfig(images=str(tmp_path / "rgb")), progress=False)
    cfg = ImagesConfig(images=str(tmp_path / "rgb"), fx=CAM.fx, fy=CAM.fy, cx=CAM.cx, cy=CAM.cy)
    ds = Dataset(convert_images(traj, tmp_path / "ds", cfg, progress=False))
    np.testing.assert_allclose(ds.frames.T_world_cam, truth, atol=1e-6)
    assert ds.camera == CAM
    np.testing.assert_allclose(ds.frames.stamp_ns / 1e9 - t0, ti, atol=1e-6)
    # an image 0.3 s after the trajectory ends has no pose within the tolerance
    _write_png(tmp_path / "rgb" / f"{t0 + 4.3:.6f}.png", rgb[0])
    with pytest.raises(PoseImportError, match=r"1 of 10 images have no pose within 0.02 s"):
        convert_images(traj, tmp_path / "ds2", cfg, progress=False)
    cfg.skip_unmatched = True
    assert len(Dataset(convert_images(traj, tmp_path / "ds3", cfg, progress=False))) == len(T)
    # distortion given by flags is undone like any other
    cfg.distortion = [-0.1, 0.01]
    out = convert_images(traj, tmp_path / "ds4", cfg, progress=False)
    assert json.loads((out / "report" / "summary.json").read_text())["undistortion"]["frames_remapped"] == len(T)


def _distort(img: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """The image a lens with ``dist`` would take of the pinhole image ``img`` (same K)."""
    h, w = img.shape[:2]
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    und = cv2.undistortPoints(np.stack([u, v], -1).reshape(-1, 1, 2), K, dist, P=K).reshape(h, w, 2)
    return cv2.remap(img, und[..., 0], und[..., 1], cv2.INTER_LINEAR)


def test_undistortion_maps_known_points(tmp_path: Path) -> None:
    cam = PinholeCamera(160, 120, 110.0, 110.0, 80.3, 59.6)
    dist = np.array([-0.25, 0.06, 0.001, -0.002])
    # dots at known 3D directions; the distorted photo places them where the lens would
    dirs = np.array([[x, y, 1.0] for x in (-0.55, 0.0, 0.5) for y in (-0.4, 0.05, 0.4)])
    uv_d = cv2.projectPoints(dirs, np.zeros(3), np.zeros(3), cam.K, dist)[0].reshape(-1, 2)
    img = np.zeros((cam.height, cam.width), np.float32)
    yy, xx = np.mgrid[0 : cam.height, 0 : cam.width]
    for u, v in uv_d:
        img += np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.2**2))
    rgb = np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    T = np.stack([_look_at([30 * np.cos(a), 30 * np.sin(a), 20], [0, 0, 0]) for a in np.linspace(0, 6, 4)])
    extra = {"k1": dist[0], "k2": dist[1], "p1": dist[2], "p2": dist[3]}
    src = _transforms_json(tmp_path / "lens", T, np.repeat(rgb[None], 4, 0), extra=extra, cam=cam)
    out = convert_images(src, tmp_path / "ds", progress=False)
    ds = Dataset(out)
    c = ds.camera
    assert (c.width, c.height) == (160, 120) and c != cam
    s = json.loads((out / "report" / "summary.json").read_text())
    assert s["undistortion"]["frames_remapped"] == 4
    got = ds.read_rgb(0)[..., 0].astype(np.float64)
    for d in dirs:  # each dot lands where the dataset's pinhole camera projects its direction
        uv, _ = c.project(d)
        if not (3 <= uv[0] < c.width - 3 and 3 <= uv[1] < c.height - 3):
            continue
        u0, v0 = round(float(uv[0])), round(float(uv[1]))
        win = got[v0 - 3 : v0 + 4, u0 - 3 : u0 + 4]
        assert win.sum() > 200, f"no dot near {uv}"
        cy, cx = np.mgrid[v0 - 3 : v0 + 4, u0 - 3 : u0 + 4]
        np.testing.assert_allclose([(win * cx).sum() / win.sum(), (win * cy).sum() / win.sum()], uv, atol=0.25)
    # a straight line stays straight: a distorted photo of straight lines comes back straight
    K = cam.K
    grid = np.zeros((cam.height, cam.width, 3), np.uint8)
    grid[::20] = 255  # horizontal lines only (crossings would bias the centroids below)
    d_img = _distort(grid, K, dist)
    src2 = _transforms_json(tmp_path / "grid", T, np.repeat(d_img[None], 4, 0), extra=extra, cam=cam)
    ds2 = Dataset(convert_images(src2, tmp_path / "ds2", ImagesConfig(undistort_alpha=0.0), progress=False))
    back = ds2.read_rgb(0)[..., 0].astype(np.float64)
    # each line comes back as a row of constant v where the dataset camera projects it
    c2 = ds2.camera
    for v_line in range(20, cam.height - 10, 20):
        y = (v_line - cam.cy) / cam.fy
        v_out = c2.fy * y + c2.cy
        if not 4 <= v_out < c2.height - 4:
            continue
        band = back[int(v_out) - 3 : int(v_out) + 4, 10:-10]
        rows = np.arange(int(v_out) - 3, int(v_out) + 4)[:, None]
        cent = (band * rows).sum(0) / np.maximum(band.sum(0), 1e-9)
        ok = band.sum(0) > 100
        assert ok.sum() > 50 and np.ptp(cent[ok]) < 0.5 and abs(np.median(cent[ok]) - v_out) < 0.4


def test_bad_inputs(ring, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    T, rgb, _ = ring
    src = _transforms_json(tmp_path / "n", T, rgb)
    (tmp_path / "n" / "images" / "frame_002.png").unlink()
    with pytest.raises(PoseImportError, match=r"1 of 8 images are missing.*frame_002"):
        convert_images(src, tmp_path / "o1", progress=False)
    odd = tmp_path / "odd.txt"
    odd.write_text("1 2 3 4 5 6 7\n")
    with pytest.raises(PoseImportError, match=r"7 numbers per line.*--format"):
        detect_format(odd)
    doc = json.loads(src.read_text())
    doc["frames"][0]["transform_matrix"][1] = [-x for x in doc["frames"][0]["transform_matrix"][1]]
    _write_png(tmp_path / "n" / "images" / "frame_002.png", rgb[2])
    src.write_text(json.dumps(doc))
    with pytest.raises(PoseImportError, match=r"frames\[0\].*reflection.*single camera axis"):
        convert_images(src, tmp_path / "o2", progress=False)
    with pytest.raises(PoseImportError, match="needs the image folder"):
        convert_images(_kitti_file(tmp_path), tmp_path / "o3", progress=False)
    # the output may not be inside the input
    doc["frames"][0]["transform_matrix"][1] = [-x for x in doc["frames"][0]["transform_matrix"][1]]
    src.write_text(json.dumps(doc))
    with pytest.raises(Exception, match="input"):
        convert_images(src.parent, src.parent / "ds", progress=False)
    # wrong image size for the camera
    _write_png(tmp_path / "n" / "images" / "frame_002.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(
        PoseImportError,
        match="1 of 8 images do not have the size of their camera: 1 is 10x10 where its camera says 40x30",
    ):
        convert_images(src, tmp_path / "o4", progress=False)
    assert not (tmp_path / "o4").exists()


def _kitti_file(d: Path) -> Path:
    p = d / "k.txt"
    p.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    return p


def test_cli_error_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.cli.main import main

    odd = tmp_path / "odd.txt"
    odd.write_text("# t x y z\n1 2 3 4\n")
    assert main(["convert", "images", str(odd), "--out", str(tmp_path / "o"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "4 numbers per line" in err and "--format" in err and not (tmp_path / "o").exists()
    traj = tmp_path / "t.txt"
    traj.write_text("0.0 0 0 1 0 0 0 1\n")  # TUM without images
    assert main(["convert", "images", str(traj), "--out", str(tmp_path / "o")]) != 0
    assert "--images DIR" in capsys.readouterr().err


def test_own_reader_through_write_posed_images(drive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The docs' recipe for another format: build PosedImages, call write_posed_images."""
    from pose2rgbd.convert.posed_images import PosedImages, SourceCamera
    from pose2rgbd.convert.sources.images import write_posed_images

    T, rgb = drive
    paths = []
    for i in range(len(T)):
        paths.append(tmp_path / "imgs" / f"{i:04d}.jpg")
        paths[-1].parent.mkdir(exist_ok=True)
        cv2.imwrite(str(paths[-1]), rgb[i][..., ::-1])
    cam = SourceCamera(W, H, CAM.fx, CAM.fy, CAM.cx, CAM.cy)
    pi = PosedImages(kind="my-format", source=tmp_path / "imgs", images=paths, T_world_cam=T,
                     stamps_ns=np.arange(len(T)) * 100_000_000, cameras=[cam] * len(T))  # fmt: skip
    with pytest.raises(PoseImportError, match="time order"):
        PosedImages(kind="x", source=tmp_path, images=paths, T_world_cam=T, stamps_ns=-np.arange(len(T)),
                    cameras=[cam] * len(T))  # fmt: skip
    with pytest.raises(PoseImportError, match="9 images but 8 poses"):
        PosedImages(kind="x", source=tmp_path, images=paths, T_world_cam=T[:8], stamps_ns=np.arange(len(T)),
                    cameras=[cam] * len(T))  # fmt: skip
    with pytest.raises(Exception, match="input"):  # never written into what it reads
        write_posed_images(pi, tmp_path / "imgs" / "ds", progress=False)
    ds = Dataset(write_posed_images(pi, tmp_path / "ds", progress=False))
    np.testing.assert_allclose(ds.frames.T_world_cam, T, atol=1e-6)
    assert ds.manifest.sources[0]["kind"] == "my-format" and (tmp_path / "ds" / "report" / "poses.png").is_file()


def test_tum_photos_without_flags_take_their_exif_focal(drive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A TUM trajectory of JPEGs and no --fx: each photo's camera from its EXIF focal length (35 mm equivalent:
    fx = f35 x diagonal / 43.27 mm), the principal point at the centre; a photo without one names the flags."""
    from PIL import Image

    T, rgb = drive
    f35 = 40.0
    for i in range(len(T)):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[41989] = int(f35)  # FocalLengthIn35mmFilm
        (tmp_path / "rgb").mkdir(exist_ok=True)
        Image.fromarray(rgb[i]).save(tmp_path / "rgb" / f"{10.0 + i:.6f}.jpg", exif=exif, quality=95)
    traj = tmp_path / "groundtruth.txt"
    traj.write_text("".join(f"{10.0 + i:.6f} " + " ".join(f"{x:.12f}" for x in (*T[i][:3, 3],
                            *matrix_to_quat_xyzw(T[i][:3, :3]))) + "\n" for i in range(len(T))))  # fmt: skip
    ds = Dataset(convert_images(traj, tmp_path / "ds", ImagesConfig(images=str(tmp_path / "rgb")), progress=False))
    fx = f35 * np.hypot(W, H) / np.hypot(36.0, 24.0)
    assert ds.camera == PinholeCamera(W, H, fx, fx, (W - 1) / 2, (H - 1) / 2)
    np.testing.assert_allclose(ds.frames.T_world_cam, T, atol=1e-6)
    Image.fromarray(rgb[0]).save(tmp_path / "rgb" / f"{10.0:.6f}.jpg", quality=95)  # one photo without EXIF
    with pytest.raises(Exception, match=r"1 of 9 images have no usable EXIF focal length.*--fx"):
        convert_images(traj, tmp_path / "ds2", ImagesConfig(images=str(tmp_path / "rgb")), progress=False)


@pytest.mark.parametrize("axes", ["optical", "opengl"])
def test_tum_quaternions_written_w_first_are_never_passed(drive, tmp_path: Path, axes: str) -> None:  # type: ignore[no-untyped-def]
    """A TUM trajectory whose quaternions are written w first (qw qx qy qz): the import's pose check names the
    order or says it could not verify it -- also after --camera-axes opengl, which a hint about cameras that look
    backwards may suggest (it made such an import pass, 91 deg off)."""
    T, rgb = drive
    t0 = 1305031102.0
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for k in range(len(T)):
        q = matrix_to_quat_xyzw(T[k, :3, :3])
        lines.append(f"{t0 + 0.5 * k:.6f} " + " ".join(f"{x:.12f}" for x in (*T[k, :3, 3], q[3], *q[:3])))
        _write_png(tmp_path / "rgb" / f"{t0 + 0.5 * k:.6f}.png", rgb[k])
    traj = tmp_path / "groundtruth.txt"
    traj.write_text("\n".join(lines) + "\n")
    cfg = ImagesConfig(images=str(tmp_path / "rgb"), fx=CAM.fx, fy=CAM.fy, cx=CAM.cx, cy=CAM.cy, camera_axes=axes)
    out = convert_images(traj, tmp_path / "ds", cfg, progress=False)
    pc = json.loads((out / "report" / "summary.json").read_text())["pose_check"]
    assert pc["verdict"] != "ok", pc
    q = next((f for f in pc["findings"] if f["name"] == "quaternion_order"), None)
    assert q is not None, [(f["name"], f["status"], f["message"][:80]) for f in pc["findings"]]
    assert q["status"] == "warn" and "w first (qw qx qy qz)" in q["message"], q["message"]


def test_a_correct_tum_import_without_depth_says_what_it_could_not_check(
    drive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """A correct TUM trajectory (quaternions qx qy qz qw as the format has them) imported without depth: read w first
    the cameras look along their travel too, so the order cannot be verified -- the same findings as a file written
    w first, which must not pass (test above): CHECK, never SUSPECT. The warning says that nothing points to a
    mistake, what it could not test and why (no depth), and how to give depth to a TUM import (--depth-list)."""
    from pose2rgbd.cli.main import main

    T, rgb = drive
    t0 = 1305031102.0
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for k in range(len(T)):
        q = matrix_to_quat_xyzw(T[k, :3, :3])
        lines.append(f"{t0 + 0.5 * k:.6f} " + " ".join(f"{x:.12f}" for x in (*T[k, :3, 3], *q)))
        _write_png(tmp_path / "rgb" / f"{t0 + 0.5 * k:.6f}.png", rgb[k])
    traj = tmp_path / "groundtruth.txt"
    traj.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    assert main(["convert", "images", str(traj), "--format", "tum", "--images", str(tmp_path / "rgb"), "--fx",
                 str(CAM.fx), "--fy", str(CAM.fy), "--cx", str(CAM.cx), "--cy", str(CAM.cy), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    np.testing.assert_allclose(Dataset(out).frames.T_world_cam, T, atol=1e-6)
    pc = json.loads((out / "report" / "summary.json").read_text())["pose_check"]
    assert pc["verdict"] == "check" and "pose check: CHECK" in text, text
    assert [f["name"] for f in pc["findings"] if f["status"] in ("warn", "fail")] == ["quaternion_order"], pc
    q = next(f for f in pc["findings"] if f["name"] == "quaternion_order")["message"]
    assert q.startswith("the quaternions' order could not be verified (nothing points to a mistake"), q
    assert "The import has no depth to test the order against" in q and "--depth-list FILE" in q, q
    assert f"WARNING: {q}" in text
