"""Inference engine: rendering contract, validation, look-ahead cache, out-of-bounds, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pose2rgbd.errors import CheckpointError, ConfigError, GeometryError
from pose2rgbd.inference import EngineConfig, RenderEngine, extrapolate_constant_velocity, load_engine
from pose2rgbd.inference.poses import depth_sigma_for_offset
from pose2rgbd.models.depth_uncertainty import DepthUncertainty
from pose2rgbd.testing.ground_plane import (
    forward_pose,
    look_down_pose,
    make_ground_plane_checkpoint,
    render_ground_plane,
)


def make_engine(size: int = 32, **kw: object) -> RenderEngine:
    cfg = EngineConfig(**{"warmup": 0, "device": "cpu", "precision": "fp32", **kw})  # type: ignore[arg-type]
    return RenderEngine(cfg, make_ground_plane_checkpoint(size))


def test_render_shapes_and_metric_depth() -> None:
    eng = make_engine()
    T = np.stack([look_down_pose(1.0, 2.0, 10.0), look_down_pose(-5.0, 3.0, 25.0, yaw=0.7)])
    res = eng.render(T)
    assert res.rgb is not None and res.depth is not None and res.confidence is not None
    assert res.rgb.shape == (2, 32, 32, 3) and res.rgb.dtype == np.uint8
    assert res.depth.shape == (2, 32, 32) and res.depth.dtype == np.float32
    # looking straight down at the ground: z-depth (REP-118, along optical Z) is the altitude at every pixel
    np.testing.assert_allclose(res.depth[0], 10.0, rtol=1e-4)
    np.testing.assert_allclose(res.depth[1], 25.0, rtol=1e-4)
    assert not res.out_of_bounds.any() and not res.from_cache.any()
    # a single (4, 4) pose is a batch of one
    assert len(eng.render(T[0])) == 1


def test_nan_and_non_rigid_poses_are_rejected() -> None:
    eng = make_engine()
    T = look_down_pose(0, 0, 10)
    T[0, 3] = np.nan
    with pytest.raises(GeometryError, match="NaN"):
        eng.render(T)
    S = look_down_pose(0, 0, 10)
    S[:3, :3] *= 2.0
    with pytest.raises(GeometryError, match="orthonormal"):
        eng.render_lookahead(S, 0)
    with pytest.raises(GeometryError):
        eng.render(np.eye(3))


def test_out_of_bounds_flag() -> None:
    eng = make_engine(oob_margin=0.1)  # stub extremes: x, y in [-100, 100], z in [5, 60]
    T = np.stack([look_down_pose(0, 0, 30), look_down_pose(150, 0, 30), look_down_pose(0, 0, 200)])
    assert eng.render(T).out_of_bounds.tolist() == [False, True, True]
    assert eng.out_of_bounds(look_down_pose(105, 0, 30)).tolist() == [False]  # within the margin


def test_checkpoint_validation_errors(tmp_path) -> None:
    """The engine's expectations are checked by the checkpoint loader, once, for any model kind."""
    from pose2rgbd.models import save_checkpoint

    ck = make_ground_plane_checkpoint(32)
    p = save_checkpoint(tmp_path / "gp.pt", ck.model, dataset_fingerprint="stub", camera=ck.camera)
    with pytest.raises(CheckpointError, match="expected 64"):
        RenderEngine.from_config(EngineConfig(checkpoint=str(p), expect_size=64, warmup=0))
    with pytest.raises(CheckpointError, match="dataset"):
        RenderEngine.from_config(EngineConfig(checkpoint=str(p), expect_fingerprint="abc", warmup=0))
    with pytest.raises(CheckpointError, match="preset"):
        RenderEngine.from_config(EngineConfig(checkpoint=str(p), expect_preset="slice10", warmup=0))
    # met expectations: the saved ground plane serves exactly like the in-memory one
    cfg = EngineConfig(
        checkpoint=str(p), expect_size=32, expect_fingerprint="stub", warmup=0, device="cpu", precision="fp32"
    )
    eng = load_engine(cfg)
    assert isinstance(eng, RenderEngine)
    T = look_down_pose(3.0, -4.0, 12.0)
    np.testing.assert_array_equal(eng.render(T).rgb, make_engine().render(T).rgb)


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        RenderEngine.from_config(EngineConfig())
    with pytest.raises(CheckpointError, match="not found"):
        RenderEngine.from_config(EngineConfig(checkpoint=str(tmp_path / "nope.pt")))


def test_device_and_precision_selection() -> None:
    import torch

    eng = make_engine(precision="bf16")
    if not torch.cuda.is_available():
        assert eng.device.type == "cpu" and eng.precision == "bf16"  # bf16 autocast runs on CPU too
        assert make_engine(precision="fp16").precision == "fp32"  # fp16 is GPU only
        assert make_engine(precision="auto").precision == "fp32"  # auto: fp32 on CPU
        with pytest.raises(ConfigError, match="CUDA"):
            make_engine(device="cuda")
    with pytest.raises(ConfigError):
        EngineConfig(precision="fp8")
    with pytest.raises(ConfigError):
        make_engine(device="not-a-device")


def test_a_cuda_device_number_the_machine_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--device cuda:7` on a machine of one GPU is refused where it is resolved, naming the devices there (a command
    checks it before it writes anything)."""
    import torch

    from pose2rgbd.models.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"'cuda:7' requested but this machine has 1 CUDA device \(cuda:0\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0") and resolve_device("cuda") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_constant_velocity_extrapolation() -> None:
    from scipy.spatial.transform import Rotation

    def pose(t: float) -> np.ndarray:  # constant linear and angular velocity in the world frame
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec([0.0, 0.0, 0.3 * t]).as_matrix() @ Rotation.from_euler("x", 0.2).as_matrix()
        T[:3, 3] = [1.0 + 2.0 * t, -0.5 * t, 10.0]
        return T

    out = extrapolate_constant_velocity(0, pose(0.0), 100_000_000, pose(0.1), np.array([200_000_000, 500_000_000]))
    np.testing.assert_allclose(out[0], pose(0.2), atol=1e-9)
    np.testing.assert_allclose(out[1], pose(0.5), atol=1e-9)
    held = extrapolate_constant_velocity(5, pose(0.0), 5, pose(0.1), np.array([10]))
    np.testing.assert_allclose(held[0], pose(0.1))


def test_lookahead_serves_cache_within_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    # every request predicts all 4 poses: on a slow or busy machine a 32x32 forward can take more than 25 ms, and the
    # horizon (renders that fit in a period) would predict fewer (tested below, with set forward times)
    monkeypatch.setattr(RenderEngine, "horizon", property(lambda self: int(self.cfg.lookahead)))
    eng = make_engine(lookahead=4, tolerance_m=0.05, tolerance_deg=0.5)
    period = 100_000_000
    # steady motion 1 m/s east: after two poses the predictions match the real ones
    r0 = eng.render_lookahead(look_down_pose(0.0, 0.0, 20.0), 0)
    r1 = eng.render_lookahead(look_down_pose(0.1, 0.0, 20.0), period)
    assert not r0.from_cache[0] and not r1.from_cache[0]
    assert eng.stats["inline_frames"] == 2  # a miss renders only the requested pose on the request path
    hits = []
    for k in range(2, 5):
        assert eng.wait_lookahead()  # the node's period: the background thread renders the predictions
        hits.append(eng.render_lookahead(look_down_pose(0.1 * k, 0.0, 20.0), k * period).from_cache[0])
    assert all(hits)
    # a cached frame equals a direct render of the pose it was predicted for (within tolerance of the query)
    assert eng.wait_lookahead()
    served = eng.render_lookahead(look_down_pose(0.5 + 0.01, 0.0, 20.0), 5 * period)
    direct = eng.render(look_down_pose(0.5, 0.0, 20.0))
    assert served.from_cache[0]
    np.testing.assert_array_equal(served.rgb, direct.rgb)
    # a jump beyond the tolerance is rendered fresh
    assert eng.wait_lookahead()
    jump = eng.render_lookahead(look_down_pose(5.0, 0.0, 20.0), 6 * period)
    assert not jump.from_cache[0]
    assert eng.stats["cache_hits"] == 4 and eng.stats["cache_misses"] == 3
    # inline: the 3 misses and the direct render; ahead: 4 predictions after r1, one more per hit (the window
    # moves on by one period), the jump's 4 (predicted from the last two poses)
    assert eng.wait_lookahead()
    assert eng.stats["inline_frames"] == 4
    assert eng.stats["ahead_frames"] == 4 + 4 + 4


def test_lookahead_predicts_no_further_than_the_thread_renders_in_a_period() -> None:
    eng = make_engine(lookahead=4)
    assert eng.horizon == 4  # no forward timed yet
    for frame_s, horizon in ((0.001, 4), (0.03, 3), (0.049, 2), (0.2, 1)):
        eng._frame_s = frame_s  # a one-pose forward's recent wall time, at the engine's 10 Hz
        assert eng.horizon == horizon, frame_s
    assert make_engine(lookahead=1).horizon == 1


def test_a_cached_frames_depth_sigma_covers_the_change_to_the_requested_pose() -> None:
    """A frame rendered for a predicted pose and served for a request 0.5 deg / 0.02 m away: on the oblique ground
    the depth at a pixel changes by up to several per cent; the widened sigma covers that change where the render's
    own (here 0.2 % of the depth) does not, without widening far past it."""
    ck = make_ground_plane_checkpoint(64)
    T_ahead = forward_pose(0.0, 0.0, 20.0, pitch_deg=35.0)
    T_req = forward_pose(0.0, 0.02, 20.0, pitch_deg=35.5)
    d_ahead, d_req = (render_ground_plane(ck, T[None])["depth"] for T in (T_ahead, T_req))
    assert d_ahead is not None and d_req is not None
    d_ahead, d_req = d_ahead[0], d_req[0]
    ok = np.isfinite(d_ahead) & np.isfinite(d_req) & (d_ahead < 200) & (d_req < 200)  # the ground, not its horizon
    assert ok.mean() > 0.5
    change = np.abs(d_ahead[ok] - d_req[ok])
    sigma = np.where(np.isfinite(d_ahead), np.float32(0.002) * d_ahead, np.float32(np.nan))
    cam = ck.camera
    assert cam is not None
    widened = depth_sigma_for_offset(d_ahead, sigma, T_ahead, T_req, cam)
    assert np.mean(change <= sigma[ok]) < 0.3  # the render's own sigma does not hold the offset's change
    assert np.mean(change <= widened[ok]) > 0.95
    assert np.median(widened[ok] / np.maximum(change, 1e-3)) < 3.0  # about the change, not a blanket
    assert np.all(widened[ok] >= sigma[ok])
    # the same pose: unchanged; no answer stays no answer
    assert depth_sigma_for_offset(d_ahead, sigma, T_ahead, T_ahead, cam) is sigma
    holed = d_ahead.copy()
    holed[:5] = np.nan
    w = depth_sigma_for_offset(holed, np.where(np.isfinite(holed), sigma, np.nan), T_ahead, T_req, cam)
    assert np.isnan(w[:5]).all() and np.isfinite(w[5:][np.isfinite(holed[5:])]).all()


def test_lookahead_hit_widens_the_cached_frames_depth_sigma() -> None:
    eng = make_engine(64, lookahead=4, tolerance_m=0.05, tolerance_deg=0.5)
    eng.depth_uncertainty = DepthUncertainty(0.683, (10.0, 40.0), np.full((2, 3), 0.01), np.full((2, 3), 1000))
    period = 100_000_000
    eng.render_lookahead(forward_pose(0.0, 0.0, 20.0, pitch_deg=35.0), 0)
    eng.render_lookahead(forward_pose(0.1, 0.0, 20.0, pitch_deg=35.0), period)
    assert eng.wait_lookahead()
    T_req = forward_pose(0.2, 0.0, 20.0, pitch_deg=35.4)  # the prediction is at pitch 35 deg
    served = eng.render_lookahead(T_req, 2 * period)
    assert served.from_cache[0] and served.depth is not None and served.depth_sigma is not None
    T_pred = forward_pose(0.2, 0.0, 20.0, pitch_deg=35.0)
    own = eng.render(T_pred).depth_sigma
    assert own is not None
    expected = depth_sigma_for_offset(served.depth[0], own[0], T_pred, T_req, eng.camera)
    np.testing.assert_allclose(served.depth_sigma[0], expected, rtol=1e-5)
    ground = np.isfinite(own[0])
    assert (served.depth_sigma[0][ground] > own[0][ground]).mean() > 0.9


def test_lookahead_renders_the_next_frame_again_when_its_kept_prediction_drifted() -> None:
    """A camera accelerating at 2 m/s^2 east: each prediction (constant velocity from the last two poses) lags the
    real pose by 0.02 m one period ahead, 0.06 m two ahead. The next frame's entry kept from two periods back is
    within the whole tolerance of the newest prediction (0.04 m apart) but 0.06 m from the real pose: kept, it would
    miss every request. Kept only within half the tolerance, it is rendered again from the newest prediction."""
    eng = make_engine(lookahead=4, tolerance_m=0.05, tolerance_deg=0.5)
    period = 100_000_000
    hits = []
    for k in range(12):
        t = 0.1 * k
        assert eng.wait_lookahead()  # the node's period: the background thread renders the predictions
        hits.append(bool(eng.render_lookahead(look_down_pose(1.0 * t + t * t, 0.0, 20.0), k * period).from_cache[0]))
    assert not any(hits[:2])  # no motion known yet
    assert all(hits[2:]), hits
    assert eng.wait_lookahead()


@pytest.mark.parametrize("busy", [False, True])
def test_lookahead_renews_the_next_frame_only_where_the_thread_has_caught_up(busy: bool) -> None:
    """The next frame's entry, 0.035 m from the newest prediction (within the 0.05 m tolerance, not within half of
    it), is rendered again where every entry is finished; where the thread still has a frame queued it is kept: a
    renewal there would cost a render the thread has no time for."""
    from pose2rgbd.inference.render import _Ahead

    eng = make_engine(lookahead=2, tolerance_m=0.05, tolerance_deg=0.5)
    period = 100_000_000
    poses = [look_down_pose(x, 0.0, 20.0) for x in (0.0, 0.1, 0.2, 0.3)]  # 1 m/s east: predictions 0.2, 0.3
    frame = eng.render(poses[0]).frame(0)
    drifted = _Ahead(2 * period, look_down_pose(0.2 - 0.035, 0.0, 20.0), frame)
    far = _Ahead(3 * period, poses[3], None if busy else frame)
    for e in (drifted, far):
        if e.result is not None:
            e.done.set()
    with eng._lock:
        eng._history = [(0, poses[0]), (period, poses[1])]
        eng._ahead = [drifted, far]
        eng._replan(period, poses[1], None)
        kept = [e for e in eng._ahead if not e.cancelled]
    assert (drifted in kept) is busy
    assert far in kept  # the later frame within the whole tolerance of its prediction: kept either way
    if not busy:
        renewed = kept[0]
        np.testing.assert_allclose(renewed.T, poses[2], atol=1e-9)  # the newest prediction, queued first
    assert eng.wait_lookahead()
    eng.close()


def test_lookahead_predicts_as_far_as_the_thread_renders_in_a_period() -> None:
    """The horizon: ``engine.lookahead`` poses, but no more than one-pose forwards fit in one period at their recent
    speed, and at least one; the recent speed is the forwards' own, measured as the engine renders."""
    eng = make_engine(lookahead=4, tolerance_m=0.05, tolerance_deg=0.5)
    assert eng.horizon == 4  # nothing measured yet
    eng.render(look_down_pose(0.0, 0.0, 20.0))
    first = eng._frame_s
    assert first is not None and 0.0 < first < 1.0
    eng.render(np.stack([look_down_pose(0.0, 0.0, 20.0)] * 3))  # a batch is no one-pose forward: not counted
    assert eng._frame_s == first
    period = 100_000_000  # 10 Hz
    poses = [look_down_pose(x, 0.0, 20.0) for x in (0.0, 0.1)]
    for frame_s, horizon in ((0.001, 4), (0.03, 3), (0.045, 2), (0.06, 1), (0.5, 1)):
        with eng._lock:
            eng._drop_ahead()
            eng._history = [(0, poses[0]), (period, poses[1])]
            eng._frame_s = frame_s
            assert eng.horizon == horizon
            eng._replan(period, poses[1], None)
            stamps = [e.stamp_ns for e in eng._ahead]
        assert stamps == [period * (k + 2) for k in range(horizon)], (frame_s, stamps)
        assert eng.wait_lookahead()
    eng.close()


def test_lookahead_off_is_plain_render() -> None:
    eng = make_engine(lookahead=0)
    for k in range(3):
        assert not eng.render_lookahead(look_down_pose(0, 0, 20), k).from_cache[0]
    assert eng.stats["renders"] == 3


def test_thread_safe_concurrent_renders() -> None:
    eng = make_engine(lookahead=2)
    poses = [look_down_pose(float(i), -float(i), 10.0 + i) for i in range(8)]
    expected = [eng.render(T).depth for T in poses]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = eng.render(poses[i]).depth
                eng.render_lookahead(poses[i], i)  # shares the cache with the other threads
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        np.testing.assert_array_equal(results[i], expected[i])


@pytest.mark.parametrize("preset", ["base", "slice10"])
def test_inference_preparation_keeps_outputs(preset: str) -> None:
    """BatchNorm folding + channels-last give the same images as the plain eval model; the caller's model is
    left as it was."""
    import torch

    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer
    from pose2rgbd.models.device import fold_batchnorm, prepare_for_inference

    torch.manual_seed(0)
    model = build_model(preset_config(preset, size=64, outputs="rgbd"), DepthNormalizer(1.0, 100.0)).eval()
    for m in model.modules():  # non-trivial statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    fast = prepare_for_inference(model, torch.device("cpu"))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn  # untouched
    # every BatchNorm after a convolution is folded (the one after the dense layer stays)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules()) == 1
    assert fold_batchnorm(fast) == 0
    x = torch.rand(3, 7) * 2 - 1
    with torch.inference_mode():
        ref, out = model(x), fast(x)
    for k in ("rgb", "depth", *(["confidence"] if preset != "base" else [])):
        torch.testing.assert_close(out[k].contiguous(), ref[k], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("preset", ["base", "slice10"])
def test_a_pose_network_flags_a_heading_never_flown_not_a_half_degree_turn(preset: str) -> None:
    """Base and Slice take the normalized pose, so the rotation counts in their out-of-bounds flag: a flight that
    always faces one way (2 deg of headings) spans a sliver of each quaternion component, and a camera turned 0.5 deg
    past it was flagged (`render trajectory` warned of nearly every pose). Now a turn within the rotation's margin
    (at least 5 deg) is not; 30 deg past the headings flown is, and so is a position far outside, while one 5 m below
    the lowest camera (a thin side of the box: 5 m of altitudes in a 200 m flight) is inside."""
    from pose2rgbd.models import PoseNormalizer, get_family

    fam = get_family("pose2rgbd")
    model = fam.build(fam.make_config(preset, size=64, dense_channels=8, trunk_channels=[4] * 6))
    rng = np.random.default_rng(5)
    xyz = np.column_stack([rng.uniform(-100, 100, (100, 2)), rng.uniform(30, 35, 100)])
    yaw = np.radians(rng.uniform(40.0, 42.0, 100))
    T = np.stack([forward_pose(*p, yaw=y) for p, y in zip(xyz, yaw)])
    model.set_pose_normalizer(PoseNormalizer.fit(T, model.pose_encoding))
    top = int(np.argmax(yaw))
    x, y, z = xyz[top]
    probes = np.stack([
        forward_pose(x, y, z, yaw=yaw[top] + np.radians(0.5)),
        forward_pose(x, y, z, yaw=yaw[top] + np.radians(30.0)),
        forward_pose(x + 1000.0, y, z, yaw=yaw[top]),
        forward_pose(x, y, float(xyz[:, 2].min()) - 5.0, yaw=yaw[top]),
    ])  # fmt: skip
    _, oob = model.poses_to_input(probes)
    assert oob.tolist() == [False, True, True, False]
    assert np.array_equal(oob, model.out_of_bounds(probes))  # one rule for both paths
    assert not model.out_of_bounds(T).any()
