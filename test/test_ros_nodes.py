"""rclpy runtime (marker ``ros``: skipped when rclpy is absent). Runs the host against a real ROS 2 install."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from pose2rgbd.config import help_field, ranged_field
from pose2rgbd.nodes.spec import Input, NodeSpec, Output, Timer, parameter_change

pytestmark = pytest.mark.ros


@pytest.fixture
def rclpy_context(monkeypatch, ros_domain_id):  # type: ignore[no-untyped-def]
    rclpy = pytest.importorskip("rclpy")
    # nodes are created (DDS participants): a random domain, discovery on localhost only
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    try:
        yield rclpy
    finally:
        if rclpy.ok():
            rclpy.shutdown()


# A toy node on std_msgs only: Int32 in -> Int32 (value * gain) out, plus a timer.
@dataclass
class ToyTopics:
    input: str = help_field("toy_in", "input (std_msgs/Int32)")
    output: str = help_field("toy_out", "output (std_msgs/Int32)")


@dataclass
class ToyConfig:
    gain: int = ranged_field(2, "output = input * gain", 0, 10)
    period_s: float = ranged_field(0.0, "timer period (0: off)", 0.0, 5.0)
    topics: ToyTopics = field(default_factory=ToyTopics, metadata={"help": "topics"})


class Toy:
    def __init__(self, cfg: ToyConfig, factory: Any, logger: Any = None) -> None:
        self.cfg, self.f = cfg, factory
        self.counters = {"in": 0, "ticks": 0}

    def on_int(self, msg: Any, now_ns: int) -> list[tuple[str, Any]]:
        self.counters["in"] += 1
        return [(self.cfg.topics.output, self.f.new("std_msgs/msg/Int32", data=msg.data * self.cfg.gain))]

    def tick(self, now_ns: int) -> list[tuple[str, Any]]:
        self.counters["ticks"] += 1
        return []

    def on_parameter_change(self, name: str, value: Any) -> tuple[bool, str]:
        new, reason = parameter_change(self.cfg, name, value, ("gain", "period_s"))
        if new is None:
            return False, reason
        self.cfg = new
        return True, ""


TOY = NodeSpec(
    name="toy",
    config=ToyConfig,
    build=lambda cfg, factory, logger=None, **_: Toy(cfg, factory, logger),
    inputs=(Input("topics.input", ("std_msgs/msg/Int32",), Toy.on_int, qos="reliable"),),
    outputs=(Output("topics.output", "std_msgs/msg/Int32"),),
    timers=(Timer(lambda c: c.period_s, Toy.tick),),
    live=("gain", "period_s"),
)


def test_factory_builds_rclpy_messages(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    from pose2rgbd import messages as M
    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd_ros.factory import RclpyFactory

    f = RclpyFactory()
    img = M.image(f, 1_500_000_000, "cam", np.full((4, 5), 2.5, np.float32), "32FC1")
    assert img.width == 5 and img.step == 20 and len(img.data) == 80
    np.testing.assert_allclose(M.image_to_numpy(img), 2.5)
    info = M.camera_info(f, 1_500_000_000, "cam", PinholeCamera.from_fov(5, 4, 90.0))
    assert M.camera_from_info(info).width == 5
    d = M.diagnostic_array(f, 0, "x", 1, "warn", {"a": 1})
    assert d.status[0].level == b"\x01"


def test_interfaces_built_from_an_older_definition_are_refused_by_name(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    """pose2rgbd's own interfaces as built (.ros/ or a colcon install) have every field of msg/ and srv/ (this
    fails on a stale build); a generated class without one -- interfaces built before an update -- is refused with
    the type, the missing fields and the command that builds them again, not a KeyError at the first message."""
    from pose2rgbd.errors import ConfigError
    from pose2rgbd_ros.factory import RclpyFactory, check_built_interface

    f = RclpyFactory()
    rgbd = f.cls("pose2rgbd/msg/RGBD")
    assert "depth_sigma" in rgbd.get_fields_and_field_types()
    f.cls("pose2rgbd/msg/SyncedFrame")
    srv = f.cls("pose2rgbd/srv/RenderAtPose")
    check_built_interface("sensor_msgs/msg/Image", object)  # another package's type: not ours to check

    class StaleRGBD:
        __module__ = rgbd.__module__

        @staticmethod
        def get_fields_and_field_types() -> dict[str, str]:
            return {k: v for k, v in rgbd.get_fields_and_field_types().items() if k != "depth_sigma"}

    with pytest.raises(ConfigError, match=r"pose2rgbd/msg/RGBD .* lacks the field\(s\) depth_sigma .*colcon build"):
        check_built_interface("pose2rgbd/msg/RGBD", StaleRGBD)

    class StaleResponse:
        @staticmethod
        def get_fields_and_field_types() -> dict[str, str]:
            return {"success": "boolean", "message": "string"}

    StaleService = type("StaleService", (), {"__module__": srv.__module__, "Request": srv.Request,
                                             "Response": StaleResponse})  # fmt: skip
    with pytest.raises(ConfigError, match=r"lacks the field\(s\) Response\.rgbd "):
        check_built_interface("pose2rgbd/srv/RenderAtPose", StaleService)


def test_a_sensor_data_input_keeps_the_queue_its_spec_asks_for(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    """The localize node's images: sensor-data QoS with a queue of 1 (the newest wins when the localizer is slower
    than the camera); rclpy's sensor-data profile alone has 5, which the host had used for every such input."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

    from pose2rgbd.nodes.localizer.node import LOCALIZER
    from pose2rgbd_ros.host import _qos

    images = next(i for i in LOCALIZER.inputs if i.topic == "topics.image")
    assert (images.qos, images.depth) == ("sensor_data", 1)
    q = _qos(images.qos, images.depth)
    assert q.depth == 1 and q.history == HistoryPolicy.KEEP_LAST
    assert q.reliability == ReliabilityPolicy.BEST_EFFORT and q.durability == DurabilityPolicy.VOLATILE
    assert _qos("sensor_data", Input("t", ("std_msgs/msg/Int32",), Toy.on_int).depth).depth == 5  # the profile's
    assert _qos("reliable", 7).reliability == ReliabilityPolicy.RELIABLE and _qos("reliable", 7).depth == 7


def test_host_declares_parameters_with_descriptions_and_ranges(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    from rclpy.parameter import Parameter

    from pose2rgbd.nodes.recorder import RECORDER
    from pose2rgbd_ros.host import NodeHost

    # a whole number for a float parameter (`-p rate_hz:=5`, `rate_hz: 5` in a params file) is that float: rclpy
    # refused it (INTEGER for DOUBLE) and the node exited
    overrides = [Parameter("autostart", value=False), Parameter("sync.max_gap_s", value=0.25),
                 Parameter("max_speed_mps", value=70)]  # fmt: skip
    assert isinstance(RECORDER.parameters()["max_speed_mps"].default, float)
    node = NodeHost(RECORDER, parameter_overrides=overrides)  # not configured: no TF, no custom messages needed
    try:
        assert node.get_parameter("sync.max_gap_s").value == 0.25
        got = node.get_parameter("max_speed_mps")
        assert got.type_ == Parameter.Type.DOUBLE and got.value == 70.0
        for name, p in RECORDER.parameters().items():
            d = node.describe_parameter(name)
            assert d.description == p.description
            if p.range is not None and isinstance(p.default, float):
                assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == p.range
        assert node.describe_parameter("sync.queue_size").integer_range[0].from_value == 1
        # unconfigured: any valid value is taken (read at configure); invalid ones are refused with the reason
        assert node.set_parameters([Parameter("sync.policy", value="approximate")])[0].successful
        bad = node.set_parameters([Parameter("sync.policy", value="nearest")])[0]
        assert not bad.successful and "sync.policy" in bad.reason
        assert not node.set_parameters([Parameter("sync.max_gap_s", value=100.0)])[0].successful  # out of range
    finally:
        node.destroy_node()


def test_host_lifecycle_and_live_parameters(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    from lifecycle_msgs.msg import State
    from rclpy.parameter import Parameter
    from std_msgs.msg import Int32

    from pose2rgbd_ros.host import NodeHost

    node = NodeHost(TOY, parameter_overrides=[Parameter("autostart", value=False)])
    try:
        assert node.logic is None  # built in on_configure
        node.trigger_configure()
        assert node.logic is not None and node._state_machine.current_state[0] == State.PRIMARY_STATE_INACTIVE
        node.trigger_activate()
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE
        out = node._input_callback(Toy.on_int)
        got: list[int] = []
        assert "toy_out" in node._host_pubs
        node._publish = lambda outs: got.extend(m.data for _, m in outs or [])  # type: ignore[method-assign]
        out(Int32(data=3))
        assert got == [6]
        assert node.set_parameters([Parameter("gain", value=5)])[0].successful  # live
        out(Int32(data=3))
        assert got == [6, 15]
        r = node.set_parameters([Parameter("topics.input", value="other")])[0]
        assert not r.successful and "configure" in r.reason
        assert node.get_parameter("topics.input").value == "toy_in"
        assert not node.set_parameters([Parameter("gain", value=11)])[0].successful  # the range
        assert node.set_parameters([Parameter("period_s", value=0.5)])[0].successful
        assert node._host_timers[0][1] == 0.5  # the timer was created with the new period
        node.trigger_deactivate()
        assert node._host_subs == [] and node._host_timers == {}
        node.trigger_cleanup()
        assert node.logic is None
    finally:
        node.destroy_node()


def test_render_node_refuses_missing_checkpoint(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd_ros.node_main import make_node

    with pytest.raises(CheckpointError):
        make_node("render")


def test_run_node_exits_cleanly_when_a_take_races_the_shutdown(monkeypatch, ros_domain_id) -> None:  # type: ignore[no-untyped-def]
    """rclpy can fail a take that races Ctrl-C's context shutdown (a RuntimeError from pybind11): after the
    shutdown that is exit 0, while the context is still up the same error propagates."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor

    from pose2rgbd_ros.spin import run_node

    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain_id))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    closed: list[bool] = []

    class Racing(SingleThreadedExecutor):
        def __init__(self, shut_down_first: bool) -> None:
            super().__init__()
            self.shut_down_first = shut_down_first

        def spin(self) -> None:  # type: ignore[override]
            if self.shut_down_first:
                rclpy.shutdown()
            raise RuntimeError("Unable to convert call argument '0' to Python object")

    class ClosingNode(rclpy.node.Node):
        def close(self) -> None:
            closed.append(True)

    assert run_node(None, lambda: ClosingNode("racing"), lambda: Racing(True), "racing") == 0
    assert closed == [True]
    with pytest.raises(RuntimeError, match="Unable to convert"):
        run_node(None, lambda: ClosingNode("racing"), lambda: Racing(False), "racing")
    assert closed == [True, True] and not rclpy.ok()


# A toy node that looks TF up on its timer after a slow piece of work (a render): the TF subscriptions are taken on
# demand, not through the executor (pose2rgbd_ros/host.py, "Threads and TF").
@dataclass
class TFToyConfig:
    period_s: float = ranged_field(0.0, "timer period (0: off)", 0.0, 5.0)
    busy_s: float = ranged_field(0.0, "how long each tick works before its lookup", 0.0, 5.0)
    timeout_s: float = ranged_field(0.0, "how long a lookup may wait", 0.0, 10.0)


class TFToy:
    def __init__(self, cfg: TFToyConfig, factory: Any, logger: Any = None) -> None:
        self.cfg = cfg
        self.lookup: Any = None
        self.counters: dict[str, int] = {}
        self.seen: list[int | str] = []  # each tick's looked-up stamp, or its error

    def set_tf_lookup(self, lookup: Any) -> None:
        self.lookup = lookup

    def on_parameter_change(self, name: str, value: Any) -> tuple[bool, str]:
        return False, "not live"

    def tick(self, now_ns: int) -> list[tuple[str, Any]]:
        from pose2rgbd.geometry import TransformException

        time.sleep(self.cfg.busy_s)
        try:
            self.seen.append(self.lookup("map", "base_link", 0)[1])
        except TransformException as e:
            self.seen.append(str(e))
        return []


def _tf_toy_spec() -> NodeSpec:
    from pose2rgbd.nodes.spec import TFNeed

    return NodeSpec(
        name="tf_toy",
        config=TFToyConfig,
        build=lambda cfg, factory, logger=None, **_: TFToy(cfg, factory, logger),
        timers=(Timer(lambda c: c.period_s, TFToy.tick),),
        tf=TFNeed(timeout_s=lambda c: c.timeout_s),
    )


def _tf_message(stamp_ns: int) -> Any:
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    t = TransformStamped()
    t.header.stamp.sec, t.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    t.header.frame_id, t.child_frame_id = "map", "base_link"
    t.transform.translation.x = stamp_ns * 1e-9
    t.transform.rotation.w = 1.0
    return TFMessage(transforms=[t])


def _spin_until(executor: Any, cond: Any, timeout_s: float, what: Any) -> None:
    """Spin ``executor`` until ``cond()``; after ``timeout_s`` fail saying ``what`` (text, or a callable giving it)."""
    end = time.monotonic() + timeout_s
    while not cond():
        executor.spin_once(timeout_sec=0.01)
        assert time.monotonic() < end, what() if callable(what) else what


@contextlib.contextmanager
def _tf_toy_host(rclpy: Any, params: dict[str, Any]) -> Iterator[tuple[Any, Any, Any]]:
    """``(host, source, executor)``: a :class:`TFToy` host with ``params`` on the executor the node would get, and a
    plain node of this test to publish from; all destroyed at the end."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from pose2rgbd_ros.host import NodeHost, make_executor

    spec = _tf_toy_spec()
    node = NodeHost(spec, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    source = rclpy.create_node("tf_source")
    executor = make_executor(spec)
    assert isinstance(executor, SingleThreadedExecutor)  # one thread: TF cannot arrive through a second one
    executor.add_node(node)
    try:
        yield node, source, executor
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        source.destroy_node()


def _spin_tf_toy(rclpy: Any, params: dict[str, float], publish: Any, until: Any, timeout_s: float = 20.0) -> TFToy:
    """Spin a :class:`TFToy` host on the node's own executor while ``publish(publisher)`` runs on a thread of this
    test, until ``until(logic)``; returns the logic."""
    import threading

    from tf2_msgs.msg import TFMessage

    from pose2rgbd_ros.host import tf_qos

    with _tf_toy_host(rclpy, params) as (node, source, executor):
        pub = source.create_publisher(TFMessage, "/tf", tf_qos(static=False))
        logic = node.logic
        # discovery first: a message sent before it would be lost
        _spin_until(executor, lambda: pub.get_subscription_count() > 0, timeout_s, "the /tf subscription not found")
        thread = threading.Thread(target=publish, args=(pub,), daemon=True)
        thread.start()
        _spin_until(executor, lambda: until(logic), timeout_s, lambda: f"timed out; the ticks saw {logic.seen}")
        thread.join(timeout_s)
        return logic


def test_host_lookup_sees_the_tf_that_arrived_during_a_long_callback(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    """A tick that works for 0.6 s while /tf arrives at 200 Hz looks up the newest transform sent before its lookup:
    the TF messages are taken at the lookup, not one per executor turn behind the tick (where they queued behind every
    render and the poses went stale)."""
    import threading

    S = 1_000_000_000
    sent: list[int] = []
    done = threading.Event()

    def publish(pub: Any) -> None:
        for k in range(1, 4000):  # at 200 Hz until the ticks are done (20 s at most)
            if done.is_set():
                return
            sent.append((k * S) // 200)
            pub.publish(_tf_message(sent[-1]))
            time.sleep(0.005)

    def three_ticks(lg: TFToy) -> bool:
        if len(lg.seen) >= 3:
            done.set()
        return done.is_set()

    logic = _spin_tf_toy(rclpy_context, {"period_s": 0.05, "busy_s": 0.6}, publish, three_ticks, timeout_s=30.0)
    stamps = [s for s in logic.seen if isinstance(s, int)]
    assert stamps, logic.seen
    # the last tick finished its work while messages still arrived: it saw one within the last few sent before it
    # (0.6 s of messages, 120, queued while it worked: one turn per message would have left it 0.6 s behind)
    last = stamps[-1]
    assert last in sent
    assert sent.index(last) >= 100, (sent.index(last), len(sent))
    # and every tick's stamp is newer than the one before: each took what arrived since the last
    assert stamps == sorted(set(stamps))


def test_host_lookup_waits_for_tf_sent_after_it_began(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    """With a TF timeout, a lookup on the executor's only thread still sees a transform published while it waits
    (it takes TF again as it waits); without one it fails at once."""

    def publish_late(pub: Any) -> None:
        time.sleep(0.8)  # the tick is already waiting
        for k in range(5):
            pub.publish(_tf_message(10_000_000_000 + k))
            time.sleep(0.01)

    logic = _spin_tf_toy(rclpy_context, {"period_s": 0.3, "timeout_s": 5.0}, publish_late, lambda lg: len(lg.seen) >= 1)
    assert logic.seen[0] == 10_000_000_000, logic.seen


def test_host_tf_of_a_bag_played_again_under_sim_time_is_the_second_plays(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    """Under sim time, /clock going back (a bag played again) clears TF's dynamic history: the transforms of the first
    play still waiting in the queue are taken before the jump (with the clock they arrived under), so the lookup after
    it answers with the second play's newest transform, not the first's."""
    from rosgraph_msgs.msg import Clock
    from tf2_msgs.msg import TFMessage

    from pose2rgbd_ros.host import tf_qos

    S = 1_000_000_000
    with _tf_toy_host(rclpy_context, {"use_sim_time": True}) as (node, source, executor):
        tf_pub = source.create_publisher(TFMessage, "/tf", tf_qos(static=False))
        clock_pub = source.create_publisher(Clock, "/clock", 10)

        def clock(ns: int) -> None:
            m = Clock()
            m.clock.sec, m.clock.nanosec = divmod(ns, S)
            clock_pub.publish(m)
            _spin_until(executor, lambda: node.get_clock().now().nanoseconds == ns, 20.0, f"the clock not at {ns}")

        def send(*stamps: int) -> None:
            for s in stamps:
                tf_pub.publish(_tf_message(s))
            time.sleep(0.5)  # delivered to the node's queue; not taken (nothing is spun)

        def discovered() -> bool:
            return tf_pub.get_subscription_count() > 0 and clock_pub.get_subscription_count() > 0

        _spin_until(executor, discovered, 20.0, "discovery")
        clock(100 * S)
        send(100 * S + 1, 100 * S + 2)
        assert node._lookup("map", "base_link", 0)[1] == 100 * S + 2
        send(100 * S + 3, 100 * S + 4)  # the end of the first play, still queued when the clock goes back
        clock(1 * S)
        send(1 * S + 1, 1 * S + 2)
        assert node._lookup("map", "base_link", 0)[1] == 1 * S + 2


def test_host_tf_subscription_still_reports_an_incompatible_publisher(rclpy_context, capfd) -> None:  # type: ignore[no-untyped-def]
    """The TF subscriptions are outside the executor, their QoS events are not: a best-effort /tf publisher (which a
    reliable subscription never hears) is logged as incompatible, as rclpy does for any subscription."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    with _tf_toy_host(rclpy_context, {}) as (_node, source, executor):
        source.create_publisher(TFMessage, "/tf", QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
        seen = [""]

        def warned() -> bool:
            seen[0] += capfd.readouterr().err
            return "incompatible QoS" in seen[0]

        _spin_until(executor, warned, 10.0, lambda: f"no incompatible-QoS warning: {seen[0]}")
        assert "/tf" in seen[0], seen[0]


def test_host_names_a_parameter_given_that_the_node_does_not_have(rclpy_context, capfd) -> None:  # type: ignore[no-untyped-def]
    """``--ros-args -p gian:=3`` (a typo of ``gain``): rclpy keeps such an override unused without a word; the host
    warns, naming it and the nearest parameter, and says it again when configure fails. Parameters of the node and
    of rclpy itself (use_sim_time) and autostart are not named."""
    from pose2rgbd_ros.host import NodeHost

    args = ["--ros-args", "-p", "autostart:=false", "-p", "use_sim_time:=false", "-p", "gain:=3", "-p", "gian:=4",
            "-p", "topics.inptu:=x", "-p", "zzz:=1"]  # fmt: skip
    node = NodeHost(TOY, cli_args=args)
    try:
        said = node.unknown_parameters
        assert said.startswith("not a parameter of toy, ignored: 'gian' (did you mean gain?), "), said
        assert "'topics.inptu' (did you mean topics.input or topics.output?)" in said and "'zzz';" in said, said
        assert "autostart" not in said and "use_sim_time" not in said and "'gain'" not in said, said
        assert node.get_parameter("gain").value == 3 and "as if they were not given" in said
        assert said in capfd.readouterr().err
    finally:
        node.destroy_node()
    plain = NodeHost(TOY, cli_args=["--ros-args", "-p", "autostart:=false", "-p", "gain:=3"])
    try:
        assert plain.unknown_parameters == ""
    finally:
        plain.destroy_node()


def test_render_node_says_which_parameter_was_misspelt_when_configure_fails(rclpy_context, capfd) -> None:  # type: ignore[no-untyped-def]
    """``-p engine.chekpoint:=...``: the configure failure (no checkpoint) names the misspelt parameter too."""
    from pose2rgbd.errors import CheckpointError
    from pose2rgbd_ros.node_main import make_node

    with pytest.raises(CheckpointError):
        make_node("render", cli_args=["--ros-args", "-p", "engine.chekpoint:=/tmp/model.pt"])
    err = capfd.readouterr().err
    failed = [line for line in err.splitlines() if "configure failed" in line]
    assert len(failed) == 1, err
    assert "'engine.chekpoint' (did you mean engine.checkpoint" in failed[0], failed


def test_the_cores_warnings_go_to_the_nodes_ros_logger(rclpy_context, capfd) -> None:  # type: ignore[no-untyped-def]
    """A warning the ROS-free core logs (Python logging, e.g. "query camera not given") reaches the node's ROS
    logger -- its name, /rosout -- while the node lives, and no longer once it is destroyed."""
    import logging

    from pose2rgbd_ros.host import NodeHost

    node = NodeHost(TOY, cli_args=["--ros-args", "-p", "autostart:=false"])
    try:
        capfd.readouterr()
        logging.getLogger("pose2rgbd.inference.structure").warning("query camera not given (a test)")
        err = capfd.readouterr().err
        assert "[toy]" in err and "pose2rgbd.inference.structure: query camera not given (a test)" in err, err
    finally:
        node.destroy_node()
    assert node.core_log not in logging.getLogger("pose2rgbd").handlers


# A toy node built on NodeLogic: its diagnostics timer (NodeLogic.diagnostics_tick) and one more output.
@dataclass
class DiagToyTopics:
    output: str = help_field("diag_toy_out", "output (std_msgs/Int32)")
    diagnostics: str = help_field("diag_toy_diagnostics", "diagnostics (diagnostic_msgs/DiagnosticArray)")


@dataclass
class DiagToyConfig:
    warn_throttle_s: float = ranged_field(5.0, "warning throttle", 0.0, 60.0)
    diagnostics_period_s: float = ranged_field(0.1, "diagnostics period (0: off)", 0.0, 5.0)
    topics: DiagToyTopics = field(default_factory=DiagToyTopics, metadata={"help": "topics"})


DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"


def _diag_toy_spec() -> NodeSpec:
    from pose2rgbd import messages as M
    from pose2rgbd.nodes.logic import NodeLogic

    class DiagToy(NodeLogic):
        live = ("diagnostics_period_s",)

        def diagnostics(self, now_ns: int) -> Any:
            return M.diagnostic_array(self.f, now_ns, "diag toy", 1, "waiting for input", {"frames": 0}, "cam")

        def tick(self, now_ns: int) -> list[tuple[str, Any]]:
            return [(self.cfg.topics.output, self.f.new("std_msgs/msg/Int32", data=1))]

    return NodeSpec(
        name="diag_toy",
        config=DiagToyConfig,
        build=lambda cfg, factory, logger=None, **_: DiagToy(cfg, factory, logger),
        outputs=(Output("topics.output", "std_msgs/msg/Int32"), Output("topics.diagnostics", DIAGNOSTIC_ARRAY)),
        timers=(Timer(lambda c: 0.1, DiagToy.tick), Timer(lambda c: c.diagnostics_period_s, DiagToy.diagnostics_tick)),
        live=DiagToy.live,
    )


def test_host_reports_inactive_on_diagnostics_until_cleanup(rclpy_context) -> None:  # type: ignore[no-untyped-def]
    """Configured but not active (before activate, after deactivate), a node still publishes its diagnostics: its
    own status at level OK saying it is inactive and how to activate it, at the diagnostics period (a diagnostic
    aggregator sees it alive, not stale). Its other outputs stay silent; active, the node's own status is back;
    cleaned up, nothing comes any more."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import Int32

    from pose2rgbd_ros.host import NodeHost

    node = NodeHost(_diag_toy_spec(), parameter_overrides=[Parameter("autostart", value=False)])
    listener = rclpy_context.create_node("diag_listener")
    diags: list[Any] = []
    outs: list[Any] = []
    listener.create_subscription(DiagnosticArray, "diag_toy_diagnostics", diags.append, 10)
    listener.create_subscription(Int32, "diag_toy_out", outs.append, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(listener)
    inactive = "inactive: activate with `ros2 lifecycle set /diag_toy activate`"

    def statuses(n: int, what: str) -> list[Any]:
        """The next ``n`` diagnostics received (after those before)."""
        start = len(diags)
        _spin_until(executor, lambda: len(diags) >= start + n, 10.0, f"{what}: {len(diags) - start} of {n} came")
        return [a.status[0] for a in diags[start : start + n]]

    try:
        node.trigger_configure()
        # discovery first: the first ticks may have gone before the listener was matched
        _spin_until(executor, lambda: len(diags) >= 2, 10.0, "no diagnostics while configured, not yet active")
        for st in statuses(3, "inactive after configure"):
            values = {kv.key: kv.value for kv in st.values}
            assert st.level == b"\x00" and st.message == inactive and (st.name, st.hardware_id) == ("diag toy", "cam")
            assert values == {"frames": "0", "lifecycle_state": "inactive"}, "its own values, and the state"
        assert outs == [], "nothing but the diagnostics is published while inactive"

        # activated: the node's own status comes at once, not a diagnostics period (here 5 s) later; a live change
        # of the diagnostics period applies while inactive too
        assert node.set_parameters([Parameter("diagnostics_period_s", value=5.0)])[0].successful
        assert [p for _, p in node._host_timers.values()] == [5.0], "the diagnostics timer alone runs"
        node.trigger_activate()
        _spin_until(executor, lambda: diags[-1].status[0].message != inactive, 2.0, "still inactive when active")
        st = diags[-1].status[0]
        assert st.level == b"\x01" and st.message == "waiting for input", st
        assert "lifecycle_state" not in {kv.key for kv in st.values}
        _spin_until(executor, lambda: len(outs) >= 2, 10.0, "no output while active")

        # deactivated: the inactive status comes at once too
        node.trigger_deactivate()
        assert [p for _, p in node._host_timers.values()] == [5.0], "the diagnostics timer alone runs"
        _spin_until(executor, lambda: diags[-1].status[0].message == inactive, 2.0, "no inactive status at once")
        assert node.set_parameters([Parameter("diagnostics_period_s", value=0.1)])[0].successful
        _spin_for(executor, 0.3)  # what was sent before the deactivation has come
        before = len(outs)
        for st in statuses(3, "inactive after deactivate"):
            assert st.level == b"\x00" and st.message == inactive, st
        assert len(outs) == before, "the other outputs stopped"

        node.trigger_cleanup()
        assert node._host_timers == {}
        _spin_for(executor, 0.3)  # what was sent before the cleanup has come
        start = len(diags)
        _spin_for(executor, 0.5)
        assert len(diags) == start, "cleaned up: no more diagnostics"
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        listener.destroy_node()


def _spin_for(executor: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)
