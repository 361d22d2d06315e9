"""`convert images` of distorted cameras (transforms.json OPENCV / OPENCV_FISHEYE, COLMAP text and binary models
with distortion, KITTI / TUM flags) undistorted once onto the pinhole the manifest states; the lens kept in the
manifest's source_cameras; LLFF poses_bounds.npy; the folder error naming the missing COLMAP file; manifests
without the new keys read as before."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.convert.posed_images import ImagesConfig, PoseImportError
from pose2rgbd.convert.sources.images import convert_images, detect_format
from pose2rgbd.dataset import Dataset
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.geometry.lens import Distortion

W, H = 96, 72
SRC = PinholeCamera(W, H, 60.0, 61.0, 47.3, 35.6)  # the source camera's pinhole part (OpenCV convention)
GL = np.diag([1.0, -1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def scene():  # type: ignore[no-untyped-def]
    """Three cameras around a point of the simulated city, rendered on a pinhole canvas three times the source
    image (the rays a distorting lens bends in from outside its pinhole field of view)."""
    from pose2rgbd.sim import Renderer, look_at, make_world

    world = make_world(seed=3, size_m=120)
    a = np.linspace(0, 2 * np.pi, 3, endpoint=False)
    T = np.stack([look_at(np.array([50 * np.cos(t), 50 * np.sin(t), 35.0]), np.array([0.0, 0.0, 4.0])) for t in a])
    canvas = PinholeCamera(3 * W, 3 * H, SRC.fx, SRC.fy, SRC.cx + W, SRC.cy + H)
    big, _ = Renderer(world, canvas).render_batch(T)
    return world, T, big


def _distorted(big: np.ndarray, lens: Distortion) -> np.ndarray:
    """The image of the source camera through ``lens``: each pixel samples the canvas where its ray lands."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    und = lens.undistort_points(np.stack([u, v], -1).reshape(-1, 2), SRC.K).reshape(H, W, 2)
    und = (und + np.array([W, H])).astype(np.float32)  # canvas pixels
    return cv2.remap(big, und[..., 0], und[..., 1], cv2.INTER_LINEAR)


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def _qt_wxyz(T: np.ndarray) -> list[float]:
    from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw

    x, y, z, w = matrix_to_quat_xyzw(T[:3, :3])
    return [w, x, y, z, *T[:3, 3]]


def _colmap(model: Path, T: np.ndarray, cam_line: str) -> None:
    """A COLMAP text model of the cameras (no points)."""
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(f"1 {cam_line}\n")
    lines = []
    for i in range(len(T)):
        vals = " ".join(repr(float(x)) for x in _qt_wxyz(np.linalg.inv(T[i])))
        lines += [f"{i + 1} {vals} 1 img_{i:02d}.png", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("")


def _check_undistorted(world, T: np.ndarray, out: Path, distorted: list[np.ndarray]) -> Dataset:  # type: ignore[no-untyped-def]
    """The dataset's images are what its pinhole camera sees: much closer to a pinhole render at that camera than
    the distorted photo is to a render at the source's pinhole part (the error of ignoring the lens)."""
    from pose2rgbd.sim import Renderer

    ds = Dataset(out)
    ref, _ = Renderer(world, ds.camera).render_batch(T)
    naive, _ = Renderer(world, SRC).render_batch(T)
    for i in range(len(T)):
        got = ds.read_rgb(i).astype(np.float64)
        valid = cv2.erode((got.sum(-1) > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        err = np.abs(got - ref[i])[valid].mean()
        lit = distorted[i].sum(-1) > 0
        err_naive = np.abs(distorted[i].astype(np.float64) - naive[i])[lit].mean()
        assert valid.mean() > 0.8 and err < 0.45 * err_naive, (i, err, err_naive)
    return ds


@pytest.mark.parametrize(
    ("lens", "camera_model"),
    [(Distortion("opencv", (-0.3, 0.08, 0.001, -0.001)), "OPENCV"),
     (Distortion("fisheye", (0.05, 0.01, -0.002, 0.001)), "OPENCV_FISHEYE")],
)  # fmt: skip
def test_transforms_json_lens_undistorted_once(scene, tmp_path: Path, lens: Distortion, camera_model: str) -> None:  # type: ignore[no-untyped-def]
    world, T, big = scene
    dist = [_distorted(big[i], lens) for i in range(len(T))]
    keys = ("k1", "k2", "k3", "k4") if lens.model == "fisheye" else ("k1", "k2", "p1", "p2")
    doc = {"camera_model": camera_model, "fl_x": SRC.fx, "fl_y": SRC.fy, "cx": SRC.cx + 0.5, "cy": SRC.cy + 0.5,
           "w": W, "h": H, **dict(zip(keys, lens.coeffs)), "frames": []}  # fmt: skip
    for i in range(len(T)):
        _write(tmp_path / "src" / "images" / f"f{i}.png", dist[i])
        doc["frames"].append({"file_path": f"images/f{i}.png", "transform_matrix": (T[i] @ GL).tolist()})
    (tmp_path / "src" / "transforms.json").write_text(json.dumps(doc))
    ds = _check_undistorted(world, T, convert_images(tmp_path / "src", tmp_path / "ds", progress=False), dist)
    m = ds.manifest
    assert ds.camera != SRC and m.pose_units == "unscaled"
    (src,) = m.source_cameras
    assert src["model"] == lens.model and np.allclose(src["distortion"], lens.coeffs)
    assert np.allclose([src["fx"], src["fy"], src["cx"], src["cy"]], [SRC.fx, SRC.fy, SRC.cx, SRC.cy])


def test_colmap_models_with_distortion_text_and_binary(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """COLMAP OPENCV_FISHEYE (text) and FULL_OPENCV (binary, written by pycolmap): each lens read with its
    parameters (principal point moved from COLMAP's pixel-corner convention), undistorted onto the pinhole."""
    import pycolmap

    world, T, big = scene
    c = f"{SRC.fx} {SRC.fy} {SRC.cx + 0.5} {SRC.cy + 0.5}"
    cases = [
        (Distortion("fisheye", (0.05, 0.01, -0.002, 0.001)),
         f"OPENCV_FISHEYE {W} {H} {c} 0.05 0.01 -0.002 0.001", False),
        (Distortion("opencv", (-0.3, 0.1, 0.001, 0.0, 0.01, 0.02, 0.0, 0.0)),
         f"FULL_OPENCV {W} {H} {c} -0.3 0.1 0.001 0 0.01 0.02 0 0", True),
    ]  # fmt: skip
    for k, (lens, line, binary) in enumerate(cases):
        proj = tmp_path / f"p{k}"
        dist = [_distorted(big[i], lens) for i in range(len(T))]
        for i in range(len(T)):
            _write(proj / "images" / f"img_{i:02d}.png", dist[i])
        _colmap(proj / "sparse" / "0", T, line)
        if binary:
            model = proj / "sparse" / "0"
            rec = pycolmap.Reconstruction(str(model))
            for f in model.iterdir():
                f.unlink()
            rec.write_binary(str(model))
            assert (model / "cameras.bin").is_file() and not (model / "cameras.txt").exists()
        ds = _check_undistorted(world, T, convert_images(proj, tmp_path / f"ds{k}", progress=False), dist)
        (src,) = ds.manifest.source_cameras
        assert src["model"] == lens.model and np.allclose(src["distortion"], lens.coeffs)
        assert np.allclose([src["cx"], src["cy"]], [SRC.cx, SRC.cy]) and ds.manifest.pose_units == "unscaled"
        np.testing.assert_allclose(ds.frames.T_world_cam, T, atol=1e-6)


def test_trajectory_flags_distortion(tmp_path: Path) -> None:
    """KITTI / TUM: --distortion (k1[,k2...] padded) with --distortion-model; a wrong count is refused."""
    from pose2rgbd.errors import ConfigError

    cfg = ImagesConfig(fx=60.0, distortion=[-0.1, 0.01])
    cam = cfg.flag_camera(W, H, "x")
    assert cam.dist == (-0.1, 0.01, 0.0, 0.0) and cam.model == "opencv"
    cam = ImagesConfig(fx=60.0, distortion=[0.1, 0.0, 0.0, 0.01], distortion_model="fisheye").flag_camera(W, H, "x")
    assert cam.distortion == Distortion("fisheye", (0.1, 0.0, 0.0, 0.01))
    for bad in ({"distortion": [0.1] * 6}, {"distortion": [0.1] * 5, "distortion_model": "fisheye"},
                {"distortion_model": "kb"}):  # fmt: skip
        with pytest.raises(ConfigError, match="distortion"):
            ImagesConfig(fx=60.0, **bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------ LLFF
def _llff_rows(T: np.ndarray, hwf: tuple[float, float, float], bounds: np.ndarray) -> np.ndarray:
    """LLFF rows written as its tools do: rotation columns (down, right, backwards) = optical (y, x, -z)."""
    rows = []
    for Ti, (near, far) in zip(T, bounds, strict=True):
        R = Ti[:3, :3]
        M = np.c_[R[:, 1], R[:, 0], -R[:, 2], Ti[:3, 3], hwf]
        rows.append(np.r_[M.ravel(), near, far])
    return np.asarray(rows)


def test_llff_poses_bounds(scene, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """poses_bounds.npy + images/: the poses back in the optical frame, the focal from hwf with the principal point
    at the image centre, the bounds in the report; images_2 (half size) scales the focal; a count mismatch or an
    array of another shape is refused with what is wrong."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.sim import Renderer

    world, T, _ = scene

    cam = PinholeCamera(W, H, 70.0, 70.0, (W - 1) / 2, (H - 1) / 2)
    rgb, _ = Renderer(world, cam).render_batch(T)
    d = tmp_path / "fern"
    for i in range(len(T)):
        _write(d / "images" / f"IMG_{i:04d}.JPG", rgb[i])
        _write(d / "images_2" / f"IMG_{i:04d}.png", cv2.resize(rgb[i], (W // 2, H // 2), interpolation=cv2.INTER_AREA))
    bounds = np.array([[10.0, 90.0], [12.0, 80.0], [11.0, 85.0]])
    np.save(d / "poses_bounds.npy", _llff_rows(T, (H, W, 70.0), bounds))
    assert detect_format(d) == "llff" and detect_format(d / "poses_bounds.npy") == "llff"
    out = tmp_path / "ds"
    assert main(["convert", "images", str(d), "--out", str(out), "--no-progress"]) == 0
    ds = Dataset(out)
    np.testing.assert_allclose(ds.frames.T_world_cam, T, atol=1e-6)
    assert ds.camera == cam and ds.manifest.pose_units == "unscaled" and not ds.manifest.source_cameras
    s = json.loads((out / "report" / "summary.json").read_text())
    assert s["input"]["kind"] == "llff" and s["depth_bounds"]["near_min"] == 10.0 and s["depth_bounds"]["far_max"] == 90
    assert s["pose_check"]["verdict"] == "ok", s["pose_check"]["mistakes"]
    half = Dataset(convert_images(d, tmp_path / "ds2", ImagesConfig(images=str(d / "images_2")), progress=False))
    assert half.camera == PinholeCamera(W // 2, H // 2, 35.0, 35.0, (W // 2 - 1) / 2, (H // 2 - 1) / 2)
    (d / "images" / "IMG_0002.JPG").unlink()
    with pytest.raises(PoseImportError, match="3 poses but 2 images"):
        convert_images(d, tmp_path / "ds3", progress=False)
    np.save(d / "poses_bounds.npy", np.zeros((3, 15)))
    with pytest.raises(PoseImportError, match=r"\(N, 17\)"):
        convert_images(d, tmp_path / "ds4", progress=False)


def test_folder_error_names_the_missing_colmap_file(tmp_path: Path) -> None:
    """A folder with sparse/0/cameras.bin but no images.bin: the error names images.bin, not "no model here"."""
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "cameras.bin").write_bytes(b"\0" * 8)
    with pytest.raises(PoseImportError, match=r"sparse/0/images\.bin is missing \(beside sparse/0/cameras\.bin\)"):
        detect_format(tmp_path)
    with pytest.raises(PoseImportError, match=r"images\.bin is missing"):
        convert_images(tmp_path / "sparse" / "0", tmp_path / "o", ImagesConfig(format="colmap"), progress=False)
    (tmp_path / "sparse" / "0" / "cameras.bin").unlink()
    with pytest.raises(PoseImportError, match=r"no poses found.*poses_bounds\.npy"):
        detect_format(tmp_path)


def test_a_folder_of_photos_without_poses_is_told_how_to_get_them(tmp_path: Path) -> None:
    """Photos and nothing that holds their poses: the error says how to find the poses (a place map, COLMAP),
    not only which pose files are missing; a folder without images keeps the plain message."""
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    assert cv2.imwrite(str(photos / "IMG_0001.JPG"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(PoseImportError, match=r"images without poses.*localize images .*photos --map MAP.*COLMAP"):
        detect_format(photos)
    (photos / "IMG_0001.JPG").unlink()
    (photos / "notes.txt").write_text("x")
    with pytest.raises(PoseImportError, match=r"give the file or model folder, or --format$"):
        detect_format(photos)


def test_manifest_without_the_new_keys_reads_as_before(tmp_path: Path) -> None:
    """A manifest of an older pose2rgbd (no pose_units, no source_cameras) loads with an empty lens list and
    inferred units, and is written back without the keys (its fingerprint does not change)."""
    import yaml

    from pose2rgbd.dataset.format import Manifest

    base = {"format": "pose2rgbd-dataset", "version": 1, "name": "old", "camera": SRC.to_dict(),
            "depth": {"kind": "none"}}  # fmt: skip
    m = Manifest.from_dict({**base, "sources": [{"id": 0, "kind": "colmap", "name": "x"}]}, "m")
    assert m.source_cameras == [] and m.pose_units == "" and m.resolved_pose_units == "unscaled"
    d = m.to_dict()
    assert "pose_units" not in d and "source_cameras" not in d
    assert (
        Manifest.from_dict({**base, "sources": [{"id": 0, "kind": "bag", "name": "x"}]}, "m").resolved_pose_units == "m"
    )
    # a video converted without GPS before its units were written: unscaled depth, the video's own poses -> unscaled
    video = {**base, "depth": {"kind": "unscaled"}, "sources": [{"id": 0, "kind": "video-frames", "name": "x"}],
             "extra": {"poses": {"kind": "pseudo-absolute"}}}  # fmt: skip
    assert Manifest.from_dict(video, "m").resolved_pose_units == "unscaled"
    # a bag's metric TF poses with unscaled depth (`depth export --gps off`, no datum): still metres
    bag = {**base, "depth": {"kind": "unscaled"}, "sources": [{"id": 0, "kind": "bag", "name": "x"}]}
    assert Manifest.from_dict(bag, "m").resolved_pose_units == "m"
    with pytest.raises(Exception, match="source_cameras"):
        Manifest.from_dict({**base, "source_cameras": [{"width": 10, "model": "opencv"}]}, "m")
    yaml.safe_dump(d)
