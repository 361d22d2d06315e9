"""Node specs: validation, parameter ranges and live changes, and one offline runner serving every node."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pose2rgbd.config import help_field, param_ranges, ranged_field
from pose2rgbd.errors import BagError, ConfigError
from pose2rgbd.inference import EngineConfig, RenderEngine
from pose2rgbd.messages import TypestoreFactory, new_typestore, pose_to_matrix, register_custom_msgs
from pose2rgbd.nodes import NODES, RECORDER, RENDERER, Recorder, RecorderConfig, Renderer, RendererConfig, node_spec
from pose2rgbd.nodes.spec import Input, NodeSpec, Output, TFNeed, Timer, config_from_flat, parameter_change
from pose2rgbd.runtime.offline import run_node_bag
from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint


@pytest.fixture(scope="module")
def engine() -> RenderEngine:
    return RenderEngine(EngineConfig(warmup=0), make_ground_plane_checkpoint(32))


@pytest.fixture(scope="module")
def factory() -> TypestoreFactory:
    return TypestoreFactory(register_custom_msgs(new_typestore("humble")))


@pytest.fixture(scope="module")
def flight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    path = tmp_path_factory.mktemp("spec") / "flight"
    write_flight_bag(path, duration_s=1.5, size=32)
    return path


# ---------------------------------------------------------------------------------------------- specs
def test_node_table() -> None:
    assert NODES["render"] is RENDERER and NODES["record"] is RECORDER
    assert node_spec("pose2rgbd_renderer") is RENDERER
    with pytest.raises(ConfigError, match="unknown node"):
        node_spec("teleport")


def test_spec_validation_names_the_problem() -> None:
    def build(*_: Any, **__: Any) -> None:
        return None

    with pytest.raises(ConfigError, match=r"topics\.nope"):
        NodeSpec("x", RendererConfig, build, inputs=(Input("topics.nope", ("std_msgs/msg/Bool",), "h"),))
    with pytest.raises(ConfigError, match="rate_hz"):  # a number is not a topic name
        NodeSpec("x", RendererConfig, build, outputs=(Output("rate_hz", "std_msgs/msg/Bool"),))
    with pytest.raises(ConfigError, match="live parameter 'speed'"):
        NodeSpec("x", RendererConfig, build, live=("speed",))


def test_logic_is_checked_against_its_spec(flight: Path, tmp_path: Path) -> None:
    class Half:
        def __init__(self, cfg: EchoConfig, *_: Any, **__: Any) -> None:
            self.cfg = cfg

        def on_pose(self, msg: Any, now_ns: int) -> None:
            return None

    spec = NodeSpec(
        "half",
        EchoConfig,
        Half,
        inputs=ECHO.inputs,
        timers=ECHO.timers,
        tf=ECHO.tf,
        live=("lift",),
    )
    with pytest.raises(ConfigError, match=r"'half': Half lacks on_parameter_change, set_tf_lookup, tf_update, tick"):
        run_node_bag(spec, EchoConfig(), flight, None)


def test_parameters_carry_ranges_and_live_flags() -> None:
    p = RENDERER.parameters()
    assert p["rate_hz"].range == (0.0, 1000.0) and p["rate_hz"].live
    assert p["engine.checkpoint"].range is None and not p["engine.checkpoint"].live
    assert p["publish.depth"].live  # "publish.*"
    assert p["rate_hz"].description.startswith("render rate")
    r = RECORDER.parameters()
    assert r["sync.queue_size"].range == (1, 100000) and r["min_fix_status"].range == (-1, 2)
    assert param_ranges(RecorderConfig)["sync.max_gap_s"] == (0.001, 60.0)
    with pytest.raises(ConfigError, match=r"rate_hz: -1\.0 is outside its range"):
        config_from_flat(RendererConfig, {"rate_hz": -1.0})
    with pytest.raises(ConfigError, match="outside its range"):
        ranged_field(5.0, "x", 0.0, 1.0)


def test_renderer_parameter_changes(engine: RenderEngine, factory: TypestoreFactory) -> None:
    cfg = RendererConfig()
    r = Renderer(cfg, engine, factory)
    assert r.on_parameter_change("rate_hz", 5.0) == (True, "")
    assert r.cfg.rate_hz == 5.0 and cfg.rate_hz == 10.0  # the caller's config is not modified
    assert RENDERER.timers[0].period_s(r.cfg) == pytest.approx(0.2)  # the host re-creates the timer from this
    ok, why = r.on_parameter_change("engine.checkpoint", "/other.pt")
    assert not ok and "engine.checkpoint is read when the node is configured" in why and "configure" in why
    ok, why = r.on_parameter_change("pose_source", "topic")
    assert not ok and "configured" in why
    ok, why = r.on_parameter_change("rate_hz", 5000.0)
    assert not ok and "outside its range [0.0, 1000.0]" in why
    ok, why = r.on_parameter_change("rate_hz", 0.0)  # cross-field rule: tf source needs a rate
    assert not ok and "rate_hz must be > 0" in why
    assert r.on_parameter_change("publish.depth", False)[0] and not r.cfg.publish.depth
    ok, why = r.on_parameter_change("world_frame", "odom")  # the model's frame, fixed when it is loaded
    assert not ok and "world_frame is read when the node is configured" in why
    assert r.on_parameter_change("warn_throttle_s", 1.0)[0] and r._warn.period_ns == 1_000_000_000
    look_engine = RenderEngine(EngineConfig(warmup=0, lookahead=2), make_ground_plane_checkpoint(32))
    look = Renderer(cfg, look_engine, factory)
    ok, why = look.on_parameter_change("rate_hz", 5.0)
    assert not ok and "look-ahead" in why


def test_recorder_parameter_changes(factory: TypestoreFactory) -> None:
    rec = Recorder(RecorderConfig(), factory)
    assert rec.on_parameter_change("sync.slop_s", 0.2) == (True, "")
    assert rec._approx.slop_ns == 200_000_000
    ok, why = rec.on_parameter_change("world_frame", "odom")  # the dataset manifest holds it
    assert not ok and "world_frame is read when the node is configured" in why and rec.cfg.world_frame == "map"
    ok, why = rec.on_parameter_change("sync.policy", "approximate")
    assert not ok and "sync.policy is read when the node is configured" in why
    ok, why = rec.on_parameter_change("sync.slop_s", 20.0)
    assert not ok and "outside its range" in why
    ok, why = rec.on_parameter_change("sync.max_gap_s", 0.2)  # the dataset manifest records it
    assert not ok and "sync.max_gap_s is read when the node is configured" in why
    assert parameter_change(RecorderConfig(), "nope", 1, ("nope",))[1].startswith("nope: not a parameter")


def test_configure_spaces_lookahead_at_the_node_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from pose2rgbd.nodes import renderer

    seen: list[tuple[EngineConfig, float]] = []

    def from_config(c: EngineConfig, *, lookahead_rate_hz: float = 10.0) -> str:
        seen.append((c, lookahead_rate_hz))
        return "engine"

    monkeypatch.setattr(renderer.RenderEngine, "from_config", staticmethod(from_config))
    cfg = RendererConfig(rate_hz=25.0)
    assert RENDERER.configure(cfg) == {"engine": "engine"}
    assert seen[0] == (cfg.engine, 25.0)  # the node's rate spaces the look-ahead poses
    assert "lookahead_rate_hz" not in {f.name for f in dataclasses.fields(EngineConfig)}  # no ignored parameter
    with pytest.raises(ConfigError, match=r"engine\.lookahead > 0 needs rate_hz > 0"):
        RendererConfig(pose_source="topic", rate_hz=0.0, engine=EngineConfig(lookahead=2))


def test_engine_parameters_declare_their_ranges() -> None:
    ranges = param_ranges(RendererConfig)
    for name in ("threads", "warmup", "lookahead", "tolerance_m", "tolerance_deg", "oob_margin", "expect_size"):
        assert f"engine.{name}" in ranges, name
    assert ranges["engine.lookahead"] == (0, 64)
    with pytest.raises(ConfigError, match=r"engine.lookahead: 65 is outside its range \[0, 64\]"):
        EngineConfig(lookahead=65)
    with pytest.raises(ConfigError, match=r"engine\.tolerance_m"):
        EngineConfig(tolerance_m=-1.0)


# ---------------------------------------------------------------------------------------------- one runner
def test_runner_serves_both_nodes_from_their_specs(flight: Path, engine: RenderEngine, tmp_path: Path) -> None:
    from pose2rgbd.bags import open_bag
    from pose2rgbd.dataset import Dataset

    cfg = RendererConfig(rate_hz=5.0)
    stats = run_node_bag(RENDERER, cfg, flight, tmp_path / "render", resources={"engine": engine})
    assert stats.counters["frames"] >= 6 and len(stats.latency_ms) == stats.counters["frames"]
    assert cfg == RendererConfig(rate_hz=5.0)  # the runner does not touch the config
    rec_cfg = RecorderConfig()
    rec_cfg.output.dataset = str(tmp_path / "ds")
    stats = run_node_bag(RECORDER, rec_cfg, flight, tmp_path / "record")
    assert stats.counters["frames"] == len(Dataset(tmp_path / "ds")) > 0
    assert rec_cfg.topics.compressed is False  # the image type came from the bag, the config is untouched
    with open_bag(tmp_path / "record") as bag:
        assert bag.topics["/synced_frame"].count == stats.counters["frames"]
        assert bag.topics["/diagnostics"].count >= 1  # the spec's diagnostics timer, at bag time


def test_runner_errors_name_what_is_missing(flight: Path, engine: RenderEngine, tmp_path: Path) -> None:
    cfg = RecorderConfig()
    cfg.output.dataset = str(tmp_path / "ds")
    cfg.topics.gps = "/no/gps"
    with pytest.raises(BagError, match=r"topic '/no/gps' \(topics.gps, sensor_msgs/msg/NavSatFix\) not in bag"):
        run_node_bag(RECORDER, cfg, flight, None)
    with pytest.raises(ConfigError, match="expected a RendererConfig"):
        run_node_bag(RENDERER, RecorderConfig(), flight, tmp_path / "o")


# ---------------------------------------------------------------------------------------------- a new node
@dataclass
class EchoTopics:
    pose: str = help_field("/ground_truth/pose", "input poses")
    echo: str = help_field("echo", "output: the input pose moved up by `lift`")


@dataclass
class EchoConfig:
    lift: float = ranged_field(1.0, "metres added to z", 0.0, 100.0)
    topics: EchoTopics = field(default_factory=EchoTopics, metadata={"help": "topics"})


class Echo:
    def __init__(self, cfg: EchoConfig, factory: Any, logger: Any = None) -> None:
        self.cfg, self.f = cfg, factory
        self.counters = {"frames": 0, "ticks": 0, "tf_seen": 0}
        self.last_latency_ms = 0.5
        self.lookup: Any = None

    def set_tf_lookup(self, lookup: Any) -> None:
        self.lookup = lookup

    def on_parameter_change(self, name: str, value: Any) -> tuple[bool, str]:
        new, reason = parameter_change(self.cfg, name, value, ECHO.live)
        if new is not None:
            self.cfg = new
        return new is not None, reason

    def on_pose(self, msg: Any, now_ns: int) -> list[tuple[str, Any]]:
        from pose2rgbd.messages import pose_stamped

        T = pose_to_matrix(msg.pose)
        T[2, 3] += self.cfg.lift
        self.counters["frames"] += 1
        return [(self.cfg.topics.echo, pose_stamped(self.f, now_ns, "map", T))]

    def tick(self, now_ns: int) -> None:
        self.counters["ticks"] += 1

    def tf_update(self, now_ns: int) -> bool:
        from pose2rgbd.geometry import TransformException

        self.counters["tf_seen"] += 1
        try:
            self.lookup("map", "base_link", 0)
        except TransformException:
            return False  # called again on the next TF message
        return True


ECHO = NodeSpec(
    name="echo",
    config=EchoConfig,
    build=lambda cfg, factory, logger=None, **_: Echo(cfg, factory, logger),
    inputs=(Input("topics.pose", ("geometry_msgs/msg/PoseStamped",), Echo.on_pose),),
    outputs=(Output("topics.echo", "geometry_msgs/msg/PoseStamped"),),
    timers=(Timer(lambda c: 0.5, Echo.tick),),
    tf=TFNeed(on_update=Echo.tf_update),
    live=("lift",),
)


def test_a_new_node_is_one_spec(flight: Path, tmp_path: Path) -> None:
    from pose2rgbd.bags import open_bag

    stats = run_node_bag(ECHO, EchoConfig(lift=2.0), flight, tmp_path / "echo", namespace="e")
    c = stats.counters
    assert c["frames"] == 15 and c["ticks"] == 3 and c["tf_seen"] == 2  # ticks at 0.5, 1 and 1.5 s
    assert stats.latency_ms == [0.5] * 15
    with open_bag(tmp_path / "echo") as bag:
        out = [pose_to_matrix(m.msg.pose) for m in bag.messages(["/e/echo"])]
        gt = [pose_to_matrix(m.msg.pose) for m in open_bag(flight).messages(["/ground_truth/pose"])]
    np.testing.assert_allclose(np.array(out)[:, 2, 3], np.array(gt)[:, 2, 3] + 2.0)


def test_a_new_node_runs_through_the_generic_cli(
    flight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The toy node, added to the node table only, runs offline through `pose2rgbd node` with flags generated
    from its config (no CLI code of its own)."""
    from pose2rgbd.bags import open_bag
    from pose2rgbd.cli.main import main
    from pose2rgbd.nodes import registry

    monkeypatch.setitem(registry.NODES, "echo", ECHO)
    out = tmp_path / "echo"
    argv = ["node", "echo", "--bag", str(flight), "--out", str(out), "--lift", "3", "--set", "topics.echo=/lifted"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "echo:" in text and "frames" in text and "/lifted" in text
    with open_bag(out) as bag:
        z = [pose_to_matrix(m.msg.pose)[2, 3] for m in bag.messages(["/lifted"])]
    with open_bag(flight) as bag:
        gt = [pose_to_matrix(m.msg.pose)[2, 3] for m in bag.messages(["/ground_truth/pose"])]
    np.testing.assert_allclose(z, np.array(gt) + 3.0)
    assert main(["node", "echo", "--bag", str(flight), "--lift", "500"]) == 2  # its range, from its schema
    assert "--lift (lift): 500.0 is outside its range [0.0, 100.0]" in capsys.readouterr().err
    assert main(["node", "nope", "--bag", str(flight)]) == 2
    assert "unknown node 'nope'; known: render, record, localize, echo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("short", "path"),
    [("render", "config/render.yaml"), ("record", "config/record.yaml"), ("localize", "config/localize.yaml")],
)
def test_config_files_list_exactly_the_node_parameters(short: str, path: str) -> None:
    """config/<node>.yaml lists every parameter of the node, and nothing else (no parameter left silently unset
    or ignored), under `/**` (the node, whatever its namespace)."""
    import yaml

    from pose2rgbd.config import read_yaml_dict

    repo = Path(__file__).resolve().parents[1]
    spec = NODES[short]
    assert set(yaml.safe_load((repo / path).read_text())) == {"/**"}  # the node's, whatever its namespace

    def flat(d: dict[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    assert flat(read_yaml_dict(repo / path)) == set(spec.parameters())


# ---------------------------------------------------------------------------------------------- shared pieces
def test_a_spec_declares_the_dataset_its_node_writes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset key 'rate_hz' is not a string field of RendererConfig"):
        NodeSpec("x", RendererConfig, lambda *_, **__: None, dataset="rate_hz")
    cfg = RecorderConfig()
    assert RECORDER.dataset == "output.dataset" and RECORDER.dataset_dir(cfg) == ""
    cfg.output.dataset = str(tmp_path / "ds")
    assert RECORDER.dataset_dir(cfg) == str(tmp_path / "ds")
    assert RENDERER.dataset_dir(RendererConfig()) == "" and not RENDERER.dataset


def test_rejected_transforms_are_handled_one_way(
    engine: RenderEngine, factory: TypestoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Both runtimes feed TF through TFInput: one cache length, rejections counted and logged (throttled by the
    node's warn_throttle_s for NodeLogic, by a default for any other logic)."""
    import logging

    from pose2rgbd.messages import tf_message, transform_stamped
    from pose2rgbd.nodes.tf import TF_CACHE_S, TFInput

    bad = transform_stamped(factory, 10**9, "map", "base_link", np.eye(4))
    bad.transform.translation.x = float("nan")
    msg = tf_message(factory, [bad])
    r = Renderer(RendererConfig(warn_throttle_s=10.0), engine, factory)
    tf = TFInput(r, logging.getLogger("test"))
    assert tf.buffer._cache_ns == int(TF_CACHE_S * 1e9)
    with caplog.at_level(logging.WARNING):
        for k in range(3):
            assert tf.add(msg, "/tf", static=False, now_ns=k * 10**9) == 1
        tf.add(msg, "/tf", static=False, now_ns=11 * 10**9)
    assert r.counters["tf_rejected"] == tf.rejected == 4
    lines = [m for m in caplog.messages if "rejected a transform on /tf" in m]
    assert len(lines) == 2 and "(4 so far)" in lines[1] and "(2 similar suppressed)" in lines[1]
    plain = type("Plain", (), {"counters": {}})()
    other = TFInput(plain, logging.getLogger("test"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        other.add(msg, "/tf_static", static=True, now_ns=0)
    assert plain.counters == {"tf_rejected": 1} and "rejected a transform on /tf_static" in caplog.text


def test_tf_input_clears_its_history_when_the_clock_jumps_back() -> None:
    """A bag played again under sim time: the node's clock goes back and so do the stamps. The dynamic history is
    cleared (the static mount stays), so the latest transform is the second play's, not the first play's last."""
    import logging

    import numpy as np

    from pose2rgbd.messages import default_factory, tf_message, transform_stamped
    from pose2rgbd.nodes.tf import TFInput

    f = default_factory()
    tf = TFInput(object(), logging.getLogger("test"))
    S = 10**9

    def at(t_s: float, x: float, static: bool = False, now_s: float | None = None) -> None:
        T = np.eye(4)
        T[0, 3] = x
        parent, child = ("base_link", "camera") if static else ("map", "base_link")
        tf.add(tf_message(f, [transform_stamped(f, int(t_s * S), parent, child, T)]), "/tf", static=static,
               now_ns=int((t_s if now_s is None else now_s) * S))  # fmt: skip

    at(0.0, 0.5, static=True)
    for t in (1.0, 2.0, 3.0, 4.0):
        at(t, t)
    T, stamp = tf.lookup_transform("map", "camera")
    assert stamp == 4 * S and T[0, 3] == 4.5
    at(1.5, 100.0, now_s=4.02)  # late data (an old stamp, the clock going on): kept with the rest
    assert tf.lookup_transform("map", "camera")[1] == 4 * S
    for t in (1.0, 1.1):  # the second play: 3.4 s back
        at(t, -t)
    T, stamp = tf.lookup_transform("map", "camera")
    assert stamp == int(1.1 * S) and abs(T[0, 3] - (-1.1 + 0.5)) < 1e-9  # the mount survived


def test_node_help_names_every_node_of_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.cli.main import main
    from pose2rgbd.nodes.registry import NODES

    with pytest.raises(SystemExit):
        main(["node", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in NODES), out


def test_a_transform_stamped_in_the_future_is_refused_not_rendered_until_the_clock_reaches_it(
    engine: RenderEngine, factory: TypestoreFactory
) -> None:
    """One TF message stamped 30 s ahead among good ones at 50 Hz: a latest-time lookup answered it (the render node
    published one frame stamped 30 s ahead, then nothing for 30 s while good TF kept coming, its diagnostics saying
    TF "has not moved on for -23.97 s"). The TF input refuses a dynamic transform stamped more than FUTURE_STAMP_S
    after the node's clock (counted, said why), so rendering goes on; a stamp within it (a publisher post-dating on
    purpose, as AMCL does) is kept, and the diagnostics say how far ahead it is, not a negative age; with the clock
    at 0 (sim time before its first /clock) nothing is refused."""
    import logging

    from pose2rgbd.messages import tf_message, transform_stamped
    from pose2rgbd.nodes.tf import FUTURE_STAMP_S, TFInput
    from pose2rgbd.testing.ground_plane import look_down_pose

    S = 10**9
    assert 1.0 < FUTURE_STAMP_S <= 10.0
    r = Renderer(RendererConfig(rate_hz=50.0), engine, factory)
    tf = TFInput(r, logging.getLogger("test"))

    def send(stamp_ns: int, now_ns: int, x: float = 1.0) -> int:
        msg = tf_message(factory, [transform_stamped(factory, stamp_ns, "map", "camera_optical_frame",
                                                     look_down_pose(x, 2.0, 12.0))])  # fmt: skip
        return tf.add(msg, "/tf", static=False, now_ns=now_ns)

    rendered = []
    for k in range(10):
        now = 100 * S + k * S // 50
        if k == 3:
            assert send(now + 30 * S, now) == 1  # the glitch: refused
        else:
            assert send(now, now, x=1.0 + 0.01 * k) == 0
        out = dict(r.tick(now + 1, tf.lookup_transform))
        rendered.append("rgbd" in out and out["rgbd"].header.stamp.sec < 110)
    assert rendered == [True, True, True, False, True, True, True, True, True, True], rendered
    said = tf.buffer.last_rejection
    assert r.counters["tf_rejected"] == 1 and "30.000 s after the node's clock" in said and "more than 5 s" in said
    assert "use_sim_time" in said, said
    # within the limit: kept and rendered; then, TF stopped, the age is said as a stamp ahead, not a negative age
    now = 200 * S
    assert send(now + 2 * S, now) == 0
    assert "rgbd" in dict(r.tick(now + 1, tf.lookup_transform))
    assert r.tick(now + S // 50, tf.lookup_transform) == []
    status = r.diagnostics(now + 3 * S).status[0]
    assert status.level == 1 and "after this node's clock" in status.message, status.message
    assert "for -" not in status.message, status.message
    # the clock at 0 (sim time before /clock): nothing to compare with, nothing refused
    fresh = TFInput(Renderer(RendererConfig(), engine, factory), logging.getLogger("test"))
    msg = tf_message(factory, [transform_stamped(factory, 500 * S, "map", "camera_optical_frame", np.eye(4))])
    assert fresh.add(msg, "/tf", static=False, now_ns=0) == 0
    # a link stamped ahead from its first transform (a bag whose stamps run on another clock than its log time): kept
    other = Renderer(RendererConfig(rate_hz=50.0), engine, factory)
    ahead = TFInput(other, logging.getLogger("test"))
    for k in range(3):
        now = 100 * S + k * S // 50
        msg = tf_message(factory, [transform_stamped(factory, now + 1000 * S, "map", "camera_optical_frame",
                                                     look_down_pose(1.0 + 0.01 * k, 2.0, 12.0))])  # fmt: skip
        assert ahead.add(msg, "/tf", static=False, now_ns=now) == 0
        assert "rgbd" in dict(other.tick(now + 1, ahead.lookup_transform))


def test_a_topic_pose_stamped_in_the_future_is_refused(engine: RenderEngine, factory: TypestoreFactory) -> None:
    from pose2rgbd.messages import default_factory, pose_stamped
    from pose2rgbd.testing.ground_plane import look_down_pose

    S = 10**9
    r = Renderer(RendererConfig(pose_source="topic"), engine, factory)
    f = default_factory()
    r.on_pose(pose_stamped(f, 100 * S, "map", look_down_pose(1.0, 2.0, 12.0)), 100 * S)
    assert "rgbd" in dict(r.tick(100 * S + 1))
    assert r.on_pose(pose_stamped(f, 131 * S, "map", look_down_pose(1.0, 2.0, 12.0)), 101 * S) == []
    assert r.tick(101 * S + 1) == [] and r.counters["rejected_poses"] == 1
    assert "stamped 30.00 s after this node's clock" in r._rejected_why, r._rejected_why
    r.on_pose(pose_stamped(f, 102 * S, "map", look_down_pose(1.0, 2.0, 12.0)), 102 * S)
    assert "rgbd" in dict(r.tick(102 * S + 1))  # the next pose in step is rendered
    # poses stamped ahead from the first (another clock than the node's): taken as they come, also where the first
    # arrived with the clock at 0 (sim time before /clock), which tells nothing
    r2 = Renderer(RendererConfig(pose_source="topic", rate_hz=0.0), engine, factory)
    assert "rgbd" in dict(r2.on_pose(pose_stamped(f, 999 * S, "map", look_down_pose(1.0, 2.0, 12.0)), 0))
    for k in range(3):
        out = dict(r2.on_pose(pose_stamped(f, (1000 + k) * S, "map", look_down_pose(1.0, 2.0, 12.0)), (100 + k) * S))
        assert "rgbd" in out
    assert r2.counters["rejected_poses"] == 0
