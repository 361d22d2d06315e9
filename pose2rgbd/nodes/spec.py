"""A node's interface, declared once: the offline runner and the rclpy host both serve a node from its spec.

A :class:`NodeSpec` names the node, its config class, how to :attr:`~NodeSpec.configure` heavy resources (the
render model), how to :attr:`~NodeSpec.build` the message-level logic, and what that logic consumes
(:class:`Input`), produces (:class:`Output`), runs periodically (:class:`Timer`), serves (:class:`Service`) and
needs from TF (:class:`TFNeed`). Topics are config keys (``"topics.pose"``), so a renamed topic is one
parameter. Handlers are methods of the logic class, referenced as such (``Renderer.on_pose``, so a reader and
mypy can follow them); a runtime calls the logic object's method of that name (:func:`bound`, so a subclass's
override is the one called):

* input: ``handler(msg, now_ns) -> outputs | None``
* timer: ``handler(now_ns) -> outputs | None``
* service: ``handler(request, response, now_ns) -> response``
* TF update: ``handler(now_ns) -> bool`` (True: satisfied, stop calling)

Outputs are ``[(topic_name, msg), ...]`` with ``topic_name`` the config value of an :class:`Output`'s key.

Parameters: every leaf of the config class is a parameter (dotted name, description from the field help,
numeric range from :func:`pose2rgbd.config.ranged_field`). :attr:`NodeSpec.live` lists those the running logic
applies at once (``"publish.*"`` covers a section); the logic's ``on_parameter_change(name, value) ->
(ok, reason)`` applies them, everything else is refused with a reason (it is read at configure).

A node that records (:attr:`NodeSpec.dataset`: the config key of the dataset folder it appends frames to) has
that folder checked before an offline replay starts, and what it wrote so far reported and kept (with the output
bag) when the replay is interrupted.

The logic object may also have: ``counters`` (dict, reported by the runners), ``last_latency_ms`` (float, a
runner records it per frame), ``set_tf_lookup(lookup)`` (given when the spec has a TF need), ``finish()`` (end
of an offline input) and ``close()``. The nodes pose2rgbd ships build their logic on
:class:`pose2rgbd.nodes.logic.NodeLogic` (throttled warnings, counters, ``on_parameter_change``, the diagnostics
timer); both runtimes feed TF through :class:`pose2rgbd.nodes.tf.TFInput` (one cache length, one handling of
rejected transforms).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pose2rgbd.config import closest, describe, from_dict, param_ranges, to_dict, unflatten
from pose2rgbd.errors import ConfigError, Pose2RGBDError

C = TypeVar("C")
QoS = Literal["sensor_data", "reliable", "latched"]
Lookup = Callable[[str, str, int], Any]  # (target, source, time_ns) -> (T_target_source, stamp_ns)


# a method of the node's logic class, e.g. ``Renderer.on_pose`` (see the module docstring for its signature)
Handler = Callable[..., Any]


def _always(_cfg: Any) -> bool:
    return True


def bound(logic: Any, handler: Handler) -> Callable[..., Any]:
    """The logic object's method ``handler`` names (its own override where it has one)."""
    return getattr(logic, handler.__name__)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Input:
    """A subscription. ``types``: accepted message types (the first is the default); ``choose_type`` picks
    the one to subscribe to live (offline, the bag's type is used if it is one of ``types``)."""

    topic: str
    types: tuple[str, ...]
    handler: Handler
    qos: QoS = "sensor_data"
    depth: int = 5  # the queue (keep last): sensor-data QoS keeps the 5 of rclpy's sensor-data profile
    when: Callable[[Any], bool] = _always  # used with this config?
    required: Callable[[Any], bool] = _always  # offline: the bag must have it (else: used when present)
    choose_type: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class Output:
    """A publisher of ``type`` on the topic named by config key ``topic``. ``silent(logic)``: given the built logic,
    why it never publishes there ("" where it may), e.g. the render node's ``depth/sigma`` for a checkpoint without a
    depth uncertainty: such a topic is not advertised (what was loaded is fixed until the node is configured again)."""

    topic: str
    type: str
    qos: QoS = "reliable"
    depth: int = 10
    silent: Callable[[object], str] | None = None


@dataclass(frozen=True)
class Timer:
    """A periodic call; ``period_s(cfg) <= 0`` means off."""

    period_s: Callable[[Any], float]
    handler: Handler
    name: str = ""


@dataclass(frozen=True)
class Service:
    name: str  # e.g. "~/render_at_pose"
    type: str  # e.g. "pose2rgbd/srv/RenderAtPose"
    handler: Handler


@dataclass(frozen=True)
class TFNeed:
    """The logic looks transforms up (``set_tf_lookup`` gives it the lookup).

    ``static_only``: only ``/tf_static`` is needed (a camera mount). ``on_update``: a handler called when TF data
    arrives (offline: after each TF message; live: every ``poll_s``) until it returns True. ``timeout_s(cfg)``:
    how long a live lookup may wait.
    """

    when: Callable[[Any], bool] = _always
    required: Callable[[Any], bool] = _always
    static_only: bool = False
    on_update: Handler | None = None
    poll_s: float = 0.5
    timeout_s: Callable[[Any], float] = lambda _cfg: 0.0
    why: str = ""  # why TF is needed, for error messages ("mount.source is 'tf_static'")
    instead: str = ""  # the other way to give the node what it looks up in TF, for the same messages


@dataclass(frozen=True)
class NodeSpec:
    """Everything a runtime needs to serve one node (see the module docstring)."""

    name: str  # the ROS node name
    config: type
    build: Callable[..., Any]  # build(cfg, factory, logger=None, **resources) -> logic
    configure: Callable[[Any], dict[str, Any]] = lambda _cfg: {}  # heavy resources, e.g. {"engine": ...}
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    timers: tuple[Timer, ...] = ()
    services: tuple[Service, ...] = ()
    tf: TFNeed | None = None
    live: tuple[str, ...] = ()
    description: str = ""
    dataset: str = ""  # config key of the dataset folder the node appends frames to ("" in the config: none)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_spec(self)

    # ------------------------------------------------------------------ parameters
    def parameters(self) -> dict[str, Parameter]:
        """Every parameter: dotted name -> :class:`Parameter` (default, description, range, live)."""
        ranges = param_ranges(self.config)
        return {
            name: Parameter(name, default, text, ranges.get(name), is_live(name, self.live))
            for name, (default, text) in describe(self.config).items()
        }

    def output_types(self, cfg: Any, logic: object = None) -> dict[str, str]:
        """topic name -> message type of every output with this config (and with the built ``logic``, every output
        it may publish on: not the :meth:`silent_outputs`)."""
        quiet = self.silent_outputs(cfg, logic) if logic is not None else {}
        return {get_key(cfg, o.topic): o.type for o in self.outputs if get_key(cfg, o.topic) not in quiet}

    def silent_outputs(self, cfg: object, logic: object) -> dict[str, str]:
        """topic name -> why the built ``logic`` never publishes there (:attr:`Output.silent`)."""
        whys = {get_key(cfg, o.topic): o.silent(logic) if o.silent else "" for o in self.outputs}
        return {topic: why for topic, why in whys.items() if why}

    def active_inputs(self, cfg: Any) -> list[Input]:
        return [i for i in self.inputs if i.when(cfg)]

    def tf_used(self, cfg: Any) -> bool:
        return self.tf is not None and self.tf.when(cfg)

    def dataset_dir(self, cfg: Any) -> str:
        """The dataset folder this node writes with ``cfg`` ("" when none)."""
        return str(get_key(cfg, self.dataset) or "") if self.dataset else ""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None
    live: bool


def validate_spec(spec: NodeSpec) -> None:
    """Check a spec against its config class: every topic key names a string leaf, handlers are methods, no
    duplicates, live names exist. Raises ConfigError naming the problem."""
    leaves = describe(spec.config)
    where = f"node spec {spec.name!r}"
    if not spec.name:
        raise ConfigError("node spec without a name")
    for kind, keys in (("input", [i.topic for i in spec.inputs]), ("output", [o.topic for o in spec.outputs])):
        for k in keys:
            if k not in leaves or not isinstance(leaves[k][0], str):
                raise ConfigError(f"{where}: {kind} topic key {k!r} is not a string field of {spec.config.__name__}")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{where}: an {kind} topic key is listed twice: {keys}")
    if spec.dataset and (spec.dataset not in leaves or not isinstance(leaves[spec.dataset][0], str)):
        raise ConfigError(f"{where}: dataset key {spec.dataset!r} is not a string field of {spec.config.__name__}")
    for i in spec.inputs:
        if not i.types:
            raise ConfigError(f"{where}: input {i.topic!r} needs message types")
    handlers = [i.handler for i in spec.inputs] + [t.handler for t in spec.timers] + [s.handler for s in spec.services]
    if spec.tf is not None and spec.tf.on_update is not None:
        handlers.append(spec.tf.on_update)
    if not all(callable(h) and getattr(h, "__name__", "").isidentifier() for h in handlers):
        raise ConfigError(
            f"{where}: handlers must be methods of the logic class (e.g. Renderer.on_pose), got {handlers}"
        )
    names = [s.name for s in spec.services]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a service is listed twice: {names}")
    for pattern in spec.live:
        if not any(is_live(leaf, (pattern,)) for leaf in leaves):
            raise ConfigError(f"{where}: live parameter {pattern!r} matches no field of {spec.config.__name__}")


def check_logic(spec: NodeSpec, logic: Any) -> None:
    """Check that a built logic object has what ``spec`` promises the runtimes (handlers, hooks); raises
    ConfigError listing what is missing."""
    handlers = [i.handler for i in spec.inputs] + [t.handler for t in spec.timers] + [s.handler for s in spec.services]
    need = [h.__name__ for h in handlers]
    if spec.tf is not None:
        need += ["set_tf_lookup"] + ([spec.tf.on_update.__name__] if spec.tf.on_update else [])
    if spec.live:
        need.append("on_parameter_change")
    missing = sorted({n for n in need if not callable(getattr(logic, n, None))})
    if not hasattr(logic, "cfg"):
        missing.append("cfg (attribute)")
    if missing:
        raise ConfigError(f"node {spec.name!r}: {type(logic).__name__} lacks {', '.join(missing)}")


def is_live(name: str, live: Collection[str]) -> bool:
    """``name`` is in ``live`` (exact, or under a ``"section.*"`` entry)."""
    return any(name == p or (p.endswith(".*") and name.startswith(p[:-1])) for p in live)


def get_key(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def changed_config(cfg: C, name: str, value: Any) -> C:
    """A new config equal to ``cfg`` but with ``name = value``; the schema checks the type, the range and
    the cross-field rules (``__post_init__``). ``cfg`` itself is not modified. Raises ConfigError."""
    cls = type(cfg)
    params = describe(cls)
    if name not in params:
        raise ConfigError(f"{name}: not a parameter of {cls.__name__}")
    rng = param_ranges(cls).get(name)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if rng is not None and number and not rng[0] <= value <= rng[1]:
        raise ConfigError(f"{name}: {value} is outside its range [{rng[0]}, {rng[1]}]")
    flat = {k: v for k, (v, _) in describe_values(cfg).items()}
    flat[name] = value
    return from_dict(cls, unflatten(flat))


def describe_values(cfg: Any) -> dict[str, tuple[Any, str]]:
    """Like :func:`pose2rgbd.config.describe` but with the values of ``cfg`` instead of the defaults."""
    values = to_dict(cfg)
    out = {}
    for name, (_, text) in describe(type(cfg)).items():
        v: Any = values
        for part in name.split("."):
            v = v[part]
        out[name] = (v, text)
    return out


def parameter_change(cfg: C, name: str, value: Any, live: Collection[str]) -> tuple[C | None, str]:
    """The shared rule of ``on_parameter_change``: ``(new_cfg, "")`` when ``name`` may change while the node
    runs and ``value`` is valid, else ``(None, reason)``."""
    if not is_live(name, live):
        return None, (
            f"{name} is read when the node is configured; to change it, deactivate, clean up, configure and "
            "activate the node (or restart it with the new value)"
        )
    try:
        return changed_config(cfg, name, value), ""
    except Pose2RGBDError as e:
        return None, str(e)


def config_from_flat(cls: type[C], flat: dict[str, Any], where: str = "") -> C:
    """The config from flat parameter values (``{"a.b": v}``); ranges are checked too. Raises ConfigError."""
    ranges = param_ranges(cls)
    for name, (lo, hi) in ranges.items():
        v = flat.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not lo <= v <= hi:
            raise ConfigError(f"{where + ': ' if where else ''}{name}: {v} is outside its range [{lo}, {hi}]")
    return from_dict(cls, unflatten(flat), where=where)


def unknown_parameters(spec: NodeSpec, given: Iterable[str], others: Collection[str] = ()) -> str:
    """What to say of the parameters given to the node (ROS parameter overrides: ``-p NAME:=V``, a params file) that
    are neither the node's (:meth:`NodeSpec.parameters`) nor among ``others`` (the host's own, e.g. ``autostart``,
    ``use_sim_time``): each named, with the node's parameters nearest to it; "" when there is none."""
    known = spec.parameters()
    unknown = sorted({n for n in given if n not in known and n not in others})
    if not unknown:
        return ""
    named = [
        f"'{n}'" + (f" (did you mean {' or '.join(near)}?)" if (near := closest(n, known)) else "") for n in unknown
    ]
    return (
        f"not a parameter of {spec.name}, ignored: {', '.join(named)}; the node runs as if "
        f"{'it was' if len(named) == 1 else 'they were'} not given "
        "(`ros2 param list` on the node lists its parameters)"
    )


def check_ranges(cfg: Any) -> None:
    """Raise ConfigError when a numeric parameter of ``cfg`` is outside its declared range (as the ROS host
    refuses it)."""
    for name, (lo, hi) in param_ranges(type(cfg)).items():
        v = get_key(cfg, name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not lo <= v <= hi:
            raise ConfigError(f"{name}: {v} is outside its range [{lo}, {hi}]")


def with_resources(spec: NodeSpec, cfg: Any, resources: dict[str, Any] | None) -> dict[str, Any]:
    """``resources`` when given (e.g. a ready engine in tests), else ``spec.configure(cfg)``."""
    return dict(resources) if resources is not None else spec.configure(cfg)


__all__ = [
    "Input",
    "Lookup",
    "NodeSpec",
    "Output",
    "Parameter",
    "Service",
    "TFNeed",
    "Timer",
    "changed_config",
    "check_logic",
    "check_ranges",
    "config_from_flat",
    "get_key",
    "is_live",
    "parameter_change",
    "validate_spec",
    "with_resources",
]
