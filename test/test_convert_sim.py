"""Synthetic sync and round trip: simulator bags (known GPS offset, 1.5 m GPS noise) -> offset, dataset."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest

FRAME = 1 / 30
TRUE_OFFSET = 0.7


# A mapping flight (docs/convert.md, "Synthetic"): the first 120 s of the seed-0 transect (straight lines with
# hovers, speed changes 0-9.5 m/s and braking, and turns in place at the line ends), gimbal-stabilized nadir
# camera, 96x96. The turns are left out of the correlation by the rotation mask (odometry orientation); the flow
# statistic is the lower quartile, the setting docs/convert.md gives for nadir mapping cameras over buildings.
TRANSECT_S = 120.0


def _mapping_config(**sync):
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.sync import SyncConfig
    from pose2rgbd.sync.flow import FlowConfig

    return ConvertConfig(sync=SyncConfig(flow=FlowConfig(statistic="quantile"), **sync))


@pytest.fixture(scope="session")
def transect_streams(tmp_path_factory: pytest.TempPathFactory):
    from pose2rgbd.convert.sources.bag import load_bag_streams
    from pose2rgbd.sim import SimConfig, export_bag
    from pose2rgbd.sim.export import flight_plan

    cfg = SimConfig(width=96, height=96, routes=["transect"], route_duration_s=TRANSECT_S, stabilized=True,
                    camera_pitch_deg=90.0, gps_noise_h_m=1.5, gps_rate_hz=10.0, gps_time_offset_s=TRUE_OFFSET,
                    bag_routes=["transect"], video_routes=["transect"], shadows=False,
                    ground_truth_topics=False)  # fmt: skip
    plan = flight_plan(cfg, "transect")
    t = np.arange(0.0, TRANSECT_S, 0.05)
    speed = plan.speed_at(t)
    yaw_rate = np.degrees(np.abs(plan.twist_at(t)[1][:, 2]))
    assert (yaw_rate > 20.0).sum() > 40, "the clip must include turns in place"
    assert speed.max() > 8.0 and (speed < 0.05).sum() > 40  # fast cruise and hovers: several speed changes
    bag = export_bag(cfg, tmp_path_factory.mktemp("transect") / "transect", "transect", progress=False)
    return load_bag_streams(bag, _mapping_config(), progress=False)


@pytest.mark.parametrize("d", [-2.0, -0.5, 0.0, 0.7, 1.5])
def test_offset_recovered_on_a_mapping_flight(transect_streams, d: float) -> None:
    """Verdict ok, confidence > 0.9, within one camera frame (measured 0.2-0.3 frames here; over ten seeds the
    error distribution is in docs/convert.md: one frame is near what 1.5 m / 10 Hz GPS can resolve)."""
    from pose2rgbd.convert.stages.time_offset import plan_poses

    s2 = copy.copy(transect_streams)
    s2.gps_t = transect_streams.gps_t + (d - TRUE_OFFSET)
    p = plan_poses(s2, _mapping_config())
    r = p.sync
    assert r is not None
    assert r.verdict == "ok", r.describe()
    assert r.confidence > 0.9, r.describe()
    assert abs(r.offset_s - d) < FRAME, r.describe()
    # the turns in place were left out, and the report says so
    assert 100 < p.flow_masked.sum() < 0.5 * p.flow_masked.size
    assert any("turned faster than" in a for a in p.summary["assumptions"])


def test_turns_in_place_blur_the_peak_without_the_rotation_mask(transect_streams) -> None:
    """The same flight with the mask off: the rotation flow of the turns is taken for speed. Here the peak stays
    in place but drops (NCC 0.97 -> 0.74, confidence 0.97 -> 0.73); with the mean statistic the verdict is weak
    on every seed of bench/sync_transect.py."""
    from pose2rgbd.convert.stages.time_offset import plan_poses

    masked = plan_poses(transect_streams, _mapping_config()).sync
    unmasked = plan_poses(transect_streams, _mapping_config(max_rotation_dps=0.0)).sync
    assert masked is not None and unmasked is not None
    assert unmasked.peak_ncc < masked.peak_ncc - 0.1, (masked.describe(), unmasked.describe())
    assert unmasked.confidence < 0.9, unmasked.describe()


@pytest.fixture(scope="session")
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One rendered 60 s flight with speed changes (96x96); GPS 10 Hz, 1.5 m noise, offset +0.7 s."""
    from pose2rgbd.sim import SimConfig, export_bag

    cfg = SimConfig(width=96, height=96, routes=["survey", "crossing"], route_duration_s=60.0, gps_noise_h_m=1.5,
                    gps_time_offset_s=TRUE_OFFSET, bag_routes=["crossing"], shadows=False)  # fmt: skip
    return export_bag(cfg, tmp_path_factory.mktemp("simbag") / "crossing", "crossing", progress=False)


@pytest.fixture(scope="session")
def sim_streams(sim_bag: Path):
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import load_bag_streams

    return load_bag_streams(sim_bag, ConvertConfig(), progress=False)


@pytest.mark.parametrize("d", [-2.0, -0.5, 0.0, 0.7, 1.5])
def test_offset_recovered_for_restamped_gps(sim_streams, d: float) -> None:
    """The crossing flight (body-fixed camera facing the city centre): the raw peak lands on the offset, the
    verdict stays weak (its image-side signal is biased by rotation and depth changes, docs/convert.md)."""
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.stages.time_offset import plan_poses

    s = sim_streams
    s2 = copy.copy(s)
    s2.gps_t = s.gps_t + (d - TRUE_OFFSET)
    r = plan_poses(s2, ConvertConfig()).sync
    assert r is not None
    assert abs(r.estimate_s - d) < 2 * FRAME, r.describe()
    if r.ok:  # never a confident wrong answer
        assert abs(r.offset_s - d) < FRAME


@pytest.mark.slow
def test_bag_to_dataset_round_trip(sim_bag: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pose2rgbd.bags import open_bag
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import convert_bag
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.messages import pose_to_matrix

    caplog.set_level(logging.INFO)
    out = tmp_path / "ds"
    # the user's offset is the fallback of a weak estimate; the truth here, so positions can be checked
    convert_bag(
        sim_bag, out, ConvertConfig(time_offset_s=TRUE_OFFSET, size="64x64", datum="44.43,26.10,80.0"), progress=False
    )
    ds = Dataset(out)
    assert ds.manifest.depth_kind == "metric" and ds.camera.width == 64
    assert len(ds) > 1500
    with open_bag(sim_bag) as bag:  # the images' frame id, not the dataset format's default
        frame_id = next(iter(bag.messages(["/camera/image_raw"]))).msg.header.frame_id
    assert frame_id and ds.manifest.camera_frame == frame_id != "camera_optical"
    d = ds.read_depth(0)
    assert d.shape == (64, 64) and np.isfinite(d).any()
    summ = json.loads((out / "report" / "summary.json").read_text())
    assert summ["frames"]["kept"] == len(ds)
    assert summ["time_offset"]["estimator"]["verdict"] in ("ok", "weak")
    assert any("tf_static" in a for a in summ["assumptions"])  # mount read from the bag
    for f in ("sync.png", "track.png"):
        assert (out / "report" / f).stat().st_size > 10_000
    # camera positions vs ground truth in the sim map frame (datum given = the sim datum); GPS noise 1.5 m
    with open_bag(sim_bag) as bag:
        gt = {m.stamp_ns: pose_to_matrix(m.msg.pose) for m in bag.messages(["/ground_truth/pose"])}
    st = ds.frames.stamp_ns
    have = np.array([s in gt for s in st])
    assert have.mean() > 0.9
    T = ds.frames.T_world_cam[have]
    G = np.stack([gt[s] for s in st[have]])
    err = np.linalg.norm(T[:, :3, 3] - G[:, :3, 3], axis=1)
    assert np.median(err) < 3.0, np.median(err)
    # orientation: optical axis within 20 deg of the ground truth's (odometry yaw aligned to the GPS course)
    cosang = np.sum(T[:, :3, 2] * G[:, :3, 2], axis=1)
    assert np.median(np.degrees(np.arccos(np.clip(cosang, -1, 1)))) < 20
