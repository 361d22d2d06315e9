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
