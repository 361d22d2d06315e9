"""Offline runtime: bag -> any node (served from its :class:`~pose2rgbd.nodes.spec.NodeSpec`) -> bag.

Messages are fed to the node logic in log-time order; the bag's log time is the node clock, so a run is
deterministic. Timers (the renderer's ``rate_hz``, diagnostics) fire at their bag-time deadlines *before*
the first message at or after that deadline is handled. TF topics feed the node's
:class:`~pose2rgbd.nodes.tf.TFInput` (the same buffer and rejection handling as the rclpy host) that the logic
looks transforms up in. ``rate=0`` runs as fast as possible; ``rate=1.0`` replays at bag speed (``2.0``
twice as fast).

Output bags carry the custom ``pose2rgbd/msg/*`` types (registered from msg/ in the typestore), and the node's
mark in their ``metadata.yaml`` (``custom_data``: ``pose2rgbd.node: <node name>``, :data:`NODE_MARK`): what
``--overwrite`` replaces is a bag with this node's mark, nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd.atomic import note_kept
from pose2rgbd.bags import BagMessage, BagReader, BagWriter, TopicInfo, open_bag
from pose2rgbd.bags.reader import DEPTH_ENCODINGS
from pose2rgbd.bags.writer import check_bag_name
from pose2rgbd.errors import BagError, ConfigError, Pose2RGBDError
from pose2rgbd.messages import TypestoreFactory, new_typestore, register_custom_msgs
from pose2rgbd.nodes.recorder import RECORDER, RecorderConfig
from pose2rgbd.nodes.renderer import RENDERER, RendererConfig
from pose2rgbd.nodes.spec import NodeSpec, bound, check_logic, get_key, with_resources
from pose2rgbd.nodes.tf import TF_STATIC_TOPIC, TF_TOPIC, TFInput, tf_topics
from pose2rgbd.output_guard import (
    BAG,
    DATASET,
    OutputError,
    check_not_foreign_dir,
    check_output,
    overlap,
    refuse_existing,
)
from pose2rgbd.progress import bar

log = logging.getLogger(__name__)

# the key of the mark every output bag of the offline runtime carries in its metadata.yaml's custom_data; its value
# is the name of the node that wrote the bag (NodeSpec.name, e.g. pose2rgbd_renderer)
NODE_MARK = "pose2rgbd.node"


def resolve_topic(name: str, namespace: str = "", node_name: str = "") -> str:
    """ROS-style resolution for the offline runtime: ``rgb`` -> ``/ns/rgb``, ``~/x`` -> ``/ns/node/x``."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        return f"{ns}/{node_name}/{name[1:].lstrip('/')}".replace("//", "/")
    return f"{ns}/{name}"


@dataclass
class RunStats:
    """What an offline run did."""

    messages_in: int = 0
    messages_out: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)  # per produced frame (nodes with last_latency_ms)
    # per produced frame, what the node says of it (nodes with last_frame_stats: the renderer's coverage distance and
    # depth uncertainty): name -> one value per frame
    frame_stats: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0
    world_frame: str = ""  # the frame the node looked poses up in / answered in (nodes that have one)
    # frames the node's dataset held before the run (a resumed recording: they are not recorded again, so an output
    # bag of this run starts after them)
    dataset_frames_before: int = 0
    # optional inputs whose topic the bag lacks: config key -> (the topic looked for, the bag's topics of its types)
    absent: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else float("nan")


class _Pacer:
    """Sleep so that bag time advances at ``rate`` x wall time (rate 0: never sleep)."""

    def __init__(self, rate: float) -> None:
        if rate < 0:
            raise ConfigError("rate must be >= 0 (0: as fast as possible)")
        self.rate = rate
        self._t0_bag: int | None = None
        self._t0_wall = 0.0

    def __call__(self, bag_ns: int) -> None:
        if self.rate <= 0:
            return
        if self._t0_bag is None:
            self._t0_bag, self._t0_wall = bag_ns, time.monotonic()
            return
        due = self._t0_wall + (bag_ns - self._t0_bag) * 1e-9 / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _output_typestore() -> Any:
    return register_custom_msgs(new_typestore("humble"))


class _FrameLatency:
    """Records ``logic.last_latency_ms`` (and where the logic has it, ``logic.last_frame_stats``: a mapping of name to
    number, computed when asked) each time the logic's ``frames`` counter grows."""

    def __init__(self, logic: Any, stats: RunStats) -> None:
        self.logic, self.stats = logic, stats
        self.enabled = hasattr(logic, "last_latency_ms") and "frames" in getattr(logic, "counters", {})
        self.frames = logic.counters["frames"] if self.enabled else 0
        self.per_frame = self.enabled and hasattr(type(logic), "last_frame_stats")  # (a property's error is raised)

    def __call__(self) -> None:
        if self.enabled and self.logic.counters["frames"] > self.frames:
            self.frames = self.logic.counters["frames"]
            self.stats.latency_ms.append(float(self.logic.last_latency_ms))
            for name, value in (self.logic.last_frame_stats if self.per_frame else {}).items():
                self.stats.frame_stats.setdefault(name, []).append(float(value))


def run_node_bag(
    spec: NodeSpec,
    cfg: Any,
    bag: str | Path,
    out: str | Path | None = None,
    *,
    resources: dict[str, Any] | None = None,
    rate: float = 0.0,
    namespace: str = "",
    storage: str = "mcap",
    overwrite: bool = False,
    progress: bool = False,
    tf_topic: str = TF_TOPIC,
    tf_static_topic: str = TF_STATIC_TOPIC,
    inputs: Sequence[str | Path] = (),
    keep_partial: bool | None = None,
) -> RunStats:
    """Replay ``bag`` through the node of ``spec``; write what it publishes to the bag ``out`` (if given).

    Args:
        spec: the node (e.g. :data:`~pose2rgbd.nodes.renderer.RENDERER`).
        cfg: its config (an instance of ``spec.config``; not modified).
        resources: what ``spec.configure(cfg)`` would build (e.g. ``{"engine": engine}``); default: built.
        rate: 0 as fast as possible, 1.0 bag speed.
        namespace: prefix for relative topic names (``rgb/image_raw`` -> ``/<ns>/rgb/image_raw``).
        inputs: other paths the run reads or writes in place (``out`` may not be, contain or lie inside them,
            nor ``bag``).
        keep_partial: on Ctrl-C (KeyboardInterrupt) finish ``out`` with what was written so far (and note it
            for the CLI's message) instead of discarding it, and on an error partway (a corrupt chunk of the input:
            a pose2rgbd error or an OS error, once the node has produced a frame) too; default: for a node that
            records a dataset (``spec.dataset``, the record node: its dataset is kept as well, it is flushed frame
            by frame, and noted the same way). Another exception (a bug) discards ``out`` as before.
    """
    dataset = spec.dataset_dir(cfg)
    if keep_partial is None:
        keep_partial = bool(spec.dataset)
    if dataset and out is not None and (how := overlap(out, dataset)):  # two outputs: neither is the other's input
        where = "one folder" if how == "is" else "one inside the other"
        raise OutputError(
            f"the output bag {out} and the dataset {dataset} are {where}: the run writes them apart; give the bag "
            "(--out-bag) a path of its own (nothing was written)"
        )
    if dataset:  # checked before the replay, not at the first frame
        check_output(dataset, DATASET, inputs=[bag] + ([out] if out is not None else []))
        check_not_foreign_dir(dataset, DATASET, what_to_do="record into a new or empty folder, or an existing dataset")
        inputs = [*inputs, dataset]
    if out is not None:  # before anything is read
        check_output(out, BAG, inputs=[bag, *inputs], overwrite=overwrite)
    before = _dataset_frames(dataset) if dataset else 0
    if out is not None and before and Path(out, "metadata.yaml").is_file():
        _refuse_bag_of_a_resumed_recording(Path(out), Path(dataset or ""), before, overwrite)
    if out is not None:  # what BagWriter refuses, before the node (a model) is loaded
        check_bag_name(Path(out))
        refuse_existing(out, overwrite=overwrite, kind=BAG)  # (an earlier bag a killed run moved aside: back first)
        if overwrite:
            _refuse_a_bag_the_node_did_not_write(spec, Path(out))
    resumed = (
        f"the dataset {dataset} holds {before} frames already; they are not recorded again, so the output bag {out} "
        "starts after them (the frames before are in the bag of the run that recorded them, where it was kept)"
        if out is not None and before
        else ""
    )
    try:
        stats = _run_node_bag(
            spec, cfg, bag, out, resources=resources, rate=rate, namespace=namespace, storage=storage,
            overwrite=overwrite, progress=progress, tf_topic=tf_topic, tf_static_topic=tf_static_topic,
            inputs=inputs, keep_partial=keep_partial, resumed=resumed,
        )  # fmt: skip
    except BaseException as e:
        try:
            n = _dataset_frames(dataset) if dataset and Path(dataset, "manifest.yaml").is_file() else 0
        except (OSError, ValueError):  # the disk that stopped the run: the run's own error says more
            n = 0
        # an error before the first new frame (a topic not in the bag) leaves the dataset as it was: nothing to say;
        # an error that is no pose2rgbd or OS error (a bug) shows its traceback, nothing noted
        if n and (isinstance(e, KeyboardInterrupt) or (_kept_on(e) and n > before)):
            bag_note = "" if out is None else " with a new output bag: a bag is not appended to"
            if isinstance(e, KeyboardInterrupt):
                again = (
                    f"to resume, run the same command again{bag_note}"
                    if out
                    else "run the same command again to resume"
                )
            else:  # the frames up to the error are whole (flushed one by one)
                again = "its frames up to the error are whole; once the error is mended, run the same command again "
                again += f"to resume{bag_note}"
            note_kept(f"{dataset} (dataset, {n} frames, {n - before} new; {again})")
        raise
    stats.dataset_frames_before = before
    return stats


_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


def camera_info_first(messages: Iterable[BagMessage]) -> Iterator[BagMessage]:
    """A bag's messages in log-time order, with a CameraInfo logged at the very instant of other messages (its
    image) given before them. A camera driver publishes an image and its CameraInfo together, with one stamp, and a
    bag may hold the image first (the simulator's do): a node replayed in the bag's order would take the image as one
    before any CameraInfo (the localize node warned so on every simulator bag and localized it with the map's
    camera). Only messages of one log time are reordered, and only a CameraInfo moved ahead of them."""
    group: list[BagMessage] = []
    for m in messages:
        if group and m.stamp_ns != group[0].stamp_ns:
            yield from group
            group = []
        if m.msgtype == _CAMERA_INFO:
            at = next((i for i, g in enumerate(group) if g.msgtype != _CAMERA_INFO), len(group))
            group.insert(at, m)
        else:
            group.append(m)
    yield from group


def _kept_on(e: BaseException) -> bool:
    """Whether a recording stopped by ``e`` keeps what it wrote: Ctrl-C, and errors the CLI reports with what was
    kept (pose2rgbd's own, the OS's); not a bug's exception, which shows its traceback."""
    return isinstance(e, (KeyboardInterrupt, Pose2RGBDError, OSError))


def _topics_of_the_type(reader: BagReader, types: Sequence[str], key: str) -> str:
    """The bag's topics an input of ``types`` (config key ``key``) could take, and the flag that names one (the
    node's flags are its config keys): the next step when its configured topic is not in the bag. Image topics are
    told apart by their first message's encoding: a depth input (a key ending in ``depth``) is offered the depth
    images, a camera input the others (all of them where that leaves none), each named with its encoding."""
    same = sorted(t for mt in types for t in reader.topics_of_type(mt))
    if not same:
        camera = any(mt.startswith("sensor_msgs/msg/") and mt.endswith("Image") for mt in types)
        if (
            camera
            and reader.topics_of_type("sensor_msgs/msg/NavSatFix")
            and reader.topics_of_type("nav_msgs/msg/Odometry")
        ):  # a robot's GPS and odometry without a camera (the Husky bag): what can be done with them
            return (
                "the bag has no topic of that type: it has GPS and odometry without a camera; `pose2rgbd convert "
                f"gps-odom {reader.path} --report DIR` aligns the two in time (docs/convert.md)"
            )
        return "the bag has no topic of that type"
    image = {t for t in same if reader.topics[t].msgtype == "sensor_msgs/msg/Image"}
    enc = {t: reader.first_encoding(t) for t in sorted(image)}
    named = [f"{t} ({enc[t]})" if enc.get(t) else t for t in same]
    if image:
        want_depth = key.rsplit(".", 1)[-1].endswith("depth")
        fits = [n for t, n in zip(same, named, strict=True)
                if t not in image or (enc[t] in DEPTH_ENCODINGS) == want_depth]  # fmt: skip
        named = fits or named
    return f"the bag's topics of that type: {', '.join(named)}; give the one to use with --{key} TOPIC"


# what a bag without TF may carry poses as: a robot's odometry or a pose estimate, not the camera's pose in TF
_POSE_TYPES = ("nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
               "geometry_msgs/msg/TransformStamped")  # fmt: skip


def _without_tf(topics: Mapping[str, TopicInfo], instead: str) -> str:
    """The next step for a bag without the TF a node needs: the poses the bag does carry and how TF is made of them
    (``instead``: the node's other way in, if it has one)."""
    poses = sorted(f"{t} ({i.msgtype})" for t, i in topics.items() if i.msgtype in _POSE_TYPES)
    has = f"; it has {', '.join(poses)}" if poses else ""
    odom = any(i.msgtype == "nav_msgs/msg/Odometry" for i in topics.values())
    make = (
        ": a robot's odometry, which its driver or robot_localization also publishes as TF (odom -> base_link), "
        "in the bag when /tf is recorded with it; the camera's mount goes on /tf_static"
        if odom
        else ""
    )
    return f"{has}{make}. Record the bag with /tf and /tf_static{', ' + instead if instead else ''}"


def _refuse_a_bag_the_node_did_not_write(spec: NodeSpec, out: Path) -> None:
    """``--overwrite`` replaces an earlier output of this node, not a recording given by a typo: refuse an existing
    bag without this node's mark (:data:`NODE_MARK` in its metadata.yaml's custom_data, which every output bag of
    the offline runtime carries), or one that cannot be read to tell, before anything is read or written. Its
    topics do not tell: a camera's recording may hold only Images under names that end like the node's outputs.
    An output of a pose2rgbd from before the mark, or of another node, is refused too."""
    if not BAG.matches(out):
        return  # not a bag (check_output has refused it) or an empty folder: nothing to lose
    try:
        with open_bag(out) as r:
            topics = {t: i.msgtype for t, i in r.topics.items()}
            mark = r.custom_data.get(NODE_MARK)
    except BagError as e:
        raise OutputError(
            f"{out} is a bag that cannot be read ({e}), so whether it is an earlier output of the {spec.name} node or "
            f"a recording cannot be told; --overwrite does not replace it. Choose another output path, or move {out} "
            "away yourself (nothing was written)"
        ) from e
    if mark == spec.name:
        return
    held = ", ".join(f"{t} ({mt})" for t, mt in sorted(topics.items())[:4]) or "no topic"
    more = f" and {len(topics) - 4} more" if len(topics) > 4 else ""
    if mark is None:
        why = (
            f"its metadata.yaml has no {NODE_MARK} mark in custom_data, which every output bag of the node carries "
            "(a recording? or an output of a pose2rgbd from before the mark)"
        )
    else:
        why = f"its metadata.yaml marks it as an output of the {mark} node ({NODE_MARK}: {mark})"
    raise OutputError(
        f"{out} is a bag, but not one the {spec.name} node writes: it holds {held}{more}, and {why}; --overwrite only "
        f"replaces an earlier output of the {spec.name} node. Choose another output path, or move {out} away "
        "yourself (nothing was written)"
    )


def _refuse_bag_of_a_resumed_recording(out: Path, dataset: Path, frames: int, overwrite: bool) -> None:
    """The dataset is resumed after its last frame, so its frames are not recorded again: the output bag of this
    run would start there. An existing bag (an interrupted run's) would be refused without --overwrite, and
    replaced by a bag missing its first frames with it: say so, and what to do, before anything is written."""
    try:
        with open_bag(out) as r:
            held = f"{r.message_count} messages"
    except Exception:  # a damaged bag: its size says enough
        held = "the messages of an earlier run"
    base = (
        f"the output bag {out} holds {held} of an earlier run (an interrupted one?), and the dataset {dataset} "
        f"will be resumed after its {frames} frames, which are not recorded again: a bag is not appended to"
    )
    if overwrite:
        raise OutputError(
            f"{base}, so --overwrite would replace {out} by a bag that starts after the dataset's last frame and lose "
            f"the messages recorded so far. To record the rest, give a new output bag ({out} keeps what was "
            "recorded); to record everything again into one bag, record into a new dataset (nothing was written)"
        )
    raise OutputError(
        f"{base}. To record the rest, give a new output bag ({out} keeps what was recorded so far); to record "
        "everything again into one bag, record into a new dataset with --overwrite (nothing was written)"
    )


def _run_node_bag(
    spec: NodeSpec,
    cfg: Any,
    bag: str | Path,
    out: str | Path | None,
    *,
    resources: dict[str, Any] | None,
    rate: float,
    namespace: str,
    storage: str,
    overwrite: bool,
    progress: bool,
    tf_topic: str,
    tf_static_topic: str,
    inputs: Sequence[str | Path],
    keep_partial: bool,
    resumed: str = "",
) -> RunStats:
    if not isinstance(cfg, spec.config):
        raise ConfigError(f"{spec.name}: expected a {spec.config.__name__}, got {type(cfg).__name__}")
    pacer = _Pacer(rate)
    stats = RunStats()
    t_wall = time.perf_counter()
    ts = _output_typestore()
    with open_bag(bag) as reader:
        # inputs: topic -> handler (the bag's type must be one the input accepts)
        handlers: dict[str, Callable[..., Any]] = {}
        for inp in spec.active_inputs(cfg):
            topic = resolve_topic(get_key(cfg, inp.topic), namespace)
            info = reader.topics.get(topic)
            if info is None:
                if inp.required(cfg):
                    raise BagError(
                        f"{bag}: topic {topic!r} ({inp.topic}, {' or '.join(inp.types)}) not in bag; "
                        f"{_topics_of_the_type(reader, inp.types, inp.topic)}; topics:\n"
                        f"{reader.describe_topics()}"
                    )
                stats.absent[inp.topic] = (topic, sorted(t for mt in inp.types for t in reader.topics_of_type(mt)))
                continue
            if info.msgtype not in inp.types:
                raise BagError(
                    f"{bag}: topic {topic!r} has type {info.msgtype}, expected {' or '.join(inp.types)}; "
                    f"{_topics_of_the_type(reader, inp.types, inp.topic)}; topics:\n{reader.describe_topics()}"
                )
            handlers[topic] = inp.handler  # bound to the logic once it is built
        tf_in: dict[str, bool] = {}  # topic -> static
        if spec.tf_used(cfg):
            assert spec.tf is not None
            cands = tf_topics(spec.tf, tf_topic, tf_static_topic)
            # a TF topic registered without a message (a recording that never got one) is none at all
            tf_in = {t: st for t, st in cands if t in reader.topics and reader.topics[t].count}
            if not tf_in and spec.tf.required(cfg):
                names = [t for t, _ in cands]
                has = f"neither {' nor '.join(names)}" if len(names) > 1 else f"no {names[0]}"
                has += " (or no message on it)" if any(t in reader.topics for t in names) else ""
                why = spec.tf.why or spec.name + " needs TF"
                if spec.tf.static_only:  # a mount: no pose topic stands in for it
                    nxt = ". Record /tf_static with the bag" + (f", {spec.tf.instead}" if spec.tf.instead else "")
                else:
                    nxt = _without_tf(reader.topics, spec.tf.instead)
                raise BagError(f"{bag}: {why} but the bag has {has}{nxt}")
        wanted = list(handlers) + [t for t in tf_in if t not in handlers]
        if resumed:  # said once the bag is known to hold what the node needs
            log.warning("%s", resumed)

        resources = with_resources(spec, cfg, resources)
        logic = spec.build(cfg, TypestoreFactory(ts), None, **resources)
        check_logic(spec, logic)
        handlers = {topic: bound(logic, h) for topic, h in handlers.items()}
        tf = TFInput(logic, log)
        if spec.tf_used(cfg):
            logic.set_tf_lookup(tf.lookup_transform)
        tf_update = bound(logic, spec.tf.on_update) if spec.tf_used(cfg) and spec.tf and spec.tf.on_update else None
        tf_waiting = tf_update is not None
        latency = _FrameLatency(logic, stats)
        for name, why in spec.silent_outputs(cfg, logic).items():
            log.info("%s: not written: %s", resolve_topic(name, namespace), why)
        out_topics = {name: resolve_topic(name, namespace) for name in spec.output_types(cfg, logic)}
        timers = [(bound(logic, t.handler), int(t.period_s(cfg) * 1e9)) for t in spec.timers]
        timers = [(fn, period) for fn, period in timers if period > 0]
        writer = None
        try:
            if out is not None:
                writer = BagWriter(out, storage=storage, typestore=ts, overwrite=overwrite, inputs=[bag, *inputs])
                writer.set_custom_data(NODE_MARK, spec.name)  # what --overwrite looks for
                for name, mt in spec.output_types(cfg, logic).items():
                    writer.add_topic(out_topics[name], mt)

            def emit(outputs: list[tuple[str, Any]] | None, now: int) -> None:
                latency()
                if writer is not None:
                    for name, msg in outputs or ():
                        writer.write(out_topics[name], now, msg)

            deadlines: list[int | None] = [None] * len(timers)
            total = sum(reader.topics[t].count for t in wanted)
            messages = camera_info_first(reader.messages(wanted))
            for m in bar(messages, total=total, progress=progress, desc=spec.name, unit="msg"):
                now = m.stamp_ns
                pacer(now)
                for k, (fn, period) in enumerate(timers):
                    if deadlines[k] is None:
                        deadlines[k] = now + period
                    while (due := deadlines[k]) is not None and due <= now:
                        emit(fn(due), due)
                        deadlines[k] = due + period
                stats.messages_in += 1
                if m.topic in tf_in:
                    tf.add(m.msg, m.topic, static=tf_in[m.topic], now_ns=now)
                    if tf_waiting and tf_update is not None:
                        tf_waiting = not tf_update(now)
                if m.topic in handlers:
                    emit(handlers[m.topic](m.msg, now), now)
            if callable(getattr(logic, "finish", None)):
                logic.finish()
            if writer is not None:
                writer.close()
                stats.messages_out = writer.counts
        except BaseException as e:
            # BagWriter.close above, failing, has discarded the bag already (abort: nothing more to do)
            interrupted = isinstance(e, KeyboardInterrupt)
            produced = int(getattr(logic, "counters", {}).get("frames", 0)) > 0
            if writer is not None and keep_partial and _kept_on(e) and (interrupted or produced):
                _keep_bag(writer, out, interrupted=interrupted)
            elif writer is not None:
                writer.abort()
            raise
        finally:
            if callable(getattr(logic, "close", None)):
                logic.close()
    stats.counters = dict(getattr(logic, "counters", {}))
    stats.world_frame = str(getattr(logic, "world_frame", "") or "")
    if tf.rejected:
        stats.counters["tf_rejected"] = tf.rejected
    stats.wall_s = time.perf_counter() - t_wall
    return stats


def _keep_bag(writer: BagWriter, out: str | Path | None, *, interrupted: bool) -> None:
    """Finish the output bag of a recording stopped by Ctrl-C or an error with what was written up to then (the
    dataset beside it keeps its frames too), and note it for the CLI's message. A bag that cannot be finished (the
    error was the disk's) is discarded; the note says so. A bag whose own close was what failed is gone already:
    nothing is noted."""
    if writer.closed:  # its own close failed, and discarded the temporary: nothing was kept
        return
    n = sum(writer.counts.values())
    try:
        writer.close()
    except Exception as e:  # BagWriter.close discarded the temporary
        note_kept(f"no bag at {out} (the {n} messages written could not be finished: {e})")
        return
    note_kept(f"{out} (bag, {n} message{'' if n == 1 else 's'}{'' if interrupted else ', up to the error'})")


def run_renderer_bag(
    cfg: RendererConfig,
    bag: str | Path,
    out: str | Path,
    *,
    engine: Any = None,
    **kwargs: Any,
) -> RunStats:
    """Replay ``bag`` through the render node (:data:`RENDERER`); write what it publishes to the bag ``out``.

    ``engine``: a ready :class:`~pose2rgbd.inference.RenderEngine` (default: loaded from ``cfg.engine``,
    its look-ahead spaced at ``cfg.rate_hz``). Other arguments: :func:`run_node_bag`.
    """
    return run_node_bag(RENDERER, cfg, bag, out, resources=None if engine is None else {"engine": engine}, **kwargs)


def run_recorder_bag(
    cfg: RecorderConfig, bag: str | Path, *, out_bag: str | Path | None = None, **kwargs: Any
) -> RunStats:
    """Replay ``bag`` through the record node (:data:`RECORDER`): frames go to ``cfg.output.dataset`` (if set),
    what it publishes (SyncedFrame, diagnostics) to ``out_bag`` (if given). The image topic's type (raw /
    compressed) is taken from the bag. Other arguments: :func:`run_node_bag`."""
    if not cfg.output.dataset and out_bag is None:
        raise ConfigError("nothing to record into: give a dataset directory (output.dataset) and/or an output bag")
    return run_node_bag(RECORDER, cfg, bag, out_bag, **kwargs)


def _dataset_frames(path: str | Path) -> int:
    """Rows of a dataset's frames.csv (0 when there is none)."""
    f = Path(path) / "frames.csv"
    if not f.is_file():
        return 0
    return max(0, sum(1 for ln in f.read_text().splitlines() if ln.strip()) - 1)
