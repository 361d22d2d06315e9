"""rclpy runtime (marker ``ros``: skipped when rclpy is absent). Runs the glue against a real ROS 2 install."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros


@pytest.fixture
def rclpy_context():  # type: ignore[no-untyped-def]
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    try:
        yield rclpy
    finally:
        if rclpy.ok():
            rclpy.shutdown()


def test_factory_builds_rclpy_messages(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    from pose2rgbd import messages as M
    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd_ros.factory import RclpyFactory

    f = RclpyFactory()
    img = M.image(f, 1_500_000_000, "cam", np.full((4, 5), 2.5, np.float32), "32FC1")
    assert img.width == 5 and img.step == 20 and len(img.data) == 80
    np.testing.assert_allclose(M.image_to_numpy(img), 2.5)
    info = M.camera_info(f, 1_500_000_000, "cam", PinholeCamera.from_fov(5, 4, 90.0))
    assert M.camera_from_info(info).width == 5
    d = M.diagnostic_array(f, 0, "x", 1, "warn", {"a": 1})
    assert d.status[0].level == b"\x01"


def test_params_declared_from_the_schema(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from pose2rgbd.config import describe
    from pose2rgbd.nodes import RecorderConfig
    from pose2rgbd_ros.params import declare_config

    node = Node("p", parameter_overrides=[Parameter("sync.max_gap_s", value=0.25)])
    try:
        cfg = declare_config(node, RecorderConfig)
        assert cfg.sync.max_gap_s == 0.25
        for name, (_, help_text) in describe(RecorderConfig).items():
            assert node.describe_parameter(name).description == help_text
    finally:
        node.destroy_node()


def test_render_node_refuses_missing_checkpoint(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd_ros.render_node import RenderNode

    with pytest.raises(CheckpointError):
        RenderNode()
