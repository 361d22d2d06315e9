"""What `map build` refuses or warns of before it writes, and the mode of what it writes: flags outside their
declared range (the mechanism every command's config flags share), a map whose features have too few world points
to localize anything, and output folders readable by other users as any folder the umask allows."""

from __future__ import annotations

import argparse
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from test_map import _without_depth

from pose2rgbd.cli.main import main
from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.config_cli import Alias, Schema, add_config_flags, config_from_args
from pose2rgbd.errors import ConfigError


@pytest.fixture(scope="module")
def world(map_world: dict) -> dict:
    return map_world


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------- flags outside their range
@dataclass
class Inner:
    count: int = ranged_field(3, "a count", 1, 10)


@dataclass
class Toy:
    inner: Inner = field(default_factory=Inner, metadata={"help": "inner"})
    scale: float = ranged_field(0.5, "a share", 0.0, 1.0)
    name: str = help_field("x", "a name")


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--stride", "0"], "--stride (selection.stride): 0 is outside its range [1, 100000]"),
        (["--stride=-3"], "--stride (selection.stride): -3 is outside its range [1, 100000]"),
        (["--workers", "-1"], "--workers (workers): -1 is outside its range [0, 256]"),
        (["--set", "calibration.share=0.9"], "--set calibration.share: 0.9 is outside its range [0.01, 0.5]"),
        (["--global_desc.dims", "4"], "--global_desc.dims (global_desc.dims): 4 is outside its range [8, 8192]"),
        (["--config", "CONFIG"], "c.yaml (selection.stride): 0 is outside its range [1, 100000]"),
    ],
)
def test_map_build_refuses_a_flag_outside_its_range_and_names_it(
    world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    """`--stride 0` built a map of every frame in silence: the ranges declared with ranged_field were checked for
    ROS parameters only. Now every flag, --set and --config value of a command is checked against them."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("selection:\n  stride: 0\n")
    flags = [str(cfg) if f == "CONFIG" else f for f in flags]
    said = said.replace("c.yaml", str(cfg))
    out = tmp_path / "m"
    assert main(["map", "build", "--dataset", str(world["dataset"]), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"pose2rgbd map: error: {said}" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_every_commands_config_flags_are_checked_against_their_range() -> None:
    """The range is checked on what the command is given in the end (a value a later flag replaces is not refused),
    in nested sections too, for any command's schema."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser, lambda: Schema(Toy), (Alias("--count", "inner.count"),))
    cfg = config_from_args(parser.parse_args(["--count", "0", "--scale", "1.0", "--count", "10"]))
    assert cfg.inner.count == 10 and cfg.scale == 1.0
    with pytest.raises(ConfigError, match=r"^--scale \(scale\): 1\.5 is outside its range \[0\.0, 1\.0\]$"):
        config_from_args(parser.parse_args(["--scale", "1.5"]))
    with pytest.raises(ConfigError, match=r"^--count \(inner\.count\): 11 is outside its range \[1, 10\]$"):
        config_from_args(parser.parse_args(["--count", "11"]))


# ------------------------------------------------------------------------ a map that cannot localize anything
def test_map_build_refuses_a_map_without_world_points_and_says_what_to_do(
    world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two keyframes 200 frames apart, no depth: no feature is seen by both, so none gets a world point. Such a map
    was written (exit 0) and every query then failed with "too few matches"; now it is refused, naming why and
    what to do, and nothing is left behind."""
    ds = _without_depth(world["dataset"], tmp_path / "rgb_only")
    out = tmp_path / "m"
    argv = ["map", "build", "--dataset", str(ds), "--out", str(out), "--sources", "0", "--stride", "200",
            "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pose2rgbd map: error: 2 keyframes gave only 0 local features with a world point (of " in err, err
    assert "fewer than the 20 inliers a fix needs: such a map could localize no image" in err
    assert "a smaller --stride than 200" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["rgb_only"]


def test_a_map_with_few_world_points_per_keyframe_is_built_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Enough points for a fix in all, too few per keyframe for most queries (a query is matched against a few
    candidate keyframes): built, with a warning that says so and what to do."""
    from pose2rgbd.placemap.build import MIN_INLIERS, _check_points

    pts = np.full((400, 3), np.nan, np.float32)
    pts[:50] = 1.0  # 50 points over 5 keyframes: 10 per keyframe
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.placemap.build"):
        _check_points([pts], 400, 5, "triangulated", 80, "maps/m")
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "maps/m: only 50 of 400 local features (10 per keyframe) have a world point" in said
    assert f"a fix needs {MIN_INLIERS} inliers" in said and "a smaller --stride than 80" in said
    caplog.clear()
    pts[:] = 1.0  # 80 per keyframe: no warning
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.placemap.build"):
        _check_points([pts], 400, 5, "triangulated", 80, "maps/m")
    assert caplog.records == []


def test_the_builds_point_threshold_is_the_localizers_default_min_inliers() -> None:
    from pose2rgbd.inference.structure import StructureConfig
    from pose2rgbd.placemap.build import MIN_INLIERS

    assert StructureConfig().min_inliers == MIN_INLIERS


# ---------------------------------------------------------------------------------- the outputs' folder mode
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_hidden_sibling_folders_get_the_umasks_mode(tmp_path: Path, umask: int) -> None:
    """The folder a writer fills and renames into place (tempfile.mkdtemp made it 0700: a place map was
    drwx------, unreadable by a ROS node running as another user) gets 0777 less the umask, as any new folder."""
    from pose2rgbd.atomic import make_temp_dir

    before = os.umask(umask)
    try:
        d = make_temp_dir(tmp_path / "out")
        d2 = make_temp_dir(tmp_path / "out", "tmp")
    finally:
        os.umask(before)
    assert d != d2 and d.name.startswith(f".out.partial-{os.getpid()}-") and d2.name.startswith(".out.tmp-")
    assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(d2.stat().st_mode) == 0o777 & ~umask


def test_a_place_map_and_a_dataset_are_readable_as_the_umask_allows(world: dict) -> None:
    """The map (build_map, through MapWriter) and the dataset (DatasetWriter) the session fixture wrote."""
    mode = 0o777 & ~_umask()
    assert stat.S_IMODE(world["map"].stat().st_mode) == mode
    assert stat.S_IMODE(world["dataset"].stat().st_mode) == mode
