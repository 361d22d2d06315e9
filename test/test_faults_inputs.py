"""Inputs that change or are damaged under a command: a dataset edited in place after its training cache was built,
localization images whose bit depth or encoding is not what it seems, truncated videos (rows of the fault table
in docs/reliability.md)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.experiments.toy import make_toy_dataset

SIZE = 16


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return make_toy_dataset(tmp_path / "ds", n_survey=4, n_route=2, size=SIZE)


# ------------------------------------------------------------------------- a dataset edited after its cache
def _edit_depth_keeping_size(ds: Path, frame: int, value: float) -> Path:
    """Overwrite depth map ``frame`` in place with a constant (same shape, dtype, so the same file size)."""
    p = ds / Dataset(ds).frames.depth[frame]
    old = np.load(p)
    before = p.stat().st_size
    np.save(p, np.full_like(old, value))
    assert p.stat().st_size == before
    return p


def test_depth_edited_in_place_rebuilds_the_cache(toy: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = build_cache(toy, SIZE, progress=False)
    assert first.depth is not None and not np.allclose(first.depth[1], 7.0)
    p = _edit_depth_keeping_size(toy, 1, 7.0)
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 1_000_000_000))  # a coarse-clock file system
    with caplog.at_level(logging.WARNING):
        again = build_cache(toy, SIZE, progress=False)
    assert again.path == first.path  # the same dataset fingerprint: the cache itself had to notice
    assert again.depth is not None and np.allclose(again.depth[1], 7.0)
    assert "training cache out of date: 1 file(s) changed since it was built" in caplog.text
    assert Dataset(toy).frames.depth[1] in caplog.text  # the file is named


def test_image_edited_in_place_rebuilds_the_cache(toy: Path) -> None:
    build_cache(toy, SIZE, progress=False)
    p = toy / Dataset(toy).frames.rgb[2]
    ok, buf = cv2.imencode(".png", np.full((SIZE, SIZE, 3), 255, np.uint8))
    assert ok
    p.write_bytes(buf.tobytes())
    again = build_cache(toy, SIZE, progress=False)
    assert (np.asarray(again.rgb[2]) == 255).all()


def test_deep_compares_content_when_size_and_mtime_are_kept(toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_cache(toy, SIZE, progress=False)
    p = toy / Dataset(toy).frames.depth[0]
    st = p.stat()
    _edit_depth_keeping_size(toy, 0, 3.0)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # `cp -p` / `rsync -t` of another version keeps the mtime
    kept = build_cache(toy, SIZE, progress=False)  # size + mtime only: documented as missing this edit
    assert kept.depth is not None and not np.allclose(kept.depth[0], 3.0)
    assert main(["dataset", "cache", str(toy), "--size", str(SIZE), "--deep"]) == 0
    deep = build_cache(toy, SIZE, progress=False, deep=True)
    assert deep.depth is not None and np.allclose(deep.depth[0], 3.0)
    capsys.readouterr()


def test_cache_of_an_older_version_is_rebuilt(toy: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = build_cache(toy, SIZE, progress=False)
    (first.path / "source_stat.npy").unlink()  # what a cache built before files were recorded looks like
    with caplog.at_level(logging.WARNING):
        again = build_cache(toy, SIZE, progress=False)
    assert "it does not record the files it was built from" in caplog.text
    assert (again.path / "source_stat.npy").is_file()


# ---------------------------------------------------------------- localization input: bit depth, damaged JPEGs
LOC_SIZE = 32


@pytest.fixture(scope="module")
def loc_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from pose2rgbd.models.checkpoint import save_checkpoint
    from pose2rgbd.testing.toy_localizer import make_toy_localizer_checkpoint

    ck = make_toy_localizer_checkpoint(LOC_SIZE)
    path = tmp_path_factory.mktemp("loc") / "toy.pt"
    return save_checkpoint(path, ck.model, dataset_fingerprint="fp", camera=ck.camera)


def _scenes(n: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smooth 8-bit RGB images that differ (the toy localizer's pose depends on them)."""
    rng = np.random.default_rng(seed)
    return [
        cv2.resize(rng.integers(0, 256, (3, 4, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(n)
    ]


def _textured(h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(5)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (7, 7), 2)


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _garbled(data: bytes) -> bytes:
    """Overwrite 64 bytes in the middle of the compressed data (a bad sector, a bit-flipping link). JPEG has no
    checksum: libjpeg notices most such damage (about 8 in 10 seeds here), not all; this seed is one it notices."""
    rng = np.random.default_rng(0)
    g = bytearray(data)
    mid = len(g) // 2
    g[mid : mid + 64] = rng.integers(0, 256, 64).astype(np.uint8).tobytes()
    return bytes(g)


def test_mono16_with_10_bit_data_is_scaled_by_its_bit_depth(loc_ckpt: Path) -> None:
    from pose2rgbd import messages as M
    from pose2rgbd.inference import EngineConfig, LocalizeEngine
    from pose2rgbd.messages import TypestoreFactory, get_typestore
    from pose2rgbd.nodes import LocalizerConfig, LocalizerNode

    f = TypestoreFactory(get_typestore("humble"))
    grey = [cv2.cvtColor(s, cv2.COLOR_RGB2GRAY) for s in _scenes(3)]
    msgs = [M.image(f, k + 1, "cam", g.astype(np.uint16) << 2, "mono16") for k, g in enumerate(grey)]  # 10-bit
    engine = LocalizeEngine.from_config(EngineConfig(checkpoint=str(loc_ckpt), warmup=0, device="cpu"))
    node = LocalizerNode(LocalizerConfig(), engine, f)
    for g, m in zip(grey, msgs):
        rgb, _, _ = node.decode(m)
        assert rgb is not None
        np.testing.assert_array_equal(rgb[..., 0], g)  # the 10 bits, not the high byte (values 0..3)
    poses = [M.pose_to_matrix(node.on_image(m, 10)[0][1].pose.pose) for m in msgs]
    assert not np.allclose(poses[0], poses[1]) and not np.allclose(poses[1], poses[2])  # not one pose for all
    fixed = LocalizerNode(LocalizerConfig(input_bit_depth=16), engine, f).decode(msgs[0])[0]
    assert fixed is not None and fixed.max() <= 3  # a full-range setting reads 10-bit data as near black
    with pytest.raises(Exception, match="input_bit_depth"):
        LocalizerConfig(input_bit_depth=5)


def test_localize_images_reads_16_bit_pngs_by_bit_depth_and_rejects_damaged_jpegs(
    loc_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.inference import EngineConfig, LocalizeEngine
    from pose2rgbd.inference.images import fit_to_input

    folder = tmp_path / "imgs"
    folder.mkdir()
    scenes = _scenes(2)
    cv2.imwrite(str(folder / "a_8bit.png"), scenes[0][..., ::-1])
    cv2.imwrite(str(folder / "b_10bit_in_16.png"), scenes[1][..., ::-1].astype(np.uint16) << 2)
    good = _jpeg(_textured())
    (folder / "c_truncated.jpg").write_bytes(good[: len(good) * 3 // 10])
    (folder / "d_garbled.jpg").write_bytes(_garbled(good))
    (folder / "e_good.jpg").write_bytes(good)
    png = cv2.imencode(".png", scenes[0])[1].tobytes()
    (folder / "f_truncated.png").write_bytes(png[: len(png) // 3])
    out = tmp_path / "poses.csv"
    assert main(["localize", "images", str(folder), "--checkpoint", str(loc_ckpt), "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    rows = {ln.split(",")[0]: ln.split(",") for ln in out.read_text().splitlines()[1:]}
    assert sorted(rows) == ["a_8bit.png", "b_10bit_in_16.png", "e_good.jpg"]  # damaged files get no pose
    assert "c_truncated.jpg: damaged JPEG: truncated" in text, text
    assert "d_garbled.jpg: damaged JPEG (the decoder reported: Corrupt JPEG data" in text, text
    # the decoder's words, without OpenCV's log prefix ([ WARN:0@0.5] global grfmt_png.cpp:793 function)
    assert "f_truncated.png: not a decodable image (PNG input buffer is incomplete)" in text, text
    assert "[ WARN" not in text and ".cpp:" not in text, text
    engine = LocalizeEngine.from_config(EngineConfig(checkpoint=str(loc_ckpt), warmup=0, device="cpu"))
    ref = engine.localize(fit_to_input(scenes[1], engine.input_hw))  # the 8-bit original of the 10-bit file
    np.testing.assert_allclose([float(v) for v in rows["b_10bit_in_16.png"][1:4]], ref.T_world_cam[0, :3, 3],
                               atol=1e-4)  # fmt: skip


def test_a_garbled_compressed_jpeg_is_rejected_as_corrupt(loc_ckpt: Path) -> None:
    from pose2rgbd import messages as M
    from pose2rgbd.inference import EngineConfig, LocalizeEngine
    from pose2rgbd.messages import TypestoreFactory, get_typestore
    from pose2rgbd.nodes import LocalizerConfig, LocalizerNode

    f = TypestoreFactory(get_typestore("humble"))
    good = M.compressed_image(f, 1, "cam", _textured(), "jpeg", "rgb8")
    bad = M.compressed_image(f, 2, "cam", _textured(), "jpeg", "rgb8")
    bad.data = np.frombuffer(_garbled(bytes(bad.data)), np.uint8).copy()
    engine = LocalizeEngine.from_config(EngineConfig(checkpoint=str(loc_ckpt), warmup=0, device="cpu"))
    node = LocalizerNode(LocalizerConfig(image_type="compressed"), engine, f)
    assert node.on_image(good, 10)
    said = node.on_image(bad, 10)  # no pose: its status alone, saying why
    assert [t for t, _ in said] == ["localization_status"] and said[0][1].status[0].level == 2
    assert node.counters["rejected_corrupt"] == 1 and node.counters["frames"] == 1


# ------------------------------------------------------------------------------------------ truncated videos
def _faststart(src: Path, dst: Path) -> Path:
    """Copy an MP4 with its index ('moov') moved in front of the data, as `ffmpeg -movflags faststart` does:
    every chunk offset (stco / co64) moves by the size of moov."""
    import struct

    b = src.read_bytes()
    boxes, k = {}, 0
    while k < len(b):
        size, kind = struct.unpack(">I4s", b[k : k + 8])
        boxes[kind] = (k, size)
        k += size
    mo, ms = boxes[b"moov"]
    moov = bytearray(b[mo : mo + ms])
    for tag, fmt, width in ((b"stco", ">I", 4), (b"co64", ">Q", 8)):
        at = moov.find(tag)
        while at >= 0:
            n = struct.unpack(">I", moov[at + 8 : at + 12])[0]
            for e in range(n):
                pos = at + 12 + e * width
                moov[pos : pos + width] = struct.pack(fmt, struct.unpack(fmt, moov[pos : pos + width])[0] + ms)
            at = moov.find(tag, at + 4)
    fo, fs = boxes[b"ftyp"]
    rest = b[fo + fs : mo] + b[mo + ms :]
    dst.write_bytes(b[fo : fo + fs] + bytes(moov) + rest)
    return dst


def test_a_faststart_video_cut_short_is_reported_and_its_last_frame_dropped(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    d = shared_data / "gopro-gps-video"
    fast = _faststart(d / "karma.mp4", tmp_path / "fast.mp4")
    whole = cv2.VideoCapture(str(fast))
    declared = int(whole.get(cv2.CAP_PROP_FRAME_COUNT))
    whole.release()
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 10])
    from pose2rgbd.convert.sources.video import read_video_frames

    decoded = sum(1 for _ in read_video_frames(cut))
    assert 0 < decoded < declared  # OpenCV reads it, up to the cut
    out = tmp_path / "ds"
    with caplog.at_level(logging.WARNING):
        rc = main(["convert", "video", str(cut), "--gps", str(d / "derived_csv/karma_global_position.csv"),
                   "--gps-format", "karma", "--out", str(out), "--size", "107x60", "--max-lag", "3",
                   "--no-progress"])  # fmt: skip
    assert rc == 0
    assert "the file is truncated" in caplog.text and f"frames before the cut of {declared}" in caplog.text
    s = json.loads((out / "report" / "summary.json").read_text())
    assert s["frames"]["total"] == declared and s["frames"]["kept"] <= decoded - 1
    assert s["frames"]["dropped"]["video truncated: the frame before the cut (may be incomplete)"] == 1
    assert s["frames"]["dropped"]["video truncated: after the cut"] == declared - decoded
    assert any("the video file is truncated" in a for a in s["assumptions"])
    assert len(Dataset(out)) == s["frames"]["kept"]


def test_a_truncated_gopro_file_says_truncated_not_no_telemetry(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.convert.gopro import read_gpmf
    from pose2rgbd.errors import SyncError

    data = (shared_data / "gopro-gps-video" / "hero7.mp4").read_bytes()
    cut = tmp_path / "GOPR0001.MP4"
    cut.write_bytes(data[: len(data) * 3 // 10])
    with pytest.raises(SyncError, match="the file is truncated") as e:
        read_gpmf(cut)
    assert "no GoPro telemetry" not in str(e.value)
    assert main(["convert", "video", str(cut), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the file is truncated" in err and "no GoPro telemetry" not in err, err
    assert not (tmp_path / "o").exists()
