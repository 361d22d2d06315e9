"""The localize node (image -> PoseWithCovarianceStamped) through the offline runtime on synthetic bags, its
covariance calibration file, and the `pose2rgbd localize` commands (bag, images, calibrate)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from pose2rgbd import messages as M
from pose2rgbd.bags import open_bag
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.evaluation.calibration import (
    MIN_FRAMES,
    Calibration,
    check_covariance,
    compute_calibration,
    default_covariance,
    load_calibration,
    save_calibration,
)
from pose2rgbd.geometry.transforms import T_from_tq
from pose2rgbd.inference import EngineConfig, LocalizeEngine
from pose2rgbd.inference.images import fit_to_input
from pose2rgbd.models.checkpoint import save_checkpoint
from pose2rgbd.nodes import LOCALIZER, NODES, LocalizerConfig, LocalizerNode, node_spec
from pose2rgbd.runtime.offline import run_node_bag
from pose2rgbd.testing.flight_bag import write_image_bag
from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint
from pose2rgbd.testing.toy_localizer import make_toy_localizer_checkpoint

SIZE = 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ck = make_toy_localizer_checkpoint(SIZE, world_frame="odom")
    path = tmp_path_factory.mktemp("loc") / "toy.pt"
    return save_checkpoint(path, ck.model, dataset_fingerprint="fp", camera=ck.camera, world_frame="odom")


@pytest.fixture(scope="module")
def engine(ckpt: Path) -> LocalizeEngine:
    return LocalizeEngine.from_config(EngineConfig(checkpoint=str(ckpt), warmup=0, device="cpu"))


def _images(n: int, h: int = 24, w: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):  # smooth images that differ (the toy model's pose depends on them)
        base = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
        out.append(cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR) // (1 + k % 3))
    return out


def _calibration(tmp: Path, conf: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(1)
    n = 200
    T_true = T_from_tq(rng.normal(size=(n, 3)) * 10, np.tile([0.0, 0, 0, 1], (n, 1)))
    dp = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5]
    rv = rng.normal(size=(n, 3)) * np.radians([1.0, 2.0, 3.0])
    from scipy.spatial.transform import Rotation

    T_est = T_true.copy()
    T_est[:, :3, 3] += dp
    T_est[:, :3, :3] = Rotation.from_rotvec(rv).as_matrix() @ T_true[:, :3, :3]
    c = rng.uniform(0.1, 0.4, n) if conf is None else conf
    cal = compute_calibration(T_est, T_true, c, source={"checkpoint": "toy"})
    return save_calibration(cal, tmp / "calib.yaml")


# ---------------------------------------------------------------------------------------------- calibration
def test_calibration_recovers_a_known_covariance_and_round_trips(tmp_path: Path) -> None:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    n = 4000
    sig_p, sig_r = np.array([1.0, 2.0, 0.5]), np.radians([1.0, 2.0, 4.0])
    R_true = Rotation.random(n, random_state=3).as_matrix()
    T_true = np.repeat(np.eye(4)[None], n, 0)
    T_true[:, :3, :3] = R_true
    T_true[:, :3, 3] = rng.normal(size=(n, 3)) * 50
    T_est = T_true.copy()
    T_est[:, :3, 3] += rng.normal(size=(n, 3)) * sig_p
    # errors about the world axes: R_est = exp(e) R_true
    T_est[:, :3, :3] = Rotation.from_rotvec(rng.normal(size=(n, 3)) * sig_r).as_matrix() @ R_true
    conf = rng.uniform(0, 1, n)
    cal = compute_calibration(T_est, T_true, conf, ood_quantile=0.05, confidence_bins=4)
    C = cal.covariance
    assert np.allclose(np.sqrt(np.diag(C)[:3]), sig_p, rtol=0.06)
    assert np.allclose(np.sqrt(np.diag(C)[3:]), sig_r, rtol=0.06)  # world-frame rotation vectors
    assert np.allclose(C, C.T) and np.linalg.eigvalsh(C).min() > 0
    assert abs(C[0, 1]) < 0.1 * math.sqrt(C[0, 0] * C[1, 1])
    assert cal.ood_threshold == pytest.approx(np.quantile(conf, 0.05))
    assert len(cal.bin_confidence) == 4 and all(0.5 < s < 2 for s in cal.bin_position_scale)
    path = save_calibration(cal, tmp_path / "c.yaml")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    back = load_calibration(path)
    assert np.allclose(back.covariance, C) and back.ood_threshold == cal.ood_threshold
    assert back.bin_confidence == cal.bin_confidence and back.n_frames == n
    for c in (0.0, 0.3, 0.99, None):
        check_covariance(back.covariance_at(c))  # scaled covariances stay SPD


def test_calibration_scales_with_confidence_and_refuses_bad_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 400
    T_true = np.repeat(np.eye(4)[None], n, 0)
    conf = np.linspace(0.05, 0.95, n)
    T_est = T_true.copy()
    T_est[:, :3, 3] = rng.normal(size=(n, 3)) * (3.0 - 2.5 * conf)[:, None]  # confident: smaller errors
    cal = compute_calibration(T_est, T_true, conf)
    lo, hi = cal.covariance_at(0.05), cal.covariance_at(0.95)
    assert lo[0, 0] > 3 * hi[0, 0]
    with pytest.raises(ConfigError, match=f"at least {MIN_FRAMES}"):
        compute_calibration(T_est[:5], T_true[:5], conf[:5])
    with pytest.raises(ConfigError, match="not positive definite"):
        check_covariance(np.diag([1.0, 1, 1, 1, 1, 0]))
    with pytest.raises(ConfigError, match="not symmetric"):
        check_covariance(np.eye(6) + np.eye(6, k=1))
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: something-else\n")
    with pytest.raises(ConfigError, match="not a localize calibration file"):
        load_calibration(bad)
    d = cal.to_dict()
    d["covariance"][5][5] = -1.0
    bad.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="not positive definite"):
        load_calibration(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_calibration(tmp_path / "missing.yaml")
    check_covariance(default_covariance())


def test_calibration_adds_the_datasets_pose_error_after_the_ood_inflation(tmp_path: Path) -> None:
    """A calibration measured against GPS poses carries their stated error (the dataset's ``pose_error``), which the
    node adds to the position block of every published covariance, after the out-of-distribution inflation; the
    file keeps it and refuses a malformed one."""
    from pose2rgbd.nodes.localizer.outputs import PoseCovariance

    rng = np.random.default_rng(4)
    n = 60
    T_true = np.repeat(np.eye(4)[None], n, 0)
    T_est = T_true.copy()
    T_est[:, :3, 3] = rng.normal(size=(n, 3)) * 0.05
    cal = compute_calibration(T_est, T_true, rng.uniform(0, 1, n), confidence_bins=1)
    plain = PoseCovariance(cal)
    cfg = LocalizerConfig(ood_covariance_scale=100.0)
    base_in, base_out = plain.at(cfg, 0.5, False), plain.at(cfg, 0.5, True)
    cal.pose_error = {"horizontal_m": 0.9, "vertical_m": 1.8}
    back = load_calibration(save_calibration(cal, tmp_path / "c.yaml"))
    assert back.pose_error == {"horizontal_m": 0.9, "vertical_m": 1.8} and back.pose_error_sigmas() == (0.9, 1.8)
    stated = PoseCovariance(back)
    added = np.diag([0.81, 0.81, 3.24, 0, 0, 0])
    assert np.allclose(stated.at(cfg, 0.5, False), base_in + added)
    assert np.allclose(stated.at(cfg, 0.5, True), base_out + added)  # not inflated x100 with the model's error
    check_covariance(stated.at(dataclasses.replace(cfg, scale_by_confidence=False), 0.5, False))
    assert PoseCovariance(None).at(cfg, 0.5, False)[0, 0] == default_covariance()[0, 0]  # no calibration: no term
    d = cal.to_dict()
    d["pose_error"] = {"horizontal_m": -1.0, "vertical_m": 1.0}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=r"pose_error .* horizontal_m and vertical_m"):
        load_calibration(bad)
    d["pose_error"] = {}
    bad.write_text(yaml.safe_dump(d))
    assert load_calibration(bad).pose_error_sigmas() is None


def test_fit_to_input_keeps_the_centre() -> None:
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centre 40x40 is white
    out = fit_to_input(img, (16, 16))
    assert out.shape == (16, 16, 3) and out.min() == 255
    assert fit_to_input(img, (40, 80)) is img
    zoom = fit_to_input(img, (16, 16), crop_scale=1.125)
    assert zoom.shape == (16, 16, 3)
    with pytest.raises(ConfigError, match="uint8"):
        fit_to_input(img.astype(np.float32), (16, 16))


# ---------------------------------------------------------------------------------------------- the node offline
def _read(out: Path) -> dict[str, list[tuple[int, Any]]]:
    got: dict[str, list[tuple[int, Any]]] = {}
    with open_bag(out) as r:
        for m in r.messages():
            got.setdefault(m.topic, []).append((m.stamp_ns, m.msg))
    return got


def test_localize_node_offline_on_a_synthetic_bag(ckpt: Path, engine: LocalizeEngine, tmp_path: Path) -> None:
    from pose2rgbd.messages import TypestoreFactory, get_typestore

    f = TypestoreFactory(get_typestore("humble"))
    good = _images(8)
    depth = M.image(f, 0, "cam", np.ones((24, 40), np.float32), "32FC1")  # wrong encoding
    short = f.new("sensor_msgs/msg/Image", header=M.header(f, 0, "cam"), height=24, width=40, encoding="rgb8",
                  step=120, data=np.zeros(100, np.uint8))  # fmt: skip  # corrupt: data shorter than the image
    tiny = M.image(f, 0, "cam", np.zeros((2, 3, 3), np.uint8), "rgb8")  # cannot be fitted
    sliver = M.image(f, 0, "cam", np.zeros((10, 200, 3), np.uint8), "rgb8")  # aspect 20
    images: list[Any] = [*good[:3], depth, *good[3:5], short, tiny, *good[5:], sliver]
    bag = tmp_path / "cam"
    stamps = write_image_bag(bag, images)
    good_stamps = [int(s) for s, im in zip(stamps, images) if isinstance(im, np.ndarray)]
    cal = _calibration(tmp_path)
    cfg = LocalizerConfig(
        engine=EngineConfig(checkpoint=str(ckpt), warmup=0, device="cpu"),
        covariance_file=str(cal),
        publish_tf=True,
        ood_threshold=0.0,
        diagnostics_period_s=0.2,
    )
    out = tmp_path / "out"
    stats = run_node_bag(LOCALIZER, cfg, bag, out, namespace="loc")
    c = stats.counters
    assert c["images"] == len(images) and c["frames"] == len(good)
    assert (c["rejected"], c["rejected_encoding"], c["rejected_corrupt"], c["rejected_size"]) == (4, 1, 1, 2)
    assert len(stats.latency_ms) == len(good) and all(v > 0 for v in stats.latency_ms)
    got = _read(out)
    poses = got["/loc/pose"]
    assert [s for s, _ in poses] == good_stamps  # written at the image's time...
    assert [M.stamp_to_ns(m.header.stamp) for _, m in poses] == good_stamps  # ...and stamped with it
    assert {m.header.frame_id for _, m in poses} == {"odom"}  # the checkpoint's world frame
    calib = load_calibration(cal)
    for (_, m), img in zip(poses, good):
        cov = np.asarray(m.pose.covariance).reshape(6, 6)
        check_covariance(cov)
        ref = engine.localize(fit_to_input(img, engine.input_hw))
        assert np.allclose(M.pose_to_matrix(m.pose.pose), ref.T_world_cam[0], atol=1e-5)
        assert np.allclose(cov, calib.covariance_at(float(ref.confidence[0])))  # scaled by its confidence
    ts = [M.pose_to_matrix(m.pose.pose)[:3, 3] for _, m in poses]
    assert np.ptp(np.array(ts), axis=0).max() > 1e-3  # the poses depend on the images
    assert [m.data for _, m in got["/loc/out_of_distribution"]] == [False] * len(good)  # threshold 0: never
    status = got["/loc/localization_status"]
    # one per image, stamped with it: a rejected image's says why at ERROR (it had none: the docs' "one per image")
    assert [M.stamp_to_ns(m.header.stamp) for _, m in status] == [int(s) for s in stamps]
    rejected = [m.status[0] for (_, m), im in zip(status, images) if not isinstance(im, np.ndarray)]
    assert [r.level for r in rejected] == [2] * 4
    reasons = [{kv.key: kv.value for kv in r.values}["reason"] for r in rejected]
    assert reasons == ["rejected_encoding", "rejected_corrupt", "rejected_size", "rejected_size"], reasons
    assert all(r.message.startswith("rejected image: ") for r in rejected)
    tfs = got["/tf"]
    assert [(t.transforms[0].header.frame_id, t.transforms[0].child_frame_id) for _, t in tfs] == [
        ("odom", "camera_localized")
    ] * len(good)
    diag = got["/diagnostics"][-1][1].status[0]
    values = {kv.key: kv.value for kv in diag.values}
    assert values["rejected_encoding"] == "1" and float(values["latency_p99_ms"]) > 0
    assert 0 < int(values["frames"]) <= len(good)  # timers fire before the message at their deadline
    assert "/loc/pose_refined" not in got


def test_ood_flag_and_compressed_input(ckpt: Path, engine: LocalizeEngine, tmp_path: Path) -> None:
    from pose2rgbd.messages import TypestoreFactory, get_typestore

    f = TypestoreFactory(get_typestore("humble"))
    good = _images(10, 48, 64, seed=3)
    confs = np.array([float(engine.localize(fit_to_input(i, engine.input_hw)).confidence[0]) for i in good])
    thr = float(np.median(confs))
    broken = f.new("sensor_msgs/msg/CompressedImage", header=M.header(f, 0, "cam"), format="rgb8; jpeg compressed bgr8",
                   data=np.frombuffer(b"\xff\xd8not a jpeg", np.uint8).copy())  # fmt: skip
    bag = tmp_path / "cam_c"
    write_image_bag(bag, [*good, broken], compressed=True, topic="/cam/compressed")
    cfg = LocalizerConfig(
        engine=EngineConfig(checkpoint=str(ckpt), warmup=0, device="cpu"),
        image_type="compressed",
        world_frame="map",
        ood_threshold=thr,
        covariance_source="default",
    )
    cfg.topics.image = "/cam/compressed"
    out = tmp_path / "out_c"
    stats = run_node_bag(LOCALIZER, cfg, bag, out)
    assert stats.counters["rejected_corrupt"] == 1 and stats.counters["frames"] == len(good)
    got = _read(out)
    flags = [m.data for _, m in got["/out_of_distribution"]]
    covs = [np.asarray(m.pose.covariance).reshape(6, 6) for _, m in got["/pose"]]
    assert {m.header.frame_id for _, m in got["/pose"]} == {"map"}
    # jpeg changes the pixels a little: compare with the decoded images' confidences
    dec_conf = []
    for img in good:
        msg = M.compressed_image(f, 0, "c", img)
        dec_conf.append(float(engine.localize(fit_to_input(M.image_msg_to_rgb(msg), engine.input_hw)).confidence[0]))
    assert flags == [c < thr for c in dec_conf] and any(flags) and not all(flags)
    assert stats.counters["out_of_distribution"] == sum(flags)
    for flag, cov in zip(flags, covs):
        assert np.allclose(cov, default_covariance() * (100.0 if flag else 1.0))  # OOD: covariance x100


def test_node_refuses_refinement_render_models_and_bad_settings(tmp_path: Path) -> None:
    assert NODES["localize"] is LOCALIZER and node_spec("pose2rgbd_localizer") is LOCALIZER
    loc = make_toy_localizer_checkpoint(SIZE)
    loc_path = save_checkpoint(tmp_path / "loc.pt", loc.model, dataset_fingerprint="x", camera=loc.camera)
    with pytest.raises(ConfigError, match="does not render RGB images from poses"):  # nothing to render with
        LOCALIZER.configure(LocalizerConfig(engine=EngineConfig(checkpoint=str(loc_path), warmup=0), refine=True))
    ck = make_ground_plane_checkpoint(16)
    path = save_checkpoint(tmp_path / "render.pt", ck.model, dataset_fingerprint="x", camera=ck.camera)
    with pytest.raises(CheckpointError, match="needs an image -> pose checkpoint"):
        LOCALIZER.configure(LocalizerConfig(engine=EngineConfig(checkpoint=str(path), warmup=0)))
    with pytest.raises(
        ConfigError,
        match=r"nothing to localize with: give a place map \(--map M.*or an image -> pose "
        r"checkpoint \(--checkpoint",
    ):  # neither: both ways named, not one method's need
        LOCALIZER.configure(LocalizerConfig(engine=EngineConfig(warmup=0)))
    with pytest.raises(ConfigError, match="covariance_file is empty"):
        LocalizerConfig(covariance_source="file")
    with pytest.raises(ConfigError, match="image_type"):
        LocalizerConfig(image_type="h264")


def test_live_parameter_changes(engine: LocalizeEngine) -> None:
    from pose2rgbd.messages import TypestoreFactory, get_typestore

    node = LocalizerNode(LocalizerConfig(), engine, TypestoreFactory(get_typestore("humble")))
    assert node.on_parameter_change("ood_threshold", 0.5) == (True, "") and node.ood_threshold == 0.5
    ok, why = node.on_parameter_change("covariance_file", "/x.yaml")
    assert not ok and "configured" in why
    ok, why = node.on_parameter_change("ood_threshold", 3.0)
    assert not ok and "outside its range" in why


def test_a_failing_model_is_counted_not_raised(engine: LocalizeEngine) -> None:
    from pose2rgbd.messages import TypestoreFactory, get_typestore

    class Broken:
        input_hw = (8, 8)
        world_frame = "map"

        def localize(self, images: np.ndarray) -> Any:
            raise RuntimeError("CUDA out of memory")

    f = TypestoreFactory(get_typestore("humble"))
    node = LocalizerNode(LocalizerConfig(), Broken(), f)
    msg = M.image(f, 5, "cam", _images(1)[0], "rgb8")
    said = node.on_image(msg, 10)
    assert [t for t, _ in said] == ["localization_status"] and node.counters["localize_errors"] == 1
    st = said[0][1].status[0]
    assert st.level == 2 and "CUDA out of memory" in st.message and M.stamp_to_ns(said[0][1].header.stamp) == 5
    ok = LocalizerNode(LocalizerConfig(), engine, f).on_image(msg, 10)
    assert [t for t, _ in ok] == ["pose", "out_of_distribution", "localization_status"]
    assert M.stamp_to_ns(ok[0][1].header.stamp) == 5


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_localize_images_and_bag(ckpt: Path, engine: LocalizeEngine, tmp_path: Path) -> None:
    from pose2rgbd.cli.main import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    imgs = _images(5, 30, 50, seed=7)
    for k, img in enumerate(imgs):
        cv2.imwrite(str(folder / f"f{k:03d}.png"), img[..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    (folder / "z_broken.png").write_bytes(b"not a png")
    out = tmp_path / "poses.csv"
    cal = _calibration(tmp_path)
    assert main(["localize", "images", str(folder), "--checkpoint", str(ckpt), "--out", str(out),
                 "--device", "cpu", "--calibration", str(cal), "--batch", "2"]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[0] == "image,tx,ty,tz,qx,qy,qz,qw,confidence,out_of_distribution"
    assert [ln.split(",")[0] for ln in lines[1:]] == [f"f{k:03d}.png" for k in range(5)]
    thr = load_calibration(cal).ood_threshold
    for ln, img in zip(lines[1:], imgs):
        v = ln.split(",")
        ref = engine.localize(fit_to_input(img, engine.input_hw))
        assert np.allclose([float(x) for x in v[1:4]], ref.T_world_cam[0, :3, 3], atol=1e-4)
        assert float(v[8]) == pytest.approx(float(ref.confidence[0]), abs=1e-6)
        assert v[9] == str(float(v[8]) < thr).lower()
    assert main(["localize", "images", str(folder), "--checkpoint", str(ckpt), "--out", str(out)]) == 2  # exists
    tum = tmp_path / "poses.tum"
    assert main(["localize", "images", str(folder), "--checkpoint", str(ckpt), "--out", str(tum)]) == 0
    rows = [ln.split() for ln in tum.read_text().splitlines() if not ln.startswith("#")]
    assert len(rows) == 5 and all(len(r) == 8 for r in rows) and rows[2][0] == "2"

    bag = tmp_path / "cam"
    write_image_bag(bag, _images(4))
    out_bag = tmp_path / "out_bag"
    assert main(["localize", "bag", "--bag", str(bag), "--out", str(out_bag), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--namespace", ""]) == 0  # fmt: skip
    assert len(_read(out_bag)["/pose"]) == 4
    assert main(["node", "localize", "--bag", str(bag), "--out", str(tmp_path / "o2"),
                 "--set", f"engine.checkpoint={ckpt}"]) == 0  # fmt: skip  # the generic runner serves it too


def test_cli_localize_calibrate(ckpt: Path, tmp_path: Path) -> None:
    from pose2rgbd.cli.main import main
    from pose2rgbd.dataset import DatasetWriter, Manifest
    from pose2rgbd.geometry.camera import PinholeCamera

    ds = tmp_path / "ds"
    cam = PinholeCamera.from_fov(40, 24, 90.0)
    rng = np.random.default_rng(5)
    stated = {"horizontal_m": 0.9, "vertical_m": 1.8, "fixes": 30, "source": "NavSatFix position_covariance"}
    with DatasetWriter(ds, Manifest("t", cam, depth_kind="none", pose_error=stated)) as w:
        for k, img in enumerate(_images(30)):
            T = T_from_tq(rng.normal(size=3) * 20 + [0, 0, 30], np.array([1.0, 0, 0, 0]))
            w.add_frame(1_000_000_000 * k, T, img)
    out = tmp_path / "calib.yaml"
    assert main(["localize", "calibrate", "--checkpoint", str(ckpt), "--dataset", str(ds), "--out", str(out),
                 "--split", "all", "--bins", "2"]) == 0  # fmt: skip
    cal = load_calibration(out)
    assert isinstance(cal, Calibration) and cal.n_frames == 30 and cal.source["split"] == "all"
    check_covariance(cal.covariance)
    assert cal.errors["position_median_m"] > 0
    assert cal.pose_error == {"horizontal_m": 0.9, "vertical_m": 1.8}  # the GPS's: added by the node at run time
    before = out.read_text()
    assert main(["localize", "calibrate", "--checkpoint", str(ckpt), "--dataset", str(ds),
                 "--out", str(ckpt)]) == 2  # fmt: skip  # never the checkpoint
    assert main(["localize", "calibrate", "--checkpoint", str(ckpt), "--dataset", str(ds), "--out", str(out)]) == 2
    assert out.read_text() == before


def test_refine_publishes_a_render_and_compare_pose(ckpt: Path, tmp_path: Path) -> None:
    """With refine, each localized image also gets a refined pose (same stamp, frame and covariance) from
    render-and-compare against a pose -> image model (here the analytic ground plane, refine_checkpoint)."""
    from pose2rgbd.inference.refine import RefineConfig
    from pose2rgbd.testing.ground_plane import look_down_pose, render_ground_plane

    plane = make_ground_plane_checkpoint(SIZE)
    elsewhere = save_checkpoint(tmp_path / "map.pt", plane.model, dataset_fingerprint="x", camera=plane.camera)
    plane_path = save_checkpoint(
        tmp_path / "plane.pt", plane.model, dataset_fingerprint="x", camera=plane.camera, world_frame="odom"
    )
    poses = [look_down_pose(3.0 * k, -2.0 * k, 25.0 + k) for k in range(3)]
    images = list(render_ground_plane(plane, np.stack(poses))["rgb"])
    bag = tmp_path / "cam"
    write_image_bag(bag, images)
    cfg = LocalizerConfig(
        engine=EngineConfig(checkpoint=str(ckpt), warmup=0, device="cpu"),
        covariance_source="default",
        refine=True,
        refine_checkpoint=str(plane_path),
        refinement=RefineConfig(levels=1, iterations=8, patience=8),
    )
    bad = dataclasses.replace(cfg, refine_checkpoint=str(elsewhere))  # the localizer answers in odom, this in map
    with pytest.raises(ConfigError, match="same place and frame"):
        LOCALIZER.configure(bad)
    stats = run_node_bag(LOCALIZER, cfg, bag, tmp_path / "out")
    assert stats.counters["frames"] == 3 and stats.counters["refined"] == 3 and stats.counters["refine_errors"] == 0
    got = _read(tmp_path / "out")
    pose, refined = got["/pose"], got["/pose_refined"]
    assert [M.stamp_to_ns(m.header.stamp) for _, m in refined] == [M.stamp_to_ns(m.header.stamp) for _, m in pose]
    assert {m.header.frame_id for _, m in refined} == {"odom"}
    for (_, a), (_, b) in zip(pose, refined):
        assert np.allclose(a.pose.covariance, b.pose.covariance)
        # the refined pose moved away from the localizer's (gradient steps on the photometric error)
        assert not np.allclose(M.pose_to_matrix(a.pose.pose), M.pose_to_matrix(b.pose.pose), atol=1e-6)


def test_structure_node_localizes_with_the_freshest_odometry_or_gps_prior() -> None:
    """The localize node with a place map: each image goes to the localizer with the freshest odometry position
    (odometry first) or GPS position (in the map's ENU frame, searched within 3 sigma of the fix) within
    prior_max_age_s of its stamp; odometry in another frame and stale priors are not used."""
    from pose2rgbd.geometry.geodesy import Datum
    from pose2rgbd.inference.focal_check import FocalCheck, FocalEstimate
    from pose2rgbd.inference.structure import Fix
    from pose2rgbd.messages import TypestoreFactory, get_typestore

    datum = Datum(48.0, 11.0, 500.0)

    class MapLocalizer:  # the structure localizer's interface, recording the priors it is given
        world_frame = "map"
        map = type("PlaceMapStub", (), {"datum": datum})()
        calibration_source = "map"

        def __init__(self) -> None:
            self.priors: list[Any] = []
            self.focal = FocalCheck(0.05)
            self.focal.add(FocalEstimate(1.01, 0.01))

        def localize_one(self, rgb: np.ndarray, prior: Any) -> Fix:
            self.priors.append(prior)
            return Fix(True, "", np.eye(4), np.eye(6) * 0.01, 0.9, inliers=50, correspondences=80,
                       prior=prior.source if prior else "")  # fmt: skip

    f = TypestoreFactory(get_typestore("humble"))
    eng = MapLocalizer()
    node = LocalizerNode(LocalizerConfig(map="m", prior_max_age_s=1.0), eng, f)
    s = 10**9
    img = _images(1)[0]
    node.on_gps(M.navsatfix(f, 10 * s, "gps", 48.0001, 11.0, 500.0, covariance=[400.0, 400.0, 4.0]), 10 * s)
    out = node.on_image(M.image(f, 10 * s + s // 2, "cam", img, "rgb8"), 11 * s)
    assert eng.priors[-1].source == "gps" and eng.priors[-1].radius_m == pytest.approx(60.0)  # 3 x 20 m sigma
    assert np.allclose(eng.priors[-1].position, datum.to_enu(48.0001, 11.0, 500.0).reshape(3))
    assert [t for t, _ in out][:2] == ["pose", "out_of_distribution"]
    T = T_from_tq([1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0])
    node.on_odometry(M.odometry(f, 10 * s, "odom", "base", T), 10 * s)  # not the world frame: unused
    node.on_image(M.image(f, 10 * s + s // 2, "cam", img, "rgb8"), 11 * s)
    assert eng.priors[-1].source == "gps"
    node.on_odometry(M.odometry(f, 10 * s, "map", "base", T), 10 * s)
    node.on_image(M.image(f, 10 * s + s // 2, "cam", img, "rgb8"), 11 * s)
    assert eng.priors[-1].source == "odometry" and np.allclose(eng.priors[-1].position, [1.0, 2.0, 3.0])
    node.on_image(M.image(f, 12 * s, "cam", img, "rgb8"), 12 * s)  # both 2 s old
    assert eng.priors[-1] is None
    assert node.counters["fixes"] == 4 and node.counters["frames"] == 4
    # the diagnostics name the covariance's source as each fix's status does: the map's calibration
    values = {kv.key: kv.value for kv in node.diagnostics(13 * s).status[0].values}
    assert values["covariance_source"] == "map"
    # and whether the camera fits the fixes' matches (inference/focal_check.py): a warning while it does not
    assert values["focal_scale_median"] == "1.010" and node.diagnostics(13 * s).status[0].level == 0
    for _ in range(5):
        eng.focal.add(FocalEstimate(0.8, 0.01))
    status = node.diagnostics(13 * s).status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == 1 and "camera does not fit" in status.message and values["focal_scale_median"] == "0.800"


def test_a_structure_localize_node_says_where_the_machine_hands_freed_memory_back(
    map_world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The structure localizer has no engine of its own, so the node's configure says it (serving_process)."""
    from pose2rgbd.inference import serving_process
    from pose2rgbd.nodes.localizer import configure_localizer

    calls: list[int] = []
    monkeypatch.setattr(serving_process, "note_free_page_reporting", lambda: calls.append(1) or False)
    loaded = configure_localizer(LocalizerConfig(method="structure", map=str(map_world["map"])))
    assert loaded["method"] == "structure" and calls == [1]


def test_an_image_before_the_first_camera_info_is_said_as_that(caplog: pytest.LogCaptureFixture) -> None:
    """With topics.camera_info given, an image that comes before any CameraInfo (a bag's first messages) is
    localized with the map's camera and said to be waiting for that topic -- not "query camera not given", whose
    advice (--camera, exif) the node has no use for; the CameraInfo, once in, is the camera."""
    import dataclasses
    import logging

    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.inference.structure import Fix
    from pose2rgbd.messages import TypestoreFactory, get_typestore

    class MapLocalizer:  # the structure localizer's camera interface
        world_frame = "map"
        map = type("PlaceMapStub", (), {"datum": None})()
        calibration_source = "map"
        query_intrinsics = None
        camera_expected = ""

        def localize_one(self, rgb: np.ndarray, prior: Any) -> Fix:
            return Fix(True, "", np.eye(4), np.eye(6) * 0.01, 0.9, inliers=50, correspondences=80)

    f = TypestoreFactory(get_typestore("humble"))
    eng = MapLocalizer()
    cfg = LocalizerConfig(map="m")
    cfg = dataclasses.replace(cfg, topics=dataclasses.replace(cfg.topics, camera_info="/camera/camera_info"))
    node = LocalizerNode(cfg, eng, f)
    img = _images(1)[0]
    with caplog.at_level(logging.WARNING):
        node.on_image(M.image(f, 10**9, "cam", img, "rgb8"), 10**9)
    assert eng.camera_expected == node.cfg.topics.camera_info
    assert f"an image before any CameraInfo on {node.cfg.topics.camera_info}" in caplog.text
    cam = PinholeCamera.from_fov(img.shape[1], img.shape[0], 60.0)
    node.on_camera_info(M.camera_info(f, 10**9, "cam", cam), 10**9)
    assert eng.query_intrinsics == (cam.fx, cam.fy, cam.cx, cam.cy)
