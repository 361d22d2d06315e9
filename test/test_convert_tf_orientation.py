"""TF (/tf) as the orientation source of a bag conversion (docs/convert.md, "Poses", item 3)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

OFFSET = 0.4  # the simulated GPS clock offset, given to the converter (no estimation: orientation is tested)


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of the crossing flight at 32x32: /tf map -> odom -> base_link and /odom at 50 Hz, /tf_static mount."""
    from pose2rgbd.sim import SimConfig, export_bag

    cfg = SimConfig(width=32, height=32, routes=["crossing"], route_duration_s=8.0, bag_routes=["crossing"],
                    shadows=False, gps_time_offset_s=OFFSET)  # fmt: skip
    return export_bag(cfg, tmp_path_factory.mktemp("tfbag") / "crossing", "crossing", progress=False)


def _copy_bag(src: Path, dst: Path, drop: tuple[str, ...] = (), extra: Callable[[Any, Any], None] | None = None):
    """Copy ``src`` without the topics in ``drop``; ``extra(reader, writer)`` may write more."""
    from pose2rgbd.bags import BagWriter, open_bag

    with open_bag(src) as bag, BagWriter(dst) as w:
        keep = [t for t in bag.topics.values() if t.name not in drop]
        for t in keep:
            w.add_topic(t.name, t.msgtype, qos="transient_local" if "static" in t.name else None)
        for topic, stamp, msgtype, data in bag.raw_messages([t.name for t in keep]):
            w.write_raw(topic, stamp, data, msgtype)
        if extra is not None:
            extra(bag, w)
    return dst


def _rewrite_tf(T_fn: Callable[[np.ndarray], np.ndarray], parent: str | None = None):
    """An ``extra`` for :func:`_copy_bag` that writes /tf again with ``T_fn(T)`` (and optionally a new parent)."""

    def extra(bag: Any, w: Any) -> None:
        from pose2rgbd.messages import header_stamp_ns, tf_message, transform_stamped, transform_to_matrix

        ts = w.factory
        w.add_topic("/tf", "tf2_msgs/msg/TFMessage")
        for m in bag.messages(["/tf"]):
            trs = [
                transform_stamped(ts, header_stamp_ns(tr), parent or tr.header.frame_id, tr.child_frame_id,
                                  T_fn(transform_to_matrix(tr.transform)))
                for tr in m.msg.transforms
            ]  # fmt: skip
            w.write("/tf", m.stamp_ns, tf_message(ts, trs))

    return extra


def _plan(bag: Path, **kw: Any):
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import load_bag_streams
    from pose2rgbd.convert.stages.time_offset import plan_poses

    cfg = ConvertConfig(estimate_offset=False, time_offset_s=OFFSET, **kw)
    s = load_bag_streams(bag, cfg, progress=False)
    return s, plan_poses(s, cfg)


def _angles_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    return np.degrees(Rotation.from_matrix(np.swapaxes(Ra, -1, -2) @ Rb).magnitude())


def test_tf_orientation_matches_ground_truth_and_odometry(sim_bag: Path, tmp_path: Path) -> None:
    from pose2rgbd.bags import open_bag
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import convert_bag
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.messages import pose_to_matrix

    out = tmp_path / "ds"
    convert_bag(sim_bag, out, ConvertConfig(orientation="tf", estimate_offset=False, time_offset_s=OFFSET),
                progress=False)  # fmt: skip
    ds = Dataset(out)
    summ = json.loads((out / "report" / "summary.json").read_text())
    assert summ["orientation_source"] == "tf"
    # the bag's TF map is the frame written (convert's world_frame auto): TF's rotations are taken as they are
    assert ds.manifest.world_frame == "map" and summ["world_frame"]["kind"] == "tf"
    assert any("/tf: map -> odom -> base_link" in a and "the frame the poses are written in" in a
               for a in summ["assumptions"]), summ["assumptions"]  # fmt: skip
    with open_bag(sim_bag) as bag:
        gt = {m.stamp_ns: pose_to_matrix(m.msg.pose) for m in bag.messages(["/ground_truth/pose"])}
    st = ds.frames.stamp_ns
    assert len(st) > 200 and all(s in gt for s in st)
    R = ds.frames.T_world_cam[:, :3, :3]
    ang = _angles_deg(R, np.stack([gt[s][:3, :3] for s in st]))
    # /tf at 50 Hz slerped to the 30 Hz camera stamps; the sim's map is ENU about its datum (GPS noise moves the
    # dataset datum by metres: a negligible tangent-plane rotation)
    assert ang.max() < 0.05, ang.max()  # measured: 0.0003 deg (the course: 43 deg off)
    # the sim's /odom frame is the map: the odometry source gives the same camera orientations
    _, plan = _plan(sim_bag, orientation="odom")
    assert plan.summary["orientation_source"] == "odom"
    R_odom = plan.T_world_cam[plan.keep][:, :3, :3]
    assert R_odom.shape == R.shape
    assert _angles_deg(R, R_odom).max() < 1e-3


def test_align_odom_yaw_rotates_a_yawed_tf_map_onto_the_course(sim_bag: Path, tmp_path: Path) -> None:
    """A SLAM-like map turned 35 deg about z: with align_odom_yaw the result is that of the ENU map."""
    from pose2rgbd.geometry import make_T

    Rz = make_T(Rotation.from_euler("z", 35, degrees=True).as_matrix(), np.array([3.0, -2.0, 0.0]))
    yawed = _copy_bag(sim_bag, tmp_path / "yawed", drop=("/tf", "/odom"), extra=_rewrite_tf(lambda T: Rz @ T))
    _, p_true = _plan(sim_bag, orientation="tf", align_odom_yaw=True)
    _, p_yawed = _plan(yawed, orientation="tf", align_odom_yaw=True)
    _, p_raw = _plan(yawed, orientation="tf")
    R_true = p_true.T_world_cam[p_true.keep][:, :3, :3]
    assert np.median(_angles_deg(p_raw.T_world_cam[p_raw.keep][:, :3, :3], R_true)) > 30  # not aligned: off
    assert _angles_deg(p_yawed.T_world_cam[p_yawed.keep][:, :3, :3], R_true).max() < 0.01
    assert any("aligned to the GPS course" in a for a in p_yawed.summary["assumptions"])


@pytest.mark.parametrize("case", ["no_tf", "no_world_frame"])
def test_tf_requested_but_unusable_fails_clearly(sim_bag: Path, tmp_path: Path, case: str) -> None:
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import convert_bag
    from pose2rgbd.errors import BagError

    if case == "no_tf":
        bag = _copy_bag(sim_bag, tmp_path / "bag", drop=("/tf",))
    else:  # /tf hangs base_link from an unknown frame: no map/world/earth/odom above it
        bag = _copy_bag(sim_bag, tmp_path / "bag", drop=("/tf",), extra=_rewrite_tf(lambda T: T, "slam_origin"))
    out = tmp_path / "ds"
    with pytest.raises(BagError) as e:
        convert_bag(bag, out, ConvertConfig(orientation="tf", estimate_offset=False), progress=False)
    msg = str(e.value)
    assert "'map', 'world', 'earth', 'odom'" in msg and "base_link" in msg and "--orientation" in msg, msg
    if case == "no_tf":
        assert "no dynamic TF topic" in msg and "/tf_static" in msg, msg
    else:
        assert "slam_origin" in msg and "camera_optical_frame" in msg, msg  # the frames present are listed
    assert not out.exists()


def test_auto_uses_tf_only_without_imu_and_odometry(sim_bag: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    no_odom = _copy_bag(sim_bag, tmp_path / "no_odom", drop=("/odom",))
    _, p_auto = _plan(no_odom)
    assert p_auto.summary["orientation_source"] == "tf"
    _, p_tf = _plan(sim_bag, orientation="tf")
    assert _angles_deg(p_auto.T_world_cam[:, :3, :3], p_tf.T_world_cam[:, :3, :3]).max() < 1e-9
    _, p_both = _plan(sim_bag)  # /odom and /tf: the explicit orientation topic wins
    assert p_both.summary["orientation_source"] == "odom"
    # auto with an unusable /tf: a warning and the GPS course
    broken = _copy_bag(sim_bag, tmp_path / "broken", drop=("/odom", "/tf"),
                       extra=_rewrite_tf(lambda T: T, "slam_origin"))  # fmt: skip
    caplog.set_level(logging.WARNING)
    _, p_course = _plan(broken)
    assert p_course.summary["orientation_source"] == "course"
    assert any("TF orientation unusable" in r.getMessage() for r in caplog.records)


def test_tf_chain_of_a_real_nav2_bag_matches_amcl(shared_data: Path) -> None:
    """nav2 turtlebot recording: /tf map -> odom (amcl) -> base_link (odometry). R_map_base_link from the chain
    agrees with /amcl_pose; the odometry alone is ~20 deg off (so the map link is really used)."""
    from pose2rgbd.bags import open_bag
    from pose2rgbd.convert.sources.bag_orientation import tf_orientation_series
    from pose2rgbd.convert.stages.orientation import OrientationTrack
    from pose2rgbd.geometry.mount import BODY_FRAMES
    from pose2rgbd.messages import header_stamp_ns, pose_to_matrix

    path = shared_data / "ros2-bag-fixtures" / "evo_nav2_turtlebot_sim_mcap" / "nav2_turtlebot.mcap"
    with open_bag(path) as bag:
        t, R, note, world = tf_orientation_series(bag, list(BODY_FRAMES), 0, None)
        ref = {
            topic: [(header_stamp_ns(m.msg) / 1e9, pose_to_matrix(m.msg.pose.pose)[:3, :3]) for m in
                    bag.messages([topic])]
            for topic in ("/amcl_pose", "/odom")
        }  # fmt: skip
    assert "map -> odom -> base_link" in note and world == "map"
    track = OrientationTrack(t, R, "tf", note)
    med = {}
    for topic, rows in ref.items():
        tr = np.array([r[0] for r in rows])
        ok = (tr >= t[0]) & (tr <= t[-1])
        assert ok.sum() > 100
        ang = _angles_deg(track.at(tr[ok]), np.stack([r[1] for r in rows])[ok])
        med[topic] = float(np.median(ang))
        if topic == "/amcl_pose":  # measured: median 0.85 deg, max 3.2 deg (amcl publishes map -> odom lagged)
            assert ang.max() < 5.0, ang.max()
    assert med["/amcl_pose"] < 1.5 and med["/odom"] > 10.0, med
