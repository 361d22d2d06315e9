"""Dataset summaries (pose2rgbd.dataset.summary) and the `dataset info` output built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest
from pose2rgbd.dataset.summary import DatasetSummary, summarize_dataset
from pose2rgbd.errors import DatasetError
from pose2rgbd.geometry import PinholeCamera, T_from_tq

CAM = PinholeCamera(40, 30, 35.25, 36.5, 19.5, 14.5)
T0 = 1_700_000_000_000_000_000
# (stamp offset ns, position m, source id)
FRAMES = [
    (0, (-2.0, 10.0, 50.0), 0),
    (250_000_000, (3.5, 12.0, 48.0), 0),
    (1_000_000_000, (1.0, 4.0, 51.5), 2),
    (2_750_000_000, (0.0, 7.0, 49.0), 5),
]


def _write(path: Path, depth_kind: str = "metric", extra: dict[str, object] | None = None) -> Path:
    sources = [{"id": i, "kind": "sim", "name": f"s{i}"} for i in (0, 2, 5)]
    man = Manifest("summary-unit", CAM, depth_kind=depth_kind, sources=sources, extra=dict(extra or {}))
    with DatasetWriter(path, man) as w:
        for dt, pos, sid in FRAMES:
            rgb = np.full((30, 40, 3), 90, np.uint8)
            depth = np.full((30, 40), 20.0, np.float32) if depth_kind != "none" else None
            w.add_frame(T0 + dt, T_from_tq(list(pos), [0.0, 0.0, 0.0, 1.0]), rgb, depth, source_id=sid)
    return path


def test_summary_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "ds")
    s = summarize_dataset(path)
    assert isinstance(s, DatasetSummary)
    assert s.path == path and s.name == "summary-unit" and s.frames == 4
    assert s.duration_s == pytest.approx(2.75, abs=1e-9)
    assert s.sources == 3 and s.within_sources_s == pytest.approx(0.25, abs=1e-9)  # source 0's two frames
    assert (s.width, s.height, s.fx, s.fy) == (40, 30, 35.25, 36.5)
    assert s.depth_kind == "metric"
    assert s.extent_m == pytest.approx((5.5, 8.0, 3.5))
    assert s.fingerprint == Dataset(path).fingerprint() and len(s.fingerprint) == 16
    # an opened Dataset gives the same summary
    assert summarize_dataset(Dataset(path)) == s
    assert summarize_dataset(_write(tmp_path / "nodepth", "none")).depth_kind == "none"


def test_summary_of_a_missing_dataset_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset directory not found"):
        summarize_dataset(tmp_path / "missing")


def test_cli_dataset_info_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.cli.main import main

    path = _write(tmp_path / "ds")
    assert main(["dataset", "info", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: pose2rgbd dataset v1, valid (files present; --deep reads every image and depth map)",
        "  name         summary-unit",
        "  frames       4 over 2.8 s, 3 source(s) (0.2 s within its sources: they lie apart in time)",
        "  camera       40x30 fx=35.2 fy=36.5",
        "  depth        metric, values p5 20 / median 20 / p95 20 m (4 frames sampled)",
        "  extent (m)   x 5.5  y 8.0  z 3.5",
        f"  fingerprint  {Dataset(path).fingerprint()}",
    ]


def test_a_suspect_import_is_said_by_dataset_info_and_map_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A dataset whose import's pose check found a likely mistake (``convert images``: verdict ``suspect``, its
    findings in report/summary.json) says so in ``dataset info``, and ``map build`` (as ``train``) warns before it
    builds on the poses; an import that passed says OK, a dataset no check ran on says nothing."""
    import contextlib
    import json
    import logging

    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset.summary import import_pose_check, suspect_import_warning
    from pose2rgbd.errors import Pose2RGBDError
    from pose2rgbd.placemap.build import build_map

    path = _write(tmp_path / "ds", extra={"pose_check": "suspect"})
    mistake = "the depth contradicts the poses: ... with the depth multiplied by 10: the depth units are off"
    (path / "report").mkdir()
    (path / "report" / "summary.json").write_text(json.dumps({"pose_check": {"verdict": "suspect",
                                                                             "mistakes": [mistake]}}))  # fmt: skip
    ds = Dataset(path)
    assert import_pose_check(ds) == ("suspect", [mistake])
    warning = suspect_import_warning(ds)
    assert warning is not None and "SUSPECT" in warning and mistake in warning and "convert again" in warning
    assert main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"  pose check   SUSPECT at import ({path / 'report'})" in out and f"  WARNING      {mistake}" in out
    # four flat grey frames make no map; the warning comes first
    with caplog.at_level(logging.WARNING, logger="pose2rgbd"), contextlib.suppress(Pose2RGBDError):
        build_map(path, tmp_path / "map", progress=False)
    assert any("SUSPECT" in r.getMessage() and mistake in r.getMessage() for r in caplog.records)
    # the report gone: the verdict still; an import that passed: OK, no warning; no import check: nothing
    (path / "report" / "summary.json").unlink()
    assert import_pose_check(Dataset(path)) == ("suspect", []) and suspect_import_warning(Dataset(path))
    passed = Dataset(_write(tmp_path / "ok", extra={"pose_check": "ok"}))
    assert import_pose_check(passed) == ("ok", []) and suspect_import_warning(passed) is None
    assert main(["dataset", "info", str(passed.path)]) == 0
    assert "  pose check   OK at import\n" in capsys.readouterr().out
    assert import_pose_check(Dataset(_write(tmp_path / "plain"))) is None


def _write_depth(
    path: Path, maps: list[np.ndarray], kind: str = "rosbag", extra: dict[str, object] | None = None
) -> Path:
    """A dataset of 40x30 frames with the depth maps ``maps`` (float32), from one source of ``kind``."""
    man = Manifest("depth-unit", CAM, sources=[{"id": 0, "kind": kind, "name": "s"}], extra=dict(extra or {}))
    with DatasetWriter(path, man) as w:
        for i, d in enumerate(maps):
            w.add_frame(T0 + i * 10**8, T_from_tq([float(i), 0.0, 50.0], [0.0, 0.0, 0.0, 1.0]),
                        np.full((30, 40, 3), 90, np.uint8), d)  # fmt: skip
    return path


def test_a_float_depth_of_65_535_m_is_not_called_a_16bit_sensor_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dataset info --deep` of a dataset converted from the simulator's 32FC1 depth warned that one pixel at
    65.535 m sat "at a 16-bit sensor's maximum code" and advised --depth-invalid-codes, which `convert bag` does not
    have. Depth is stored as float32 metres: a float depth that happens to be 65.535 m among depths that are no whole
    number of millimetres is a distance like any other, not a code; depth of whole codes with 65.535 still warns, with
    advice for how the dataset was made (no flag of another command)."""
    from pose2rgbd.cli.main import main

    rng = np.random.default_rng(0)
    floats = [rng.uniform(5.0, 300.0, (30, 40)).astype(np.float32) for _ in range(3)]
    floats[1][4, 7] = np.float32(65.535)
    path = _write_depth(tmp_path / "float", floats)
    assert main(["dataset", "info", str(path), "--deep", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and "65.535" not in out, out
    # whole millimetres (16-bit depth imported by another tool) with the maximum code kept: warned, no foreign flag
    codes = [(np.rint(f * 30) / 1000).astype(np.float32) for f in floats]  # whole mm, 0.15 .. 9 m
    codes[1][4, 7] = np.float32(65.535)
    path = _write_depth(tmp_path / "codes", codes)
    assert main(["dataset", "info", str(path), "--deep", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "WARNING      depth = 65.535: 1 pixel(s) in 1 file(s) sit at a 16-bit sensor's maximum code" in out, out
    assert "Set these pixels to NaN (invalid) in depth/*.npy" in out and "--depth-invalid-codes" not in out


def test_dataset_info_without_deep_is_not_valid_when_its_sample_disagrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest whose camera width no file has (edited to 80): `dataset info` said `valid` (exit 0) above its own
    line `depth is float32 (30, 40), expected float32 (30, 80)`. What the sample read is now the verdict: INVALID,
    the file and why, that it was a sample, exit 1."""
    import yaml

    from pose2rgbd.cli.main import main

    path = _write(tmp_path / "ds")
    man = yaml.safe_load((path / "manifest.yaml").read_text())
    man["camera"]["width"] = 80
    (path / "manifest.yaml").write_text(yaml.safe_dump(man))
    assert main(["dataset", "info", str(path)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{path}: pose2rgbd dataset v1, INVALID: rgb/000000.png: image is 40x30, the manifest "
                            "camera is 80x30"), first  # fmt: skip
    assert "found in a sample" in first and "--deep reads every image and depth map" in first, first
    # depth alone disagreeing (an image that fits) is found too
    man["camera"]["width"] = 40
    (path / "manifest.yaml").write_text(yaml.safe_dump(man))
    np.save(path / "depth" / "000002.npy", np.zeros((30, 41), np.float32))
    assert main(["dataset", "info", str(path)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert "INVALID: depth/000002.npy: depth is float32 (30, 41), expected float32 (30, 40)" in first, first


def test_dataset_info_notes_a_torn_last_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """frames.csv cut mid-line (a recorder stopped while writing it): the reader ignores the torn row, and
    `dataset info` now says so instead of nothing."""
    from pose2rgbd.cli.main import main

    path = _write(tmp_path / "ds")
    text = (path / "frames.csv").read_text()
    (path / "frames.csv").write_text(text[:-20])  # the last row cut
    assert main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  frames       3 over" in out, out
    assert "  note         frames.csv ends in a torn row (cut mid-line, no line end: '3," in out, out
    assert "ignored: a recording stopped while writing it; the 3 full rows before it are the dataset" in out, out
    (path / "frames.csv").write_text(text)
    assert main(["dataset", "info", str(path)]) == 0
    assert "torn row" not in capsys.readouterr().out
