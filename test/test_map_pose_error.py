"""The map's own pose error: a recording's GPS receiver states its error (NavSatFix covariance), the dataset's
manifest keeps it (`convert bag`, the record node), the place map carries it (`map build`, `map merge`), and the
structure localizer adds it to every fix's covariance (`structure.map_pose_error`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pose2rgbd.errors import DatasetError
from pose2rgbd.sync.gps import POSE_ERROR_SOURCE, reported_pose_error


def _cov(e: float, n: float, u: float) -> list[float]:
    return [e, 0, 0, 0, n, 0, 0, 0, u]


def test_reported_pose_error_is_the_median_of_the_fixes_that_state_one() -> None:
    cov = np.array([_cov(0.08, 0.10, 0.25), _cov(0.09, 0.09, 0.36), _cov(0.10, 0.10, 0.49), _cov(9.0, 9.0, 9.0)])
    kinds = np.array([2, 2, 1, 0])  # the last: covariance type unknown, not counted
    e = reported_pose_error(cov, kinds)
    assert e == {"horizontal_m": 0.3, "vertical_m": 0.6, "fixes": 3, "source": POSE_ERROR_SOURCE}
    assert reported_pose_error(cov, np.zeros(4)) is None  # no fix states one
    assert reported_pose_error(np.zeros((0, 9)), np.zeros(0)) is None
    nan = np.array([_cov(np.nan, 0.1, 0.1), _cov(0.0, 0.0, 0.0)])
    assert reported_pose_error(nan, np.array([2, 2])) is None  # NaN and zero variances say nothing


def test_manifest_keeps_pose_error_and_refuses_a_bad_one(tmp_path: Path) -> None:
    from pose2rgbd.dataset import Manifest
    from pose2rgbd.geometry import PinholeCamera

    m = Manifest(name="x", camera=PinholeCamera(64, 48, 50, 50, 32, 24), pose_error={"horizontal_m": 0.3,
                 "vertical_m": 0.5, "fixes": 3, "source": "s"})  # fmt: skip
    d = m.to_dict()
    assert Manifest.from_dict(d, "m").pose_error == d["pose_error"]
    assert "pose_error" not in Manifest(name="x", camera=m.camera).to_dict()  # unstated: not written (fingerprints)
    for bad in ({"horizontal_m": -1, "vertical_m": 0.5}, {"horizontal_m": 0.3}, {"horizontal_m": float("nan"),
                "vertical_m": 1.0}, [0.3, 0.5]):  # fmt: skip
        with pytest.raises(DatasetError, match=r"bad 'pose_error'.*horizontal_m, vertical_m"):
            Manifest.from_dict({**d, "pose_error": bad}, "m")


def test_convert_bag_and_the_record_node_state_the_gps_error(tmp_path: Path) -> None:
    """The synthetic flight bag's NavSatFix states 1e-4 m^2 on each axis: both the conversion and the recorder
    write 0.01 m into the dataset's manifest."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.nodes.recorder import RecorderConfig
    from pose2rgbd.runtime.offline import run_recorder_bag
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag)
    assert main(["convert", "bag", str(bag), "--out", str(tmp_path / "conv"), "--no-progress"]) == 0
    e = Dataset(tmp_path / "conv").manifest.pose_error
    assert (e["horizontal_m"], e["vertical_m"], e["source"]) == (0.01, 0.01, POSE_ERROR_SOURCE) and e["fixes"] > 10
    cfg = RecorderConfig()
    cfg.output.dataset = str(tmp_path / "rec")
    run_recorder_bag(cfg, bag)
    e = Dataset(tmp_path / "rec").manifest.pose_error
    assert (e["horizontal_m"], e["vertical_m"]) == (0.01, 0.01) and e["fixes"] >= 1


def test_the_map_carries_it_and_the_localizer_adds_it_to_every_fix(map_world: dict, tmp_path: Path) -> None:
    """A map of a dataset whose manifest states 0.3 m / 0.5 m: every fix's position covariance is the map-relative
    one plus diag(0.09, 0.09, 0.25), its confidence lower; `structure.map_pose_error false` publishes the
    map-relative one. A map whose dataset states nothing adds nothing."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference.self_calibration import self_calibrate
    from pose2rgbd.inference.structure import StructureConfig, StructureLocalizer
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, PlaceMap, build_map

    ds_path = tmp_path / "dataset"
    shutil.copytree(map_world["dataset"], ds_path)
    man = yaml.safe_load((ds_path / "manifest.yaml").read_text())
    man["pose_error"] = {"horizontal_m": 0.3, "vertical_m": 0.5, "fixes": 601, "source": POSE_ERROR_SOURCE}
    (ds_path / "manifest.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
    ds = Dataset(ds_path)
    build_map(
        ds_path,
        tmp_path / "map",
        MapBuildConfig(selection=MapSelection(sources=[0])),
        progress=False,
        calibrate=self_calibrate,
    )  # as `map build` does: a confidence model, P(error < bound) from the covariance
    pm = PlaceMap(tmp_path / "map")
    assert pm.pose_error == (0.3, 0.5)
    assert PlaceMap(map_world["map"]).pose_error is None
    with_error = StructureLocalizer(pm, StructureConfig(use_previous_fix=False), ds.camera)
    without = StructureLocalizer(pm, StructureConfig(use_previous_fix=False, map_pose_error=False), ds.camera)
    assert with_error.map_pose_error == (0.3, 0.5) and without.map_pose_error is None
    rgb = ds.read_rgb(int(np.flatnonzero(ds.frames.source_id == 1)[5]))  # a held-out crossing frame
    a, b = with_error.localize_one(rgb), without.localize_one(rgb)
    assert with_error.calibration is not None and with_error.calibration.confidence_model
    assert a.ok and b.ok and not a.flag and np.allclose(a.T_world_cam, b.T_world_cam)
    np.testing.assert_allclose(a.covariance - b.covariance, np.diag([0.09, 0.09, 0.25, 0, 0, 0]), atol=1e-12)
    assert a.confidence < b.confidence
    # the plain map_world map (its dataset states nothing): nothing added
    plain = StructureLocalizer(PlaceMap(map_world["map"]), StructureConfig(use_previous_fix=False), ds.camera)
    assert plain.map_pose_error is None


def test_map_merge_keeps_the_largest_stated_error(map_world: dict, tmp_path: Path) -> None:
    from pose2rgbd.placemap import MapBuildConfig, MapSelection, PlaceMap, build_map
    from pose2rgbd.placemap.merge import merge_maps

    maps = []
    for k, (h, v) in enumerate(((0.3, 0.5), (0.4, 0.2))):
        ds_path = tmp_path / f"d{k}"
        shutil.copytree(map_world["dataset"], ds_path)
        man = yaml.safe_load((ds_path / "manifest.yaml").read_text())
        man["pose_error"] = {"horizontal_m": h, "vertical_m": v}
        man["name"] = f"d{k}"  # two datasets (their own fingerprints), one datum
        (ds_path / "manifest.yaml").write_text(yaml.safe_dump(man, sort_keys=False))
        sel = MapSelection(sources=[0])
        build_map(ds_path, tmp_path / f"m{k}", MapBuildConfig(selection=sel), progress=False)
        maps.append(tmp_path / f"m{k}")
    merge_maps(maps, tmp_path / "merged", progress=False)
    assert PlaceMap(tmp_path / "merged").pose_error == (0.4, 0.5)
