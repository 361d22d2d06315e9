"""The in-memory map of ``map build``'s self-calibration (:class:`pose2rgbd.placemap.view.MapView`) and its
leave-out maps."""

from __future__ import annotations

import numpy as np

from pose2rgbd.placemap.view import MapView


def _view(n: int = 9, rng: np.random.Generator | None = None) -> MapView:
    rng = rng or np.random.default_rng(0)
    counts = rng.integers(3, 8, n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    k = int(offsets[-1])
    xyz = rng.normal(size=(k, 3)).astype(np.float32)
    xyz[::4] = np.nan  # a feature without a point: features(i) leaves it out
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = np.arange(n)
    return MapView(T, np.tile([100.0, 100.0, 32.0, 24.0], (n, 1)), (48, 64), offsets,
                   rng.uniform(0, 64, (k, 2)).astype(np.float32), rng.integers(0, 255, (k, 128), dtype=np.uint8), xyz,
                   rng.normal(size=(n, 8)).astype(np.float32), None, 1.0,  # type: ignore[arg-type]
                   source_id=np.zeros(n, np.int64), stamp_ns=np.arange(n, dtype=np.int64))  # fmt: skip


def _same(a: MapView, i: int, b: MapView, j: int) -> bool:
    fa, fb = a.features(i), b.features(j)
    return all(np.array_equal(x, y, equal_nan=True) for x, y in ((fa.xy, fb.xy), (fa.desc, fb.desc), (fa.xyz, fb.xyz)))


def test_a_leave_out_map_reads_its_parents_features_without_copying_them() -> None:
    """Every kept keyframe keeps its own features, pose and descriptors; a leave-out map of a leave-out map too;
    and neither holds a copy of the features (the self-calibration makes one per window length of a large map)."""
    view = _view()
    rest = view.without(np.array([1, 4, 5]))
    keep = [0, 2, 3, 6, 7, 8]
    assert len(rest) == len(keep)
    for r, i in enumerate(keep):
        assert _same(rest, r, view, i)
        np.testing.assert_array_equal(rest.T_world_cam[r], view.T_world_cam[i])
        np.testing.assert_array_equal(rest.global_desc[r], view.global_desc[i])
    assert rest.desc is view.desc and rest.xyz is view.xyz and rest.xy is view.xy
    again = rest.without(np.array([0, 3]))  # rest's rows 0 and 3: the view's 0 and 6
    for r, i in enumerate([2, 3, 7, 8]):
        assert _same(again, r, view, i)
    assert again.desc is view.desc
    np.testing.assert_array_equal(again.stamp_ns, [2, 3, 7, 8])
    assert rest.read_rgb is None  # a leave-out map has no images to localize
