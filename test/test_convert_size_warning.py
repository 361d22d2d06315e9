"""A doubtful `--size` (pose2rgbd.config.size_warning): a width and height given the wrong way round, another aspect
ratio, or more pixels than the source has, are said before a conversion writes frames at that size."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pose2rgbd.config import size_warning


def test_size_warning_names_a_swapped_size_a_stretch_and_an_upscale() -> None:
    swapped = size_warning((144, 256), 848, 480)
    assert "wrong way round" in swapped and "stretched 3.14x upwards" in swapped and "--size 256x144" in swapped
    wide = size_warning((256, 256), 848, 480)
    assert "another aspect ratio" in wide and "wrong way round" not in wide and "--size 256x145" in wide, wide
    assert "larger than the 848x480 source" in size_warning((4000, 2264), 848, 480)
    assert size_warning((256, 144), 848, 480) == "" and size_warning(None, 848, 480) == ""
    assert size_warning((850, 480), 848, 480) == ""  # within 5 %: rounding, not a mistake


def test_a_video_conversion_says_its_size_is_swapped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`convert video` of a 96x64 clip with --size 32x48 warns before the frames are written, as the new user's
    144x256 for an 848x480 GoPro clip did not (portrait frames, fx 43 and fy 136, no word)."""
    from test_depth_stages import _video

    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.video import VideoFramesSource

    video = _video(tmp_path / "clip.avi", 4, wh=(96, 64))
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.convert"):
        VideoFramesSource(video, ConvertConfig(size="32x48")).plan(progress=False)
    assert any("wrong way round" in r.getMessage() for r in caplog.records), caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.convert"):
        VideoFramesSource(video, ConvertConfig(size="48x32")).plan(progress=False)
    assert "--size" not in caplog.text


def test_a_bag_conversion_says_its_size_under_the_bag_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The `--size` warning of `convert bag` came from the logger pose2rgbd.convert.sources.clock_offset (the
    shared base of the bag and video + GPS sources, about clock offsets); it is said under the source that reads the
    frames, as `convert video` and `convert images` say theirs."""
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import BagSource
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=4.0, size=32)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd"), BagSource(bag, ConvertConfig(size="16x32")) as src:
        src.plan(progress=False)
    said = [r for r in caplog.records if "--size 16x32" in r.getMessage()]
    assert [r.name for r in said] == ["pose2rgbd.convert.sources.bag"], [(r.name, r.getMessage()) for r in said]
