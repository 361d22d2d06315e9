"""The COLMAP set-up shared by the flight's structure from motion and the lens calibration
(pose2rgbd.geometry.colmap_sfm); both callers' runs are tested with their own modules."""

from __future__ import annotations

import logging
import sys

import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry.colmap_sfm import colmap_workspace, load_pycolmap


def test_the_workspace_is_removed_and_colmap_logging_restored_even_on_an_error() -> None:
    pycolmap = pytest.importorskip("pycolmap")
    before = pycolmap.logging.minloglevel
    with pytest.raises(RuntimeError, match="inside"), colmap_workspace(pycolmap, "pose2rgbd-test-") as root:
        assert (root / "images").is_dir() and root.name.startswith("pose2rgbd-test-")
        if not logging.getLogger("pose2rgbd.geometry.colmap_sfm").isEnabledFor(logging.DEBUG):  # the default logger
            assert pycolmap.logging.minloglevel == 2  # COLMAP's INFO and WARNING lines quiet
        (root / "images" / "a.png").write_bytes(b"x")
        raise RuntimeError("inside")
    assert not root.exists()
    assert pycolmap.logging.minloglevel == before


def test_without_pycolmap_the_error_names_who_needs_it_and_the_way_around(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap now raises ImportError
    want = r"^the thing needs pycolmap \(.*; pip install 'pycolmap>=3.12'\); or do that$"
    with pytest.raises(ConfigError, match=want):
        load_pycolmap("the thing", "do that")
