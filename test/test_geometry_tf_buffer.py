"""Offline TF buffer: chains, interpolation, static links, latest common time, tf2-like errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose2rgbd.geometry import T_from_tq, inverse
from pose2rgbd.geometry.tf_buffer import (
    ConnectivityException,
    ExtrapolationException,
    LookupException,
    TFBuffer,
    TransformException,
)

S = 1_000_000_000


def _q(rotvec: list[float]) -> np.ndarray:
    return Rotation.from_rotvec(rotvec).as_quat()


@pytest.fixture
def buf() -> TFBuffer:
    b = TFBuffer()
    # map -> odom (static), odom -> base_link (dynamic, 1 s apart), base_link -> cam (static)
    b.set_transform("map", "odom", 0, [10.0, 0.0, 0.0], _q([0, 0, np.pi / 2]), static=True)
    b.set_transform("odom", "base_link", 1 * S, [0.0, 0.0, 0.0], _q([0, 0, 0]))
    b.set_transform("odom", "base_link", 2 * S, [2.0, 0.0, 4.0], _q([0, 0, 1.0]))
    b.set_transform("/base_link", "cam", 0, [0.1, 0.0, -0.2], _q([np.pi, 0, 0]), static=True)
    b.set_transform("world2", "other", 1 * S, [0, 0, 0], [0, 0, 0, 1])
    return b


def test_chain_with_interpolation(buf: TFBuffer) -> None:
    T, stamp = buf.lookup_transform("map", "cam", int(1.5 * S))
    assert stamp == int(1.5 * S)
    T_map_odom = T_from_tq([10.0, 0, 0], _q([0, 0, np.pi / 2]))
    T_odom_base = T_from_tq([1.0, 0, 2.0], _q([0, 0, 0.5]))  # halfway: lerp + slerp
    T_base_cam = T_from_tq([0.1, 0, -0.2], _q([np.pi, 0, 0]))
    np.testing.assert_allclose(T, T_map_odom @ T_odom_base @ T_base_cam, atol=1e-9)
    # the inverse direction and a lookup through the common ancestor
    T_inv, _ = buf.lookup_transform("cam", "map", int(1.5 * S))
    np.testing.assert_allclose(T_inv, inverse(T), atol=1e-9)
    T_co, _ = buf.lookup_transform("cam", "odom", int(1.5 * S))
    np.testing.assert_allclose(T_co, inverse(T_odom_base @ T_base_cam), atol=1e-9)


def test_latest_common_time_and_statics(buf: TFBuffer) -> None:
    _T, stamp = buf.lookup_transform("map", "cam", 0)
    assert stamp == 2 * S  # newest dynamic link data
    T_static, stamp_static = buf.lookup_transform("base_link", "cam", 12345)  # static: any time
    np.testing.assert_allclose(T_static[:3, 3], [0.1, 0.0, -0.2])
    assert stamp_static == 12345
    np.testing.assert_allclose(buf.lookup_transform("cam", "cam", 7)[0], np.eye(4))


def test_errors_like_tf2(buf: TFBuffer) -> None:
    with pytest.raises(LookupException, match='"nope" passed to lookupTransform argument source_frame does not exist'):
        buf.lookup_transform("map", "nope", 0)
    with pytest.raises(ConnectivityException, match="not part of the same tree"):
        buf.lookup_transform("map", "other", 0)
    with pytest.raises(ExtrapolationException, match="extrapolation into the future"):
        buf.lookup_transform("map", "cam", 3 * S)
    with pytest.raises(ExtrapolationException, match="into the past"):
        buf.lookup_transform("map", "base_link", S // 2)
    assert issubclass(LookupException, TransformException)
    assert not buf.can_transform("map", "other") and buf.can_transform("map", "cam")


def test_cache_time_prunes_old_data() -> None:
    b = TFBuffer(cache_time_s=1.0)
    for k in range(50):
        b.set_transform("map", "base", k * S // 10, [k, 0, 0], [0, 0, 0, 1])
    with pytest.raises(ExtrapolationException):
        b.lookup_transform("map", "base", S)  # older than 1 s before the newest (4.9 s)
    T, _ = b.lookup_transform("map", "base", int(4.45 * S))
    assert T[0, 3] == pytest.approx(44.5)


def test_tf_message_ingest_skips_bad_transforms() -> None:
    from pose2rgbd.messages import default_factory, tf_message, transform_stamped

    F = default_factory()
    good = transform_stamped(F, S, "map", "base", np.eye(4))
    bad = transform_stamped(F, S, "map", "cam", np.eye(4))
    bad.transform.translation.x = float("nan")
    b = TFBuffer()
    assert b.add_tf_message(tf_message(F, [good, bad])) == 1
    assert b.frames() == ["base", "map"]


def test_tf_buffer_refuses_a_quaternion_that_is_not_finite_or_not_unit() -> None:
    """A transform's rotation must be finite and unit within QUAT_NORM_TOLERANCE (the message layer's rule; it is
    then normalized, w >= 0); else the transform is refused (from a TF message: skipped, counted, its reason kept)."""
    from pose2rgbd.errors import GeometryError
    from pose2rgbd.geometry.rotations import QUAT_NORM_TOLERANCE
    from pose2rgbd.messages import default_factory, tf_message, transform_stamped

    b = TFBuffer()
    for q, why in (([np.nan, 0, 0, 1], "NaN"), ([0, 0, 0, 0], "zero"), ([0, 0, 0, 2.0], "norm 2.000")):
        with pytest.raises(GeometryError, match=why):
            b.set_transform("map", "base", S, [0, 0, 0], q)
    assert b.frames() == []
    b.set_transform("map", "base", S, [1, 2, 3], [0, 0, 0, -(1 + 0.5 * QUAT_NORM_TOLERANCE)])  # normalized, flipped
    T, _ = b.lookup_transform("map", "base", 0)
    np.testing.assert_allclose(T, T_from_tq([1, 2, 3], [0, 0, 0, 1]), atol=1e-12)
    F = default_factory()
    bad = transform_stamped(F, 2 * S, "map", "base", np.eye(4))
    bad.transform.rotation.w = float("nan")
    assert b.add_tf_message(tf_message(F, [bad])) == 1
    assert b.rejected == 1 and "rotation contains NaN" in b.last_rejection
