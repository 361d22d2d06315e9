"""The orientation tracks a rosbag can give the time-offset stage: an Imu or Odometry topic, or the TF tree."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation

from pose2rgbd.errors import BagError
from pose2rgbd.geometry.tf_buffer import TFBuffer, TransformException
from pose2rgbd.messages import header_stamp_ns, orientation_xyzw

if TYPE_CHECKING:
    from pose2rgbd.bags.reader import BagMessage, BagReader

log = logging.getLogger(__name__)


def stamp_ns(m: BagMessage) -> int:
    """The message's ``header.stamp`` when set, else the bag's log time."""
    try:
        s = header_stamp_ns(m.msg)
    except AttributeError:
        s = 0
    return s if s > 0 else m.stamp_ns


def orientation_series(bag: BagReader, topic: str, kind: str, t0_ns: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``(t_s, R_world_body, frame_id)`` of an Imu or Odometry topic, ``frame_id`` its first message's header frame
    (an Odometry's: the frame its poses are in). Samples whose orientation breaks the message layer's rule
    (:func:`pose2rgbd.messages.orientation_xyzw`: NaN, zero, not unit; an Imu without orientation) are left out and
    counted in a warning, so a few bad samples do not stop a conversion."""
    ts, qs = [], []
    bad = 0
    frame: str | None = None
    for m in bag.messages([topic]):
        if frame is None:
            frame = str(m.msg.header.frame_id).lstrip("/")
        q = orientation_xyzw(m.msg)
        if q is None:
            bad += 1
            continue
        ts.append((stamp_ns(m) - t0_ns) / 1e9)
        qs.append(q)
    if bad:
        log.warning("%s: %d %s orientation samples left out (NaN, zero or non-unit quaternion)", topic, bad, kind)
    t = np.asarray(ts, dtype=np.float64)
    q = np.asarray(qs, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(t, kind="stable")
    t, q = t[order], q[order]
    keep = np.concatenate([[True], np.diff(t) > 0]) if t.size else np.zeros(0, bool)
    if keep.sum() < 1:
        raise BagError(f"{bag.path}: {topic} has no usable orientation ({bad} samples with an invalid quaternion)")
    return t[keep], Rotation.from_quat(q[keep]).as_matrix(), frame or ""


# World frames whose orientation the TF source accepts, in order of preference. map / world / odom are taken as
# ENU-aligned (REP-105 map and odom, REP-103 ENU); earth is ECEF (REP-105) and is rotated into ENU at the datum.
TF_WORLD_FRAMES = ("map", "world", "earth", "odom")
_WHOLE_RECORDING_S = 1e7  # TF history kept while reading a bag: all of it (115 days)
# how a TF track's frame is described; a bag written in that same frame replaces it (sources/bag.py)
ENU_ALIGNED_NOTE = "the '{}' frame assumed ENU-aligned (REP-105 / REP-103)"
IN_WORLD_NOTE = "the '{}' frame, the frame the poses are written in"
TRACK_IN_WORLD_NOTE = "its frame '{}' placed in '{}', the frame the poses are written in, by TF at each frame"
_TF_TODO = "record /tf, or choose another orientation source (--orientation auto, imu, odom or course)"


def tf_topics(bag: BagReader) -> tuple[list[str], list[str]]:
    """``(dynamic, static)`` TFMessage topics (static: "static" in the name, as /tf_static)."""
    tf = bag.topics_of_type("tf2_msgs/msg/TFMessage")
    static = [t for t in tf if "static" in t]
    return [t for t in tf if t not in static], static


def _tf_need(body_frames: list[str] | tuple[str, ...]) -> str:
    return f"orientation from TF needs a /tf chain from one of {list(TF_WORLD_FRAMES)} to one of {list(body_frames)}"


def require_dynamic_tf(bag: BagReader, body_frames: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The TF topics, or a BagError saying that there is no dynamic one."""
    dyn, static = tf_topics(bag)
    if not dyn:
        raise BagError(
            f"{bag.path}: {_tf_need(body_frames)}, but the bag has no dynamic TF topic (tf2_msgs/msg/TFMessage)"
            f"{f', only {static}' if static else ''}; {_TF_TODO}"
        )
    return dyn, static


def read_tf_tree(bag: BagReader, dyn: list[str], static: list[str]) -> tuple[TFBuffer, int]:
    """The whole recording's TF tree from the topics ``dyn`` and ``static`` (:func:`tf_topics`), and how many
    transforms were bad (left out)."""
    buf = TFBuffer(cache_time_s=_WHOLE_RECORDING_S)
    bad = 0
    for m in bag.messages(dyn + static):
        bad += buf.add_tf_message(m.msg, static=m.topic in static, default_stamp_ns=m.stamp_ns)
    return buf, bad


def world_chain(buf: TFBuffer, body_frames: Sequence[str], worlds: Sequence[str]) -> tuple[str, str, list[str]] | None:
    """``(body, world, chain)``: the first of ``body_frames`` in the TF tree with one of ``worlds`` among its
    ancestors, the first such world in ``worlds``' order, and the frames from the body up to it; None where none."""
    frames = set(buf.frames())
    for body in (b for b in body_frames if b in frames):
        chain = buf.ancestors(body)
        world = next((w for w in worlds if w in chain), None)
        if world is not None:
            return body, world, chain[: chain.index(world) + 1]
    return None


def tf_orientation_series(
    bag: BagReader,
    body_frames: list[str],
    t0_ns: int,
    datum_latlon: tuple[float, float] | None,
    tree: tuple[TFBuffer, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """``(t_s, R_world_body, assumption, world)`` from the TF tree (/tf plus /tf_static; ``tree``: it as
    :func:`read_tf_tree` read it, else read here); ``world`` is the TF frame the rotations are in ("" for 'earth':
    they are rotated into ENU).

    The body is the first of ``body_frames`` that has one of :data:`TF_WORLD_FRAMES` among its TF ancestors;
    the world is the first such frame in that order. ``R_world_body`` is sampled at the stamps of the dynamic
    transforms of that chain: the native rate of the source, so nothing is resampled here (the lookup
    interpolates the other links of the chain like tf2; samples a link cannot give without extrapolating are
    skipped) and :meth:`OrientationTrack.at` slerps between them at the frame times.
    """
    dyn, static = require_dynamic_tf(bag, body_frames)
    what, todo = _tf_need(body_frames), _TF_TODO
    buf, bad = read_tf_tree(bag, dyn, static) if tree is None else tree
    frames = buf.frames()
    links = {f: ln for f in frames if (ln := buf.link(f)) is not None}
    dyn_frames = {f for c, (p, st, _) in links.items() if not st for f in (c, p)}
    present = f"frames in {dyn}: {sorted(dyn_frames)}" + (
        f"; in {static}: {sorted(set(frames) - dyn_frames)}" if set(frames) - dyn_frames else ""
    )
    chosen = world_chain(buf, body_frames, TF_WORLD_FRAMES)
    if chosen is None:
        found = [f"{b}'s ancestors are {buf.ancestors(b)}" for b in body_frames if b in frames]
        why = "; ".join(found) if found else f"none of the body frames {body_frames} is in the TF tree"
        raise BagError(f"{bag.path}: {what}, but {why}; {present}; {todo}")
    body, world, chain = chosen
    dynamic = [c for c in chain[:-1] if not links[c][1]]
    if not dynamic:
        raise BagError(f"{bag.path}: {what}, but the chain {' -> '.join(reversed(chain))} is all static; {todo}")
    stamps = np.unique(np.asarray([st for c in dynamic for st in links[c][2]], dtype=np.int64))
    ts, Rs = [], []
    for st in stamps.tolist():
        try:
            T, _ = buf.lookup_transform(world, body, st)
        except TransformException:
            continue
        ts.append((st - t0_ns) / 1e9)
        Rs.append(T[:3, :3])
    if not ts:
        raise BagError(
            f"{bag.path}: {what}, but {world} -> {body} cannot be looked up at any stamp of its links "
            f"({' -> '.join(reversed(chain))}; {bad} bad transforms); {todo}"
        )
    R = np.asarray(Rs)
    path = " -> ".join(reversed(chain))
    if world == "earth":
        if datum_latlon is None:
            raise BagError(f"{bag.path}: TF world frame 'earth' (ECEF) needs a datum; no valid GPS fix")
        import pymap3d

        lat, lon = datum_latlon  # R_enu_body = R_enu_ecef @ R_ecef_body, column by column
        R = np.stack(pymap3d.ecef2enuv(R[:, 0, :], R[:, 1, :], R[:, 2, :], lat, lon), axis=1)
        frame_note = f"'earth' taken as ECEF (REP-105), rotated into ENU at the datum ({lat:.6f}, {lon:.6f})"
    else:
        frame_note = ENU_ALIGNED_NOTE.format(world)
    skipped = stamps.size - len(ts)
    log.info("orientation from TF: %s, %d samples (%d skipped: a link of the chain not yet/no longer available)",
             path, len(ts), skipped)  # fmt: skip
    note = f"orientation from {', '.join(dyn)}: {path}; {frame_note}"
    return np.asarray(ts), R, note, world if world != "earth" else ""
