"""The simulator's realism config and posed-images export as files: checked knobs, the config record of a clean
run, the intrinsics and images of transforms.json through `convert images` (test_sim_realism.py: the effects)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pose2rgbd.config import from_dict
from pose2rgbd.dataset import Dataset
from pose2rgbd.errors import ConfigError
from pose2rgbd.sim import SimConfig
from pose2rgbd.sim.export import make_camera, world_of
from pose2rgbd.sim.realism import RealismConfig

W, H = 40, 30


def test_realism_knobs_are_checked_by_name() -> None:
    for key, bad in (("repeat_prob", 5.0), ("jpeg_quality", 500), ("max_range_m", -3.0), ("grazing_deg", 10.0)):
        with pytest.raises(ConfigError, match=rf"realism\.{key} must be within \["):
            RealismConfig(**{key: bad})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=rf"realism\.{key}"):
            from_dict(SimConfig, {"realism": {key: bad}})
    with pytest.raises(ConfigError, match=r"realism\.jpeg_quality must be an integer"):
        RealismConfig(jpeg_quality=80.5)  # type: ignore[arg-type]
    cfg = SimConfig(realism={"enabled": True, "jpeg_quality": 50})  # type: ignore[arg-type]
    assert isinstance(cfg.realism, RealismConfig) and cfg.realism.jpeg_quality == 50
    with pytest.raises(ConfigError, match=r"realism: unknown key"):
        SimConfig(realism={"jpeg": 50})  # type: ignore[arg-type]


def test_clean_run_records_the_config_as_before(tmp_path: Path) -> None:
    """Realism off: sim_config.yaml and the manifest hold no realism / posed_routes keys (the files, and so the
    dataset fingerprint, are those of a run before they existed) and read back as the same config."""
    from pose2rgbd.sim import simulate

    cfg = SimConfig(width=W, height=H, frames=2, routes=["survey"])
    simulate(cfg, tmp_path / "a", bag=False, progress=False)
    text = (tmp_path / "a" / "sim_config.yaml").read_text()
    rec = Dataset(tmp_path / "a" / "dataset").manifest.extra["sim_config"]
    for key in ("realism", "posed_routes"):
        assert f"\n{key}:" not in text and key not in rec
    assert from_dict(SimConfig, yaml.safe_load(text)) == cfg and from_dict(SimConfig, rec) == cfg
    on = SimConfig(width=W, height=H, frames=2, routes=["survey"], posed_routes=["orbit"],
                   realism=RealismConfig(enabled=True, jpeg_quality=40))  # fmt: skip
    simulate(on, tmp_path / "b", bag=False, progress=False)
    back = from_dict(SimConfig, yaml.safe_load((tmp_path / "b" / "sim_config.yaml").read_text()))
    assert back == on and back.realism.jpeg_quality == 40 and back.posed_routes == ["orbit"]


def test_posed_images_intrinsics_and_pixels_round_trip(tmp_path: Path) -> None:
    """transforms.json writes the principal point in nerfstudio's pixel-corner convention, so `convert images`
    gives back the simulator's camera exactly; a clean export's images are the renders."""
    from pose2rgbd.convert.sources.images import convert_images
    from pose2rgbd.sim.export_posed import export_posed_images
    from pose2rgbd.sim.render import Renderer

    cfg = SimConfig(width=W, height=H, frames=3, routes=["survey"])
    root = export_posed_images(cfg, tmp_path / "posed", progress=False)
    doc = json.loads((root / "transforms.json").read_text())
    cam = make_camera(cfg)
    assert (doc["cx"], doc["cy"]) == pytest.approx((W / 2, H / 2))  # (W - 1) / 2 + 0.5
    ds = Dataset(convert_images(root / "transforms.json", tmp_path / "ds", progress=False))
    got = ds.camera
    assert (got.width, got.height) == (W, H)
    assert (got.fx, got.fy, got.cx, got.cy) == pytest.approx((cam.fx, cam.fy, cam.cx, cam.cy), abs=1e-9)
    gt = np.load(root / "ground_truth.npz")
    renderer = Renderer(world_of(cfg), cam)
    assert len(ds) == 3
    for i in range(len(ds)):
        T = gt["T_world_cam_enu"][i]
        np.testing.assert_allclose(ds.frames.T_world_cam[i], T, atol=1e-9)
        rgb, depth = renderer.render(T)
        assert np.array_equal(ds.read_rgb(i), rgb)
        d = ds.read_depth(i)
        ok = np.isfinite(d)
        assert ok.mean() > 0.5 and np.isfinite(depth[ok]).all()  # sky (+inf) came back as no return
        np.testing.assert_allclose(d[ok], depth[ok], atol=0.0051)  # 1 cm units


def test_posed_jpeg_is_the_sensors_own_encoding(tmp_path: Path) -> None:
    """The posed images are the JPEG the sensor wrote (decoded: the dataset's pixels of the same frame), not a
    second encoding of its decoded pixels; a repeat's files are byte-identical to its twin's."""
    from pose2rgbd.sim import simulate

    on = RealismConfig(enabled=True, jpeg_quality=60, repeat_prob=0.3)
    cfg = SimConfig(width=W, height=H, frames=8, routes=["survey"], bag_routes=[], realism=on)
    simulate(cfg, tmp_path / "s", bag=False, posed_images=True, progress=False)
    ds = Dataset(tmp_path / "s" / "dataset")
    root = tmp_path / "s" / "posed_images" / "survey"
    frames = json.loads((root / "transforms.json").read_text())["frames"]
    assert len(frames) == len(ds) == 8
    for i, fr in enumerate(frames):
        data = (root / fr["file_path"]).read_bytes()
        assert fr["file_path"].endswith(".jpg")
        dec = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert np.array_equal(dec, ds.read_rgb(i)), i
        ok, again = cv2.imencode(".jpg", ds.read_rgb(i)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
        assert ok and bytes(again) != data  # not re-encoded at quality 100
    rep = np.load(root / "ground_truth.npz")["repeated"]
    assert len(rep) >= 1
    for n in rep:
        assert (root / frames[n]["file_path"]).read_bytes() == (root / frames[n - 1]["file_path"]).read_bytes()


def test_posed_depth_beyond_the_16_bit_range_is_not_clipped_to_a_false_depth() -> None:
    """The export's 16-bit depth holds 1 cm codes up to 655.34 m: a surface farther away is the saturated code
    (read as invalid by `convert images`), not 655.34 m; sky stays no return, saturation saturated."""
    from pose2rgbd.sim.export_posed import NO_RETURN, SATURATED, depth_units

    depth = np.array([[1.234, 655.34, 655.36, 900.0, np.inf, np.nan]])
    saturated = np.array([[False, False, False, False, False, False]])
    units = depth_units(depth, saturated)
    assert units.dtype == np.uint16
    assert units.tolist() == [[123, 65534, SATURATED, SATURATED, NO_RETURN, NO_RETURN]]
    saturated[0, 0] = True
    assert depth_units(depth, saturated)[0, 0] == SATURATED
