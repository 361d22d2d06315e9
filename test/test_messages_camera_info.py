"""One CameraInfo reader for every path: P before K, binning, ROS 1 spellings; record and convert agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.errors import GeometryError
from pose2rgbd.geometry import PinholeCamera
from pose2rgbd.messages import camera_from_info, camera_info, default_factory

SIZE = 32  # the images as they arrive (binned 2x2 from a 64x64 sensor)
# Full-resolution intrinsics: K is the raw camera, P the rectified one the images are in (they differ).
K_FULL = [70.0, 0.0, 30.0, 0.0, 71.0, 33.0, 0.0, 0.0, 1.0]
P_FULL = [64.0, 0.0, 31.5, 0.0, 0.0, 66.0, 31.0, 0.0, 0.0, 0.0, 1.0, 0.0]
EXPECTED = PinholeCamera(2 * SIZE, 2 * SIZE, 64.0, 66.0, 31.5, 31.0).scaled(SIZE, SIZE)
BINNED_INFO = {"width": 2 * SIZE, "height": 2 * SIZE, "k": np.array(K_FULL), "p": np.array(P_FULL)}
BINNED_INFO |= {"binning_x": 2, "binning_y": 2}


class _Obj:
    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


def test_p_first_and_binning() -> None:
    msg = camera_info(default_factory(), 0, "cam", PinholeCamera(1, 1, 1.0, 1.0, 0.0, 0.0))
    for k, v in BINNED_INFO.items():
        setattr(msg, k, v)
    cam = camera_from_info(msg)
    assert cam == EXPECTED
    assert (cam.width, cam.height) == (SIZE, SIZE) and cam.fx == pytest.approx(32.0)  # from P, halved
    msg.binning_x = msg.binning_y = 0  # 0 and 1 both mean "not binned"
    assert camera_from_info(msg) == PinholeCamera(2 * SIZE, 2 * SIZE, 64.0, 66.0, 31.5, 31.0)
    msg.p = np.zeros(12)  # no P: K is used
    assert camera_from_info(msg) == PinholeCamera(2 * SIZE, 2 * SIZE, 70.0, 71.0, 30.0, 33.0)


def test_ros1_field_names_and_uncalibrated() -> None:
    ros1 = _Obj(width=64, height=48, K=K_FULL, P=[0.0] * 12, binning_x=0, binning_y=0)
    assert camera_from_info(ros1) == PinholeCamera(64, 48, 70.0, 71.0, 30.0, 33.0)
    ros1_p = _Obj(width=64, height=48, K=K_FULL, P=P_FULL)
    assert camera_from_info(ros1_p).fx == 64.0
    with pytest.raises(GeometryError, match="neither a valid P nor a valid K"):
        camera_from_info(_Obj(width=4, height=4, k=[0.0] * 9, p=[0.0] * 12))


@pytest.fixture(scope="module")
def binned_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    path = tmp_path_factory.mktemp("binned") / "flight"
    write_flight_bag(path, duration_s=1.5, size=SIZE, camera_info_fields=BINNED_INFO)
    return path


def test_record_and_convert_read_the_same_camera(binned_bag: Path, tmp_path: Path) -> None:
    from pose2rgbd.bags import open_bag
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.sources.bag import load_bag_streams
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.nodes import RecorderConfig
    from pose2rgbd.runtime import run_recorder_bag

    with open_bag(binned_bag) as bag:  # the bag carries P != K and binning 2
        info = next(iter(bag.messages(["/camera/camera_info"]))).msg
        assert info.binning_x == 2 and info.k[0] != info.p[0]
    cfg = RecorderConfig()
    cfg.output.dataset = str(tmp_path / "ds")
    run_recorder_bag(cfg, binned_bag)
    recorded = Dataset(tmp_path / "ds").manifest.camera
    streams = load_bag_streams(binned_bag, ConvertConfig(estimate_offset=False), progress=False)
    assert recorded == streams.camera == EXPECTED
