"""Depth trained against fixed metric poses (pose_source metric): the photometric loss over known relative poses
(no pose-network gradient) and the sparse metric depth term from triangulated points."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.methods.selfsup_depth.config import PRESETS, SelfSupDepthConfig
from pose2rgbd.methods.selfsup_depth.net import build_model, disp_to_depth, sparse_depth_loss

CAM = PinholeCamera.from_fov(64, 64, 60.0)


def _down(x: float, y: float, h: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    T[:3, 3] = (x, y, h)
    return T


def _render(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB (H, W, 3) in [0, 1] and z-depth of a textured ground plane z = 0."""
    d = CAM.rays() @ T[:3, :3].T
    o = T[:3, 3]
    z = -o[2] / d[..., 2]
    p = o + z[..., None] * d
    x, y = p[..., 0], p[..., 1]
    rgb = np.stack([0.5 + 0.25 * np.sin(1.7 * x + 0.3 * y) + 0.15 * np.cos(3.1 * y),
                    0.5 + 0.25 * np.cos(1.3 * y - 0.6 * x) + 0.1 * np.sin(4.3 * x),
                    0.5 + 0.2 * np.sin(2.3 * x * y / 10 + y)], -1)  # fmt: skip
    return np.clip(rgb, 0, 1), z.astype(np.float32)


def _batch(with_points: bool = False) -> dict[str, torch.Tensor]:
    Ts = [_down(-1.0, 0.0, 8.0), _down(0.0, 0.0, 8.0), _down(1.0, 0.2, 8.0)]
    imgs = [torch.as_tensor(_render(T)[0], dtype=torch.float32).permute(2, 0, 1) for T in Ts]
    fix = torch.stack([torch.as_tensor(np.linalg.inv(Ts[j]) @ Ts[1], dtype=torch.float32) for j in (0, 2)])
    K = torch.as_tensor(CAM.K, dtype=torch.float32)[None]
    b = {"target": imgs[1][None], "sources": torch.stack([imgs[0], imgs[2]])[None], "K": K, "fix_T": fix[None],
         "fix_ok": torch.ones(1, 2, dtype=torch.bool)}  # fmt: skip
    z = _render(Ts[1])[1]
    pts = np.zeros((32, 4), np.float32)
    if with_points:
        rng = np.random.default_rng(0)
        u, v = rng.integers(2, 62, 32), rng.integers(2, 62, 32)
        pts[:] = np.stack([u, v, z[v, u], np.full(32, 0.8)], 1)
    b["sparse"] = torch.as_tensor(pts)[None]
    return b


def _model(**kw: object):
    torch.manual_seed(0)
    cfg = {**PRESETS["tiny"], "width": 64, "height": 64, "pose_source": "metric", "smoothness_weight": 1e-3, **kw}
    model = build_model(SelfSupDepthConfig(**cfg))  # type: ignore[arg-type]
    model.init_depth(5.0)  # the recipe starts near the scene's scale; here 5 m against the true 8 m
    return model


def _total(model, batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return sum(model.get_loss_dict(model.get_outputs(batch), batch).values())  # type: ignore[return-value]


def test_training_with_fixed_poses_decreases_the_loss_without_the_pose_network() -> None:
    model = _model(sparse_weight=0.0)
    batch = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = float(_total(model, batch).detach())
    for _ in range(40):
        opt.zero_grad()
        loss = _total(model, batch)
        loss.backward()
        opt.step()
        # the known poses are used: the pose network gets no gradient (nor is it run)
        assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.pose_net.parameters())
    last = float(_total(model, batch).detach())
    assert last < 0.8 * first, (first, last)
    out = model.get_outputs(batch)
    assert torch.equal(out["T"], batch["fix_T"])


def test_pose_network_is_used_where_no_fixed_pose_is_known() -> None:
    model = _model(sparse_weight=0.0)
    batch = _batch()
    batch["fix_ok"][0, 1] = False
    out = model.get_outputs(batch)
    assert torch.equal(out["T"][0, 0], batch["fix_T"][0, 0])
    assert torch.allclose(out["T"][0, 1], out["T_net"][0, 1]) and not torch.allclose(
        out["T"][0, 1], batch["fix_T"][0, 1]
    )
    _total(model, batch).backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.pose_net.parameters())


def test_sparse_term_pulls_a_wrongly_scaled_depth_to_the_points_scale() -> None:
    # the loss alone: a depth map twice too far is pulled to the points' depth, robustly (a wrong point barely
    # matters)
    _, z = _render(_down(0.0, 0.0, 8.0))
    rng = np.random.default_rng(1)
    u, v = rng.integers(0, 64, 50), rng.integers(0, 64, 50)
    pts = np.stack([u, v, z[v, u], np.ones(50)], 1).astype(np.float32)
    pts[0, 2] *= 20.0  # one bad triangulation
    log_s = torch.tensor(np.log(2.0), requires_grad=True)
    opt = torch.optim.Adam([log_s], lr=0.05)
    zt = torch.as_tensor(z)[None, None]
    for _ in range(150):
        opt.zero_grad()
        sparse_depth_loss(zt * log_s.exp(), torch.as_tensor(pts)[None]).backward()
        opt.step()
    assert float(log_s.detach().exp()) == pytest.approx(1.0, abs=0.03)
    assert float(sparse_depth_loss(zt, torch.zeros(1, 5, 4))) == 0.0  # no points (padding only)
    # through the network: the depth's scale moves toward the points' scale (the photometric loss alone, with the
    # metric fixed poses, is ambiguous only far from the truth; here the sparse term dominates)
    model = _model(sparse_weight=1.0)
    batch = _batch(with_points=True)
    p = batch["sparse"][0]

    @torch.no_grad()
    def ratio() -> float:
        d = disp_to_depth(model.depth_net(batch["target"])[0], 0.1, 100.0)[0, 0]
        pred = d[p[:, 1].long(), p[:, 0].long()]
        return float(torch.median(pred / p[:, 2]))

    r0 = ratio()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(40):
        opt.zero_grad()
        model.get_loss_dict(model.get_outputs(batch), batch)["sparse"].backward()
        opt.step()
    r1 = ratio()
    assert abs(np.log(r1)) < 0.5 * abs(np.log(r0)), (r0, r1)


def _metric_dataset(tmp_path, n: int = 16, n_metric: int = 10):  # type: ignore[no-untyped-def]
    """A dataset of a plane flown over with GPS poses, and metric poses for its first ``n_metric`` frames (the
    truth, with triangulated points on the plane), the rest left to the pose network."""
    from pose2rgbd.convert.stages.orientation import course_orientation
    from pose2rgbd.dataset import DatasetWriter, Manifest
    from pose2rgbd.geometry.geodesy import Datum
    from pose2rgbd.methods.selfsup_depth.metric import POSENET, SFM, MetricPoses

    datum = Datum(44.43, 26.10, 80.0)
    # the assumptions a conversion writes: the GPS poses' orientation from the GPS course
    course = course_orientation(np.arange(3.0), np.zeros((3, 3)), 1.0, 1.0).assumption
    said = [course, "GPS antenna position = camera position"]
    man = Manifest(name="plane", camera=CAM, depth_kind="none", datum=datum,
                   sources=[{"id": 0, "kind": "video", "name": "plane"}],
                   extra={"conversion": {"assumptions": said}})  # fmt: skip
    Ts = np.stack([_down(0.5 * k, 0.1 * k, 8.0) for k in range(n)])
    with DatasetWriter(tmp_path / "ds", man) as w:
        for k, T in enumerate(Ts):
            lat, lon, alt = datum.from_enu(T[:3, 3][None])
            w.add_frame(int(1e9 + k * 1e8), T, (_render(T)[0] * 255).astype(np.uint8),
                        latlonalt=(float(lat[0]), float(lon[0]), float(alt[0])))  # fmt: skip
    label = np.full(n, POSENET)
    label[:n_metric] = SFM
    T_m = np.full((n, 4, 4), np.nan)
    T_m[:n_metric] = Ts[:n_metric]
    rng = np.random.default_rng(0)
    pts = {}
    for k in range(n_metric):
        u, v = rng.integers(0, 64, 40), rng.integers(0, 64, 40)
        z = _render(Ts[k])[1][v, u]
        x_cam = np.linalg.inv(CAM.K) @ np.stack([u, v, np.ones(40)]) * z
        pts[k] = np.concatenate([x_cam.T, np.full((40, 1), 0.7)], 1)
    info = {"sources": {"0": {"frames": n, "registered": n_metric, "tried": n, "models": [], "metric_frames":
                              n_metric}},
            "segments": [{"source": 0, "start": 0, "end": n_metric - 1, "frames": n_metric, "pose_source": "sfm"},
                         {"source": 0, "start": n_metric, "end": n - 1, "frames": n - n_metric,
                          "pose_source": "posenet"}]}  # fmt: skip
    mp = MetricPoses(T_m, label, pts, info)
    return tmp_path / "ds", mp.save(tmp_path / "metric_poses.npz"), mp


def test_depth_train_and_export_with_metric_poses(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pose2rgbd.cli.main import main
    from pose2rgbd.convert.stages.depth_export import export_depth
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.models import load_checkpoint

    ds_path, mp_path, mp = _metric_dataset(tmp_path)
    run = tmp_path / "run"
    rc = main(["depth", "train", "--dataset", str(ds_path), "--out", str(run), "--width", "64", "--height", "64",
               "--set", "model.channels=[8,16,24,32,48]", "--set", "model.pose_channels=[8,16,32,32]",
               "--pose-source", "metric", "--set", f"model.metric_poses={mp_path}", "--set", "model.stride=1",
               "--set", "train.max_steps=2", "--batch-size", "2", "--no-progress",
               "--set", "train.tensorboard=false", "--set", "train.epochs=1"])  # fmt: skip
    assert rc == 0
    model = load_checkpoint(run / "last.pt").model
    assert model.metric_unit == pytest.approx(8.0 / 10.0, rel=0.01)  # median point depth 8 m = 10 units
    out = tmp_path / "out"
    rc = main(["depth", "export", "--dataset", str(ds_path), "--checkpoint", str(run / "last.pt"), "--out", str(out),
               "--poses", "metric", "--min-baseline", "1.5", "--set", "scale.min_windows=2",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "metric poses: 10 of 16 frames" in text and "0-9 sfm, 10-15 posenet" in text and "scale check" in text
    assert "depth check: " in text  # the written depth at triangulated points, as `convert video` checks it
    # which scale is which: the GPS windows check the one the metric poses gave, which the depth is written at
    unit = Dataset(out).manifest.extra["depth"]["metres_per_unit"]
    assert "source 0: GPS window fit (checks the scale used, below)" in text
    assert f"depth written at {unit:.4g} m per network unit" in text
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["depth_at_points"]["runs"] == 1
    rc = main(["depth", "export", "--dataset", str(ds_path), "--checkpoint", str(run / "last.pt"), "--out",
               str(tmp_path / "unchecked"), "--poses", "metric", "--min-baseline", "1.5", "--set",
               "scale.min_windows=2", "--no-progress", "--no-depth-check"])  # fmt: skip
    assert rc == 0 and "depth check: " not in capsys.readouterr().out
    assert "depth_at_points" not in json.loads((tmp_path / "unchecked" / "report" / "summary.json").read_text())
    ds = Dataset(out)
    assert ds.manifest.depth_kind == "metric"
    poses = ds.manifest.extra["poses"]
    assert poses["kind"] == "metric" and poses["metric_frames"] == 10
    assert [s["pose_source"] for s in poses["segments"]] == ["sfm", "posenet"]
    # the poses written are structure from motion's: the assumptions no longer claim the GPS course's orientation
    # (roll = pitch = 0) for them, but say it was replaced; the others are kept as they were
    before = Dataset(ds_path).manifest.extra["conversion"]["assumptions"]
    said = ds.manifest.extra["conversion"]["assumptions"]
    assert before[0].startswith("orientation from the GPS course") and len(said) == len(before)
    assert not any(a.startswith("orientation from") for a in said), said
    assert said[0].startswith("orientation of the poses written: structure from motion (COLMAP) aligned to the GPS "
                              "positions by a Sim(3), its gaps filled from the pose network (extra.poses), on all 16 "
                              "frames; the orientation from the GPS course: yaw = direction of travel, roll = pitch = "
                              "0"), said[0]  # fmt: skip
    assert said[0].endswith("gave only the GPS poses the frames were first converted with, none of which is written")
    assert said[1:] == before[1:]
    dep = ds.manifest.extra["depth"]
    assert dep["metres_per_unit"] == pytest.approx(model.metric_unit)
    chk = dep["scale_check"]
    # the GPS window fit of the trajectory the depth was trained with agrees with the metric scale (exact poses)
    assert chk["gps_fit_source_0"]["rel_diff"] == pytest.approx(0.0, abs=0.02) and "depth_to_points" in chk
    # metric frames carry the metric poses; the others are filled from the pose network (finite, continuous)
    np.testing.assert_allclose(ds.frames.T_world_cam[:10], mp.T_world_cam[:10], atol=1e-5)
    assert np.all(np.isfinite(ds.frames.T_world_cam[10:]))
    # the depth is the network's times the metric unit, not a post-hoc fit
    un = export_depth(ds_path, run / "last.pt", tmp_path / "un", gps="off", progress=False)
    np.testing.assert_allclose(ds.read_depth(3), Dataset(un.path).read_depth(3) * model.metric_unit, rtol=1e-4)


def test_the_orientation_assumption_says_which_frames_keep_the_gps_orientation() -> None:
    from pose2rgbd.convert.stages.orientation import replaced_orientation

    att = "orientation from the attitude log (ned); camera mount as configured"
    given = ["pinhole camera", att, "GPS antenna position = camera position"]
    part = replaced_orientation(given, "structure from motion", 4, 10)
    assert part[1] == ("orientation of the poses written: structure from motion, on 6 of 10 frames; the other 4 keep "
                       "the GPS poses (their source has no such pose), whose orientation is from the attitude log "
                       "(ned); camera mount as configured")  # fmt: skip
    assert [part[0], part[2]] == [given[0], given[2]]  # the others as they were, in their place
    assert replaced_orientation(given, "structure from motion", 10, 10) == given  # all keep the GPS poses


def test_convert_video_falls_back_to_the_pose_network_when_sfm_registers_too_few(tmp_path, capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    """`convert video --depth selfsup` with GPS (the metric-pose default) on a video COLMAP cannot reconstruct (a
    smooth texture, 64x64): a warning names the reason, the dataset says so, the depth is scaled from GPS."""
    import logging

    import cv2

    from pose2rgbd.cli.depth import print_export
    from pose2rgbd.config import from_dict
    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.convert.stages.scale import ScaleConfig
    from pose2rgbd.convert.video_depth import convert_video_with_depth
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.geometry.geodesy import Datum
    from pose2rgbd.methods.selfsup_depth.config import SelfSupDepthConfig
    from pose2rgbd.training.config import TrainConfig

    n, rate = 20, 10.0
    video = tmp_path / "flight.mp4"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), rate, (64, 64))
    datum = Datum(44.43, 26.10, 80.0)
    rows = ["time_s,lat,lon,alt,speed_mps,fix"]
    for k in range(n):
        T = _down(0.4 * k, 0.1 * k, 12.0)
        wr.write(np.ascontiguousarray((_render(T)[0] * 255).astype(np.uint8)[..., ::-1]))
        lat, lon, alt = datum.from_enu(T[:3, 3][None])
        rows.append(f"{k / rate:.3f},{lat[0]:.9f},{lon[0]:.9f},{alt[0]:.3f},{0.41 * rate:.3f},1")
    wr.release()
    gps = tmp_path / "gps.csv"
    gps.write_text("\n".join(rows) + "\n")
    conv = from_dict(ConvertConfig, {"estimate_offset": False, "hfov_deg": 60.0, "datum": "44.43,26.10,80.0"})
    mc = SelfSupDepthConfig(**{**PRESETS["tiny"], "width": 64, "height": 64, "stride": 1})  # type: ignore[arg-type]
    tc = TrainConfig(epochs=1, max_steps=2, batch_size=2, val_every=0, progress=False, tensorboard=False)
    with caplog.at_level(logging.WARNING):
        res = convert_video_with_depth(video, gps, tmp_path / "out", conv, model_cfg=mc, train_cfg=tc,
                                       scale_cfg=ScaleConfig(min_baseline_m=1.0, min_windows=2),
                                       progress=False)  # fmt: skip
    assert "pose network makes its poses" in caplog.text and "registered" in caplog.text
    print_export(res)
    text = capsys.readouterr().out
    assert "metric poses: 0 of" in text and "FELL BACK to the pose network" in text
    # the written depth checked at points triangulated among its frames: in the result, printed, in the summary
    assert res.depth_at_points is not None and res.depth_at_points.runs == 1
    assert f"depth check: {res.depth_at_points.describe()}" in text
    summary = json.loads((res.path / "report" / "summary.json").read_text())
    assert summary["depth_at_points"]["runs"] == 1 and "frames" in summary  # added, nothing else lost
    # again on the same dataset: the same score (the summary is rewritten, not extended)
    from pose2rgbd.convert.stages.depth_export import check_written_depth

    again = check_written_depth(dataclasses.replace(res, depth_at_points=None))
    assert again.depth_at_points == res.depth_at_points
    assert json.loads((res.path / "report" / "summary.json").read_text()) == summary
    ds = Dataset(res.path)
    assert ds.manifest.depth_kind == "metric" and ds.manifest.extra["depth"]["scaled_from"] == "gps"
    poses = ds.manifest.extra["poses"]
    assert poses["metric_frames"] == 0 and "fallback" in poses["per_source"]["0"]
    assert [s["pose_source"] for s in poses["segments"]] == ["posenet"]
    assert res.fits[0].scale > 0
    # every frame keeps its GPS pose: the GPS course's orientation is still what the poses written have
    assert any(a.startswith("orientation from the GPS course") for a in ds.manifest.extra["conversion"]["assumptions"])
