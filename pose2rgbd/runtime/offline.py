"""Offline runtime: bag -> node logic -> bag / dataset, without ROS.

Messages are fed to the node logic in log-time order; the bag's log time is the node clock, so a run is
deterministic. Timers (the renderer's ``rate_hz``, diagnostics) fire at their bag-time deadlines *before*
the first message at or after that deadline is handled. ``rate=0`` runs as fast as possible; ``rate=1.0``
replays at bag speed (``2.0`` twice as fast).

Output bags carry the custom ``pose2rgbd/msg/*`` types (registered from msg/ in the typestore).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pose2rgbd.bags import BagWriter, open_bag
from pose2rgbd.errors import BagError, ConfigError
from pose2rgbd.geometry.tf_buffer import TFBuffer, TransformException
from pose2rgbd.messages import TypestoreFactory, new_typestore, register_custom_msgs
from pose2rgbd.nodes.common import resolve_topic
from pose2rgbd.nodes.recorder import Recorder, RecorderConfig
from pose2rgbd.nodes.renderer import Renderer, RendererConfig

log = logging.getLogger(__name__)

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"


@dataclass
class RunStats:
    """What an offline run did."""

    messages_in: int = 0
    messages_out: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)  # per rendered frame (renderer runs)
    wall_s: float = 0.0

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


def run_renderer_bag(
    cfg: RendererConfig,
    bag: str | Path,
    out: str | Path,
    *,
    engine: Any = None,
    rate: float = 0.0,
    namespace: str = "",
    storage: str = "mcap",
    overwrite: bool = False,
    progress: bool = False,
    tf_topic: str = TF_TOPIC,
    tf_static_topic: str = TF_STATIC_TOPIC,
) -> RunStats:
    """Replay ``bag`` through the renderer; write what it publishes to the bag ``out``.

    Args:
        cfg: renderer configuration (``cfg.topics.pose`` is the input topic when ``pose_source`` is 'topic').
        engine: a ready :class:`~pose2rgbd.inference.InferenceEngine` (default: built from ``cfg.engine``).
        rate: 0 as fast as possible, 1.0 bag speed.
        namespace: prefix for relative output topic names (``rgb/image_raw`` -> ``/<ns>/rgb/image_raw``).
    """
    from pose2rgbd.inference import InferenceEngine

    if engine is None:
        engine = InferenceEngine.from_config(cfg.engine)
    if cfg.rate_hz > 0:
        engine.cfg.lookahead_rate_hz = cfg.rate_hz
    ts = _output_typestore()
    factory = TypestoreFactory(ts)
    renderer = Renderer(cfg, engine, factory)
    tf = TFBuffer(cache_time_s=30.0)
    stats = RunStats()
    pacer = _Pacer(rate)
    t_wall = time.perf_counter()
    period = int(1e9 / cfg.rate_hz) if cfg.rate_hz > 0 else 0
    diag_period = int(cfg.diagnostics_period_s * 1e9)
    out_topics = {name: resolve_topic(name, namespace) for name in renderer.output_types()}

    with open_bag(bag) as reader:
        wanted = [t for t in (tf_topic, tf_static_topic) if t in reader.topics]
        pose_topic = None
        if cfg.pose_source == "topic":
            pose_topic = resolve_topic(cfg.topics.pose, namespace)
            reader.find_topic("geometry_msgs/msg/PoseStamped", pose_topic)
            wanted.append(pose_topic)
        elif tf_topic not in reader.topics and tf_static_topic not in reader.topics:
            raise BagError(f"{bag}: pose_source is 'tf' but the bag has neither {tf_topic} nor {tf_static_topic}")
        with BagWriter(out, storage=storage, typestore=ts, overwrite=overwrite) as writer:
            for name, mt in renderer.output_types().items():
                writer.add_topic(out_topics[name], mt)

            def emit(outputs: list[tuple[str, Any]], now: int) -> None:
                for name, msg in outputs:
                    writer.write(out_topics[name], now, msg)

            def lookup(target: str, source: str, t: int) -> tuple[np.ndarray, int]:
                return tf.lookup_transform(target, source, t)

            next_tick: int | None = None
            next_diag: int | None = None
            total = sum(reader.topics[t].count for t in wanted)
            for m in tqdm(reader.messages(wanted), total=total, disable=not progress, desc="render", unit="msg"):
                now = m.stamp_ns
                pacer(now)
                if next_tick is None:
                    next_tick = now + period if period else None
                    next_diag = now + diag_period if diag_period else None
                while next_tick is not None and next_tick <= now:
                    outs = renderer.tick(next_tick, lookup)
                    if outs:
                        stats.latency_ms.append(renderer._latency_ms[-1])
                    emit(outs, next_tick)
                    next_tick += period
                while next_diag is not None and next_diag <= now:
                    writer.write(out_topics[cfg.topics.diagnostics], next_diag, renderer.diagnostics(next_diag))
                    next_diag += diag_period
                stats.messages_in += 1
                if m.topic == tf_topic:
                    tf.add_tf_message(m.msg)
                elif m.topic == tf_static_topic:
                    tf.add_tf_message(m.msg, static=True)
                elif m.topic == pose_topic:
                    n_before = renderer.counters["frames"]
                    outs = renderer.on_pose(m.msg, now)
                    if renderer.counters["frames"] > n_before:
                        stats.latency_ms.append(renderer._latency_ms[-1])
                    emit(outs, now)
            stats.messages_out = writer.counts
    stats.counters = dict(renderer.counters)
    stats.wall_s = time.perf_counter() - t_wall
    return stats


def run_recorder_bag(
    cfg: RecorderConfig,
    bag: str | Path,
    *,
    out_bag: str | Path | None = None,
    rate: float = 0.0,
    namespace: str = "",
    storage: str = "mcap",
    overwrite: bool = False,
    progress: bool = False,
    tf_static_topic: str = TF_STATIC_TOPIC,
) -> RunStats:
    """Replay ``bag`` through the recorder: frames go to ``cfg.output.dataset`` (if set), SyncedFrame
    messages to ``out_bag`` (if given). The image topic's type (raw / compressed) is taken from the bag."""
    if not cfg.output.dataset and out_bag is None:
        raise ConfigError("nothing to record into: give a dataset directory (output.dataset) and/or an output bag")
    ts = _output_typestore()
    factory = TypestoreFactory(ts)
    stats = RunStats()
    pacer = _Pacer(rate)
    t_wall = time.perf_counter()
    with open_bag(bag) as reader:
        t = cfg.topics
        img_info = reader.topics.get(t.image)
        if img_info is None:
            raise BagError(f"{bag}: image topic {t.image!r} not found; topics:\n{reader.describe_topics()}")
        t.compressed = img_info.msgtype == "sensor_msgs/msg/CompressedImage"
        reader.find_topic("sensor_msgs/msg/NavSatFix", t.gps)
        reader.find_topic("nav_msgs/msg/Odometry", t.odom)
        wanted = [t.image, t.gps, t.odom]
        if t.camera_info in reader.topics:
            wanted.append(t.camera_info)
        elif cfg.output.dataset:
            raise BagError(f"{bag}: camera info topic {t.camera_info!r} not found (needed for the dataset camera)")
        if cfg.mount.source == "tf_static":
            if tf_static_topic not in reader.topics:
                raise BagError(f"{bag}: mount.source is 'tf_static' but the bag has no {tf_static_topic}")
            wanted.append(tf_static_topic)
        recorder = Recorder(cfg, factory)
        tf = TFBuffer()
        writer = None
        out_topics = {name: resolve_topic(name, namespace) for name in recorder.output_types()}
        try:
            if out_bag is not None:
                writer = BagWriter(out_bag, storage=storage, typestore=ts, overwrite=overwrite)
                for name, mt in recorder.output_types().items():
                    writer.add_topic(out_topics[name], mt)
            total = sum(reader.topics[x].count for x in wanted)
            for m in tqdm(reader.messages(wanted), total=total, disable=not progress, desc="record", unit="msg"):
                now = m.stamp_ns
                pacer(now)
                stats.messages_in += 1
                outs: list[tuple[str, Any]] = []
                if m.topic == t.image:
                    outs = recorder.on_image(m.msg, now)
                elif m.topic == t.gps:
                    outs = recorder.on_gps(m.msg, now)
                elif m.topic == t.odom:
                    outs = recorder.on_odom(m.msg, now)
                elif m.topic == t.camera_info:
                    recorder.on_camera_info(m.msg)
                elif m.topic == tf_static_topic:
                    tf.add_tf_message(m.msg, static=True)
                    if recorder.T_base_cam is None:
                        try:
                            T, _ = tf.lookup_transform(cfg.mount.base_frame, cfg.mount.camera_frame, 0)
                            recorder.set_mount(T)
                        except TransformException:
                            pass
                if writer is not None:
                    for name, msg in outs:
                        writer.write(out_topics[name], now, msg)
            recorder.finish()
            if writer is not None:
                writer.close()
                stats.messages_out = writer.counts
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            recorder.close()
    stats.counters = dict(recorder.counters)
    if recorder.T_base_cam is None and recorder.counters["dropped_no_mount"]:
        log.warning(
            "no camera mount %s -> %s was found in %s; every frame was dropped",
            cfg.mount.base_frame,
            cfg.mount.camera_frame,
            tf_static_topic,
        )
    stats.wall_s = time.perf_counter() - t_wall
    return stats
