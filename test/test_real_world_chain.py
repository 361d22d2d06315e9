"""The paper's whole real-world chain in one test, at a tiny size.

Simulator video + GPS CSV (the GPS clock runs ``OFFSET`` s ahead of the camera) -> Algorithm 1 (time sync,
``convert_video``) -> Algorithm 2 (self-supervised depth trained on the flight, scaled by the GPS poses,
``convert_video_with_depth``) -> a dataset with metric depth -> a Pose2RGBD model trains on it -> the render
engine renders the held-out time blocks of the route, whose depth is compared with the simulator's ground truth.

The flight is the first 20 s of the seed-0 ``transect`` (hover, cruise, braking) with a gimbal-stabilized nadir
camera: the mapping-flight setting under which Algorithm 1 is documented to recover the offset on a video
(docs/convert.md, "Synthetic, mapping flight"). 64x64, 30 Hz, 600 frames; 40 depth steps, 60 Pose2RGBD steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # 104-185 s on the 2-core CPU shared with other jobs (load 5-7); idle: not measured

OFFSET = 0.5  # s: a GPS fix stamped t was measured at camera time t - OFFSET
RATE = 30  # camera rate of the simulator, Hz
SIZE = 64
DEPTH_STEPS = 40
P2R_STEPS = 60


def _gt_frame(stamp_ns: np.ndarray) -> np.ndarray:
    """Video frame index of a dataset stamp (the video converter stamps frame k at k / rate s)."""
    return np.round(np.asarray(stamp_ns) * RATE / 1e9).astype(int)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    from pose2rgbd.config import from_dict
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.stages.scale import ScaleConfig
    from pose2rgbd.convert.video_depth import convert_video_with_depth
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.inference import EngineConfig, RenderEngine
    from pose2rgbd.methods.pose2rgbd import preset_config
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.sim import SimConfig, export_video
    from pose2rgbd.sim.export import camera_trajectory, make_camera, world_of
    from pose2rgbd.sim.render import Renderer
    from pose2rgbd.training.config import TrainConfig
    from pose2rgbd.training.train import train_model

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("chain")
    sim = SimConfig(width=SIZE, height=SIZE, camera_rate_hz=RATE, routes=["transect"], video_routes=["transect"],
                    route_duration_s=20.0, stabilized=True, camera_pitch_deg=90.0, gps_rate_hz=10.0,
                    gps_time_offset_s=OFFSET, shadows=False)  # fmt: skip
    world = world_of(sim)
    mp4, gps_csv = export_video(sim, d / "video", "transect", progress=False, world=world)

    # Algorithm 1 + 2 through the library call behind `convert video V --gps LOG --depth selfsup`. The datum is the
    # simulator's so that the GPS poses and the ground truth share a frame (only needed for the diagnostics).
    conv = from_dict(ConvertConfig, {
        "hfov_deg": sim.hfov_deg, "datum": f"{sim.datum_lat_deg},{sim.datum_lon_deg},{sim.datum_alt_m}",
        "sync": {"max_lag_s": 2.0, "flow": {"width": SIZE, "statistic": "quantile"}},
    })  # fmt: skip
    depth_cfg = get_family("selfsup-depth").make_config("tiny")
    depth_tc = TrainConfig(epochs=1000, max_steps=DEPTH_STEPS, batch_size=4, lr=1e-3, val_every=0, progress=False,
                           tensorboard=False)  # fmt: skip
    res = convert_video_with_depth(mp4, gps_csv, d / "dataset", conv, model_cfg=depth_cfg, train_cfg=depth_tc,
                                   depth_poses="posenet",  # the pose-network path this test documents
                                   scale_cfg=ScaleConfig(min_baseline_m=10.0), progress=False)  # fmt: skip
    ds = Dataset(res.path)

    # ground truth: the simulator's depth at the true camera pose of each dataset frame's video frame
    traj = camera_trajectory(sim, "transect")
    renderer = Renderer(world, make_camera(sim), shadows=False)

    def gt_depth(i: int) -> np.ndarray:
        return renderer.render(traj.T_world_cam[_gt_frame(ds.frames.stamp_ns[i])])[1]

    # a Pose2RGBD model on the metric dataset; the test time blocks of the route are never trained on
    mc = preset_config("base", size=SIZE, outputs="rgbd")
    tc = TrainConfig(epochs=1000, batch_size=8, lr=3e-3, max_steps=P2R_STEPS, split="route", test_fraction=0.2,
                     val_every=0, seed=0, progress=False, tensorboard=False, log_every=1000)  # fmt: skip
    run = train_model(ds, d / "p2r", mc, tc, cache_root=d / "cache")
    test = np.asarray(run.split.test)[::4]  # every 4th held-out frame keeps the rendering short
    engine = RenderEngine.from_config(EngineConfig(checkpoint=str(run.checkpoint), threads=1))
    rendered = engine.render(ds.frames.T_world_cam[test]).depth
    assert rendered is not None
    return {"ds": ds, "result": res, "gt_depth": gt_depth, "test": test, "rendered": rendered, "run": run}


def test_algorithm_1_recovers_the_camera_gps_offset(chain: dict[str, Any]) -> None:
    to = chain["ds"].manifest.extra["conversion"]["time_offset"]  # carried from the conversion into the dataset
    est = to["estimator"]
    assert to["source"] == "estimated" and est["verdict"] == "ok", est
    assert abs(to["offset_s"] - OFFSET) < 3 / RATE, est  # measured: 0.525 s (within one frame)


def test_algorithm_2_writes_metric_depth_scaled_from_gps(chain: dict[str, Any]) -> None:
    ds, res = chain["ds"], chain["result"]
    assert ds.manifest.depth_kind == "metric" and res.depth_kind == "metric"
    info = ds.manifest.extra["depth"]
    assert info["scaled_from"] == "gps" and info["units"] == "metres"
    fit = info["scale"]["0"]
    assert fit["scale"] > 0 and 0 < fit["sigma"] < fit["scale"] and fit["n_windows"] >= 3
    # oracle scale: median of ground truth / predicted (unscaled) depth = scale * median(gt / metric depth)
    ratios = []
    for i in range(0, len(ds), 25):
        gt, dm = chain["gt_depth"](i), ds.read_depth(i)
        m = np.isfinite(gt) & (gt < 400.0) & np.isfinite(dm) & (dm > 0)
        ratios.append(np.median(gt[m] / dm[m]))
    oracle = fit["scale"] * float(np.median(ratios))
    # A tiny, honest tolerance: after 40 steps of a tiny network the pose network's translations and its depth are
    # not yet consistent, so the GPS scale is off by a factor (measured: 141.6 +- 22.2 against an oracle of 273.1,
    # 0.52 x). The full-size benchmark (docs/results.md, "Self-supervised depth": 128x96, 766 steps) measures
    # -12 % to -38 % against the oracle; the target is 5 %. An unscaled export (scale 1 against ~270),
    # a wrong sign or a unit mix-up fails this.
    assert 1 / 3 < fit["scale"] / oracle < 3, (fit, oracle)


def test_pose2rgbd_renders_the_held_out_route_in_metres(chain: dict[str, Any]) -> None:
    test, rendered = chain["test"], chain["rendered"]
    assert len(test) >= 10 and not set(test.tolist()) & set(np.asarray(chain["run"].split.train).tolist())
    err, mean_gt = [], []
    for j, i in enumerate(test):
        gt, pred = chain["gt_depth"](int(i)), rendered[j]
        m = np.isfinite(gt) & (gt < 400.0) & np.isfinite(pred)
        err.append(np.abs(pred[m] - gt[m]).mean())
        mean_gt.append(gt[m].mean())
    mae, mean = float(np.mean(err)), float(np.mean(mean_gt))
    assert np.isfinite(mae), mae
    # The reference is the chain without the GPS scaling of Algorithm 2: depth in network units (about 0.2 here)
    # is off by about the mean true depth (MAE / mean ~ 1.0). With the GPS scale the rendered depth of the held-out
    # frames must be in metres to within the scale's error: measured MAE 23.0 m against a mean depth of 50.1 m
    # (0.46; the tiny GPS scale is 0.52 x the oracle, see above). An exact scale would bring it far lower.
    assert mae < 0.6 * mean, (mae, mean)
