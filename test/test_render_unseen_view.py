"""A view no keyframe looked in is out of bounds (``engine.min_seen``).

A camera inside the keyframes' box (the hybrid's out-of-bounds box is positions only) looking straight up into the
sky, or out of the mapped place, gets the fill's guess on every pixel: finite depth, confidence 0. It had been
published as in bounds, so the render node's cloud and mask gave a planner a full frame of obstacles that nothing
saw. Now the engine flags such a render, the node drops its points and says why, and ``render trajectory`` flags
and names its poses."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.messages import (
    TypestoreFactory,
    default_factory,
    image_to_numpy,
    new_typestore,
    point_cloud2_fields,
    pose_stamped,
    register_custom_msgs,
)
from pose2rgbd.nodes import Renderer, RendererConfig
from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint, query_poses

SIZE = 64
N_KEY = 40
S = 1_000_000_000


@pytest.fixture(scope="module")
def ck():
    return make_hybrid_checkpoint(SIZE, N_KEY, preset="hybrid-fast", neighbours=3)


def _engine(ck, **kw: object) -> RenderEngine:
    return RenderEngine(EngineConfig(device="cpu", precision="fp32", warmup=0, **kw), ck)  # type: ignore[arg-type]


def _looking_up(T: np.ndarray) -> np.ndarray:
    """The same camera position, the optical axis turned from down to up (a half turn about the camera's x)."""
    out = T.copy()
    out[:3, :3] = T[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    return out


def _poses() -> tuple[np.ndarray, np.ndarray]:
    down = query_poses(1, n_keyframes=N_KEY)[0]
    return down, _looking_up(down)


def test_a_view_no_keyframe_looked_in_is_out_of_bounds(ck) -> None:
    down, up = _poses()
    engine = _engine(ck)
    assert not engine.out_of_bounds(np.stack([down, up])).any()  # both inside the keyframes' box
    res = engine.render(np.stack([down, up]))
    assert res.seen is not None and res.confidence is not None
    assert res.seen[0] > 0.5 and res.seen[1] < 0.01, res.seen
    np.testing.assert_allclose(res.seen, (res.confidence > 0.5).mean(axis=(1, 2)))
    assert res.out_of_bounds.tolist() == [False, True]
    assert res.depth is not None and np.isfinite(res.depth[1]).mean() > 0.9  # the fill's guess: finite depth
    one = res.frame(1)
    assert one.seen is not None and one.seen.tolist() == [res.seen[1]]
    # engine.min_seen 0: the position alone decides, as before
    assert _engine(ck, min_seen=0.0).render(np.stack([down, up])).out_of_bounds.tolist() == [False, False]
    # a frame served from the look-ahead cache is judged by what it shows
    ahead = _engine(ck, lookahead=2, tolerance_m=1.0, tolerance_deg=5.0)
    flags = [bool(ahead.render_lookahead(up, (1 + k) * S // 10).out_of_bounds[0]) for k in range(6)]
    assert flags == [True] * 6
    assert ahead.stats["cache_hits"] > 0
    ahead.close()


def test_a_model_without_a_seen_confidence_is_judged_by_its_pose_alone() -> None:
    from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint

    engine = RenderEngine(EngineConfig(warmup=0), make_ground_plane_checkpoint(32))
    res = engine.render(look_down_pose(3.0, 4.0, 12.0))
    assert res.seen is None and not res.out_of_bounds[0]


def test_the_render_node_gives_an_unseen_view_no_points_and_says_why(ck, caplog: pytest.LogCaptureFixture) -> None:
    factory = TypestoreFactory(register_custom_msgs(new_typestore("humble")))
    down, up = _poses()
    r = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), _engine(ck), factory)
    f = default_factory()
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.renderer"):
        out = [dict(r.on_pose(pose_stamped(f, k * S, "map", up), k * S)) for k in (1, 2)]
    for o in out:
        assert o["rgbd"].out_of_bounds
        assert (image_to_numpy(o["mask/image_raw"]) == 0).all()
        assert not o["depth/points"].is_dense
        assert all(np.isnan(v).all() for k, v in point_cloud2_fields(o["depth/points"]).items() if k != "rgb")
    said = [m.getMessage() for m in caplog.records if "no keyframe looked" in m.getMessage()]
    assert len(said) == 1, said  # once as it starts, not every frame
    assert "view is out of the training bounds: it sees almost nothing the keyframes saw" in said[0], said
    status = r.diagnostics(2 * S).status[0]
    assert status.level == 1 and status.message.startswith("current view is out of the training bounds"), status
    assert "depth/points and the mask hold no valid point" in status.message
    # a pose far outside the keyframes sees nothing either: said as outside, with the world-frame hint
    far = down.copy()
    far[:3, 3] += [580.0, 0.0, 0.0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.renderer"):
        assert dict(r.on_pose(pose_stamped(f, 3 * S, "map", far), 3 * S))["rgbd"].out_of_bounds
    said = [m.getMessage() for m in caplog.records if "out of the training bounds" in m.getMessage()]
    assert len(said) == 1 and "outside the training poses" in said[0] and "world frame" in said[0], said
    assert "no keyframe looked" not in said[0]
    assert r.diagnostics(3 * S).status[0].message.startswith("current pose is out of the training bounds")
    back = dict(r.on_pose(pose_stamped(f, 4 * S, "map", down), 4 * S))
    assert not back["rgbd"].out_of_bounds and (image_to_numpy(back["mask/image_raw"]) == 255).any()
    assert r.diagnostics(4 * S).status[0].level == 0


def test_render_trajectory_flags_and_names_an_unseen_view(ck, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pose2rgbd.evaluation.trajectory import Trajectory, render_trajectory

    down, up = _poses()
    T = np.stack([down, up, down])
    stamps = (1_000 * S + np.arange(3) * S // 10).astype(np.int64)
    traj = Trajectory(tmp_path / "t.csv", "csv", stamps, T, np.arange(3) + 2, np.arange(3) + 10.0)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.evaluation.trajectory"):
        res = render_trajectory(_engine(ck), traj, tmp_path / "out", progress=False)
    assert res.out_of_bounds == 1 and res.frames == 3
    said = [m.getMessage() for m in caplog.records if "look where no keyframe looked" in m.getMessage()]
    assert len(said) == 1 and said[0].startswith("1 of 3 poses look where no keyframe looked"), caplog.text
    assert "frame 11 (" in said[0] and "frame 10" not in said[0], said
    assert not any("outside the training poses" in m.getMessage() for m in caplog.records)
    assert "check its orientations" not in said[0]  # one pose of three turned: a plan, not a convention
    with (tmp_path / "out" / "poses.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [row["out_of_bounds"] for row in rows] == ["false", "true", "false"]
    # most poses turned away (a w-first quaternion read as x, y, z, w does that): the warning says what to check
    caplog.clear()
    turned = Trajectory(tmp_path / "t.csv", "csv", stamps, np.stack([up, up, down]), np.arange(3) + 2,
                        np.arange(3) + 10.0)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.evaluation.trajectory"):
        render_trajectory(_engine(ck), turned, tmp_path / "out2", progress=False)
    said = [m.getMessage() for m in caplog.records if "look where no keyframe looked" in m.getMessage()]
    assert len(said) == 1 and "check its orientations" in said[0] and "w last" in said[0], said
