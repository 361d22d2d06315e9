"""What `localize` / `map` commands say of inputs given in a near-miss form: a file of a map for the map, a dataset
for a map and a map for a dataset, an image file or a video for a folder, broken links in the folder, a tiny image."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.errors import ConfigError, DatasetError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.inference.image_sequence import list_images
from pose2rgbd.inference.query_camera import MIN_QUERY_SIDE, query_geometry
from pose2rgbd.placemap.format import MapError, read_manifest


def test_a_file_of_a_map_and_a_dataset_for_a_map_are_named_as_such(map_world: dict) -> None:
    from pose2rgbd.dataset import Dataset

    with pytest.raises(MapError, match=r"a file of the place map .*give the map's folder"):
        read_manifest(map_world["map"] / "map.json")
    with pytest.raises(MapError, match=r"it is a dataset; build a map of it") as e:
        read_manifest(map_world["dataset"])
    # the way said once ("build a map of it with `pose2rgbd map build ...`"), not again as "; build one with ..."
    assert str(e.value).count("build ") == 2 and f"--dataset {map_world['dataset']} --out MAP" in str(e.value)
    with pytest.raises(DatasetError, match=r"is a place map, not a dataset"):
        Dataset(map_world["map"])


def test_an_image_file_for_the_folder_and_broken_links(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    with pytest.raises(ConfigError, match=r"a\.png: an image file; give the folder"):
        list_images(tmp_path / "a.png")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in list_images(tmp_path)] == ["a.png"]
    assert "1 broken link(s) left out: gone.jpg" in caplog.text


def test_a_video_for_the_folder_says_how_to_take_its_frames(tmp_path: Path) -> None:
    for name in ("clip.mp4", "GX010042.MP4", "c.mov"):
        (tmp_path / name).write_bytes(bytes(64))
        with pytest.raises(ConfigError, match=r"a video file, not a folder of images; extract its frames") as e:
            list_images(tmp_path / name)
        assert f"ffmpeg -i {tmp_path / name} -vf fps=2 DIR/%05d.jpg" in str(e.value)
        assert "pose2rgbd convert video" in str(e.value)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"notes\.txt: not a folder of images$"):
        list_images(tmp_path / "notes.txt")


def test_a_tiny_image_is_too_small_not_another_aspect_ratio() -> None:
    cam = PinholeCamera.from_fov(64, 48, 60.0)
    kw = {"lens": None, "intrinsics": None, "camera": None, "map_camera": cam, "map_hw": (48, 64), "fit_to_map": True}
    with pytest.raises(ConfigError, match=r"6x4: too small to localize"):
        query_geometry(6, 4, **kw)  # type: ignore[arg-type]
    assert query_geometry(MIN_QUERY_SIDE * 4, MIN_QUERY_SIDE * 3, **kw).wh == (64, 48)  # type: ignore[arg-type]
