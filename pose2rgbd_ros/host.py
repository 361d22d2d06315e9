"""The one rclpy host: a lifecycle node built from a :class:`~pose2rgbd.nodes.spec.NodeSpec`.

Every node pose2rgbd ships runs in :class:`NodeHost` (``ros_nodes/NAME_node`` -> :mod:`pose2rgbd_ros.node_main`
-> the node table entry NAME). Lifecycle (REP-2002 managed node):

* construction: every config leaf is declared as a parameter with its description, its numeric range
  (``FloatingPointRange`` / ``IntegerRange`` from the schema) and whether it applies live or at configure;
  plus ``autostart`` (default true: the node configures and activates itself, so a plain ``ros2 run`` or
  launch file works; set it false to drive the transitions from a lifecycle manager);
* ``on_configure``: the config is read from the parameters and checked, the heavy resources are built
  (``spec.configure``: the render model is loaded here), the logic, the ``/tf`` + ``/tf_static``
  subscriptions that feed the core's TF buffer and the publishers are created;
* ``on_activate``: subscriptions, timers and services are created (nothing is consumed while inactive);
* ``on_deactivate``: they are destroyed again; ``on_cleanup``: logic, publishers and resources are dropped.

Diagnostics while inactive: the diagnostics timer (a spec's timer of :meth:`~pose2rgbd.nodes.logic.NodeLogic.
diagnostics_tick`) runs from configure to cleanup / shutdown, not only while active, and its publisher (the output
``topics.diagnostics``) is a plain publisher, not a lifecycle one (diagnostic_updater's is a plain one on a lifecycle
node too): while the node is configured but not active its status says so (level OK, :func:`inactive_status`), so
a diagnostic aggregator tells a node parked on purpose from a dead one (whose status goes stale); an activation or a
deactivation is reported at once. Every other output is a lifecycle publisher: nothing else is published while
inactive.

Threads and TF: every callback runs on the executor's one thread (rclpy's ``SingleThreadedExecutor``). The ``/tf``
and ``/tf_static`` subscriptions are not among the executor's: their messages wait in DDS's queue until the node
needs TF, and every lookup (and every TF poll) first takes all that arrived since the last one
(:meth:`NodeHost._take_tf`), as one burst, then answers from the buffer; so does the node's clock jumping back (sim
time, a bag played again) before the jump, so the TF history it clears is the earlier play's. With ``/tf`` at 50-200
Hz beside a render, a callback per TF message (each a turn of rclpy's executor: a wait set rebuilt in Python) took
the interpreter lock from the render: with rclpy's ``MultiThreadedExecutor`` (whose loop re-builds the wait set
without pause while a callback runs) the render node at 64x64 reached 7.9 of 10 Hz with ``/tf`` at 50 Hz and 4.2
with ``/tf`` at 200 Hz (256x256: 4.4 and 1.9); with a callback per message on one thread the messages queued behind
each render and the poses went stale (docs/ros.md, "Threads and TF").

Parameters: a set request goes through a callback. Before configure every valid value is accepted (it is
read at configure); afterwards the logic's ``on_parameter_change`` applies it at once or refuses it with the
reason (``ros2 param set`` then reports the failure). Timers whose period depends on a changed parameter are
re-created. A parameter given at start that the node does not have (a typo: ``-p rate:=5.0`` for ``rate_hz``) is
named in a warning with the nearest parameters (:func:`~pose2rgbd.nodes.spec.unknown_parameters`), and again when
configure fails.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import CallbackGroup
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from pose2rgbd.errors import ConfigError, Pose2RGBDError
from pose2rgbd.geometry.tf_buffer import TransformException
from pose2rgbd.nodes.logic import DIAGNOSTICS_TOPIC, NodeLogic
from pose2rgbd.nodes.spec import (
    Handler,
    NodeSpec,
    Timer,
    bound,
    check_logic,
    config_from_flat,
    get_key,
    unknown_parameters,
    with_resources,
)
from pose2rgbd.nodes.tf import TIME_JUMP_BACK_S, TFInput, tf_topics
from pose2rgbd_ros.factory import RclpyFactory

AUTOSTART = "autostart"
TF_DEPTH = 1000  # /tf messages DDS keeps between two takes (1 s at 1 kHz; tf2's listener keeps 100, taken at once)


def is_diagnostics(timer: Timer) -> bool:
    """``timer`` is the node's diagnostics timer (:meth:`NodeLogic.diagnostics_tick`, bound by name as every handler
    is): it runs while the node is inactive too (the module docstring)."""
    return timer.handler.__name__ == NodeLogic.diagnostics_tick.__name__


def inactive_status(array: object, fqn: str) -> None:
    """Make every status of the DiagnosticArray ``array`` (the node's own, its values as they stand) say that the node
    ``fqn`` is inactive: level OK (inactive is a state a user or a lifecycle manager chose, not a fault; docs/ros.md,
    "Diagnostics while inactive"), how to activate it, and the value ``lifecycle_state: inactive``."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    for status in getattr(array, "status", ()):
        status.level = DiagnosticStatus.OK
        status.message = f"inactive: activate with `ros2 lifecycle set {fqn} activate`"
        status.values = [*status.values, KeyValue(key="lifecycle_state", value="inactive")]


def parameter_descriptor(spec: NodeSpec, name: str) -> ParameterDescriptor:
    """The descriptor of one config parameter: description, range, when it applies."""
    p = spec.parameters()[name]
    d = ParameterDescriptor(
        description=p.description,
        additional_constraints="applied while running" if p.live else "applied at the next configure",
    )
    if p.range is not None:
        lo, hi = p.range
        if isinstance(p.default, bool):
            pass
        elif isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        elif isinstance(p.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def _whole_numbers_as_floats(spec: NodeSpec, overrides: dict[str, Any] | None) -> None:
    """A whole number given at start for a parameter that takes a float (``-p rate_hz:=5``, ``rate_hz: 5`` in a
    params file) is taken as that float: rclpy refused it as an INTEGER for a DOUBLE, and the node exited. (A value
    set while running is typed by the caller: ``ros2 param set ... rate_hz 5.0``.)"""
    if not isinstance(overrides, dict):
        return
    from rclpy.parameter import Parameter

    for name, p in spec.parameters().items():
        given = overrides.get(name)
        if isinstance(p.default, float) and given is not None and given.type_ == Parameter.Type.INTEGER:
            overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(given.value))


def _qos(kind: str, depth: int) -> Any:
    """The QoS of a topic of ``kind`` with a queue of ``depth``: ``sensor_data`` is rclpy's sensor-data profile (best
    effort, volatile, keep last) with the spec's depth in place of the profile's 5 (the localize node's images keep
    1: the newest wins when the model is slower than the camera)."""
    if kind == "sensor_data":
        return QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=depth,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
    if kind == "latched":
        return QoSProfile(depth=depth, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=depth)


def tf_qos(static: bool) -> QoSProfile:
    """tf2's listener QoS: reliable; ``/tf_static`` transient local (late joiners get the mounts), depth 100;
    ``/tf`` depth :data:`TF_DEPTH` (its messages wait in the queue until the node takes them, see the module
    docstring)."""
    if static:
        return QoSProfile(
            depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
        )
    return QoSProfile(depth=TF_DEPTH, reliability=ReliabilityPolicy.RELIABLE)


class TakenOnDemand(CallbackGroup):
    """A callback group the executor never runs: its subscriptions stay out of the wait set and their messages wait
    in DDS's queue until the host takes them itself (the TF subscriptions, see the module docstring)."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


class CoreLogToRos(logging.Handler):
    """pose2rgbd's own log records of WARNING and above (the core's: a query camera not given, a map without a
    calibration) to the node's ROS logger -- the node's name, the ROS console format and ``/rosout`` -- instead of
    Python's last-resort line on stderr, which a ROS log reader never sees."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.WARNING)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            else:
                self.ros_logger.warning(text)
        except Exception:  # a logging handler never raises into the code that logged (logging.Handler's rule)
            self.handleError(record)


def console_logger(name: str) -> logging.Logger:
    """A Python logger printing as the ROS console does (``[INFO] [SECONDS] [NAME]: text``) to stderr, without
    ``/rosout`` and not through pose2rgbd's own loggers (whose :class:`CoreLogToRos` forwards to the node)."""
    log = logging.getLogger(f"pose2rgbd_ros.console.{name}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[%(levelname)s] [%(created).9f] [{name}]: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class NodeHost(LifecycleNode):
    """A lifecycle node serving ``spec`` (see the module docstring)."""

    def __init__(self, spec: NodeSpec, **kwargs: Any) -> None:
        super().__init__(spec.name, **kwargs)
        self.core_log = CoreLogToRos(self.get_logger())  # attached once the node is built (below), until destroyed
        self.spec = spec
        self.factory = RclpyFactory()
        self.cfg: Any = None
        self.logic: Any = None
        self.resources: dict[str, Any] = {}
        self.configure_error: Pose2RGBDError | None = None
        self._lock = threading.RLock()  # the logic is called from inputs, timers, services and parameter sets
        self._host_pubs: dict[str, Any] = {}
        self._host_subs: list[Any] = []
        self._host_services: list[Any] = []
        self._host_timers: dict[int, tuple[Any, float]] = {}  # timer index -> (rclpy timer, period)
        # the diagnostics timers: from configure to cleanup, also while inactive (the module docstring)
        self._diagnostics_timers = {k for k, t in enumerate(spec.timers) if is_diagnostics(t)}
        self._tf: TFInput | None = None
        self._tf_subs: list[tuple[Any, str, bool]] = []  # (subscription, topic, static)
        self._tf_group = TakenOnDemand()
        self._tf_jump: Any = None  # the clock's jump callback: TF taken before the clock goes back
        self._tf_poll: Any = None
        self._active = False
        from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

        _whole_numbers_as_floats(spec, getattr(self, "_parameter_overrides", None))
        for name, p in spec.parameters().items():
            try:
                self.declare_parameter(name, p.default, parameter_descriptor(spec, name))
            except (InvalidParameterValueException, InvalidParameterTypeException) as e:
                raise ConfigError(f"{self.get_name()}: parameter {name}: {e}") from e
        self.declare_parameter(
            AUTOSTART,
            True,
            ParameterDescriptor(
                description="configure and activate at start (false: wait for a lifecycle manager)", read_only=True
            ),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # a misspelt override (-p rate:=5.0 for rate_hz, a params file's typo) is no parameter of ours: rclpy keeps
        # it unused without a word, so it is named here, with the nearest parameters (a warning, not an error: a
        # params file for several nodes ('/**') holds the others' parameters too)
        overrides = list(getattr(self, "_parameter_overrides", {}))
        self.unknown_parameters = unknown_parameters(spec, overrides, [n for n in overrides if self.has_parameter(n)])
        if self.unknown_parameters:
            self.get_logger().warning(self.unknown_parameters)
        logging.getLogger("pose2rgbd").addHandler(self.core_log)
        if self.get_parameter(AUTOSTART).value:
            self.autostart()

    # ------------------------------------------------------------------ lifecycle
    def autostart(self) -> None:
        """configure + activate; a failure raises the error that caused it (the node then exits)."""
        for step, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            result = trigger()
            if result != TransitionCallbackReturn.SUCCESS:
                if self.configure_error is not None:
                    self.configure_error.logged = True  # on_configure logged it: the node's exit does not repeat it
                    raise self.configure_error
                raise ConfigError(f"{self.get_name()}: {step} failed ({result})")

    def _config_from_parameters(self) -> Any:
        flat = {name: self.get_parameter(name).value for name in self.spec.parameters()}
        return config_from_flat(self.spec.config, flat, where=self.get_name())

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        self.configure_error = None
        try:
            cfg = self._config_from_parameters()
            resources = with_resources(self.spec, cfg, None)
            logic = self.spec.build(cfg, self.factory, self.get_logger(), **resources)
            check_logic(self.spec, logic)
            # every message and service type the node uses, loaded now: pose2rgbd's own interfaces built from an
            # older msg/ are refused here by name (RclpyFactory.cls), not by a KeyError at the first message
            spec = self.spec
            for msgtype in (*(o.type for o in spec.outputs), *(t for i in spec.inputs for t in i.types),
                            *(v.type for v in spec.services)):  # fmt: skip
                self.factory.cls(msgtype)
        except Pose2RGBDError as e:
            self.configure_error = e
            hint = f" ({self.unknown_parameters})" if self.unknown_parameters else ""
            self.get_logger().error(f"configure failed: {e}{hint}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self.cfg, self.resources, self.logic = cfg, resources, logic
        if self.spec.tf_used(cfg):
            self._start_tf(cfg)
        silent = self.spec.silent_outputs(cfg, logic)
        for out in self.spec.outputs:
            topic = get_key(cfg, out.topic)
            if topic in silent:  # what was loaded never publishes there: not advertised
                self.get_logger().info(f"not advertised: {topic}: {silent[topic]}")
                continue
            args = (self.factory.cls(out.type), topic, _qos(out.qos, out.depth))
            if out.topic == DIAGNOSTICS_TOPIC:  # not a lifecycle publisher: it reports while inactive too (docstring)
                self._host_pubs[topic] = self.create_publisher(*args)
            else:
                self._host_pubs[topic] = self.create_lifecycle_publisher(*args)
        for k in self._diagnostics_timers:  # from now until cleanup, saying inactive until activated
            self._start_timer(k)
        describe: Callable[..., str] | None = self.spec.extras.get("describe")
        self.get_logger().info(describe(cfg, resources) if describe else f"{self.spec.name} configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        cfg = self.cfg
        for inp in self.spec.active_inputs(cfg):
            msgtype = inp.choose_type(cfg) if inp.choose_type else inp.types[0]
            self._host_subs.append(
                self.create_subscription(
                    self.factory.cls(msgtype),
                    get_key(cfg, inp.topic),
                    self._input_callback(inp.handler),
                    _qos(inp.qos, inp.depth),
                )
            )
        for k in range(len(self.spec.timers)):
            if k not in self._diagnostics_timers:  # those run since configure
                self._start_timer(k)
        for srv in self.spec.services:
            self._host_services.append(
                self.create_service(self.factory.cls(srv.type), srv.name, self._service_callback(srv.handler))
            )
        if self.spec.tf_used(cfg) and self.spec.tf is not None and self.spec.tf.on_update:
            self._tf_poll = self.create_timer(self.spec.tf.poll_s, self._poll_tf)
        self._active = True
        self._diagnose_now()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        for s in self._host_subs:
            self.destroy_subscription(s)
        for srv in self._host_services:
            self.destroy_service(srv)
        for k in [k for k in self._host_timers if k not in self._diagnostics_timers]:  # those run until cleanup
            self.destroy_timer(self._host_timers.pop(k)[0])
        if self._tf_poll is not None:
            self.destroy_timer(self._tf_poll)
        self._host_subs, self._host_services, self._tf_poll = [], [], None
        self._active = False
        self._diagnose_now()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for t, _ in self._host_timers.values():  # the diagnostics timers (and, at a shutdown while active, all)
            self.destroy_timer(t)
        self._host_timers = {}
        for pub in self._host_pubs.values():
            self.destroy_lifecycle_publisher(pub)  # also the diagnostics' plain one (not a managed entity)
        self._host_pubs = {}
        self._stop_tf()
        with self._lock:
            if self.logic is not None and callable(getattr(self.logic, "close", None)):
                self.logic.close()
            self.logic, self.resources = None, {}

    def close(self) -> None:
        """Called by :func:`pose2rgbd_ros.spin.run_node` before the node is destroyed. After Ctrl-C or SIGTERM the
        context is already shut down and ``/rosout`` gone: the logic's last lines (the record node's summary) go to
        the console alone (:func:`console_logger`), not through the node's logger, whose every line then also
        printed ``Failed to publish log message to rosout: publisher's context is invalid``."""
        if not self.context.ok():
            self.to_console()
        self._release()

    def to_console(self) -> None:
        """From now on the logic's lines and the core's warnings go to the console alone, not through the node's
        logger to ``/rosout``: for the end of a node stopped by Ctrl-C or SIGTERM, whose context rclpy shuts down
        (:func:`pose2rgbd_ros.spin.run_node` calls it then, before :meth:`close`: the shutdown may still be under
        way when ``close`` checks the context)."""
        console = console_logger(self.get_logger().name)
        if self.logic is not None:
            self.logic.log = console
        self.core_log.ros_logger = console

    def destroy_node(self) -> None:
        logging.getLogger("pose2rgbd").removeHandler(self.core_log)
        super().destroy_node()

    # ------------------------------------------------------------------ callbacks
    def _now(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _publish(self, outputs: list[tuple[str, Any]] | None) -> None:
        for topic, msg in outputs or ():
            self._host_pubs[topic].publish(msg)

    def _input_callback(self, handler: Handler) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            with self._lock:
                if self.logic is None:
                    return
                outputs = bound(self.logic, handler)(msg, self._now())
            self._publish(outputs)

        return callback

    def _timer_callback(self, handler: Handler) -> Callable[[], None]:
        def callback() -> None:
            with self._lock:
                if self.logic is None:
                    return
                outputs = bound(self.logic, handler)(self._now())
                if not self._active:  # a diagnostics timer, the one kind that runs while inactive
                    for _, msg in outputs or ():
                        inactive_status(msg, self.get_fully_qualified_name())
            self._publish(outputs)

        return callback

    def _service_callback(self, handler: Handler) -> Callable[[Any, Any], Any]:
        def callback(request: Any, response: Any) -> Any:
            with self._lock:
                return bound(self.logic, handler)(request, response, self._now())

        return callback

    def _diagnose_now(self) -> None:
        """At an activation or a deactivation: the diagnostics say the new state now, not up to a period later (not
        at configure: with ``autostart`` the activation follows at once, and otherwise the first tick says it)."""
        for k in self._diagnostics_timers:
            if k in self._host_timers:  # its period is not 0 (off)
                self._timer_callback(self.spec.timers[k].handler)()

    def _start_timer(self, k: int) -> None:
        spec = self.spec.timers[k]
        period = float(spec.period_s(self.cfg))
        old = self._host_timers.pop(k, None)
        if old is not None:
            self.destroy_timer(old[0])
        if period > 0:
            t = self.create_timer(period, self._timer_callback(spec.handler))
            self._host_timers[k] = (t, period)

    # ------------------------------------------------------------------ TF
    def _start_tf(self, cfg: Any) -> None:
        """Feed the core's :class:`~pose2rgbd.nodes.tf.TFInput` (the offline runner's buffer and rejection handling)
        from ``/tf`` and ``/tf_static``, taken when a lookup needs them (tf2_ros is not used; docs/ros.md)."""
        assert self.spec.tf is not None
        self._tf = TFInput(self.logic, self.get_logger())
        msgtype = self.factory.cls("tf2_msgs/msg/TFMessage")
        for topic, static in tf_topics(self.spec.tf):
            sub = self.create_subscription(msgtype, topic, _never_called, tf_qos(static), callback_group=self._tf_group)
            for handler in sub.event_handlers:  # its QoS events (a publisher offering incompatible QoS) still logged
                handler.callback_group = self.default_callback_group
                self.default_callback_group.add_entity(handler)
            self._tf_subs.append((sub, topic, static))
        # the clock going back (a bag played again under sim time): what arrived before is taken under the clock it
        # arrived under, so TFInput clears it at the jump and not the second play's first transforms with it
        back = Duration(nanoseconds=-int(TIME_JUMP_BACK_S * 1e9))
        self._tf_jump = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=back), pre_callback=self._take_tf
        )
        self.logic.set_tf_lookup(self._lookup)

    def _stop_tf(self) -> None:
        if self._tf_jump is not None:
            self._tf_jump.unregister()
        for sub, _, _ in self._tf_subs:
            self.destroy_subscription(sub)
        self._tf_subs, self._tf, self._tf_jump = [], None, None

    def _take_tf(self) -> None:
        """Add every TF message that arrived since the last take to the buffer, each with the node's clock now (the
        stamp of a transform without one; TFInput's check for the clock going back)."""
        tf = self._tf
        if tf is None:
            return
        now = self._now()
        for sub, topic, static in self._tf_subs:
            for _ in range(TF_DEPTH):  # at most a queue's worth: a publisher faster than the takes cannot hold us
                try:
                    with sub.handle:
                        got = sub.handle.take_message(sub.msg_type, sub.raw)
                except InvalidHandle:  # destroyed (the node is being cleaned up)
                    break
                if got is None:
                    break
                tf.add(got[0], topic, static=static, now_ns=now)  # a rejected transform is counted and logged

    def _lookup(self, target: str, source: str, _time_ns: int) -> tuple[np.ndarray, int]:
        """The latest common transform, after taking the TF that arrived; waits up to the spec's ``timeout_s`` for
        it to become available (taking TF again every 5 ms), as tf2_ros' ``lookup_transform`` does."""
        assert self.spec.tf is not None
        tf = self._tf
        if tf is None:
            raise TransformException("TF is not running (the node is not configured)")
        deadline = time.monotonic() + float(self.spec.tf.timeout_s(self.cfg))
        while True:
            self._take_tf()
            try:
                return tf.lookup_transform(target, source, 0)
            except TransformException:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _poll_tf(self) -> None:
        assert self.spec.tf is not None
        self._take_tf()
        with self._lock:
            done = self.logic is not None and bound(self.logic, self.spec.tf.on_update)(self._now())
        if done and self._tf_poll is not None:
            self._tf_poll.cancel()

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        known = self.spec.parameters()
        ours = [p for p in params if p.name in known]
        if not ours:
            return SetParametersResult(successful=True)
        with self._lock:
            if self.logic is None:  # not configured: any valid value, read at configure
                flat = {name: self.get_parameter(name).value for name in known}
                flat.update({p.name: p.value for p in ours})
                try:
                    config_from_flat(self.spec.config, flat, where=self.get_name())
                except Pose2RGBDError as e:
                    return SetParametersResult(successful=False, reason=str(e))
                return SetParametersResult(successful=True)
            applied: list[tuple[str, Any]] = []
            for p in ours:
                old = get_key(self.logic.cfg, p.name)
                ok, reason = self.logic.on_parameter_change(p.name, p.value)
                if not ok:
                    for name, value in reversed(applied):  # all or nothing
                        self.logic.on_parameter_change(name, value)
                    return SetParametersResult(successful=False, reason=reason)
                applied.append((p.name, old))
            self.cfg = self.logic.cfg
            for k, spec in enumerate(self.spec.timers):  # re-create the running timers whose period changed
                if not (self._active or k in self._diagnostics_timers):
                    continue  # not running while inactive
                current = self._host_timers.get(k)
                if (current[1] if current else 0.0) != float(spec.period_s(self.cfg)):
                    self._start_timer(k)
        return SetParametersResult(successful=True)


def _never_called(_msg: Any) -> None:
    """The callback of a :class:`TakenOnDemand` subscription (the executor never calls it)."""


def make_executor(spec: NodeSpec) -> Executor:
    """One thread for every callback (the module docstring says why)."""
    return SingleThreadedExecutor()


def main_for(spec: NodeSpec, args: list[str] | None = None) -> int:
    """``main`` of a node executable: spin a :class:`NodeHost` of ``spec`` until Ctrl-C / shutdown."""
    from pose2rgbd_ros.spin import run_node

    return run_node(args, lambda: NodeHost(spec), lambda: make_executor(spec), spec.name)
