"""The structure localizer given a keyframe map (a hybrid model's keyframes: posed RGB-D, no local features)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def _keyframe_map(out: Path) -> Path:
    from pose2rgbd.geometry.camera import PinholeCamera
    from pose2rgbd.placemap.keyframe_map import write_keyframe_map

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (3, 48, 64, 3), dtype=np.uint8)
    T = np.tile(np.eye(4), (3, 1, 1))
    T[:, 0, 3] = [0.0, 1.0, 2.0]
    write_keyframe_map(out, rgb=lambda k: rgb[k], depth=lambda k: np.full((48, 64), 5.0, np.float32),
                       T_world_cam=T, camera=PinholeCamera(64, 48, 50.0, 50.0, 31.5, 23.5), frames=np.arange(3),
                       stamp_ns=np.arange(3) * 10**9, source_id=np.zeros(3, np.int64),
                       dataset={"world_frame": "map"}, selection="all", rot_weight_m=5.0)  # fmt: skip
    return out


def test_a_keyframe_map_is_refused_by_the_structure_localizer_naming_it_and_map_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the localizer opened it and answered every image with no fix (nothing to match). Now the map is
    refused when the localizer is made, with what to do: the command exits 2 and names the map and `map build`."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.inference.structure import StructureLocalizer
    from pose2rgbd.placemap import MapError, PlaceMap

    kf = _keyframe_map(tmp_path / "keyframes")
    with pytest.raises(MapError, match="pose2rgbd map build") as e:
        StructureLocalizer(PlaceMap(kf))
    assert str(kf) in str(e.value) and "no local features" in str(e.value)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((48, 64, 3), np.uint8))
    out = tmp_path / "poses.csv"
    assert main(["localize", "images", str(images), "--map", str(kf), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(kf) in err and "`pose2rgbd map build`" in err and "Traceback" not in err
    assert not out.exists()
