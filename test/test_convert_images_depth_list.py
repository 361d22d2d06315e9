"""`convert images --depth-list`: a TUM RGB-D layout (rgb/, depth/, rgb.txt, depth.txt, groundtruth.txt) with depth
images stamped apart from the colour images, paired by time (TUM's associate.py rule: closest pairs first, each
depth image once); the unpaired image refused or left out (--skip-unmatched); the hints of the errors around it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.convert.posed_images import ImagesConfig, PoseImportError
from pose2rgbd.convert.posed_images.trajectory import associate_stamps, stamp_ns
from pose2rgbd.convert.sources.images import convert_images
from pose2rgbd.dataset import Dataset
from pose2rgbd.errors import ConfigError

W, H = 16, 12
T0 = "1305031102"  # whole seconds of every stamp below, kept as text: stamps are exact decimals
RGB_MS = [175, 275, 375, 475, 575, 675]  # the colour images, ms after T0 (a .xxx304 tail is added)
# the depth images: (ms after T0, units written). Image 0 has two within 20 ms (-4 ms and +15 ms: the nearer wins);
# one more between images 1 and 2 is nearest to neither; image 4 has none within 20 ms (45 ms away).
DEPTH = [(171, 1000), (190, 1100), (278, 1200), (340, 1300), (380, 1400), (473, 1500), (620, 1600), (676, 1700)]
EXPECT = {0: 1000, 1: 1200, 2: 1400, 3: 1500, 5: 1700}  # image index -> the depth written for it
UNPAIRED = 4
FLAGS = ["--fx", "12", "--fy", "12", "--cx", "7.5", "--cy", "5.5", "--depth-scale", "5000", "--no-progress"]


def _stamp(ms: int, tail: str) -> str:
    return f"{T0}.{ms:03d}{tail}"


@pytest.fixture()
def seq(tmp_path: Path) -> Path:
    """The sequence folder as TUM publishes one (tiny images; each depth image one distinct constant)."""
    s = tmp_path / "rgbd_dataset_freiburg1_test"
    (s / "rgb").mkdir(parents=True)
    (s / "depth").mkdir()
    rgb_lines = ["# color images", "# timestamp filename"]
    for k, ms in enumerate(RGB_MS):
        name = _stamp(ms, "304")
        img = np.full((H, W, 3), 20 * (k + 1), np.uint8)  # its index, readable back from the dataset
        assert cv2.imwrite(str(s / "rgb" / f"{name}.png"), img)
        rgb_lines.append(f"{name} rgb/{name}.png")
    depth_lines = ["# depth maps", "# file: 'test.bag'", "# timestamp filename"]
    for ms, units in DEPTH:
        name = _stamp(ms, "911")
        assert cv2.imwrite(str(s / "depth" / f"{name}.png"), np.full((H, W), units, np.uint16))
        depth_lines.append(f"{name} depth/{name}.png")
    (s / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (s / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    gt = ["# ground truth trajectory", "# timestamp tx ty tz qx qy qz qw"]
    for i in range(90):  # 100 Hz from .100 to .990 s: moving along x, no rotation
        gt.append(f"{T0}.{100 + 10 * i:03d} {0.01 * i:.4f} 0.0 0.0 0 0 0 1")
    (s / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    return s


def _convert(seq: Path, out: Path, *extra: str) -> int:
    argv = ["convert", "images", str(seq / "groundtruth.txt"), "--images", str(seq / "rgb"), "--depth-list",
            str(seq / "depth.txt"), *FLAGS, "--out", str(out), *extra]  # fmt: skip
    return main(argv)


def _image_index(ds: Dataset, i: int) -> int:
    return int(ds.read_rgb(i)[0, 0, 0]) // 20 - 1


def test_depth_list_pairs_each_image_with_its_nearest_depth(
    seq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # by default the image without depth within the tolerance is an error naming it and what to do
    assert _convert(seq, tmp_path / "ds0") != 0
    err = capsys.readouterr().err
    assert "1 of 6 images have no depth image within 0.02 s" in err
    assert f"{_stamp(RGB_MS[UNPAIRED], '304')}.png (nearest depth image 0.046 s away)" in err
    assert "--depth-tolerance" in err and "--skip-unmatched" in err
    assert not (tmp_path / "ds0").exists()

    assert _convert(seq, tmp_path / "ds", "--skip-unmatched") == 0
    out = capsys.readouterr().out  # the console says what was left out, not only the report
    assert (
        "1 of 6 images have no depth image within 0.02 s of their timestamp and were dropped (--skip-unmatched)" in out
    )
    ds = Dataset(tmp_path / "ds")
    assert len(ds) == len(EXPECT) and ds.manifest.depth_kind == "metric"
    got = {}
    for i in range(len(ds)):
        k = _image_index(ds, i)
        d = ds.read_depth(i)
        assert np.all(d == d[0, 0]), "one depth image per frame, read whole"
        got[k] = round(float(d[0, 0]) * 5000)
        # the frame's stamp is the image's, exactly (int ns from the decimal text, no float rounding)
        assert int(ds.frames.stamp_ns[i]) == int(T0) * 10**9 + (RGB_MS[k] * 1000 + 304) * 1000
    assert got == EXPECT
    s = json.loads((tmp_path / "ds" / "report" / "summary.json").read_text())
    notes = " | ".join(s["assumptions"])
    assert "5 pairs within 0.02 s" in notes and "each depth image used once" in notes
    assert "1 of 6 images have no depth image within 0.02 s of their timestamp and were dropped" in notes
    assert s["depth_import"]["scale"]["units_per_m"] == 5000.0


def test_depth_tolerance_key_and_image_list(seq: Path, tmp_path: Path) -> None:
    """depth_tolerance_s (its own key, not the poses' tolerance_s) lets the 45 ms depth image pair with image 4;
    the images' times from rgb.txt (--image-list) pair the same way as from their file names."""
    cfg = ImagesConfig(image_list=str(seq / "rgb.txt"), depth_list=str(seq / "depth.txt"), depth_tolerance_s=0.05,
                       fx=12.0, depth_scale=5000.0)  # fmt: skip
    ds = Dataset(convert_images(seq / "groundtruth.txt", tmp_path / "ds", cfg, progress=False))
    got = {_image_index(ds, i): round(float(ds.read_depth(i)[0, 0]) * 5000) for i in range(len(ds))}
    assert got == {**EXPECT, UNPAIRED: 1600}
    # the poses' tolerance does not widen the depth pairing
    cfg = ImagesConfig(image_list=str(seq / "rgb.txt"), depth_list=str(seq / "depth.txt"), tolerance_s=0.05,
                       fx=12.0, depth_scale=5000.0)  # fmt: skip
    with pytest.raises(PoseImportError, match=r"1 of 6 images have no depth image within 0.02 s"):
        convert_images(seq / "groundtruth.txt", tmp_path / "ds2", cfg, progress=False)
    # the key through the command line (--set) and the flag
    assert _convert(seq, tmp_path / "ds3", "--set", "depth_tolerance_s=0.05") == 0
    assert _convert(seq, tmp_path / "ds4", "--depth-tolerance", "0.05") == 0
    assert len(Dataset(tmp_path / "ds3")) == len(Dataset(tmp_path / "ds4")) == 6


def test_each_depth_image_is_used_once_unless_reuse(seq: Path, tmp_path: Path) -> None:
    """A depth image nearest to two colour images goes to the nearer one (TUM's associate.py); the other is left
    unpaired and named as such. depth_list_reuse gives it the same depth image too."""
    name = _stamp(680, "304")  # 3.4 ms after image 5's depth image (676.911), image 5 itself 1.6 ms before it
    assert cv2.imwrite(str(seq / "rgb" / f"{name}.png"), np.full((H, W, 3), 20 * 7, np.uint8))
    cfg = ImagesConfig(depth_list=str(seq / "depth.txt"), images=str(seq / "rgb"), fx=12.0, depth_scale=5000.0)
    with pytest.raises(PoseImportError) as e:
        convert_images(seq / "groundtruth.txt", tmp_path / "ds", cfg, progress=False)
    msg = str(e.value)
    assert "2 of 7 images have no depth image within 0.02 s" in msg
    assert f"{name}.png (its nearest depth image, 0.003 s away, is paired with a nearer image)" in msg
    assert "1 of them lost their nearest depth image to a nearer image" in msg and "depth_list_reuse=true" in msg
    cfg.skip_unmatched = True
    ds = Dataset(convert_images(seq / "groundtruth.txt", tmp_path / "ds1", cfg, progress=False))
    assert {_image_index(ds, i): round(float(ds.read_depth(i)[0, 0]) * 5000) for i in range(len(ds))} == EXPECT
    cfg.depth_list_reuse = True
    ds = Dataset(convert_images(seq / "groundtruth.txt", tmp_path / "ds2", cfg, progress=False))
    got = {_image_index(ds, i): round(float(ds.read_depth(i)[0, 0]) * 5000) for i in range(len(ds))}
    assert got == {**EXPECT, 6: 1700}  # image 6 shares image 5's depth image
    notes = " | ".join(json.loads((tmp_path / "ds2" / "report" / "summary.json").read_text())["assumptions"])
    assert "6 pairs within 0.02 s" in notes and "one may serve several images" in notes


def test_associate_stamps_is_tums_rule() -> None:
    # the closest pair first, over all pairs: not each a's nearest in turn
    assert associate_stamps(np.array([0, 5]), np.array([3, 9]), 10).tolist() == [1, 0]
    assert associate_stamps(np.array([0, 5]), np.array([3, 9]), 10, reuse=True).tolist() == [0, 0]
    assert associate_stamps(np.array([0, 10, 20]), np.array([4, 21]), 8).tolist() == [0, -1, 1]
    assert associate_stamps(np.array([0, 10]), np.array([5]), 5).tolist() == [0, -1]  # a tie: the earlier a
    assert associate_stamps(np.array([0, 10]), np.array([5]), 4).tolist() == [-1, -1]
    assert associate_stamps(np.array([7]), np.array([9, 5]), 2).tolist() == [1]  # a tie: the earlier b, any order
    assert associate_stamps(np.array([1, 2]), np.array([], np.int64), 5).tolist() == [-1, -1]
    rng = np.random.default_rng(0)
    for _ in range(200):  # against the rule written out pair by pair
        a = np.sort(rng.integers(0, 60, rng.integers(1, 12)))
        b = rng.permutation(rng.integers(0, 60, rng.integers(1, 12)))
        tol = int(rng.integers(0, 12))
        pairs = sorted((abs(int(x) - int(y)), int(x), int(y), i, j) for i, x in enumerate(a)
                       for j, y in enumerate(b) if abs(int(x) - int(y)) <= tol)  # fmt: skip
        want, used = [-1] * len(a), set()
        for _d, _x, _y, i, j in pairs:
            if want[i] < 0 and j not in used:
                want[i] = j
                used.add(j)
        got = associate_stamps(a, b, tol).tolist()
        # the same pairs of stamps (b may repeat a stamp: compare the stamps, not the indices)
        assert [int(b[j]) if j >= 0 else None for j in got] == [int(b[j]) if j >= 0 else None for j in want]
        assert len({j for j in got if j >= 0}) == sum(j >= 0 for j in got)  # each b once
    assert stamp_ns("1305031102.175304") == 1305031102175304000
    assert stamp_ns("1.5e-3") == 1500000 and stamp_ns("rgb") is None and stamp_ns("nan") is None
    assert stamp_ns("1e20") is None and stamp_ns("9223372036.854775807") == 2**63 - 1  # int64 ns, or none


def test_errors_point_to_depth_list(seq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = str(seq / "groundtruth.txt")
    # --depth with TUM's depth folder: depth with its own timestamps, depth.txt beside it
    assert main(["convert", "images", gt, "--images", str(seq / "rgb"), "--depth", str(seq / "depth"), *FLAGS,
                 "--out", str(tmp_path / "o1")]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "no depth map named" in err and f"--depth-list {seq / 'depth.txt'} instead of --depth" in err
    # timestamp-named files, no list beside them: still the hint
    alone = tmp_path / "just_depth"
    alone.mkdir()
    for p in (seq / "depth").iterdir():
        (alone / p.name).write_bytes(p.read_bytes())
    assert main(["convert", "images", gt, "--images", str(seq / "rgb"), "--depth", str(alone), *FLAGS,
                 "--out", str(tmp_path / "o2")]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "named by timestamps of their own (depth stamped apart" in err and "--depth-list FILE" in err
    # a folder of other names and no list: only what is missing, no hint
    other = tmp_path / "maps"
    other.mkdir()
    assert cv2.imwrite(str(other / "frame_0.png"), np.ones((H, W), np.uint16))
    assert main(["convert", "images", gt, "--images", str(seq / "rgb"), "--depth", str(other), *FLAGS,
                 "--out", str(tmp_path / "o3")]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "no depth map named" in err and "--depth-list" not in err
    # the sequence folder as the source: the TUM command
    assert main(["convert", "images", str(seq), "--out", str(tmp_path / "o4"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "no poses found" in err
    assert f"{seq / 'groundtruth.txt'} --format tum --images {seq / 'rgb'} --depth-list {seq / 'depth.txt'}" in err
    # a pose missing for an image: the short flag is named
    lines = (seq / "groundtruth.txt").read_text().splitlines()
    (seq / "groundtruth.txt").write_text("\n".join(lines[:40]) + "\n")  # poses end at .470: images 4, 5 lack one
    assert main(["convert", "images", gt, "--images", str(seq / "rgb"), *FLAGS, "--out", str(tmp_path / "o5")]) != 0
    err = capsys.readouterr().err
    assert "2 of 6 images have no pose within 0.02 s" in err and "--skip-unmatched" in err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_depth_list_refused_where_it_cannot_apply(seq: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give one"):
        ImagesConfig(depth=str(seq / "depth"), depth_list=str(seq / "depth.txt"))
    with pytest.raises(ConfigError, match="depth_tolerance_s must be > 0"):
        ImagesConfig(depth_tolerance_s=0.0)
    kitti = tmp_path / "k.txt"
    kitti.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(PoseImportError, match="only a TUM trajectory"):
        convert_images(kitti, tmp_path / "o", ImagesConfig(images=str(seq / "rgb"),
                       depth_list=str(seq / "depth.txt")), progress=False)  # fmt: skip
    # a listed depth image that does not exist is named, with where names are looked for
    (seq / "depth" / f"{_stamp(380, '911')}.png").unlink()
    cfg = ImagesConfig(images=str(seq / "rgb"), depth_list=str(seq / "depth.txt"), fx=12.0, skip_unmatched=True)
    with pytest.raises(PoseImportError, match=r"1 of the depth images it lists .* are missing: .*380911.png"):
        convert_images(seq / "groundtruth.txt", tmp_path / "o2", cfg, progress=False)
    assert not (tmp_path / "o2").exists()


def test_depth_list_pngs_are_read_at_tums_scale_unless_told(seq: Path, tmp_path: Path) -> None:
    """TUM RGB-D's 16-bit depth PNGs hold 5000 units per metre: without --depth-scale a --depth-list import reads them
    so (not at the millimetre default, 5x too far), and says so; --depth-scale still wins."""
    cfg = ImagesConfig(depth_list=str(seq / "depth.txt"), images=str(seq / "rgb"), fx=12.0, skip_unmatched=True)
    ds = Dataset(convert_images(seq / "groundtruth.txt", tmp_path / "ds", cfg, progress=False))
    assert {_image_index(ds, i): round(float(ds.read_depth(i)[0, 0]) * 5000) for i in range(len(ds))} == EXPECT
    scale = ds.manifest.extra["conversion"]["depth_import"]["scale"]
    assert scale["units_per_m"] == 5000.0 and "TUM RGB-D" in scale["from"], scale
    cfg = ImagesConfig(depth_list=str(seq / "depth.txt"), images=str(seq / "rgb"), fx=12.0, skip_unmatched=True,
                       depth_scale=1000.0)  # fmt: skip
    ds = Dataset(convert_images(seq / "groundtruth.txt", tmp_path / "mm", cfg, progress=False))
    assert {_image_index(ds, i): round(float(ds.read_depth(i)[0, 0]) * 1000) for i in range(len(ds))} == EXPECT


def test_a_listed_image_that_is_missing_is_refused_with_the_flag_that_leaves_it_out(seq: Path, tmp_path: Path) -> None:
    """An image rgb.txt lists but the folder lacks: the error names it and --skip-missing, which leaves that frame
    out (named in the report's notes) for a TUM list as for transforms.json."""
    gone = sorted((seq / "rgb").iterdir())[2]
    gone.unlink()
    cfg = ImagesConfig(image_list=str(seq / "rgb.txt"), depth_list=str(seq / "depth.txt"), fx=12.0,
                       depth_scale=5000.0, skip_unmatched=True)  # fmt: skip
    with pytest.raises(PoseImportError, match=rf"1 of 5 images are missing: .*{gone.name}.*--skip-missing"):
        convert_images(seq / "groundtruth.txt", tmp_path / "ds", cfg, progress=False)
    cfg.skip_missing = True
    ds = Dataset(convert_images(seq / "groundtruth.txt", tmp_path / "ds", cfg, progress=False))
    assert len(ds) == 4 and 2 not in {_image_index(ds, i) for i in range(len(ds))}
    notes = " | ".join(json.loads((tmp_path / "ds" / "report" / "summary.json").read_text())["assumptions"])
    assert f"1 of 5 images left out: image missing (skip_missing): {gone.name}" in notes, notes
