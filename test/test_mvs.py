"""Multi-view stereo from metric poses (pose2rgbd.geometry.mvs): the plane sweep recovers a known scene's depth,
the check across views rejects a depth its neighbours disagree with, the combination with a network's depth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fused_scene import look_at, scene_mesh

from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation.point_depth import estimated_depth_source
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.mvs import (
    MvsConfig,
    combine_frame,
    consistent_depth,
    depth_range_from_points,
    mvs_sequence,
    pick_sources,
    sweep_depth,
)
from pose2rgbd.progress import logged_pass

CAM = PinholeCamera.from_fov(80, 60, 70.0)
RNG = np.random.default_rng(3)
DIRS = RNG.standard_normal((12, 3))
FREQ = RNG.uniform(4.0, 14.0, 12)
PHASE = RNG.uniform(0, 2 * np.pi, 12)


def texture(X: np.ndarray) -> np.ndarray:
    """Grey texture of world points (M, 3): random 3-D sinusoids (rich enough for a 5x5 window)."""
    d = DIRS / np.linalg.norm(DIRS, axis=1, keepdims=True)
    v = np.sin((X @ d.T) * FREQ + PHASE).sum(1)
    g = np.clip(128 + 30 * v, 0, 255)
    return np.repeat(g[:, None], 3, 1).astype(np.uint8)


def render(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8, depth float32 NaN on a miss) of the floor-and-box scene of fused_scene with a rich texture."""
    import open3d as o3d

    v, t = scene_mesh()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(t.astype(np.uint32)))
    dirs = CAM.rays() @ T[:3, :3].T
    rays = np.concatenate([np.broadcast_to(T[:3, 3], dirs.shape), dirs], axis=-1).astype(np.float32)
    th = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    depth = np.where(np.isfinite(th), th, np.nan).astype(np.float32)
    X = T[:3, 3] + dirs * np.nan_to_num(depth, nan=0.0)[..., None]
    rgb = texture(X.reshape(-1, 3)).reshape(CAM.height, CAM.width, 3)
    rgb[~np.isfinite(depth)] = 0
    return rgb, depth


@pytest.fixture(scope="module")
def track() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seven cameras on a sideways line 3.2 m from the box, looking past it at the floor: rgb, depth, poses."""
    T = np.stack([look_at(np.array([-3.2, y, 1.8]), np.array([0.0, y, 0.3])) for y in np.linspace(-0.6, 0.6, 7)])
    views = [render(t) for t in T]
    return np.stack([v[0] for v in views]), np.stack([v[1] for v in views]), T


def abs_rel(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    m = np.isfinite(pred) & np.isfinite(gt)
    return float(np.mean(np.abs(pred[m] - gt[m]) / gt[m])), float(m.sum() / np.isfinite(gt).sum())


CFG = MvsConfig(planes=48, sources=4, best_k=2, baseline_ratio=0.1, max_rel_depth=0.05)


def test_plane_sweep_recovers_the_depth_of_a_known_scene(track: tuple) -> None:
    rgb, depth, T = track
    d = sweep_depth(rgb[3], [rgb[j] for j in (1, 2, 4, 5)], CAM.K, T[3], [T[j] for j in (1, 2, 4, 5)], (1.5, 12.0),
                    CFG)  # fmt: skip
    err, share = abs_rel(d, depth[3])
    assert share > 0.7  # most of the textured scene is matched
    assert err < 0.04  # a warp in the wrong direction, or planes in the wrong order, give > 0.3


def test_the_warp_direction_matters(track: tuple) -> None:
    """The same sweep with the poses inverted (the warp the wrong way round) does not find the scene: what the
    bound of the test above rests on."""
    rgb, depth, T = track
    Tw = [np.linalg.inv(t) for t in T]
    d = sweep_depth(rgb[3], [rgb[j] for j in (1, 2, 4, 5)], CAM.K, Tw[3], [Tw[j] for j in (1, 2, 4, 5)], (1.5, 12.0),
                    CFG)  # fmt: skip
    err, share = abs_rel(d, depth[3])
    assert err > 0.1 or share < 0.2


def test_sequence_is_checked_across_views(track: tuple, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    rgb, depth, T = track
    with caplog.at_level(logging.INFO, logger="pose2rgbd.geometry.mvs.sequence"):
        res = mvs_sequence(lambda i: rgb[i], CAM.K, T, cfg=CFG, depth_range=(1.5, 12.0))
    # a log file says what the stereo will do as it starts, and how long it took at its end
    lines = [r.getMessage() for r in caplog.records]
    pairs = sum(len(s) for s in res.sources)
    assert "plane sweep of 7 of 7 frames (80x60)" in lines[0] and f"({pairs} pairs), 48 depth planes" in lines[0]
    assert lines[-1].startswith("multi-view stereo: 7 frames in ") and "verified across views" in lines[-1]
    assert isinstance(res.info["seconds"], float) and res.info["pairs"] == pairs
    assert res.sources[3] and 3 not in res.sources[3]
    err, share = abs_rel(res.depth[2:5], depth[2:5])
    assert share > 0.5
    assert err < 0.03
    assert np.all(res.views[np.isfinite(res.depth)] >= CFG.consistent_views)


def test_consistency_rejects_a_depth_its_neighbours_disagree_with(track: tuple) -> None:
    _, depth, T = track
    ref = depth[3].copy()
    ref[20:30, 30:45] *= 1.2  # a wrong patch: the neighbours see the surface 20 % nearer
    srcs = [depth[j] for j in (1, 2, 4, 5)]
    out, views = consistent_depth(ref, srcs, CAM.K, T[3], [T[j] for j in (1, 2, 4, 5)], min_views=2,
                                  max_reproj_px=1.0, max_rel_depth=0.02)  # fmt: skip
    assert np.all(np.isnan(out[20:30, 30:45]))
    assert np.all(views[20:30, 30:45] == 0)
    rest = np.isfinite(depth[3])
    rest[18:32, 28:47] = False
    assert np.isfinite(out[rest]).mean() > 0.9  # the exact depth elsewhere is kept ...
    assert np.nanmax(np.abs(out[rest] - depth[3][rest]) / depth[3][rest]) < 0.02  # ... as it was
    # one agreeing view is not enough when two are asked for
    one, _ = consistent_depth(depth[3], [depth[1]], CAM.K, T[3], [T[1]], min_views=2)
    assert np.all(np.isnan(one))


def test_sources_are_picked_on_both_sides_with_a_baseline() -> None:
    T = np.tile(np.eye(4), (21, 1, 1))
    T[:, 0, 3] = np.arange(21) * 0.5  # 0.5 m per frame, looking along z
    ok = np.ones(21, bool)
    cfg = MvsConfig(sources=4, best_k=2, baseline_ratio=0.1, min_baseline_ratio=0.05, search_frames=10)
    s = pick_sources(T, ok, 10, 20.0, cfg)  # preferred baseline 2 m: 4 frames away, then 5 (log nearer than 3)
    assert s == [5, 6, 14, 15]
    ok[:10] = False
    assert all(j > 10 for j in pick_sources(T, ok, 10, 20.0, cfg))
    assert pick_sources(T, ok, 10, 1000.0, cfg) == []  # every baseline below 5 % of 1000 m


def test_a_pass_logs_its_progress_without_a_bar(caplog: pytest.LogCaptureFixture) -> None:
    """Redirected to a file (no bar): a line at most every 30 s with done / total and the time; none after the last
    item (the caller's own last line says that), and none where a bar is drawn."""
    import logging

    from pose2rgbd.progress import force_progress

    now = [0.0]

    def clock() -> float:
        return now[0]

    with caplog.at_level(logging.INFO, logger="pose2rgbd.progress"):
        for _ in logged_pass(list(range(10)), "stereo: plane sweep", "frame", progress=True, clock=clock):
            now[0] += 12.0  # 12 s a frame: a line after frames 3, 6 and 9 (36, 72, 108 s), not after the 10th
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "stereo: plane sweep: 3 of 10 frames done (36 s so far, about 84 s left)",
        "stereo: plane sweep: 6 of 10 frames done (72 s so far, about 48 s left)",
        "stereo: plane sweep: 9 of 10 frames done (108 s so far, about 12 s left)",
    ]
    caplog.clear()
    force_progress(True)  # a bar drawn (as on a terminal): no log lines besides it
    try:
        with caplog.at_level(logging.INFO, logger="pose2rgbd.progress"):
            for _ in logged_pass(list(range(4)), "stereo", "frame", progress=True, clock=clock):
                now[0] += 40.0
    finally:
        force_progress(False)
    assert not caplog.records


def test_too_few_sparse_depths_name_what_to_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The error names settings that exist: the API's, and in a conversion the flag that needs no points."""
    from pose2rgbd.convert.mvs_depth import MvsDepthSource
    from pose2rgbd.methods.selfsup_depth.metric import SFM, MetricPoses

    with pytest.raises(ConfigError, match="MvsConfig's min_depth and max_depth") as e:
        depth_range_from_points(np.array([3.0, 4.0, np.nan]))
    assert "mvs.min_depth" not in str(e.value)
    T = np.tile(np.eye(4), (3, 1, 1))
    T[:, 0, 3] = np.arange(3) * 0.5
    rgb = np.zeros((3, CAM.height, CAM.width, 3), np.uint8)
    ds = _dataset(tmp_path / "in", rgb, None, T)
    mp = MetricPoses(T, np.full(3, SFM), {0: np.array([[0.0, 0.0, 5.0, 1.0]])}, {})
    with pytest.raises(ConfigError, match="--depth selfsup") as e:
        MvsDepthSource(ds, mp).plan(progress=False)
    assert "mvs_cfg=MvsConfig(min_depth=" in str(e.value) and "1 sparse depths" in str(e.value)


def test_combination_keeps_stereo_scales_the_network_and_leaves_the_sky_out() -> None:
    gt = np.full((40, 50), 20.0, np.float32)
    gt[:, 25:] = 30.0
    net = gt / 2.0  # right up to a scale
    net[:8] = 60.0  # sky: the network says 60 units (120 m scaled), stereo never saw anything that far
    gt[:8] = np.inf
    mvs = np.full_like(gt, np.nan)
    mvs[8:, ::2] = gt[8:, ::2]
    c = combine_frame(mvs, net, far_factor=1.5)
    out, s = c.depth, c.scale
    assert s == pytest.approx(2.0)
    assert np.allclose(out[8:], gt[8:])  # stereo where verified, the scaled network between
    assert np.all(np.isnan(out[:8]))  # beyond 1.5 x the verified depth: no finite depth for the sky
    none = combine_frame(np.full_like(gt, np.nan), net)
    too_few, s1 = none.depth, none.scale
    assert s1 == 1.0 and np.array_equal(too_few, net)
    assert np.array_equal(c.stereo, np.isfinite(mvs))  # where the written depth is the stereo's
    few = mvs.copy()
    few[9:] = np.nan  # 25 verified pixels < 50: the network's depth as is, no stereo pixel
    assert not combine_frame(few, net).stereo.any()


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="odd"):
        MvsConfig(window=4)
    with pytest.raises(ConfigError, match="depth range"):
        mvs_sequence(lambda i: np.zeros((4, 4, 3), np.uint8), CAM.K, np.tile(np.eye(4), (3, 1, 1)))


def _dataset(tmp_path, rgb: np.ndarray, depth: np.ndarray | None, T: np.ndarray):  # type: ignore[no-untyped-def]
    from pose2rgbd.convert.stages.depth_export import KEPT_NETWORK
    from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest

    # a network's export keeps its network inside (as `convert video --depth selfsup+mvs` makes it); the frames
    # for stereo alone hold one too here, which their output must not take over
    extra = {"depth": {"source": "selfsup-depth", "checkpoint": KEPT_NETWORK},
             "conversion": {"assumptions": ["orientation from the GPS course: yaw along the track, roll = pitch = 0",
                                            "lens: pinhole"]}}  # fmt: skip
    man = Manifest(name="mvs", camera=CAM, depth_kind="metric" if depth is not None else "none", extra=extra)
    with DatasetWriter(tmp_path, man) as wr:
        for i in range(len(rgb)):
            wr.add_frame(i * 100_000_000, T[i], rgb[i], None if depth is None else depth[i])
    (tmp_path / KEPT_NETWORK).write_bytes(b"the network")
    return Dataset(tmp_path)


@pytest.mark.parametrize("combine", [False, True])
def test_conversion_writes_stereo_depth(track: tuple, tmp_path, capsys, combine: bool) -> None:  # type: ignore[no-untyped-def]
    """What ``convert video --depth mvs`` (and ``selfsup+mvs``) write once the metric poses exist: the stereo depth
    through the conversion pipeline; combined, the network's depth (here the truth x 0.5) scaled to it."""
    from pose2rgbd.convert.mvs_depth import MvsDepthSource
    from pose2rgbd.convert.pipeline import convert
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.methods.selfsup_depth.metric import SFM, MetricPoses

    rgb, depth, T = track
    T_gps = T.copy()
    T_gps[:, :3, 3] += 3.0  # what the dataset holds before: GPS poses, off by metres
    net = 0.5 * np.nan_to_num(depth, nan=30.0)  # the network: right up to a scale, a finite depth on a miss
    ds = _dataset(tmp_path / "in", rgb, net if combine else None, T if combine else T_gps)
    (ds.path / "report").mkdir()  # what the conversion before the stereo reported (its work folder goes after)
    (ds.path / "report" / "sync.png").write_bytes(b"png")
    (ds.path / "report" / "samples.png").write_bytes(b"the network's depth")
    (ds.path / "report" / "summary.json").write_text('{"time_offset_s": 0.25}')
    pts = {i: np.array([[0.0, 0.0, z, 1.0] for z in np.nanpercentile(depth[i], np.linspace(1, 99, 12))])
           for i in range(len(T))}  # fmt: skip
    mp = MetricPoses(T, np.full(len(T), SFM), pts, {"metric_frames": len(T), "frames": len(T)})
    cfg = MvsConfig(planes=48)
    out = Dataset(convert(MvsDepthSource(ds, mp, combine=combine, cfg=cfg), tmp_path / "out", progress=False,
                          repeats=False))  # fmt: skip
    assert out.manifest.depth_kind == "metric"
    assert out.manifest.extra["depth"]["source"] == ("selfsup+mvs" if combine else "mvs")
    # where NaN: the network's depth fills the unverified pixels, sky included, unless beyond the far bound
    invalid = out.manifest.extra["depth"]["invalid"]
    assert ("sky nearer than that is written as a surface" in invalid) == combine, invalid
    # stereo alone writes structure from motion's poses: the GPS course's orientation is said to be replaced (the
    # combined conversion keeps the poses of the network's export, which said so already)
    said = out.manifest.extra["conversion"]["assumptions"]
    before = ds.manifest.extra["conversion"]["assumptions"]
    assert said[1] == "lens: pinhole" and said[0].startswith("orientation"), said
    assert (said[0] != before[0]) != combine and ("structure from motion" in said[0]) != combine, said
    assert estimated_depth_source(out) == out.manifest.extra["depth"]["source"]
    assert np.allclose(out.frames.T_world_cam, T)  # the metric poses, not the GPS ones
    d = out.read_depth(3)
    err, share = abs_rel(d, depth[3])
    assert err < 0.05
    assert share > (0.95 if combine else 0.5)  # combined: the scaled network fills what stereo left
    if combine:  # the network goes on with the depth it gave
        assert out.manifest.extra["depth"]["network"]["checkpoint"] == "depth_network.pt"
        assert (out.path / "depth_network.pt").read_bytes() == b"the network"
    else:  # stereo alone: no network gave this depth
        assert "network" not in out.manifest.extra["depth"]
        assert not (out.path / "depth_network.pt").exists()
    # the earlier report comes along: its figures, and its summary under before_stereo
    assert (out.path / "report" / "sync.png").read_bytes() == b"png"
    summary = json.loads((out.path / "report" / "summary.json").read_text())
    assert summary["before_stereo"] == {"time_offset_s": 0.25} and "mvs" in summary
    # the report shows the depth as written, not the network's before stereo
    assert (out.path / "report" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    # the shares of the written pixels: stereo, the network's, none; as many stereo pixels as verified ones
    share = summary["mvs"]["written_share"]
    assert out.manifest.extra["depth"]["mvs"]["written_share"] == share
    assert "seconds" in summary["mvs"] and "seconds" not in out.manifest.extra["depth"]["mvs"]
    written = np.stack([out.read_depth(i) for i in range(len(out))])
    assert share["none"] == pytest.approx(float(np.isnan(written).mean()), abs=1e-4)
    assert share["stereo"] == pytest.approx(summary["mvs"]["verified_share"], abs=1e-4)
    assert share["network"] == (pytest.approx(1.0 - share["stereo"] - share["none"], abs=2e-4) if combine else 0.0)
    assert (share["network"] > 0.01) == combine
    from pose2rgbd.cli.depth import print_export
    from pose2rgbd.convert.stages.depth_export import ExportResult

    print_export(ExportResult(path=out.path, depth_kind="metric", frames=len(out), metres_per_unit=0.5 * combine))
    text = capsys.readouterr().out
    assert f"multi-view stereo verified across views on {share['stereo']:.1%} of the pixels" in text
    assert ("the network's depth (scaled to the stereo) on" in text) == combine
    assert "depth written at" not in text  # not the network's unit alone, where stereo made the depth
    with pytest.raises(ConfigError, match="metric poses of"):
        MvsDepthSource(ds, MetricPoses(T[:3], np.full(3, SFM)))
