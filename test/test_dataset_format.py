"""Dataset format v1: write / read / validate, atomic and append (crash-resumable) modes, training cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest, build_cache, load_cache
from pose2rgbd.errors import DatasetError, OutputError, OutputExistsError
from pose2rgbd.geometry import Datum, PinholeCamera, T_from_tq, rpy_to_quat_xyzw

CAM = PinholeCamera.from_fov(40, 30, 80.0)


def _frame(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    depth = rng.uniform(1, 100, (30, 40)).astype(np.float32)
    depth[:5, :6] = np.nan  # invalid block
    depth[-5:, -6:] = np.inf  # sky block
    T = T_from_tq([i * 1.0, -i, 50.0], rpy_to_quat_xyzw(np.array([0.1 * i, -0.5, 0.3])))
    return rgb, depth, T


def _write(path: Path, n: int = 4, **kw) -> Path:
    m = Manifest("unit", CAM, datum=Datum(44.0, 26.0, 80.0), **kw)
    with DatasetWriter(path, m) as w:
        for i in range(n):
            rgb, depth, T = _frame(i)
            w.add_frame(1_700_000_000_000_000_000 + i * 33_333_333, T, rgb, depth, latlonalt=(44.0, 26.0, 80.0 + i))
    return path


def test_write_read_round_trip(tmp_path):
    ds = Dataset(_write(tmp_path / "ds"))
    assert len(ds) == 4 and ds.manifest.depth_kind == "metric" and ds.camera == CAM
    for i in range(4):
        rgb, depth, T = _frame(i)
        np.testing.assert_array_equal(ds.read_rgb(i), rgb)  # png is lossless
        np.testing.assert_array_equal(ds.read_depth(i), depth)  # NaN and +inf survive
        np.testing.assert_allclose(ds.frames.T_world_cam[i], T, atol=1e-12)
        assert ds.frames.latlonalt[i, 2] == 80.0 + i
    assert ds.frames.stamp_ns.dtype == np.int64 and ds.frames.stamp_ns[1] - ds.frames.stamp_ns[0] == 33_333_333
    assert ds.manifest.datum == Datum(44.0, 26.0, 80.0)
    # no temporary directories left beside the dataset
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_fingerprint_tracks_content(tmp_path):
    a = Dataset(_write(tmp_path / "a")).fingerprint()
    b = Dataset(_write(tmp_path / "b")).fingerprint()
    c = Dataset(_write(tmp_path / "c", n=3)).fingerprint()
    assert a == b and a != c


def test_atomic_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError), DatasetWriter(out, Manifest("x", CAM)) as w:
        rgb, depth, T = _frame(0)
        w.add_frame(0, T, rgb, depth)
        raise RuntimeError("simulated Ctrl-C / crash")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_frames(tmp_path):
    with DatasetWriter(tmp_path / "ds", Manifest("x", CAM)) as w:
        rgb, depth, T = _frame(0)
        with pytest.raises(DatasetError, match="manifest camera"):
            w.add_frame(0, T, rgb[:10], depth)
        with pytest.raises(DatasetError, match="integer nanoseconds"):
            w.add_frame(0.5, T, rgb, depth)  # type: ignore[arg-type]
        with pytest.raises(DatasetError, match="uint8"):
            w.add_frame(0, T, rgb.astype(np.float32), depth)
        w.add_frame(0, T, rgb, depth)
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite"):
        DatasetWriter(tmp_path / "ds", Manifest("x", CAM))


def test_an_empty_folder_takes_the_dataset_and_a_folder_of_other_files_is_refused_without_overwrite_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the user made for the output, empty: the dataset goes in without --overwrite. A folder of the
    user's own files: refused, saying --overwrite would not replace it (it only replaces an earlier dataset), and
    the files are kept."""
    (tmp_path / "empty").mkdir()
    assert len(Dataset(_write(tmp_path / "empty"))) == 4
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"is a folder that is not a dataset .*only replaces an earlier dataset") as e:
        DatasetWriter(mine, Manifest("x", CAM))
    assert "pass --overwrite" not in str(e.value)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"
    # the folder the command runs in, even empty, cannot be moved aside: refused before any work (its partial
    # dataset would have been made inside it)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(OutputError, match="the folder the command runs in"):
        DatasetWriter(Path("."), Manifest("x", CAM))
    assert list((tmp_path / "here").iterdir()) == []


def test_append_mode_survives_torn_row_and_resumes(tmp_path):
    out = tmp_path / "rec"
    w = DatasetWriter(out, Manifest("rec", CAM), mode="append")
    for i in range(3):
        rgb, depth, T = _frame(i)
        w.add_frame(i * 100, T, rgb, depth)
    # simulate a crash in the middle of writing the 4th row: no close(), torn line
    with open(out / "frames.csv", "a") as f:
        f.write("3,300,1.0,2.0")
    assert len(Dataset(out)) == 3  # readable after the crash
    w2 = DatasetWriter(out, Manifest("rec", CAM), mode="append")
    assert len(w2) == 3
    rgb, depth, T = _frame(3)
    w2.add_frame(300, T, rgb, depth)
    w2.close()
    ds = Dataset(out)
    assert len(ds) == 4 and list(ds.frames.index) == [0, 1, 2, 3]
    # what differs is named, both ways, and what to do
    with pytest.raises(DatasetError) as e:
        DatasetWriter(out, Manifest("rec", CAM.scaled(20, 15), depth_kind="none"), mode="append")
    msg = str(e.value)
    assert "cannot resume, the existing dataset has another camera and depth kind than the new frames" in msg, msg
    assert f"camera {CAM.width}x{CAM.height}, fx" in msg and "there, 20x15, fx" in msg, msg
    assert "depth kind 'metric' there, 'none' here" in msg and "write them into a new dataset" in msg, msg
    with pytest.raises(DatasetError, match=r"another camera than the new frames .* record with --size 40x30"):
        DatasetWriter(out, Manifest("rec", CAM.scaled(20, 15)), mode="append")  # the same camera, resized


def _edit_manifest(path: Path, fn) -> None:
    m = yaml.safe_load((path / "manifest.yaml").read_text())
    fn(m)
    (path / "manifest.yaml").write_text(yaml.safe_dump(m))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(version=2), "version 2 is not supported"),
        (lambda m: m.update(format="other"), "'format' is 'other'"),
        (lambda m: m.pop("camera"), "missing required key 'camera'"),
        (lambda m: m["depth"].update(kind="feet"), "depth.kind is 'feet'"),
        (lambda m: m["camera"].update(width=-3), "bad 'camera'"),
        (lambda m: m["camera"].update(fx=float("nan")), "bad 'camera': camera: fx is nan; intrinsics must be finite"),
        (lambda m: m["camera"].update(cy=float("inf")), "cy is inf; intrinsics must be finite"),
        (lambda m: m["camera"].update(width=64.9), "camera width is 64.9, not a whole number of pixels"),
        (lambda m: m["camera"].update(height="12.5"), "camera height is '12.5', not a whole number"),
        (lambda m: m.update(sources=[{"id": 7}]), "source_id 0 is not declared"),
    ],
)
def test_broken_manifests_name_file_and_problem(tmp_path, edit, message):
    path = _write(tmp_path / "ds", n=2)
    _edit_manifest(path, edit)
    with pytest.raises(DatasetError, match=message) as e:
        Dataset(path)
    assert "manifest.yaml" in str(e.value) or "frames.csv" in str(e.value)


def test_whole_float_size_is_accepted(tmp_path):
    path = _write(tmp_path / "ds", n=2)
    w = CAM.width
    _edit_manifest(path, lambda m: m["camera"].update(width=float(w)))
    assert Dataset(path).camera.width == w


def test_broken_tables_and_files(tmp_path):
    path = _write(tmp_path / "ds", n=3)
    csv_text = (path / "frames.csv").read_text()
    lines = csv_text.splitlines()
    (path / "frames.csv").write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
    with pytest.raises(DatasetError, match="out of sequence"):
        Dataset(path)
    fields = lines[2].split(",")
    fields[1] = "not-a-stamp"
    (path / "frames.csv").write_text(csv_text.replace(lines[2], ",".join(fields)))
    with pytest.raises(DatasetError, match=r"frames.csv:3"):
        Dataset(path)
    (path / "frames.csv").write_text(csv_text)
    os.remove(path / "rgb" / "000001.png")
    with pytest.raises(DatasetError, match=r"000001\.png is listed but missing"):
        Dataset(path)
    (path / "manifest.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DatasetError, match="not valid YAML"):
        Dataset(path)
    with pytest.raises(DatasetError, match="not found"):
        Dataset(tmp_path / "missing")


def test_training_cache_built_once_and_reused(tmp_path, caplog):
    ds = Dataset(_write(tmp_path / "ds", n=3))
    with caplog.at_level("INFO", logger="pose2rgbd.dataset.cache"):
        c = build_cache(ds, 16, progress=False)
    assert "the 40x30 images are resized to 16x16 (the models render square images)" in caplog.text  # 4:3 -> 1:1
    assert c.rgb.shape == (3, 16, 16, 3) and c.depth is not None and c.depth.shape == (3, 16, 16)
    assert isinstance(c.rgb, np.memmap)
    assert c.camera == CAM.scaled(16, 16)
    np.testing.assert_allclose(c.T_world_cam, ds.frames.T_world_cam)
    mtime = (c.path / "rgb.npy").stat().st_mtime_ns
    c2 = build_cache(ds, 16, progress=False)
    assert c2.path == c.path and (c2.path / "rgb.npy").stat().st_mtime_ns == mtime
    # nearest-neighbour depth: every cached value exists in the source map (no blended depths)
    src = ds.read_depth(0)
    finite = c.depth[0][np.isfinite(c.depth[0])]
    assert np.isin(finite, src).all()
    assert load_cache(c.path).fingerprint == ds.fingerprint()


def test_torch_dataset_items(tmp_path):
    torch = pytest.importorskip("torch")
    from pose2rgbd.dataset.torch_dataset import PoseRGBDDataset
    from pose2rgbd.models.normalization import PoseNormalizer

    class Model:  # the dataset asks the model to normalize poses (the model owns its normalizer)
        def normalize_poses(self, T):
            return norm.normalize(T)

    ds = Dataset(_write(tmp_path / "ds", n=4))
    c = build_cache(ds, 8, progress=False)
    norm = PoseNormalizer.fit(c.T_world_cam[:3], "6dof-quat")
    td = PoseRGBDDataset(c, [0, 1, 2], Model())
    torch.testing.assert_close(td[2]["pose"], torch.from_numpy(norm.normalize(c.T_world_cam[2:3])[0]))
    item = td[1]
    assert item["pose"].shape == (7,) and item["rgb"].shape == (3, 8, 8) and item["depth"].shape == (1, 8, 8)
    assert item["rgb"].min() >= -1 and item["rgb"].max() <= 1 and item["index"] == 1
    assert torch.isnan(td[0]["depth"]).any()  # raw depth keeps NaN (invalid); the model owns normalization
    with pytest.raises(IndexError):
        PoseRGBDDataset(c, [9], Model())


def test_png_images_are_lossless_with_the_up_filter_and_without_it_on_an_older_opencv() -> None:
    """The dataset's PNG: rows filtered by the row above where OpenCV has the setting (4.12 and newer), libpng's
    own choice where it has not (a distribution's older python3-opencv: the module imports and writes all the same);
    lossless both ways."""
    import types

    import cv2

    from pose2rgbd.dataset.writer import png_rgb_params

    old = types.SimpleNamespace(IMWRITE_PNG_COMPRESSION=cv2.IMWRITE_PNG_COMPRESSION)
    assert png_rgb_params(old) == [cv2.IMWRITE_PNG_COMPRESSION, 1]
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    rgb[:24] = rgb[:24] // 16  # a smooth-ish half, where filters matter
    for params in (png_rgb_params(), png_rgb_params(old)):
        ok, buf = cv2.imencode(".png", rgb, params)
        assert ok and np.array_equal(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), rgb)
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):
        assert png_rgb_params()[2:] == [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def test_a_training_run_given_as_a_dataset_names_its_dataset(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"method: hybrid\ndataset: {tmp_path / 'flight1'}\n")
    (run / "last.pt").write_bytes(b"weights")
    with pytest.raises(DatasetError, match=r"is a training run \(config.yaml, checkpoints\), not a dataset") as e:
        Dataset(run)
    assert f"its dataset, as its config.yaml records it, is {tmp_path / 'flight1'}" in str(e.value)


@pytest.mark.parametrize(
    ("column", "value", "must"),
    [
        (1, "abc", "column stamp_ns is 'abc'; it must be an integer, the frame's time in nanoseconds since the epoch"),
        (1, "1.7e18", "column stamp_ns is '1.7e18'; it must be an integer, the frame's time in nanoseconds"),
        (1, "99999999999999999999", "column stamp_ns is '99999999999999999999'; it must be an integer"),
        (3, "north", "column ty is 'north'; it must be a number, metres in the world frame"),
        (10, "?", "column lon is '?'; it must be a number in degrees, or empty (no GPS)"),
        (12, "a", "column source_id is 'a'; it must be an integer, a source id the manifest's 'sources' declares"),
    ],
)
def test_a_bad_value_in_frames_csv_names_its_column_and_what_it_must_be(
    tmp_path: Path, column: int, value: str, must: str
) -> None:
    """`frames.csv:4: invalid literal for int() with base 10: 'abc'` named neither the column nor what it holds."""
    path = _write(tmp_path / "ds", n=3)
    lines = (path / "frames.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[column] = value
    lines[3] = ",".join(fields)
    (path / "frames.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        Dataset(path)
    assert str(e.value) == f"{path / 'frames.csv'}:4: " + str(e.value).split(":4: ", 1)[1] and must in str(e.value)


def test_a_failed_or_interrupted_cache_build_leaves_no_cache_folder(tmp_path: Path, monkeypatch) -> None:
    """`dataset cache D` stopped by an error (a damaged image) or by Ctrl-C left an empty `cache/` in the dataset;
    the folders the build made are removed when it makes no cache. A cache folder that holds another build's cache
    stays."""
    import pose2rgbd.dataset.cache as cache_mod

    path = _write(tmp_path / "ds", n=3)
    (path / "rgb" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode image"):
        build_cache(path, 16, progress=False)
    assert not (path / "cache").exists()
    with pytest.raises(DatasetError):
        build_cache(path, 16, cache_root=tmp_path / "caches" / "deep", progress=False)
    assert not (tmp_path / "caches").exists()
    path = _write(tmp_path / "ok", n=3)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "resize_depth_nearest", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_cache(path, 16, progress=False)
    assert not (path / "cache").exists()
    monkeypatch.undo()
    kept = build_cache(path, 16, progress=False).path
    monkeypatch.setattr(cache_mod, "resize_depth_nearest", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_cache(path, 24, progress=False)
    assert [p.name for p in (path / "cache").iterdir()] == [kept.name]


def test_dataset_cache_without_size_says_the_size_it_builds_at_and_why(tmp_path: Path, capsys) -> None:
    """`dataset cache D` with no --size built at 128 from a 40x30 dataset without a word; it says the size and why
    (what `train` trains at by default), and that default is the default method's model.size."""
    from pose2rgbd.cli.dataset import DEFAULT_CACHE_SIZE
    from pose2rgbd.cli.main import main
    from pose2rgbd.cli.train import DEFAULT_METHOD
    from pose2rgbd.methods.pose2rgbd.config import Pose2RGBDConfig

    assert DEFAULT_METHOD == "pose2rgbd" and Pose2RGBDConfig().size == DEFAULT_CACHE_SIZE == 128
    path = _write(tmp_path / "ds", n=3)
    assert main(["dataset", "cache", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(next((path / "cache").iterdir())) and out.strip().split("/")[-1].startswith("128-")
    assert "dataset cache: no --size: the cache is 128x128, the size `pose2rgbd train` trains at by default" in err
    assert "the dataset's 40x30 images are upscaled to it" in err and "Give --size the size your model" in err, err
    assert main(["dataset", "cache", str(path), "--size", "16"]) == 0
    out, err = capsys.readouterr()
    assert "/16-" in out and "no --size" not in err
