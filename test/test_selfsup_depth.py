"""Self-supervised depth (Algorithm 2): view synthesis, photometric loss, GPS scale, pose composition, the
training recipe through the generic trainer, the depth export, and the errors on bad input."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose2rgbd.convert.stages.scale import ScaleConfig, fit_scale, segment_scales
from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest
from pose2rgbd.errors import ConfigError, DatasetError, SyncError
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.methods.selfsup_depth.net import photometric_error, warp
from pose2rgbd.methods.selfsup_depth.trajectory import (
    ate_sim3,
    compose_poses,
    relative_from_absolute,
    relative_pose_errors,
)
from pose2rgbd.sync.gps import gps_pair_distances

# -- an analytic scene: a textured ground plane z = 0 seen from above -----------------------------------------


def _rot(roll: float, pitch: float, yaw: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [roll, pitch, yaw]).as_matrix()


def down_pose(x: float, y: float, h: float, tilt: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera at (x, y, h) looking down (optical z -> world -z), slightly tilted."""
    R0 = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])  # columns: camera axes in the world
    T = np.eye(4)
    T[:3, :3] = R0 @ _rot(*tilt)
    T[:3, 3] = (x, y, h)
    return T


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c = [
        0.5
        + 0.2 * np.sin(1.3 * x + 0.4 * y)
        + 0.15 * np.cos(2.1 * y - 0.3 * x)
        + 0.1 * np.sin(3.7 * x * 0.5 + 2.9 * y * 0.5),
        0.5 + 0.2 * np.cos(1.1 * x - 0.7 * y) + 0.15 * np.sin(2.5 * y + 0.2 * x),
        0.5 + 0.2 * np.sin(0.9 * y + 1.7 * x) + 0.1 * np.cos(4.1 * x),
    ]
    return np.clip(np.stack(c, -1), 0.0, 1.0)


def render_plane(T_world_cam: np.ndarray, cam: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb float (H, W, 3) in [0, 1], z-depth (H, W))`` of the plane z = 0 (exact ray intersection)."""
    rays = cam.rays()  # z = 1 in the camera frame
    d_world = rays @ T_world_cam[:3, :3].T
    o = T_world_cam[:3, 3]
    s = -o[2] / d_world[..., 2]  # ray parameter = z-depth since rays have z = 1
    p = o + s[..., None] * d_world
    return texture(p[..., 0], p[..., 1]), s.astype(np.float32)


CAM = PinholeCamera.from_fov(64, 48, 60.0)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


def _views(
    T0: np.ndarray, T1: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    img0, d0 = render_plane(T0, CAM)
    img1, _ = render_plane(T1, CAM)
    T_1_0 = np.linalg.inv(T1) @ T0
    return (_t(img0).permute(2, 0, 1)[None], _t(img1).permute(2, 0, 1)[None], _t(d0)[None, None],
            _t(T_1_0)[None], _t(CAM.K)[None])  # fmt: skip


def test_warp_with_known_depth_and_pose_reproduces_the_rendered_frame() -> None:
    T0 = down_pose(0.0, 0.0, 10.0, (0.05, -0.03, 0.1))
    T1 = down_pose(0.8, 0.3, 10.2, (0.02, 0.04, 0.15))
    img0, img1, d0, T_1_0, K = _views(T0, T1)
    assert float((img1 - img0).abs().mean()) > 0.03  # the two views really differ
    synth = warp(img1, d0, T_1_0, K)
    seen = warp(torch.ones_like(img1), d0, T_1_0, K) > 0.999  # target pixels the source frame sees
    assert float(seen.float().mean()) > 0.5
    err = float((synth - img0).abs()[seen].mean())
    assert err < 0.01, err
    # the same warp with a wrong pose does not reproduce it
    T_bad = T_1_0.clone()
    T_bad[0, 0, 3] += 0.5
    assert float((warp(img1, d0, T_bad, K) - img0).abs()[seen].mean()) > 3 * err


def test_photometric_loss_is_zero_for_identical_views_and_grows_with_pose_error() -> None:
    T0 = down_pose(0.0, 0.0, 10.0)
    T1 = down_pose(0.6, -0.2, 10.0, (0.0, 0.0, 0.05))
    img0, img1, d0, T_1_0, K = _views(T0, T1)
    assert float(photometric_error(img0, img0).max()) < 1e-6
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    losses = []
    for dx in (0.0, 0.1, 0.3, 0.8):
        T = T_1_0.clone()
        T[0, 0, 3] += dx
        losses.append(float(photometric_error(warp(img1, d0, T, K), img0)[inner].mean()))
    assert losses[0] < 0.01
    assert all(b > a for a, b in itertools.pairwise(losses)), losses


# -- GPS scale -----------------------------------------------------------------------------------------------


def _flight(n: int, rate: float = 10.0, speed: float = 8.0, hover: tuple[int, int] | None = None) -> np.ndarray:
    """Camera poses along a gentle curve at ``speed`` m/s; optionally standing still over frames [a, b)."""
    v = np.full(n, speed / rate)
    if hover is not None:
        v[hover[0] : hover[1]] = 0.0
    s = np.concatenate([[0.0], np.cumsum(v[:-1])])
    x, y = 60.0 * np.sin(s / 120.0), s * 0.8
    T = np.stack([down_pose(a, b, 50.0, (0.0, 0.0, 0.2 * np.sin(k / 50.0))) for k, (a, b) in enumerate(zip(x, y))])
    return T


def _fit(T: np.ndarray, true_scale: float, gps_noise: float, seed: int = 0, rate: float = 10.0, **kw: float):
    rng = np.random.default_rng(seed)
    T_rel = relative_from_absolute(T)
    net = T_rel.copy()
    net[:, :3, 3] /= true_scale
    net[:, :3, 3] *= 1.0 + 0.02 * rng.standard_normal((len(net), 1))  # network noise
    gps = T[:, :3, 3] + gps_noise * rng.standard_normal((len(T), 3))
    stamps = (np.arange(len(T)) * (1e9 / rate)).astype(np.int64)
    return fit_scale(gps, stamps, net, ScaleConfig(**kw))


def test_scale_is_recovered_from_noisy_gps() -> None:
    T = _flight(1200)  # 120 s at 10 Hz, 8 m/s
    fit = _fit(T, 37.0, 1.5)
    assert abs(fit.scale / 37.0 - 1.0) < 0.03, fit
    assert 0 < fit.sigma < 0.03 * 37.0
    assert fit.n_windows >= 20 and fit.n_hover == 0
    seg = segment_scales(fit, 30.0)
    assert len(seg) >= 3 and all(abs(s["scale"] / 37.0 - 1) < 0.1 for s in seg)
    # each point at its windows' time: inside its segment and inside the flight (a short last segment included)
    assert all(30 * k <= s["t_s"] < 30 * (k + 1) for k, s in enumerate(seg)), [s["t_s"] for s in seg]
    assert seg[-1]["t_s"] <= fit.window_t_s.max()
    short = segment_scales(fit, 300.0)  # one segment longer than the 120 s flight: its point is not at 150 s
    assert len(short) == 1 and short[0]["t_s"] == float(np.median(fit.window_t_s))
    # without the fix the error is large: a tiny baseline makes the ratios noise-dominated
    noisy = _fit(T, 37.0, 1.5, min_baseline_m=1.0)
    assert noisy.mad > 3 * fit.mad


def test_hovers_are_rejected_and_gps_without_motion_is_an_error() -> None:
    T = _flight(1500, hover=(400, 800))  # 40 s hovering in the middle
    fit = _fit(T, 5.0, 1.5)
    assert fit.n_hover >= 1
    assert abs(fit.scale / 5.0 - 1.0) < 0.05
    T_still = _flight(600, speed=0.0)
    with pytest.raises(SyncError, match="too little motion"):
        _fit(T_still, 5.0, 1.5)


def test_a_model_with_metres_per_unit_keeps_its_scale_where_the_gps_fit_cannot_check_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The export's scale per source: a model trained against metric poses (metres per unit > 0) keeps its own
    scale when the GPS track is too short for the window fit (the fit only checks it; why it could not is kept);
    a model without one has no scale but the fit, and the export stops with the fit's error."""
    from types import SimpleNamespace

    from pose2rgbd.convert.stages.depth_export import _fit_scales

    T = _flight(100, speed=0.15)  # 10 s at 0.15 m/s: 1.5 m of GPS track
    frames = SimpleNamespace(translation=T[:, :3, 3], stamp_ns=(np.arange(len(T)) * 1e8).astype(np.int64))
    ds = SimpleNamespace(frames=frames)
    T_rel = relative_from_absolute(T)
    sid = np.zeros(len(T), np.int64)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.convert.stages.depth_export"):
        fits, scale, unchecked = _fit_scales(ds, sid, T_rel, True, 0.75, True, None)  # type: ignore[arg-type]
    assert fits == {} and scale == {0: 0.75}
    assert unchecked[0].startswith("GPS window check of the metric scale skipped: the GPS track spans less than one "
                                   "20.0 m window; only 0 window(s)"), unchecked[0]  # fmt: skip
    # the depth is metric: the warning says that only the check was skipped and where the scale comes from; it
    # neither says the scale could not be fitted (it was, by the Sim(3)) nor advises unscaled depth
    assert "GPS window check of the metric scale skipped" in caplog.text and "spans less than one" in caplog.text
    assert "structure-from-motion poses aligned to the GPS by a Sim(3) (0.75 m per network unit)" in caplog.text
    for wrong in ("too little motion", "fit a metric scale", "unscaled"):
        assert wrong not in caplog.text and wrong not in unchecked[0], wrong
    # without the model's metres per unit the fit is the only scale: then the message says there is none
    with pytest.raises(SyncError, match=r"too little motion to fit a metric scale\. .*write unscaled depth"):
        _fit_scales(ds, sid, T_rel, True, 0.0, False, None)  # type: ignore[arg-type]
    # a track longer than a window but with fewer windows than the fit needs says that instead
    cfg = ScaleConfig(min_baseline_m=0.5, min_windows=4)
    with caplog.at_level(logging.WARNING, logger="pose2rgbd.convert.stages.depth_export"):
        _, _, few = _fit_scales(ds, sid, T_rel, True, 0.75, True, cfg)  # type: ignore[arg-type]
    assert "the GPS track gives 2 of the 4 windows of 0.5 m the fit needs" in few[0], few[0]
    with pytest.raises(SyncError, match=r"only 2 window\(s\).*too little motion to fit a metric scale"):
        _fit_scales(ds, sid, T_rel, True, 0.0, False, cfg)  # type: ignore[arg-type]


def test_a_gps_track_too_short_for_the_scale_is_refused_before_the_depth_training(tmp_path: Path) -> None:
    """A 10-frame clip with its GPS log trained its depth network for the whole budget, then the export's scale fit
    said the GPS spans 0.4 m. The GPS alone tells that before the training: where no frame has a metric pose (or the
    pose network makes them), the conversion is refused then, naming a way that works (no --gps: unscaled depth);
    where the metric poses give the scale, a short track is no reason to refuse (the fit only checks it)."""
    from pose2rgbd.convert.stages.scale import TooLittleGpsMotion, check_gps_windows
    from pose2rgbd.convert.stages.work import Product
    from pose2rgbd.convert.video_depth import _check_gps_scale_before_training
    from pose2rgbd.methods.selfsup_depth.metric import POSENET, SFM, MetricPoses

    short, long = _flight(100, speed=0.15), _flight(1200)  # 1.5 m of GPS track; 960 m
    stamps = (np.arange(1200) * 1e8).astype(np.int64)
    with pytest.raises(TooLittleGpsMotion, match=r"only 0 window\(s\)"):
        check_gps_windows(short[:, :3, 3], stamps[:100])
    check_gps_windows(long[:, :3, 3], stamps)  # as many windows as fit_scale finds there
    assert fit_scale(long[:, :3, 3], stamps, relative_from_absolute(long)).n_windows >= 3
    cam = PinholeCamera.from_fov(16, 12, 60.0)
    path = tmp_path / "frames"
    with DatasetWriter(path, Manifest("short", cam, datum=Datum(44.0, 26.0, 80.0), depth_kind="none")) as w:
        for k, T in enumerate(short):
            w.add_frame(int(stamps[k]), T, np.zeros((12, 16, 3), np.uint8))
    frames = Product(path, {})
    with pytest.raises(SyncError, match="refused before the depth training; record a longer path, or leave out --gps"):
        _check_gps_scale_before_training(frames, None, None, own_gps=False)
    with pytest.raises(SyncError, match="this GoPro clip carries its own GPS, read where --gps is left out"):
        _check_gps_scale_before_training(frames, None, None, own_gps=True)
    none_metric = MetricPoses(np.full((100, 4, 4), np.nan), np.full(100, POSENET))
    metric_path = none_metric.save(tmp_path / "none.npz")
    with pytest.raises(SyncError, match="structure from motion gave no frame a metric pose"):
        _check_gps_scale_before_training(frames, Product(metric_path, {}), None, own_gps=False)
    label = np.full(100, POSENET)
    label[:50] = SFM  # half the frames with a metric pose: the scale comes from them
    some = MetricPoses(short.copy(), label).save(tmp_path / "some.npz")
    _check_gps_scale_before_training(frames, Product(some, {}), None, own_gps=False)


def test_gps_pair_distances_average_the_noise() -> None:
    T = _flight(600)
    rng = np.random.default_rng(1)
    p = T[:, :3, 3] + 1.5 * rng.standard_normal((600, 3))
    stamps = (np.arange(600) * 1e8).astype(np.int64)
    pairs = np.stack([np.arange(100, 500), np.arange(101, 501)], 1)
    true = np.linalg.norm(T[pairs[:, 1], :3, 3] - T[pairs[:, 0], :3, 3], axis=1)
    d = gps_pair_distances(p, stamps, pairs, 2.0)
    assert np.median(np.abs(d / true - 1)) < 0.1
    naive = np.linalg.norm(p[pairs[:, 1]] - p[pairs[:, 0]], axis=1)
    assert np.median(np.abs(naive / true - 1)) > 0.5  # single fixes are useless at this baseline


# -- pose composition ----------------------------------------------------------------------------------------


def test_composition_of_relative_poses_matches_ground_truth() -> None:
    T = _flight(300)
    T_rel = relative_from_absolute(T)
    back = compose_poses(T_rel, T[0])
    assert np.allclose(back, T, atol=1e-8)
    rot, tdir = relative_pose_errors(T_rel, T_rel)
    assert rot.max() < 1e-5 and np.nanmax(tdir) < 1e-3
    # an unscaled, rotated copy aligns back exactly under Sim(3); noise on the relative poses shows as drift
    rmse, rel = ate_sim3(compose_poses(T_rel)[:, :3, 3] * 0.1, T[:, :3, 3])  # key frame at the origin, 1/10 scale
    assert rmse < 1e-6 and rel < 1e-8
    noisy = T_rel.copy()
    noisy[:, :3, 3] += 0.05 * np.random.default_rng(0).standard_normal((len(noisy), 3))
    rmse2, rel2 = ate_sim3(compose_poses(noisy)[:, :3, 3], T[:, :3, 3])
    assert rmse2 > 0.1 and rel2 > 1e-4


# -- the recipe through the generic trainer, the export, bad input ---------------------------------------------


def _write_dataset(path: Path, n: int, *, move: bool = True, cam: PinholeCamera | None = None) -> Path:
    cam = cam or PinholeCamera.from_fov(64, 64, 60.0)
    datum = Datum(44.43, 26.10, 80.0)
    man = Manifest(name="plane", camera=cam, depth_kind="none", datum=datum,
                   sources=[{"id": 0, "kind": "video", "name": "plane"}])  # fmt: skip
    with DatasetWriter(path, man) as w:
        for k in range(n):
            m = float(move)
            T = down_pose(0.4 * k * m, 0.1 * k * m, 12.0, (0.02 * np.sin(k) * m, 0.0, 0.01 * k * m))
            rgb, _ = render_plane(T, cam)
            lat, lon, alt = datum.from_enu(T[:3, 3][None])
            w.add_frame(int(1e9 + k * 1e8), T, (rgb * 255).astype(np.uint8),
                        latlonalt=(float(lat[0]), float(lon[0]), float(alt[0])))  # fmt: skip
    return path


def _tc(**kw: object):
    from pose2rgbd.training.config import TrainConfig

    base = dict(epochs=1, max_steps=2, batch_size=2, lr=1e-4, progress=False, tensorboard=False, val_every=1)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_smoke_train_through_the_generic_trainer_and_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The essential pose source through the library API, unscaled export."""
    import logging

    from pose2rgbd.convert.stages.depth_export import export_depth
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.training.train import train

    ds_path = _write_dataset(tmp_path / "ds", 12)
    mc = get_family("selfsup-depth").make_config("tiny", pose_source="essential")
    with caplog.at_level(logging.INFO, logger="pose2rgbd.methods.selfsup_depth.recipe"):
        res = train("selfsup-depth", ds_path, tmp_path / "run", mc, _tc())
    # the split's frames that are no triplet's centre (the source's first and last) are said to be neighbours only
    said = [
        r.getMessage() for r in caplog.records if "the centre of a (previous, target, next) triplet" in r.getMessage()
    ]
    assert len(said) == 1 and "serve only as a triplet's neighbours" in said[0], caplog.text
    assert res.steps == 2 and res.last.is_file()
    assert np.isfinite(res.final_val["val/photometric"])
    # the report of the conversion the frames came from (as `convert video` leaves it in its work folder): the
    # recording's figures and entries come along; an earlier depth's figures and numbers do not
    earlier = ds_path / "report"
    earlier.mkdir()
    (earlier / "sync.png").write_bytes(b"sync figure")
    (earlier / "samples.png").write_bytes(b"an earlier depth's samples")
    recording = {
        "time_offset": {"offset_s": 0.25, "source": "estimated"},
        "frames": {"total": 14, "kept": 12, "dropped": {"no_fix": 2}, "written": 12},
        "fixes": {"total": 30, "kept": 29},
        "assumptions": ["the camera looks forward"],
    }
    (earlier / "summary.json").write_text(json.dumps({**recording, "depth_at_points": {"median_relative": 0.5},
                                                      "scale": {"0": {"scale": 2.0}}, "depth": None}))  # fmt: skip
    out = export_depth(ds_path, res.last, tmp_path / "out", gps="off", progress=False)
    ds = Dataset(out.path)
    assert ds.manifest.depth_kind == "unscaled" and ds.manifest.extra["depth"]["scaled_from"] == "none"
    d = ds.read_depth(3)
    assert d.shape == (64, 64) and d.dtype == np.float32 and np.all(np.isfinite(d)) and d.min() > 0
    rep = out.path / "report"
    assert (rep / "samples.png").is_file() and (rep / "trajectory.png").is_file()
    assert (rep / "sync.png").read_bytes() == b"sync figure"
    assert (rep / "samples.png").read_bytes() != b"an earlier depth's samples"
    summary = json.loads((rep / "summary.json").read_text())
    assert {k: summary[k] for k in recording} == recording
    assert "depth_at_points" not in summary and summary["scale"] == {} and "depth_spread" in summary  # unscaled
    assert "depth" not in summary  # the frames' conversion had none: not what this dataset has
    assert sorted(p.name for p in earlier.iterdir()) == ["samples.png", "summary.json", "sync.png"]  # left as it was


def test_cli_depth_train_and_export_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pose2rgbd depth train` (pose network, velocity loss) and `depth export --gps on`: metric depth, the scale
    and its uncertainty in the manifest, depth = scale * unscaled depth."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.convert.stages.depth_export import export_depth

    ds_path = _write_dataset(tmp_path / "ds", 12)
    run = tmp_path / "run"
    rc = main(["depth", "train", "--dataset", str(ds_path), "--out", str(run), "--width", "64", "--height", "64",
               "--set", "model.channels=[8,16,24,32,48]", "--set", "model.pose_channels=[8,16,32,32]",
               "--velocity-weight", "1", "--set", "train.max_steps=2", "--batch-size", "2", "--no-progress",
               "--set", "train.tensorboard=false", "--set", "train.epochs=1"])  # fmt: skip
    assert rc == 0 and (run / "last.pt").is_file()
    met = tmp_path / "met"
    rc = main(["depth", "export", "--dataset", str(ds_path), "--checkpoint", str(run / "last.pt"), "--out", str(met),
               "--gps", "on", "--min-baseline", "0.8", "--set", "scale.min_windows=2", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert "metric depth" in capsys.readouterr().out
    mds = Dataset(met)
    assert mds.manifest.depth_kind == "metric"
    info = mds.manifest.extra["depth"]
    s = info["scale"]["0"]["scale"]
    assert info["scaled_from"] == "gps" and s > 0 and info["scale"]["0"]["sigma"] >= 0
    assert (met / "report" / "scale.png").is_file() and (met / "report" / "summary.json").is_file()
    un = export_depth(ds_path, run / "last.pt", tmp_path / "un", gps="off", progress=False)
    assert np.allclose(mds.read_depth(3), Dataset(un.path).read_depth(3) * s, rtol=1e-4)
    # a model that learnt metres per unit (trained against metric poses) keeps its scale where the track is too
    # short for the GPS fit at the default 20 m baseline: the fit only checks it (an export again of a short clip)
    from pose2rgbd.models import load_checkpoint, save_checkpoint

    ck = load_checkpoint(run / "last.pt")
    ck.model.metres_per_unit.fill_(0.5)
    save_checkpoint(tmp_path / "unit.pt", ck.model, dataset_fingerprint=ck.dataset_fingerprint, camera=ck.camera,
                    depth_kind=ck.depth_kind, train_config=ck.train_config, step=ck.step)  # fmt: skip
    unit = export_depth(ds_path, tmp_path / "unit.pt", tmp_path / "unit-out", gps="on", progress=False)
    assert unit.fits == {} and unit.depth_kind == "metric"
    assert "GPS window check of the metric scale skipped" in Dataset(unit.path).manifest.extra["depth"][
        "scale_unchecked"]["0"]  # fmt: skip
    assert np.allclose(Dataset(unit.path).read_depth(3), Dataset(un.path).read_depth(3) * 0.5, rtol=1e-4)


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.training.train import train

    fam = get_family("selfsup-depth")
    mc = fam.make_config("tiny")
    few = _write_dataset(tmp_path / "few", 2)
    with pytest.raises(ConfigError, match="sequences"):
        train("selfsup-depth", few, tmp_path / "r1", mc, _tc())
    static = _write_dataset(tmp_path / "static", 8, move=False)
    with pytest.raises(DatasetError, match="static"):
        train("selfsup-depth", static, tmp_path / "r2", mc, _tc())
    from pose2rgbd.dataset.sequences import load_sequence_frames

    with pytest.raises(DatasetError, match=r"focal|3 or more frames"):
        load_sequence_frames(Dataset(few), 64, 64)
    with pytest.raises(ConfigError, match="multiples of 32"):
        fam.make_config(width=100)


def test_pose_graph_with_skip_edges_reduces_the_drift_of_composition() -> None:
    from scipy.spatial.transform import Rotation

    from pose2rgbd.methods.selfsup_depth.trajectory import pose_graph

    T = _flight(60, speed=8.0)
    rng = np.random.default_rng(3)

    def noisy(M: np.ndarray) -> np.ndarray:
        N = M.copy()
        N[:3, :3] = Rotation.from_rotvec(0.004 * rng.standard_normal(3)).as_matrix() @ M[:3, :3]
        N[:3, 3] += 0.03 * rng.standard_normal(3)
        return N

    edges, meas = [], []
    for s in (1, 2, 4, 8):
        for i in range(0, len(T) - s):
            edges.append((i, i + s))
            meas.append(noisy(np.linalg.inv(T[i + s]) @ T[i]))
    chain = [m for (i, j), m in zip(edges, meas) if j == i + 1]
    composed = compose_poses(np.stack(chain), T[0])
    refined = pose_graph(composed, edges, np.stack(meas))
    ate_c, _ = ate_sim3(composed[:, :3, 3], T[:, :3, 3])
    ate_r, _ = ate_sim3(refined[:, :3, 3], T[:, :3, 3])
    assert np.allclose(refined[0], T[0])
    assert ate_r < 0.9 * ate_c, (ate_r, ate_c)


@pytest.mark.slow
def test_cli_video_only_path_gives_unscaled_depth_and_pseudo_absolute_poses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`convert video V --depth selfsup` without --gps: unscaled depth, poses from the video (pose graph); no
    training budget is refused, a step budget alone (`--depth-minutes 0 --depth-steps 3`) trains that many steps."""
    import cv2

    from pose2rgbd.cli.main import main

    cam = PinholeCamera.from_fov(64, 64, 60.0)
    video = tmp_path / "flight.mp4"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 64))
    for k in range(10):
        rgb, _ = render_plane(down_pose(0.4 * k, 0.1 * k, 12.0, (0.0, 0.0, 0.01 * k)), cam)
        wr.write(np.ascontiguousarray((rgb * 255).astype(np.uint8)[..., ::-1]))
    wr.release()
    out = tmp_path / "out"
    assert main(["convert", "video", str(video), "--out", str(out), "--no-progress"]) != 0  # needs --gps
    # the default back end, COLMAP, finds too little texture here: a clear error, the trained model kept
    rc = main(["convert", "video", str(video), "--out", str(out), "--depth", "selfsup", "--depth-minutes", "0.01",
               "--no-progress", "--hfov", "60"])  # fmt: skip
    assert rc != 0 and not out.exists()
    err = capsys.readouterr().err
    assert "COLMAP registered" in err and "kept in" in err and "--trajectory-backend compose" in err, err
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".out.selfsup-work")]
    assert len(kept) == 1 and (kept[0] / "run" / "last.pt").is_file()
    import shutil

    shutil.rmtree(kept[0])
    # no budget at all: refused before any work, naming both flags
    rc = main(["convert", "video", str(video), "--out", str(out), "--depth", "selfsup", "--depth-minutes", "0",
               "--no-progress", "--hfov", "60", "--trajectory-backend", "pose-graph"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and "--depth-minutes" in err and "--depth-steps" in err, err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    # a negative stride: refused before any work
    rc = main(["convert", "video", str(video), "--out", str(out), "--depth", "selfsup", "--depth-steps", "3",
               "--depth-stride", "-1", "--no-progress", "--hfov", "60"])  # fmt: skip
    assert rc != 0 and "--depth-stride -1" in capsys.readouterr().err and not out.exists()
    # a step budget alone (no time limit): the network trained exactly that many steps; and the stride given
    rc = main(["convert", "video", str(video), "--out", str(out), "--depth", "selfsup", "--depth-minutes", "0",
               "--depth-steps", "3", "--depth-stride", "2", "--no-progress", "--hfov", "60", "--trajectory-backend",
               "pose-graph"])  # fmt: skip
    assert rc == 0
    from pose2rgbd.convert.stages.depth_export import KEPT_NETWORK
    from pose2rgbd.models import load_checkpoint

    network = load_checkpoint(out / KEPT_NETWORK)
    assert network.step == 3 and network.train_config["max_steps"] == 3, (network.step, network.train_config)
    assert network.model_config.stride == 2
    ds = Dataset(out)
    assert ds.manifest.depth_kind == "unscaled" and ds.manifest.extra["poses"]["kind"] == "pseudo-absolute"
    assert len(ds) == 10 and np.allclose(ds.frames.T_world_cam[0], np.eye(4), atol=1e-9)
    assert not np.allclose(ds.frames.T_world_cam[-1], np.eye(4))  # the poses come from the network, not placeholders
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # the work folder is gone


# -- the COLMAP video-only back end -------------------------------------------------------------------------------

_TEX = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (600, 600, 3)).astype(np.uint8), (0, 0), 1.5)


def render_textured(T_world_cam: np.ndarray, cam: PinholeCamera, tex: np.ndarray = _TEX) -> np.ndarray:
    """RGB uint8 of the plane z = 0 with a random blob texture (10 px per metre, mirrored past its edge): SIFT
    finds features on it, unlike on the smooth :func:`texture`."""
    rays = cam.rays()
    d = rays @ T_world_cam[:3, :3].T
    o = T_world_cam[:3, 3]
    p = o + (-o[2] / d[..., 2])[..., None] * d
    u = ((p[..., 0] + 30.0) * 10.0).astype(np.float32)
    v = ((p[..., 1] + 30.0) * 10.0).astype(np.float32)
    return cv2.remap(tex, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _sfm_flight(n: int) -> np.ndarray:
    tilt = [(0.05 * np.sin(0.3 * k), 0.04 * np.cos(0.2 * k), 0.01 * k) for k in range(n)]
    return np.stack([down_pose(0.5 * k, 0.15 * k + 0.02 * k * k, 12.0 + 0.1 * k, tilt[k]) for k in range(n)])


def test_colmap_backend_registers_frames_and_beats_the_drifting_composition(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COLMAP on every 2nd of 24 frames (intrinsics fixed): most register; merged with a noisy, unscaled composed
    chain (which fills the other frames) the trajectory is much closer to the truth than the chain alone. Its
    steps are logged as they start, and the mapping counts the frames it registers."""
    from pose2rgbd.methods.selfsup_depth.sfm import colmap_poses
    from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig, fill_unregistered

    cam = PinholeCamera.from_fov(160, 120, 60.0)
    T = _sfm_flight(24)
    imgs = [render_textured(t, cam) for t in T]
    from pose2rgbd import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a line at every registration but the last
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # COLMAP keeps to it (colmap_threads)
    with caplog.at_level(logging.INFO, logger="pose2rgbd.geometry.colmap_sfm"):
        res = colmap_poses(lambda i: imgs[i], np.arange(24), cam.K, TrajectoryConfig(colmap_every=2, colmap_overlap=5))
    assert res.tried == 13 and res.n_registered >= 10, res.n_registered
    said = [r.getMessage() for r in caplog.records if r.name == "pose2rgbd.geometry.colmap_sfm"]
    assert said[0] == "COLMAP: features of 13 frames (threads: 1)"  # OMP_NUM_THREADS=1, set above
    assert said[1].startswith("COLMAP: matching each frame with the 5")
    assert said[2].startswith("COLMAP: mapping 13 frames")
    counts = [int(m.split()[3]) for m in said if m.startswith("COLMAP: frames registered: ") and "of 13 frames" in m]
    assert counts and counts == sorted(counts) and counts[-1] >= res.n_registered - 1, said
    assert not res.registered[1:23:2].any()  # only every 2nd frame (and the last) was given
    reg = res.registered
    _, rel_sfm = ate_sim3(res.T_world_cam[reg, :3, 3], T[reg, :3, 3])
    assert rel_sfm < 0.005, rel_sfm
    # the triangulated points each frame sees, in its camera frame: on the plane, at the SfM's scale
    from pose2rgbd.geometry.similarity import umeyama

    s_sfm = umeyama(T[reg, :3, 3], res.T_world_cam[reg, :3, 3])[0]
    k = int(np.flatnonzero(reg)[3])
    pts = res.points[k]
    assert len(pts) > 30 and np.all(pts[:, 3] >= 2) and np.all(pts[:, 4] >= 0)
    uv = pts[:, :3] @ cam.K.T
    uv = uv[:, :2] / uv[:, 2:]
    z_true = render_plane(T[k], cam)[1][np.clip(uv[:, 1].round().astype(int), 0, 119),
                                         np.clip(uv[:, 0].round().astype(int), 0, 159)]  # fmt: skip
    np.testing.assert_allclose(np.median(pts[:, 2] / (s_sfm * z_true)), 1.0, rtol=0.02)
    rng = np.random.default_rng(1)
    rel = relative_from_absolute(T)
    rel[:, :3, 3] = 0.3 * rel[:, :3, 3] + 0.02 * rng.standard_normal((len(rel), 3))  # unscaled, noisy
    composed = compose_poses(rel)
    merged = fill_unregistered(res.T_world_cam, res.registered, composed, model=res.model)
    assert np.allclose(merged[0], np.eye(4), atol=1e-9)
    _, rel_c = ate_sim3(composed[:, :3, 3], T[:, :3, 3])
    _, rel_m = ate_sim3(merged[:, :3, 3], T[:, :3, 3])
    assert rel_m < 0.6 * rel_c and rel_m < 0.01, (rel_m, rel_c)
    rot, _ = relative_pose_errors(relative_from_absolute(merged), relative_from_absolute(T))
    assert np.median(rot) < 0.5, np.median(rot)


def test_colmap_backend_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pose2rgbd.methods.selfsup_depth.sfm import colmap_poses
    from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig, fill_unregistered

    cam = PinholeCamera.from_fov(96, 72, 60.0)
    flat = np.full((72, 96, 3), 128, np.uint8)  # no texture: nothing to register
    with pytest.raises(ConfigError, match=r"registered 0 of 6 frames.*every n-th|registered 0 of 6 frames.*overlap"):
        colmap_poses(lambda i: flat, np.arange(6), cam.K, TrajectoryConfig(colmap_every=1))
    with pytest.raises(ConfigError, match="backend"):
        TrajectoryConfig(backend="slam")
    T = _flight(10)
    with pytest.raises(ConfigError, match="registered 2 frame"):
        fill_unregistered(T, np.arange(10) < 2, T)
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import fails
    with pytest.raises(ConfigError, match="needs pycolmap"):
        colmap_poses(lambda i: flat, np.arange(6), cam.K)


@pytest.mark.slow
def test_export_video_poses_with_the_colmap_backend(tmp_path: Path) -> None:
    """`depth export --poses video --trajectory-backend colmap`: the manifest says pseudo-absolute, from COLMAP,
    how many frames registered; the poses follow the true trajectory (Sim(3)) better than a bound that fails."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.training.train import train

    cam = PinholeCamera.from_fov(128, 96, 60.0)
    T = _sfm_flight(16)
    man = Manifest(name="tex", camera=cam, depth_kind="none", sources=[{"id": 0, "kind": "video", "name": "t"}])
    with DatasetWriter(tmp_path / "ds", man) as w:
        for k, t in enumerate(T):
            w.add_frame(int(1e9 + k * 1e8), np.eye(4), render_textured(t, cam))  # placeholder poses
    mc = get_family("selfsup-depth").make_config("tiny")
    res = train("selfsup-depth", tmp_path / "ds", tmp_path / "run", mc, _tc(val_every=0))
    out = tmp_path / "out"
    rc = main(["depth", "export", "--dataset", str(tmp_path / "ds"), "--checkpoint", str(res.last), "--out", str(out),
               "--gps", "off", "--poses", "video", "--trajectory-backend", "colmap",
               "--set", "trajectory.colmap_every=1", "--set", "trajectory.colmap_overlap=5",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    ds = Dataset(out)
    poses = ds.manifest.extra["poses"]
    assert poses["kind"] == "pseudo-absolute" and poses["backend"] == "colmap"
    assert poses["per_source"]["0"]["registered"] >= 12 and poses["per_source"]["0"]["tried"] == 16
    _, rel = ate_sim3(ds.frames.translation, T[:, :3, 3])
    assert rel < 0.01, rel
    assert np.allclose(ds.frames.T_world_cam[0], np.eye(4), atol=1e-6)
    summary = __import__("json").loads((out / "report" / "summary.json").read_text())
    assert summary["poses"]["per_source"]["0"]["registered"] == poses["per_source"]["0"]["registered"]


# -- the far-plane collapse and the automatic stride ------------------------------------------------------------


def _collapse_weights(path: Path) -> None:
    """Make the depth heads of a checkpoint output disparity ~0 everywhere: depth = max_depth (the far plane)."""
    data = torch.load(path, weights_only=True)
    for k, v in data["state_dict"].items():
        if k.startswith("depth_net.heads."):
            data["state_dict"][k] = torch.full_like(v, -30.0) if k.endswith("bias") else torch.zeros_like(v)
    data.pop("content_sha256")  # rewritten by hand: no digest (the one of what was saved would refuse the load)
    torch.save(data, path)


def test_depth_spread_tells_a_collapsed_depth_from_one_with_structure() -> None:
    from pose2rgbd.methods.selfsup_depth.net import depth_spread, is_collapsed

    _, d = render_plane(down_pose(0.0, 0.0, 10.0, (0.5, 0.0, 0.0)), CAM)  # a tilted view of a plane: depth varies
    real = depth_spread(_t(d)[None, None], 0.1, 100.0)
    assert real["log_std"] > 0.05 and real["at_max"] == 0.0 and not is_collapsed(real)
    far = depth_spread(torch.full((2, 1, 8, 8), 100.0), 0.1, 100.0)
    assert far["at_max"] == 1.0 and far["log_std"] < 1e-6 and is_collapsed(far)
    flat = depth_spread(torch.full((2, 1, 8, 8), 3.0) + 1e-3 * torch.rand(2, 1, 8, 8), 0.1, 100.0)
    assert flat["at_max"] == 0.0 and is_collapsed(flat)  # constant but not at a plane: no structure either


def test_a_collapsed_model_is_reported_by_export_and_depth_train_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.cli.depth import print_export
    from pose2rgbd.convert.stages.depth_export import export_depth
    from pose2rgbd.convert.stages.depth_predict import check_trained_depth
    from pose2rgbd.models.registry import get_family
    from pose2rgbd.training.train import train

    ds_path = _write_dataset(tmp_path / "ds", 10)
    res = train("selfsup-depth", ds_path, tmp_path / "run", get_family("selfsup-depth").make_config("tiny"), _tc())
    from pose2rgbd.models import load_checkpoint

    assert load_checkpoint(res.last).model.used_stride == 2  # stride 0: ~1.85 px per frame -> 2 (recorded)
    _collapse_weights(res.last)
    spread, collapsed = check_trained_depth(ds_path, res.last, frames=4)
    assert collapsed and spread["at_max"] > 0.99
    out = export_depth(ds_path, res.last, tmp_path / "out", gps="off", progress=False)
    assert out.collapsed and "collapsed" in out.warning
    assert Dataset(out.path).manifest.extra["depth"]["spread"]["collapsed"] is True
    print_export(out)
    assert "WARNING" in capsys.readouterr().err


def test_automatic_stride_is_larger_for_a_slow_far_flight_than_a_fast_near_one() -> None:
    from pose2rgbd.dataset.sequences import expected_motion_px, stride_for_motion

    f = 83.4  # 128 px wide, 75 deg horizontal field of view
    slow_far = stride_for_motion(expected_motion_px(4.8, 10.0, 68.0, f))  # ~0.6 px per frame
    fast_near = stride_for_motion(expected_motion_px(15.0, 10.0, 20.0, f))  # ~6 px per frame
    assert fast_near == 1 and slow_far == 6
    assert stride_for_motion(0.0) == 10 and stride_for_motion(0.2, max_stride=4) == 4
    with pytest.raises(ValueError, match="must be > 0"):
        expected_motion_px(1.0, 10.0, 0.0, f)


def _plane_frames(step_m: float, n: int = 16):
    from pose2rgbd.dataset.sequences import SequenceFrames

    cam = PinholeCamera.from_fov(64, 48, 60.0)
    Ts = [down_pose(step_m * k, 0.0, 12.0) for k in range(n)]
    rgb = np.stack([(render_plane(T, cam)[0] * 255).astype(np.uint8) for T in Ts])
    return SequenceFrames(rgb, cam, np.arange(n, dtype=np.int64) * 100_000_000, np.zeros(n, np.int64), np.stack(Ts))


def test_automatic_stride_from_the_measured_image_motion() -> None:
    from pose2rgbd.dataset.sequences import auto_stride, expected_motion_px, median_image_motion

    cam = PinholeCamera.from_fov(64, 48, 60.0)
    for step in (0.06, 0.5):  # metres per frame at 12 m: ~0.28 and ~2.3 px per frame
        want = expected_motion_px(step * 10.0, 10.0, 12.0, cam.fx)
        got = median_image_motion(_plane_frames(step))
        assert abs(got - want) < 0.25 * want, (step, got, want)
    slow, _ = auto_stride(_plane_frames(0.06, 48))
    fast, _ = auto_stride(_plane_frames(0.5, 48))
    assert fast == 2 and slow == 10  # ceil(3 / 2.3) = 2; ceil(3 / 0.28) = 11, capped at max_stride 10
    short, _ = auto_stride(_plane_frames(0.06, 16))
    assert short == 3  # at most a quarter of the frames: (16 - 1) // 4


def test_pose_root_turns_a_stride_pose_into_a_per_frame_pose() -> None:
    from scipy.spatial.transform import Rotation

    from pose2rgbd.convert.stages.depth_predict import _root

    T1 = np.eye(4)
    T1[:3, :3] = Rotation.from_rotvec([0.0, 0.02, 0.01]).as_matrix()
    T1[:3, 3] = (0.3, -0.1, 1.0)
    T5 = np.linalg.matrix_power(T1, 5)
    got = _root(np.stack([T5, T1]), np.array([5.0, 1.0]))
    assert np.allclose(got[1], T1)
    assert np.allclose(got[0], T1, atol=1e-9)


def test_colmap_backend_leaves_a_source_too_short_for_structure_from_motion_to_the_composed_poses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dataset with the ``sequences`` capability may hold sources of 1-2 frames beside long ones; COLMAP can
    never register 3 frames of them, so they keep the composed poses instead of failing the whole export."""
    from pose2rgbd.convert.stages.depth_predict import Prediction, video_trajectory
    from pose2rgbd.dataset.sequences import SequenceFrames
    from pose2rgbd.methods.selfsup_depth import sfm
    from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
    from pose2rgbd.methods.selfsup_depth.net import build_model
    from pose2rgbd.methods.selfsup_depth.trajectory import TrajectoryConfig

    f = _plane_frames(0.5, 10)
    src = np.array([0] * 8 + [1] * 2, np.int64)
    frames = SequenceFrames(f.rgb, f.camera, f.stamp_ns, src, f.T_world_cam)
    same = src[1:] == src[:-1]
    T_rel = relative_from_absolute(f.T_world_cam)
    T_rel[~same] = np.eye(4)
    pred = Prediction(np.ones((10, 48, 64), np.float32), T_rel, same)

    def fake_colmap(read_rgb, indices, K, cfg=None, *, progress=False):  # the real one's contract, no COLMAP run
        if len(indices) < sfm.MIN_REGISTERED:
            raise ConfigError(f"COLMAP registered 0 of {len(indices)} frames (need {sfm.MIN_REGISTERED})")
        n = len(indices)
        return sfm.SfmResult(f.T_world_cam[indices], np.ones(n, bool), np.zeros(n, np.int64), n, 0.0)

    monkeypatch.setattr(sfm, "colmap_poses", fake_colmap)
    model = build_model(SelfSupDepthConfig(width=64, height=64))
    T, info = video_trajectory(model, frames, pred, TrajectoryConfig(backend="colmap"))
    short = np.flatnonzero(src == 1)
    np.testing.assert_allclose(T[short], compose_poses(T_rel[short[:-1]]), atol=1e-9)
    assert info["sources"]["0"]["registered"] == 8 and info["sources"]["1"]["registered"] == 0


def test_colmap_keeps_to_the_thread_limit_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """COLMAP's threads: a setting above 0 as given; automatic: OMP_NUM_THREADS where set (a shared machine's limit,
    which torch and numpy keep too), else every core."""
    from pose2rgbd.geometry.colmap_sfm import colmap_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert colmap_threads(-1) == 1 and colmap_threads(0) == 1 and colmap_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert colmap_threads(-1) == -1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert colmap_threads(-1) == -1 and colmap_threads(2) == 2
