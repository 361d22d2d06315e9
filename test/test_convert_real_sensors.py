"""Real-sensor depth and frames at import: 16-bit "no return" codes, the depth scale of transforms.json,
repeated frames. Tiny synthetic sources written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.convert.posed_images import ImagesConfig, PoseImportError
from pose2rgbd.convert.sources.images import convert_images
from pose2rgbd.dataset import Dataset

W, H = 16, 12


def _images(d: Path, n: int, *, repeat_after: tuple[int, ...] = ()) -> list[str]:
    """``n`` distinct textured images (a frame listed in ``repeat_after`` is followed by a byte-identical copy)."""
    rng = np.random.default_rng(0)
    (d / "images").mkdir(parents=True, exist_ok=True)
    names, prev = [], None
    for i in range(n):
        img = prev.copy() if prev is not None and i - 1 in repeat_after else rng.integers(0, 256, (H, W, 3), np.uint8)
        assert cv2.imwrite(str(d / "images" / f"f{i:02d}.png"), img)
        names.append(f"images/f{i:02d}.png")
        prev = img
    return names


def _transforms(d: Path, names: list[str], depth: list[str] | None = None, **top: object) -> Path:
    frames = []
    for i, n in enumerate(names):
        M = np.eye(4)
        M[0, 3] = 0.5 * i
        fr: dict[str, object] = {"file_path": n, "transform_matrix": M.tolist()}
        if depth is not None:
            fr["depth_file_path"] = depth[i]
        frames.append(fr)
    doc = {"fl_x": 12.0, "fl_y": 12.0, "cx": W / 2, "cy": H / 2, "w": W, "h": H, **top, "frames": frames}
    (d / "transforms.json").write_text(json.dumps(doc))
    return d / "transforms.json"


def _depth_pngs(d: Path, n: int, value_mm: int = 2000) -> list[str]:
    """16-bit depth in units: ``value_mm`` everywhere, two holes (0) and three saturated pixels (65535) per map."""
    (d / "depth").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        mm = np.full((H, W), value_mm, np.uint16)
        mm[0, :2] = 0
        mm[5, 5:8] = 65535
        assert cv2.imwrite(str(d / "depth" / f"f{i:02d}.png"), mm)
        names.append(f"depth/f{i:02d}.png")
    return names


def test_16bit_no_return_codes_are_invalid_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _transforms(tmp_path / "s", _images(tmp_path / "s", 3), _depth_pngs(tmp_path / "s", 3))
    out = convert_images(src, tmp_path / "ds", progress=False)
    ds = Dataset(out)
    d = ds.read_depth(1)
    assert np.isnan(d[0, :2]).all() and np.isnan(d[5, 5:8]).all()  # 65535 is not 65.535 m
    assert np.nanmax(d) == pytest.approx(2.0) and np.isfinite(d).sum() == W * H - 5
    rep = json.loads((out / "report" / "summary.json").read_text())["depth_import"]
    assert rep["invalid_code_pixels"] == {"0": 6, "65535": 9} and rep["files_with_codes"] == 3
    assert rep["scale"]["units_per_m"] == 1000.0 and "default" in rep["scale"]["from"]
    assert ds.manifest.extra["conversion"]["depth_import"]["invalid_code_pixels"]["65535"] == 9
    # configurable: only 0 is a code -> 65535 stays a (saturated) distance, and `dataset info --deep` says so
    cfg = ImagesConfig(depth_invalid_codes="zero")
    out2 = convert_images(src, tmp_path / "ds2", cfg, progress=False)
    assert Dataset(out2).read_depth(0)[5, 5] == pytest.approx(65.535)
    from pose2rgbd.cli.main import main

    assert main(["dataset", "info", str(out2), "--deep", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "depth = 65.535: 9 pixel(s) in 3 file(s)" in text and "saturated" in text
    # the advice is for how the dataset was made: `convert images`, with the codes it was told
    assert "`pose2rgbd convert images` imported it with --depth-invalid-codes zero: import the source again" in text
    assert "depth codes read as invalid (NaN): 6 pixel(s) = 0" in text
    assert main(["dataset", "info", str(out), "--deep", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "WARNING" not in text and "9 pixel(s) = 65535" in text
    with pytest.raises(Exception, match="depth_invalid_codes"):
        ImagesConfig(depth_invalid_codes="saturated")


def test_nerfstudio_depth_unit_scale_factor_is_honoured(tmp_path: Path) -> None:
    s = tmp_path / "s"
    src = _transforms(s, _images(s, 3), _depth_pngs(s, 3, value_mm=10000), depth_unit_scale_factor=0.0002)
    out = convert_images(src, tmp_path / "ds", progress=False)
    assert np.nanmax(Dataset(out).read_depth(0)) == pytest.approx(2.0)  # 10000 units x 0.0002 m, not 10 m
    rep = json.loads((out / "report" / "summary.json").read_text())["depth_import"]["scale"]
    assert rep["units_per_m"] == pytest.approx(5000.0) and "depth_unit_scale_factor" in rep["from"]
    # --depth-scale wins and the report says it overrode the file's
    out2 = convert_images(src, tmp_path / "ds2", ImagesConfig(depth_scale=1000.0), progress=False)
    assert np.nanmax(Dataset(out2).read_depth(0)) == pytest.approx(10.0)
    rep2 = json.loads((out2 / "report" / "summary.json").read_text())["depth_import"]["scale"]
    assert rep2["from"].startswith("--depth-scale (overrides transforms.json")
    # .npy depth listed by the file is in its units too (as nerfstudio reads it)
    np.save(s / "depth" / "n.npy", np.full((H, W), 10000.0, np.float32))
    doc = json.loads(src.read_text())
    for fr in doc["frames"]:
        fr["depth_file_path"] = "depth/n.npy"
    src.write_text(json.dumps(doc))
    out3 = convert_images(src, tmp_path / "ds3", progress=False)
    assert np.nanmax(Dataset(out3).read_depth(2)) == pytest.approx(2.0)
    doc["depth_unit_scale_factor"] = "nan"
    src.write_text(json.dumps(doc))
    with pytest.raises(PoseImportError, match="depth_unit_scale_factor"):
        convert_images(src, tmp_path / "ds4", progress=False)


def test_repeated_frames_are_dropped_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = tmp_path / "s"
    src = _transforms(s, _images(s, 6, repeat_after=(1, 2)))  # f02 and f03 repeat f01
    out = convert_images(src, tmp_path / "ds", progress=False)
    ds = Dataset(out)
    assert len(ds) == 4
    rep = json.loads((out / "report" / "summary.json").read_text())["frames"]
    assert rep["total"] == 6 and rep["kept"] == 4
    assert rep["repeats"]["repeats"] == 2 and rep["repeats"]["examples"] == ["f02.png", "f03.png"]
    # the kept frames are the first of each run, with their own poses
    assert ds.frames.T_world_cam[:, 0, 3].tolist() == pytest.approx([0.0, 0.5, 2.0, 2.5])
    from pose2rgbd.cli.main import main

    rc = main(["convert", "images", str(src), "--out", str(tmp_path / "keep"), "--keep-repeats", "--no-progress"])
    assert rc == 0 and len(Dataset(tmp_path / "keep")) == 6
    text = capsys.readouterr().out
    assert "2 repeated frame(s)" in text and "kept (--keep-repeats)" in text


def test_video_repeats_are_dropped(tmp_path: Path) -> None:
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.video import convert_video

    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur((rng.random((120, 480)) * 255).astype(np.uint8), (0, 0), 2)
    vid = tmp_path / "v.mp4"
    wr = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    xs = [4 * i for i in range(20)]
    xs[6] = xs[7] = xs[5]  # the camera stream repeats frame 5 twice
    for x in xs:
        wr.write(cv2.cvtColor(np.ascontiguousarray(tex[:, x : x + 160]), cv2.COLOR_GRAY2BGR))
    wr.release()
    gps = tmp_path / "g.csv"
    rows = [f"{t:.2f},44.43,{26.1 + 1e-5 * t:.7f},80,,1" for t in np.arange(0, 2.2, 0.1)]
    gps.write_text("time_s,lat,lon,alt,speed_mps,fix\n" + "\n".join(rows) + "\n")
    out = convert_video(vid, gps, tmp_path / "ds", ConvertConfig(estimate_offset=False), progress=False)
    fr = json.loads((out / "report" / "summary.json").read_text())["frames"]
    assert fr["repeats"]["repeats"] == 2 and fr["written"] == len(Dataset(out)) == fr["kept"] - 2
    keep = ConvertConfig(estimate_offset=False)
    keep.output.keep_repeats = True
    out2 = convert_video(vid, gps, tmp_path / "ds2", keep, progress=False)
    assert len(Dataset(out2)) == fr["kept"]


def test_transforms_json_skip_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The NeRF fox sample lists more frames than it ships images: refused naming --skip-missing, or skipped."""
    s = tmp_path / "s"
    names = _images(s, 4)
    src = _transforms(s, [*names[:2], "images/gone1.png", *names[2:], "images/gone2.png"])
    with pytest.raises(PoseImportError, match=r"2 of 6 images are missing: .*gone1.png.*--skip-missing"):
        convert_images(src, tmp_path / "ds", progress=False)
    from pose2rgbd.cli.main import main

    rc = main(["convert", "images", str(src), "--out", str(tmp_path / "ds"), "--skip-missing", "--no-progress"])
    assert rc == 0 and len(Dataset(tmp_path / "ds")) == 4
    assert "2 listed frame(s) left out, image missing (--skip-missing): images/gone1.png" in capsys.readouterr().out
    fr = json.loads((tmp_path / "ds" / "report" / "summary.json").read_text())["frames"]
    assert fr["total"] == 6 and fr["skipped_missing"] == {
        "count": 2,
        "entries": ["images/gone1.png", "images/gone2.png"],
    }


def test_transforms_json_skip_missing_covers_a_missing_depth_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listed depth file that does not exist: refused naming it and --skip-missing, or its frame left out and
    listed (as a missing image is), never a frame written without its depth."""
    s = tmp_path / "s"
    names = _images(s, 5)
    depth = _depth_pngs(s, 5)
    (s / depth[2]).unlink()
    src = _transforms(s, names, depth, depth_unit_scale_factor=0.001)
    with pytest.raises(PoseImportError, match=r"f02.png: its depth file .*depth.* does not exist.*--skip-missing"):
        convert_images(src, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    from pose2rgbd.cli.main import main

    rc = main(["convert", "images", str(src), "--out", str(tmp_path / "ds"), "--skip-missing", "--no-progress"])
    assert rc == 0
    assert f"1 listed frame(s) left out, depth file missing (--skip-missing): {depth[2]}" in capsys.readouterr().out
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 4 and ds.has_depth
    assert ds.frames.T_world_cam[:, 0, 3] == pytest.approx([0.0, 0.5, 1.5, 2.0])  # frames 0, 1, 3, 4 (x = 0.5 i)
    assert all(np.isfinite(ds.read_depth(i)).any() for i in range(len(ds)))
    fr = json.loads((tmp_path / "ds" / "report" / "summary.json").read_text())["frames"]
    assert fr["total"] == 5 and fr["skipped_missing_depth"] == {"count": 1, "entries": [depth[2]]}
    assert "skipped_missing" not in fr
    # an image missing too: one error names both kinds (before: the depth file only once the image was back)
    (s / names[0]).unlink()
    with pytest.raises(PoseImportError, match=rf"1 of 5 images are missing: .*f00.png; and 1 depth file\(s\) are "
                       rf"missing: .*{depth[2]}.*--skip-missing"):  # fmt: skip
        convert_images(src, tmp_path / "refused", progress=False)


@pytest.mark.parametrize("path", ["../outside/secret.png", "ABSOLUTE"])
def test_transforms_json_paths_outside_its_folder_are_refused(tmp_path: Path, path: str) -> None:
    s = tmp_path / "s"
    names = _images(s, 3)
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.png"
    secret.write_bytes((s / names[0]).read_bytes() + b"")
    rel = str(secret) if path == "ABSOLUTE" else path
    src = _transforms(s, [names[0], rel, names[2]])
    with pytest.raises(PoseImportError, match=r"frames\[1\]: file_path .*secret.png' points outside .*--allow-outside"):
        convert_images(src, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()
    out = convert_images(src, tmp_path / "ds", ImagesConfig(allow_outside=True, output={"keep_repeats": True}),
                         progress=False)  # fmt: skip
    assert len(Dataset(out)) == 3


def test_kitti_calib_without_labels_is_read_by_row(tmp_path: Path) -> None:
    """calib.txt as tutorials ship it: four bare 3x4 rows, no 'P0:' labels."""
    seq = tmp_path / "seq"
    for i, n in enumerate(_images(seq, 3)):
        (seq / n).rename(seq / "images" / f"{i:06d}.png")
    (seq / "images").rename(seq / "image_2")
    poses = tmp_path / "00.txt"
    poses.write_text("".join(f"1 0 0 {0.5 * i} 0 1 0 0 0 0 1 0\n" for i in range(3)))
    K = np.array([[11.0, 0, 7.5], [0, 12.0, 5.5], [0, 0, 1]])
    rows = []
    for k in range(4):
        P = np.zeros((3, 4))
        P[:, :3] = K * (1 + k)  # each row its own focal length: which row was used shows in the camera
        P[0, 3] = -P[0, 0] * 0.1 * k
        rows.append(" ".join(f"{x:.12e}" for x in P.ravel()))
    (seq / "calib.txt").write_text("\n".join(rows) + "\n")
    out = convert_images(poses, tmp_path / "ds", ImagesConfig(images=str(seq / "image_2")), progress=False)
    cam = Dataset(out).camera
    assert (cam.fx, cam.fy) == pytest.approx((33.0, 36.0))  # row 3 = P2
    notes = json.loads((out / "report" / "summary.json").read_text())["assumptions"]
    assert any("row 3 of 4 (no 'P0:' labels" in n for n in notes)
    with pytest.raises(PoseImportError, match="no row for camera 7"):
        convert_images(poses, tmp_path / "ds2", ImagesConfig(images=str(seq / "image_2"), kitti_camera=7),
                       progress=False)  # fmt: skip


def test_a_dropped_repeat_s_depth_is_not_counted(tmp_path: Path) -> None:
    """The depth of a repeated frame that is dropped is not imported: the depth-import counts are those of the
    frames written (a pose-check sample reads depth maps on its own, uncounted)."""
    s = tmp_path / "s"
    names = _images(s, 4, repeat_after=(1,))  # f02 repeats f01
    out = convert_images(_transforms(s, names, _depth_pngs(s, 4), depth_unit_scale_factor=0.001), tmp_path / "ds",
                         progress=False)  # fmt: skip
    rep = json.loads((out / "report" / "summary.json").read_text())
    assert len(Dataset(out)) == 3 and rep["frames"]["repeats"]["repeats"] == 1
    assert rep["depth_import"]["files"] == 3 and rep["depth_import"]["invalid_code_pixels"] == {"0": 6, "65535": 9}
