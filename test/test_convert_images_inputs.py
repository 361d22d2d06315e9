"""`convert images` on inputs a new user brings (tiny images made in tmp_path): a COLMAP project with several
models and photos the model lacks, an implausible lens, TUM images named by frame number, an image list beside
--images, transforms.json capture times, images of mixed sizes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.convert.posed_images import ImagesConfig, PoseImportError
from pose2rgbd.convert.sources.images import convert_images
from pose2rgbd.dataset import Dataset
from pose2rgbd.geometry.rotations import matrix_to_quat_xyzw

W, H = 16, 12
F = 14.0
GL = np.diag([1.0, -1.0, -1.0, 1.0])


def _ring(n: int) -> np.ndarray:
    """``n`` cameras on a ring looking at the origin (T_world_cam, optical)."""
    from pose2rgbd.sim import look_at

    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([look_at(np.array([10 * np.cos(t), 10 * np.sin(t), 4.0]), np.zeros(3)) for t in a])


def _png(path: Path, k: int, size: tuple[int, int] = (W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((size[1], size[0], 3), (37 * k) % 256, np.uint8)  # each image its own pixels (no repeats)
    img[0, 0] = (k, 255 - k, 7)
    assert cv2.imwrite(str(path), img)


def _summary(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "report" / "summary.json").read_text())


# ------------------------------------------------------------------------------------------------------- COLMAP
def _colmap_model(
    model: Path, T: np.ndarray, names: list[str], cam: str = f"PINHOLE {W} {H} {F} {F} 8 6", *more_cams: str
) -> None:
    """A COLMAP text model; with ``more_cams``, the images take the cameras in turn (camera ids 1, 2, ...)."""
    model.mkdir(parents=True)
    cams = [cam, *more_cams]
    (model / "cameras.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(cams)))
    lines = []
    for i, (t, name) in enumerate(zip(T, names, strict=True)):
        cw = np.linalg.inv(t)
        q = matrix_to_quat_xyzw(cw[:3, :3])
        vals = [q[3], q[0], q[1], q[2], *cw[:3, 3]]
        lines += [f"{i + 1} " + " ".join(repr(float(x)) for x in vals) + f" {i % len(cams) + 1} {name}", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("")


def test_colmap_project_with_several_models_takes_the_largest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proj = tmp_path / "gopro"
    names = [f"f{i:04d}.jpg" for i in range(8)]
    for i, n in enumerate(names):
        _png(proj / "images" / n, i)
    T = _ring(8)
    _colmap_model(proj / "sparse" / "0", T[:2], names[:2])  # what pycolmap left as model 0: two images
    _colmap_model(proj / "sparse" / "1", T, names)  # model 1: all of them
    with caplog.at_level(logging.WARNING):
        out = convert_images(proj, tmp_path / "ds", progress=False)
    assert len(Dataset(out)) == 8  # was 2: sparse/0 alone, silently
    s = _summary(out)
    (w,) = s["warnings"]
    assert "holds 2 COLMAP models (sparse/0 (2 registered images), sparse/1 (8 registered images))" in w
    assert "Imported sparse/1" in w and f"convert images {proj / 'sparse' / '0'}" in w
    assert "holds 2 COLMAP models" in caplog.text  # on the console too
    assert s["input"]["source"] == str(proj / "sparse" / "1")
    # the model folder given itself is an explicit choice; the photos it lacks are counted and named
    out0 = convert_images(proj / "sparse" / "0", tmp_path / "ds0", progress=False)
    assert len(Dataset(out0)) == 2
    (w,) = _summary(out0)["warnings"]
    assert "6 of the 8 photos in" in w and "have no pose in this model" in w and "f0002.jpg" in w
    assert "holds other models too (1)" in w


def test_colmap_photos_in_the_model_without_a_pose_are_counted(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    names = [f"img{i}.png" for i in range(5)]
    for i, n in enumerate(names):
        _png(proj / "images" / n, i)
    _png(proj / "images" / "extra.png", 9)
    _colmap_model(proj / "sparse" / "0", _ring(5), names)
    out = convert_images(proj, tmp_path / "ds", progress=False)
    (w,) = _summary(out)["warnings"]
    assert "1 of the 6 photos" in w and "extra.png" in w
    # every photo in the model: no warning
    (proj / "images" / "extra.png").unlink()
    assert _summary(convert_images(proj, tmp_path / "ds2", progress=False))["warnings"] == []


def test_an_absurd_lens_is_named(tmp_path: Path) -> None:
    """The lens of a failed two-image reconstruction (k1 = 30.86): undistortion zooms 13x; the import warns."""
    proj = tmp_path / "p"
    names = ["a.png", "b.png"]
    for i, n in enumerate(names):
        _png(proj / "images" / n, i)
    _colmap_model(proj / "sparse" / "0", _ring(4)[:2], names, cam=f"SIMPLE_RADIAL {W} {H} {F} 8 6 30.86")
    out = convert_images(proj, tmp_path / "ds", progress=False)
    (w,) = _summary(out)["warnings"]
    assert "probably a failed reconstruction" in w and f"fx {F:.1f} px into" in w and "30.86" in w
    assert Dataset(out).camera.fx > 2 * F
    # a usual lens (k1 = -0.1) undistorts without a warning
    _colmap_model(tmp_path / "q" / "sparse" / "0", _ring(4)[:2], names, cam=f"SIMPLE_RADIAL {W} {H} {F} 8 6 -0.1")
    out = convert_images(tmp_path / "q" / "sparse" / "0", tmp_path / "ds2", ImagesConfig(images=str(proj / "images")),
                         progress=False)  # fmt: skip
    assert _summary(out)["warnings"] == []


def test_an_absurd_lens_of_a_second_camera_is_named(tmp_path: Path) -> None:
    """The first camera's lens is a usual one; the second's (k1 = 204) is what a failed reconstruction leaves.
    Its photos are mapped onto the first camera's pinhole; the import names that camera and its photos."""
    proj = tmp_path / "p"
    names = [f"f{i}.png" for i in range(4)]
    for i, n in enumerate(names):
        _png(proj / "images" / n, i)
    good = f"SIMPLE_RADIAL {W} {H} {F} 8 6 -0.1"
    _colmap_model(proj / "sparse" / "0", _ring(4), names, good, f"SIMPLE_RADIAL {W} {H} {F} 8 6 204")
    (w,) = _summary(convert_images(proj, tmp_path / "ds", progress=False))["warnings"]
    assert "the lens of source camera 2 of 2 (2 of 4 images)" in w and "204" in w and "probably a failed" in w
    # both cameras usual: no warning
    _colmap_model(tmp_path / "q" / "sparse" / "0", _ring(4), names, good, f"SIMPLE_RADIAL {W} {H} {F} 8 6 -0.05")
    out = convert_images(tmp_path / "q" / "sparse" / "0", tmp_path / "ds2", ImagesConfig(images=str(proj / "images")),
                         progress=False)  # fmt: skip
    assert _summary(out)["warnings"] == []


# ---------------------------------------------------------------------------------------------------------- TUM
T0 = 1_700_000_150.0


def _tum(path: Path, stamps: np.ndarray, T: np.ndarray) -> Path:
    lines = []
    for t, P in zip(stamps, T, strict=True):
        q = matrix_to_quat_xyzw(P[:3, :3])
        lines.append(f"{t:.6f} " + " ".join(f"{x:.12f}" for x in (*P[:3, 3], *q)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tum_images_named_by_frame_number(tmp_path: Path) -> None:
    n = 10
    traj = _tum(tmp_path / "traj.txt", T0 + 0.1 * np.arange(n), _ring(n))
    for i in range(n):
        _png(tmp_path / "image_0" / f"{i:06d}.png", i)
    cfg = ImagesConfig(images=str(tmp_path / "image_0"), fx=F)
    with pytest.raises(PoseImportError) as e:
        convert_images(traj, tmp_path / "ds", cfg, progress=False)
    msg = str(e.value)
    assert "10 of 10 images have no pose" in msg and "look like frame numbers, not capture times" in msg
    assert "--image-list" in msg and "--format kitti" in msg and "raise --tolerance" not in msg
    assert "10 poses for the 10 images" in msg  # one pose per image: how to pair them by index
    # a tolerance raised far beyond the sample spacing would give all of them the first pose: refused
    cfg.tolerance_s = 2e9
    with pytest.raises(PoseImportError, match=r"10 of 10 images .* lie before the trajectory's first pose.* would all "
                       r"get that one pose.*sample spacing \(median 0.100 s\).*frame numbers"):  # fmt: skip
        convert_images(traj, tmp_path / "ds", cfg, progress=False)
    assert not (tmp_path / "ds").exists()
    # the way the message names: an image list with the trajectory's times pairs them by index
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{T0 + 0.1 * i:.6f} {i:06d}.png\n" for i in range(n)))
    cfg = ImagesConfig(images=str(tmp_path / "image_0"), image_list=str(lst), fx=F)
    ds = Dataset(convert_images(traj, tmp_path / "ds", cfg, progress=False))
    np.testing.assert_allclose(ds.frames.T_world_cam, _ring(n), atol=1e-6)


def test_tum_image_times_outside_the_trajectory_are_named(tmp_path: Path) -> None:
    n = 6
    traj = _tum(tmp_path / "traj.txt", T0 + 0.1 * np.arange(n), _ring(n))
    for i in range(n):
        _png(tmp_path / "rgb" / f"{1000.0 + 0.5 * i:.6f}.png", i)  # another clock: times from another origin
    with pytest.raises(PoseImportError, match=r"lie wholly before the trajectory.*--image-list"):
        convert_images(traj, tmp_path / "ds", ImagesConfig(images=str(tmp_path / "rgb"), fx=F), progress=False)


def test_tum_a_few_images_just_past_the_ends_keep_the_end_pose(tmp_path: Path) -> None:
    """Not every image outside the span is refused: 2 within the tolerance at an end (a camera at 100 Hz, the
    trajectory starting 15 ms late) take the end pose as before."""
    n = 20
    traj = _tum(tmp_path / "traj.txt", T0 + 0.1 * np.arange(n), _ring(n))
    for i, t in enumerate([-0.015, -0.005, *(0.1 * np.arange(1, n - 1))]):
        _png(tmp_path / "rgb" / f"{T0 + t:.6f}.png", i)
    cfg = ImagesConfig(images=str(tmp_path / "rgb"), fx=F)
    assert len(Dataset(convert_images(traj, tmp_path / "ds", cfg, progress=False))) == n


def test_tum_image_list_relative_to_its_own_folder(tmp_path: Path) -> None:
    """TUM RGB-D's rgb.txt names rgb/<t>.png (relative to the sequence); with --images SEQ/rgb as well, the names
    are found beside the list instead of doubling rgb/."""
    n = 5
    seq = tmp_path / "seq"
    seq.mkdir()
    traj = _tum(seq / "traj.txt", T0 + 0.1 * np.arange(n), _ring(n))
    lines = []
    for i in range(n):
        name = f"{T0 + 0.1 * i:.6f}.png"
        _png(seq / "rgb" / name, i)
        lines.append(f"{T0 + 0.1 * i:.6f} rgb/{name}")
    (seq / "rgb.txt").write_text("\n".join(lines) + "\n")
    cfg = ImagesConfig(images=str(seq / "rgb"), image_list=str(seq / "rgb.txt"), fx=F)
    out = convert_images(traj, tmp_path / "ds", cfg, progress=False)  # was: "5 of 5 images are missing: .../rgb/rgb/"
    assert len(Dataset(out)) == n
    assert any("relative to its own folder" in a for a in _summary(out)["assumptions"])
    # names that exist under neither: the error says which base was taken and how many the other holds
    (seq / "rgb.txt").write_text("\n".join(line.replace("rgb/", "colour/") for line in lines) + "\n")
    with pytest.raises(PoseImportError, match=r"5 of 5 images are missing.*taken relative to --images .*rgb \("
                       r"relative to .*seq 0 of them exist\)"):  # fmt: skip
        convert_images(traj, tmp_path / "ds2", cfg, progress=False)


# ----------------------------------------------------------------------------------------------- transforms.json
def _tj(d: Path, n: int, extra: list[dict] | None = None, sizes: dict[int, tuple[int, int]] | None = None) -> Path:  # type: ignore[type-arg]
    frames = []
    for i, T in enumerate(_ring(n)):
        _png(d / "images" / f"{i:05d}.png", i, (sizes or {}).get(i, (W, H)))
        fr = {"file_path": f"images/{i:05d}.png", "transform_matrix": (T @ GL).tolist()}
        fr.update((extra or [{}] * n)[i])
        frames.append(fr)
    doc = {"fl_x": F, "fl_y": F, "cx": W / 2, "cy": H / 2, "w": W, "h": H, "frames": frames}
    (d / "transforms.json").write_text(json.dumps(doc))
    return d / "transforms.json"


def test_transforms_json_capture_times(tmp_path: Path) -> None:
    n = 6
    ns = [1_700_000_150_000_000_000 + 100_000_000 * i for i in range(n)]  # 10 Hz, as the simulator writes them
    src = _tj(tmp_path / "a", n, [{"timestamp_ns": t} for t in ns])
    out = convert_images(src, tmp_path / "ds", progress=False)
    np.testing.assert_array_equal(Dataset(out).frames.stamp_ns, ns)  # was index x 1 s: 10x too slow
    assert any("timestamp_ns" in a and "0.500 s over 6 frames" in a for a in _summary(out)["assumptions"])
    bad = [{"timestamp_ns": t} for t in ns]
    bad[3]["timestamp_ns"] = ns[2]
    with pytest.raises(PoseImportError, match=r"frames\[3\] \(00003.png\): timestamp_ns .* is not after the previous "
                       r"frame's.*capture order"):  # fmt: skip
        convert_images(_tj(tmp_path / "b", n, bad), tmp_path / "ds2", progress=False)
    partial = [{"timestamp_ns": t} for t in ns]
    del partial[4]["timestamp_ns"]
    with pytest.raises(PoseImportError, match=r"frames\[4\]: no timestamp_ns, but frames\[0\] has one"):
        convert_images(_tj(tmp_path / "c", n, partial), tmp_path / "ds3", progress=False)
    with pytest.raises(PoseImportError, match=r"frames\[0\]: timestamp_ns 1.5 is not an integer number of nano"):
        convert_images(_tj(tmp_path / "d", n, [{"timestamp_ns": 1.5 + i} for i in range(n)]), tmp_path / "ds4",
                       progress=False)  # fmt: skip
    # a time key of unknown unit: not read, and said
    out = convert_images(_tj(tmp_path / "e", n, [{"time": 0.1 * i} for i in range(n)]), tmp_path / "ds5",
                         progress=False)  # fmt: skip
    assert Dataset(out).frames.stamp_ns[1] == 1_000_000_000
    (w,) = _summary(out)["warnings"]
    assert "'time'" in w and "timestamp_ns" in w


# -------------------------------------------------------------------------------------------- mixed image sizes
def test_mixed_image_sizes_are_counted_with_what_to_do(tmp_path: Path) -> None:
    n = 7
    src = _tj(tmp_path / "a", n, sizes={3: (2 * W, 2 * H), 5: (2 * W, 2 * H)})
    with pytest.raises(PoseImportError) as e:
        convert_images(src, tmp_path / "ds", progress=False)
    msg = str(e.value)
    assert f"2 of 7 images do not have the size of their camera: 2 are {2 * W}x{2 * H} where their camera says " \
           f"{W}x{H} (00003.png, 00005.png); the other 5 are {W}x{H}" in msg  # fmt: skip
    assert "own intrinsics (w, h, fl_x" in msg
    # the fix it names: per-frame intrinsics for those frames
    doc = json.loads(src.read_text())
    for i in (3, 5):
        doc["frames"][i].update({"w": 2 * W, "h": 2 * H, "fl_x": 2 * F, "fl_y": 2 * F, "cx": W, "cy": H})
    src.write_text(json.dumps(doc))
    assert len(Dataset(convert_images(src, tmp_path / "ds", progress=False))) == n
    # a trajectory with --fx: the camera is made for the first image's size
    traj = _tum(tmp_path / "traj.txt", T0 + 0.1 * np.arange(n), _ring(n))
    for i in range(n):
        _png(tmp_path / "rgb" / f"{T0 + 0.1 * i:.6f}.png", i, (2 * W, 2 * H) if i == 4 else (W, H))
    with pytest.raises(PoseImportError, match=r"1 of 7 images do not have the size of their camera: 1 is "
                       r".* where its camera says .*made for the first image's size"):  # fmt: skip
        convert_images(traj, tmp_path / "ds2", ImagesConfig(images=str(tmp_path / "rgb"), fx=F), progress=False)


def test_a_folder_of_pose_files_names_them(tmp_path: Path) -> None:
    """A folder holding a KITTI or TUM pose file given as the source: the error names the files by format and
    says that a trajectory is given as its file (before: "no poses found" and nothing more)."""
    from pose2rgbd.convert.sources.images import detect_format

    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    (seq / "groundtruth_tum.txt").write_text("# t tx ty tz qx qy qz qw\n0.0 0 0 0 0 0 0 1\n")
    (seq / "notes.txt").write_text("not a table\n")
    with pytest.raises(PoseImportError, match=r"pose files: groundtruth_tum.txt \(TUM\), poses.txt \(KITTI\)\. A "
                       r"trajectory is given as its file") as e:  # fmt: skip
        detect_format(seq)
    assert f"convert images {seq / 'groundtruth_tum.txt'} --images" in str(e.value) and "notes.txt" not in str(e.value)
