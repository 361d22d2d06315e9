"""`record bag` and `convert bag` share the camera mount (pose2rgbd.geometry.mount.CameraMount), its keys and
its meaning: the same mount given to both gives the same T_base_cam, and a recording on one clock converted
by both commands gives the same camera poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.config import from_dict
from pose2rgbd.convert.config import ConvertConfig
from pose2rgbd.convert.sources.bag import convert_bag, load_bag_streams
from pose2rgbd.errors import ConfigError
from pose2rgbd.geometry import R_BODY_OPTICAL
from pose2rgbd.geometry.mount import CameraMount, mount_matrix, rpy_deg_of_optical_quat
from pose2rgbd.messages import TypestoreFactory, new_typestore, register_custom_msgs
from pose2rgbd.nodes.recorder import Recorder, RecorderConfig
from pose2rgbd.testing.flight_bag import DATUM, T0_NS, T_BASE_CAM, write_flight_bag


@pytest.fixture(scope="module")
def flight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mount") / "flight"
    write_flight_bag(path, duration_s=3.0, size=32)
    return path


def _mount_of_flight() -> dict[str, object]:
    """The flight bag's /tf_static mount written as config keys."""
    q = Rotation.from_matrix(T_BASE_CAM[:3, :3]).as_quat()
    return {"source": "config", "translation": T_BASE_CAM[:3, 3].tolist(), "rpy_deg": rpy_deg_of_optical_quat(q)}


def test_mount_matrix_is_rep103() -> None:
    T = mount_matrix([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(T[:3, :3], R_BODY_OPTICAL)  # optical z = base x (looking forward)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, 3.0])
    down = mount_matrix([0.0, 90.0, 0.0])  # pitch 90: looking down
    np.testing.assert_allclose(down[:3, 2], [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(mount_matrix(_mount_of_flight()["rpy_deg"], T_BASE_CAM[:3, 3]), T_BASE_CAM, atol=1e-9)


def test_the_same_mount_gives_the_same_T_base_cam_in_both_commands(flight: Path) -> None:
    mount = _mount_of_flight()
    rec_cfg = from_dict(RecorderConfig, {"mount": mount})
    conv_cfg = from_dict(ConvertConfig, {"mount": mount, "estimate_offset": False})
    assert type(rec_cfg.mount) is type(conv_cfg.mount) is CameraMount
    rec = Recorder(rec_cfg, TypestoreFactory(register_custom_msgs(new_typestore("humble"))))
    streams = load_bag_streams(flight, conv_cfg, progress=False)
    assert rec.T_base_cam is not None
    np.testing.assert_allclose(rec.T_base_cam, streams.T_body_cam, atol=1e-12)
    np.testing.assert_allclose(streams.T_body_cam, T_BASE_CAM, atol=1e-9)  # = the bag's /tf_static
    tf_streams = load_bag_streams(flight, from_dict(ConvertConfig, {"estimate_offset": False}), progress=False)
    np.testing.assert_allclose(tf_streams.T_body_cam, T_BASE_CAM, atol=1e-9)  # auto: /tf_static


def test_old_keys_say_what_to_write_instead() -> None:
    with pytest.raises(ConfigError, match=r"mount\.quat_xyzw is no longer a key: write mount\.rpy_deg .* is rpy_deg "
                                          r"\[0\.0, 0\.0, 0\.0\]"):  # fmt: skip
        from_dict(RecorderConfig, {"mount": {"quat_xyzw": [-0.5, 0.5, -0.5, 0.5]}})
    with pytest.raises(ConfigError, match=r"image_topic is no longer a key: write topics\.image"):
        from_dict(ConvertConfig, {"image_topic": "/cam"})
    with pytest.raises(ConfigError, match=r"rgb_encoding is no longer a key: write output\.rgb_encoding"):
        from_dict(ConvertConfig, {"rgb_encoding": "jpg"})


@pytest.mark.parametrize("source", ["tf_static", "config"])
def test_record_and_convert_give_the_same_camera_poses(flight: Path, tmp_path: Path, source: str) -> None:
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.runtime.offline import run_recorder_bag

    datum = f"{DATUM.lat_deg!r},{DATUM.lon_deg!r},{DATUM.alt_m!r}"
    mount = _mount_of_flight() | {"source": source}
    rec_cfg = from_dict(RecorderConfig, {"mount": mount, "datum": datum, "output": {"dataset": str(tmp_path / "r")}})
    run_recorder_bag(rec_cfg, flight)
    conv_cfg = from_dict(
        ConvertConfig,
        {"mount": mount, "datum": datum, "estimate_offset": False, "time_offset_s": 0.0, "orientation": "odom"},
    )
    convert_bag(flight, tmp_path / "c", conv_cfg, progress=False)
    r, c = Dataset(tmp_path / "r"), Dataset(tmp_path / "c")
    common, ir, ic = np.intersect1d(r.frames.stamp_ns, c.frames.stamp_ns, return_indices=True)
    assert len(common) >= 20
    Tr, Tc = r.frames.T_world_cam[ir], c.frames.T_world_cam[ic]
    np.testing.assert_allclose(Tr[:, :3, 3], Tc[:, :3, 3], atol=0.02)  # GPS interpolated alike (m)
    ang = Rotation.from_matrix(np.einsum("nji,njk->nik", Tr[:, :3, :3], Tc[:, :3, :3])).magnitude()
    assert np.degrees(ang).max() < 0.05
    # and the camera looks down in both (a mount error would turn it)
    assert (Tr[:, 2, 2] < -0.9).all()


def test_a_resumed_recording_keeps_the_mount_the_dataset_was_recorded_with(flight: Path, tmp_path: Path) -> None:
    """A recording resumed from a bag played from its middle (no /tf_static) with mount.source 'auto' appends its
    frames with the mount the dataset was recorded with (its manifest keeps it), not the configured one (here the
    default, a camera looking forward: the appended frames turned 90 deg); a configured mount that differs from the
    dataset's is refused."""
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.nodes.recorder.mount import RecordedMount
    from pose2rgbd.runtime.offline import run_recorder_bag

    later = tmp_path / "later"
    write_flight_bag(later, duration_s=3.0, size=32, t0_ns=T0_NS + 3_000_000_000, static_tf=False)
    datum = f"{DATUM.lat_deg!r},{DATUM.lon_deg!r},{DATUM.alt_m!r}"
    out = tmp_path / "rec"
    cfg = from_dict(RecorderConfig, {"datum": datum, "output": {"dataset": str(out)}})  # mount.source auto
    run_recorder_bag(cfg, flight)
    first = Dataset(out)
    recorded = RecordedMount.from_dict(first.manifest.extra["recorder"]["mount"])
    assert recorded is not None and "/tf_static" in recorded.source
    np.testing.assert_allclose(recorded.T_base_cam, T_BASE_CAM, atol=1e-9)
    n_first = len(first)
    run_recorder_bag(cfg, later)
    resumed = Dataset(out)
    assert len(resumed) > n_first + 10
    appended = resumed.frames.T_world_cam[n_first:]
    assert (appended[:, 2, 2] < -0.9).all()  # looking down, as the dataset's mount has it
    again = RecordedMount.from_dict(resumed.manifest.extra["recorder"]["mount"])
    assert again is not None and again.difference(T_BASE_CAM) is None
    forward = from_dict(
        RecorderConfig, {"datum": datum, "mount": {"source": "config"}, "output": {"dataset": str(out)}}
    )
    with pytest.raises(ConfigError, match=r"configured camera mount .* from the one the existing dataset"):
        run_recorder_bag(forward, later)
    assert len(Dataset(out)) == len(resumed)
