"""The render node's GPS check of the robot's place against the model's (pose2rgbd.nodes.place_check): a bag or robot
far from the model's place renders with every frame flagged out of bounds (every map frame starts near (0, 0, 0), so
its TF poses alone fall inside the model's box), and `render bag` says how many frames were."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pose2rgbd.bags import open_bag
from pose2rgbd.geometry.geodesy import Datum
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.messages import (
    TypestoreFactory,
    default_factory,
    image_to_numpy,
    navsatfix,
    new_typestore,
    pose_stamped,
    register_custom_msgs,
)
from pose2rgbd.models.checkpoint import LoadedCheckpoint, load_checkpoint, save_loaded
from pose2rgbd.models.coverage import DATUM_KEY, model_datum
from pose2rgbd.nodes import Renderer, RendererConfig
from pose2rgbd.testing.flight_bag import DATUM, T_world_cam, write_flight_bag
from pose2rgbd.testing.ground_plane import look_down_pose, make_ground_plane_checkpoint
from pose2rgbd.training.train import training_datum

S = 1_000_000_000
F = default_factory()
LOG = "pose2rgbd.renderer"
# 16.82 deg of latitude south of the datum: about 1,870 km (Zurich -> the Sahara)
FAR = (DATUM.lat_deg - 16.82, DATUM.lon_deg, DATUM.alt_m)


def _checkpoint(datum: Datum | None, positions: np.ndarray | None = None, size: int = 16) -> LoadedCheckpoint:
    """The ground-plane stand-in with training cameras at ``positions`` (default: a 100 m square grid about the
    origin, 20 m up) and, as `train` stores it, its dataset's ``datum``."""
    ck = make_ground_plane_checkpoint(size)
    if positions is None:
        g = np.linspace(-50.0, 50.0, 5)
        positions = np.array([[x, y, 20.0] for x in g for y in g])
    tq = np.concatenate([positions, np.tile([0.0, 0.0, 0.0, 1.0], (len(positions), 1))], axis=1)
    ck.extra = {"training_poses": torch.from_numpy(tq), "coverage_rot_weight_m": 10.0}
    if datum is not None:
        ck.extra[DATUM_KEY] = datum.to_dict()
    return ck


@pytest.fixture(scope="module")
def factory() -> TypestoreFactory:
    return TypestoreFactory(register_custom_msgs(new_typestore("humble")))


@pytest.fixture(scope="module")
def engine() -> RenderEngine:
    return RenderEngine(EngineConfig(warmup=0), _checkpoint(DATUM))


def _fix(stamp: int, lla: tuple[float, float, float], **kw: object) -> object:
    return navsatfix(F, stamp, "gps", *lla, **kw)  # type: ignore[arg-type]


def _near(x: float = 10.0, y: float = -20.0) -> tuple[float, float, float]:
    """A fix at (x, y) of the model's world, 20 m up."""
    lat, lon, alt = DATUM.from_enu(np.array([x, y, 20.0]))
    return float(lat), float(lon), float(alt)


def _render(r: Renderer, t_ns: int) -> dict[str, object]:
    """A pose well inside the model's bounds, rendered at ``t_ns``."""
    return dict(r.on_pose(pose_stamped(F, t_ns, "map", look_down_pose(3.0, 4.0, 12.0)), t_ns))


def _flagged(out: dict[str, object]) -> bool:
    rgbd, mask = out["rgbd"], image_to_numpy(out["mask/image_raw"])  # type: ignore[attr-defined]
    assert bool(rgbd.out_of_bounds) == (not mask.any())  # type: ignore[attr-defined]  # no valid point while flagged
    return bool(rgbd.out_of_bounds)  # type: ignore[attr-defined]


def _said(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    return [m.getMessage() for m in caplog.records if m.levelno == level and text in m.getMessage()]


def test_a_fix_far_from_the_models_place_flags_every_render_until_one_is_back(
    engine: RenderEngine, factory: TypestoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    r = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), engine, factory)
    caplog.set_level(logging.INFO, logger=LOG)
    assert not _flagged(_render(r, S))  # no fix yet: as before
    r.on_gps(_fix(2 * S, _near()), 2 * S)
    assert not _flagged(_render(r, 2 * S + 1))  # a fix within the place
    r.on_gps(_fix(2 * S + 2, (0.0, 0.0, 0.0)), 2 * S + 2)  # a receiver's cold start: no place, as the GPS gate says
    assert not _flagged(_render(r, 2 * S + 3))
    # the bag of another place: 1,870 km away, its TF poses inside the model's box
    for k in range(3):
        r.on_gps(_fix((3 + k) * S, FAR), (3 + k) * S)
        assert _flagged(_render(r, (3 + k) * S + 1))
    warned = _said(caplog, "from the model's place by its GPS fix")
    assert len(warned) == 1, warned  # once as it starts
    assert re.search(r"is 1,8[67]\d km from the model's place", warned[0]), warned[0]
    assert f"{DATUM.lat_deg:.6f}, {DATUM.lon_deg:.6f}" in warned[0] and "check that the model" in warned[0].lower()
    assert not _said(caplog, "outside the training poses")  # the GPS said why, not the pose's warning
    d = r.diagnostics(6 * S).status[0]
    assert d.level == 1 and "GPS fix is 1,8" in d.message and "from the model's place" in d.message, d.message
    # the service too: the model is not of this place
    req = SimpleNamespace(pose=pose_stamped(F, 6 * S, "map", look_down_pose(1, 1, 40)))
    resp = r.render_at_pose(req, SimpleNamespace(success=False, message="", rgbd=None), 6 * S)
    assert resp.success and resp.rgbd.out_of_bounds and "GPS fix" in resp.message
    # a NO_FIX status is no place: the latest usable fix still counts
    r.on_gps(_fix(7 * S, _near(), status=-1), 7 * S)
    assert _flagged(_render(r, 7 * S + 1))
    # back within the place: cleared, said once
    r.on_gps(_fix(8 * S, _near()), 8 * S)
    assert not _flagged(_render(r, 8 * S + 1))
    assert len(_said(caplog, "back within", logging.INFO)) == 1
    c = r.counters
    assert (c["gps_fixes"], c["gps_checked"], c["gps_out_of_place"]) == (7, 5, 4), c  # 3 far + the NO_FIX frame
    assert c["out_of_bounds"] == 4


def test_the_threshold_takes_the_fixs_reported_error(engine: RenderEngine, factory: TypestoreFactory) -> None:
    """250 m beyond the nearest training camera: out with a precise fix, in with a 30 m one (200 + 3 x 30 m)."""
    r = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), engine, factory)
    r.on_gps(_fix(S, _near(300.0, 0.0), covariance=[1.0, 1.0, 4.0]), S)
    assert _flagged(_render(r, S + 1))
    r.on_gps(_fix(2 * S, _near(300.0, 0.0), covariance=[900.0, 900.0, 900.0]), 2 * S)
    assert not _flagged(_render(r, 2 * S + 1))
    nan = float("nan")  # a NaN covariance does not turn the check off
    r.on_gps(_fix(2 * S + 2, _near(300.0, 0.0), covariance=[nan, nan, nan], covariance_type=2), 2 * S + 2)
    assert _flagged(_render(r, 2 * S + 3))
    r.on_gps(_fix(2 * S + 4, _near(300.0, 0.0), covariance=[900.0, 900.0, 900.0]), 2 * S + 4)
    assert not _flagged(_render(r, 2 * S + 5))
    assert r.on_parameter_change("gps.max_distance_m", 20.0)[0]  # live
    r.on_gps(_fix(3 * S, _near(300.0, 0.0), covariance=[900.0, 900.0, 900.0]), 3 * S)
    assert _flagged(_render(r, 3 * S + 1))


def test_a_stale_fix_no_longer_flags(
    engine: RenderEngine, factory: TypestoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    r = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), engine, factory)
    caplog.set_level(logging.INFO, logger=LOG)
    r.on_gps(_fix(S, FAR), S)
    assert _flagged(_render(r, S + 9 * S))  # 9 s old: within gps.max_age_s 10
    assert not _flagged(_render(r, S + 11 * S))  # 11 s old: not used
    assert len(_said(caplog, "no usable GPS fix", logging.INFO)) == 1
    # the node's clock going back (a bag replayed again): the fix is not the latest any more, and it says why
    r.on_gps(_fix(20 * S, FAR), 20 * S)
    assert _flagged(_render(r, 20 * S + 1))
    assert not _flagged(_render(r, 5 * S))
    assert len(_said(caplog, "since the node's clock went back 15.0 s", logging.INFO)) == 1


def test_a_model_without_a_datum_renders_as_before_and_says_so_once(
    factory: TypestoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    r = Renderer(
        RendererConfig(pose_source="topic", rate_hz=0.0),
        RenderEngine(EngineConfig(warmup=0), _checkpoint(None)),
        factory,
    )
    caplog.set_level(logging.DEBUG, logger=LOG)
    for k in range(3):
        r.on_gps(_fix((1 + k) * S, FAR), (1 + k) * S)
        assert not _flagged(_render(r, (1 + k) * S + 1))
    said = [m.getMessage() for m in caplog.records if "no GPS datum" in m.getMessage()]
    assert len(said) == 1 and "not checked" in said[0], said
    assert not [m for m in caplog.records if m.name == LOG and m.levelno >= logging.WARNING]
    assert (r.counters["gps_fixes"], r.counters["gps_checked"], r.counters["gps_out_of_place"]) == (3, 0, 0)


def test_the_datum_a_checkpoint_stores_survives_save_and_load_and_old_ones_have_none(tmp_path: Path) -> None:
    ds = SimpleNamespace(manifest=SimpleNamespace(datum=DATUM.with_world(np.eye(4))))
    extra = training_datum(ds)  # type: ignore[arg-type]  # what `train` puts in every checkpoint's extra
    assert set(extra) == {DATUM_KEY}
    ck = make_ground_plane_checkpoint(8)
    assert model_datum(ck) is None  # a checkpoint without one (an older pose2rgbd's): none, and it loads
    assert training_datum(SimpleNamespace(manifest=SimpleNamespace(datum=None))) == {}  # type: ignore[arg-type]
    back = load_checkpoint(save_loaded(ck, tmp_path / "with.pt", extra=extra), map_location="cpu")
    assert model_datum(back) == DATUM.with_world(np.eye(4))
    assert model_datum(load_checkpoint(save_loaded(ck, tmp_path / "without.pt"), map_location="cpu")) is None


# ---------------------------------------------------------------------------------------------- render bag, end to end
@pytest.fixture(scope="module")
def flight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gps_flight")
    write_flight_bag(d / "in", duration_s=1.5, size=16)
    return d / "in"


def _saved(tmp_path: Path, datum: Datum) -> Path:
    """A checkpoint file whose training cameras are the flight's own camera path, with ``datum``."""
    positions = T_world_cam(np.linspace(0.0, 1.5, 16))[:, :3, 3]
    return save_loaded(_checkpoint(datum, positions), tmp_path / "model.pt")


@pytest.mark.parametrize(("datum", "flagged"), [(DATUM, False), (Datum(*FAR), True)], ids=["its-place", "1870-km"])
def test_render_bag_flags_and_counts_the_frames_of_a_bag_far_from_the_models_place(
    flight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], datum: Datum, flagged: bool
) -> None:
    """The flight's bag against a model of its own place, then against one whose datum is 1,870 km away (the same
    map-frame poses: only the GPS tells them apart)."""
    from pose2rgbd.cli.main import main

    out = tmp_path / "out"
    argv = ["render", "bag", str(flight), "--checkpoint", str(_saved(tmp_path, datum)), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    said = capsys.readouterr().out
    m = re.search(
        r"flagged out of bounds for the GPS fix's distance from the model's place: (\d+) of (\d+) frames", said
    )
    assert m, said
    frames = int(m.group(2))
    assert frames >= 10 and int(m.group(1)) == (frames if flagged else 0), said
    with open_bag(out) as r:
        rgbd = [msg.msg for msg in r.messages() if msg.topic.endswith("/rgbd")]
    assert len(rgbd) == frames and all(bool(x.out_of_bounds) == flagged for x in rgbd)
    with open_bag(out) as r:  # a checkpoint without a depth uncertainty: no depth/sigma topic that stays empty
        assert "/pose2rgbd/depth/image_raw" in r.topics and "/pose2rgbd/depth/sigma" not in r.topics, r.topics
    # the poses lie in the model's box: the frames flagged for the GPS are not counted as out of the poses' bounds
    assert f"out of the training poses' bounds: 0 of {frames} frames" in said, said
    if flagged:  # a GPS topic the bag lacks: the check was not made, and the summary names the bag's NavSatFix
        assert main([*argv[:-1], str(tmp_path / "out2"), "--no-progress", "--topics.gps", "/gps/fixx"]) == 0
        said = capsys.readouterr().out
        assert "GPS check not made: no /gps/fixx in the bag, whose NavSatFix is on /gps/fix" in said, said
        assert "--topics.gps TOPIC" in said and "flagged out of bounds for the GPS" not in said, said


def test_render_bag_summarizes_the_frames_coverage_and_depth_uncertainty(
    flight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary of `render bag` says how far the frames were from the training cameras and what depth_sigma they
    carried: a bound at the model's place, +inf (no bound) on every frame of a bag 1,870 km away."""
    from pose2rgbd.cli.main import main
    from pose2rgbd.models.depth_uncertainty import EXTRA_KEY, DepthUncertainty

    du = DepthUncertainty(level=0.683, depth_edges=(5.0, 15.0), relative=np.full((2, 3), 0.1, np.float32),
                          pixels=np.full((2, 3), 10_000), wide=(2.5, 2.5), growth_per_m=0.0,
                          reference_m=1.0)  # fmt: skip
    positions = T_world_cam(np.linspace(0.0, 1.5, 16))[:, :3, 3]
    for datum, flagged in ((DATUM, False), (Datum(*FAR), True)):
        ck = _checkpoint(datum, positions)
        ck.extra[EXTRA_KEY] = du.to_dict()
        path = save_loaded(ck, tmp_path / f"model-{flagged}.pt")
        out = tmp_path / f"out-{flagged}"
        assert main(["render", "bag", str(flight), "--checkpoint", str(path), "--out", str(out), "--no-progress"]) == 0
        said = capsys.readouterr().out
        assert re.search(r"/pose2rgbd/depth/sigma +\d+", said), said  # with a depth uncertainty: its topic
        frames = int(re.search(r"(\d+) frames in", said).group(1))  # type: ignore[union-attr]
        m = re.search(r"from the nearest training camera: median ([\d.]+) m / [\d.]+ deg, .* \((\d+) frames\)", said)
        assert m and float(m.group(1)) < 0.2 and int(m.group(2)) == frames, said  # the flight's own camera path
        bounded = re.search(r"depth_sigma \(the depth's error bound; [^)]*\): median ([\d.]+) m", said)
        if flagged:
            assert not bounded and f"+inf (no bound) on {frames} frames flagged out of bounds" in said, said
        else:  # 10 % of the depth (the ground plane about 20 m below): a finite bound, never +inf
            assert bounded and 0.5 < float(bounded.group(1)) < 5.0 and "+inf" not in said, said


def test_an_onnx_export_carries_the_datum_to_the_engine(tmp_path: Path) -> None:
    from export_helpers import pose2rgbd_checkpoint

    from pose2rgbd.models.export import export_onnx, load_onnx_checkpoint

    ck = load_checkpoint(pose2rgbd_checkpoint(tmp_path, "base"))
    with_datum = load_checkpoint(save_loaded(ck, tmp_path / "with.pt", extra={**ck.extra, DATUM_KEY: DATUM.to_dict()}))
    back = load_onnx_checkpoint(export_onnx(with_datum, tmp_path / "with.onnx", exporter="torchscript").path)
    assert model_datum(back) == DATUM
    without = load_onnx_checkpoint(export_onnx(ck, tmp_path / "without.onnx", exporter="torchscript").path)
    assert model_datum(without) is None


def test_a_hybrid_takes_the_datum_of_the_place_map_it_warps(factory: TypestoreFactory) -> None:
    """The hybrid's coverage is its keyframes, and its datum their place map's (a map given instead has its own);
    without one (keyframes held in memory or bundled), the checkpoint's."""
    from pose2rgbd.testing.hybrid_keyframes import make_hybrid_checkpoint

    ck = make_hybrid_checkpoint(64, 4, randomize=False)
    assert model_datum(ck) is None
    ck.extra = {DATUM_KEY: Datum(*FAR).to_dict()}
    assert model_datum(ck) == Datum(*FAR)
    source = ck.model.keyframes.keyframes  # type: ignore[union-attr]  # what a place map is read as
    source.datum = DATUM  # type: ignore[union-attr]
    assert model_datum(ck) == DATUM
    r = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), RenderEngine(EngineConfig(warmup=0), ck), factory)
    assert r.place.active and r.place.what == "keyframe"
    assert r.place.distance_m(*_near(3.0, 3.0)[:2]) < 5.0  # within the keyframes' grid (0-2 m, 24 m up)
