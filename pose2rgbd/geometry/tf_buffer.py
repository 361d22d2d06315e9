"""A time-interpolating TF buffer and chain walker (no ROS): ``/tf`` and ``/tf_static`` -> lookups.

Used by node logic, conversion (TF orientation source, camera mount from ``/tf_static``) and the offline
runtime; it imports only :mod:`pose2rgbd.geometry`, so every layer above may import it.

Semantics follow tf2's ``BufferCore``: every child frame has one parent; ``lookup_transform(target, source,
time_ns)`` walks both frames up to their common ancestor and composes the links, each interpolated at
``time_ns`` (linear translation, slerp rotation between the two bracketing stamps). Static links hold at
every time. ``time_ns == 0`` asks for the latest time at which the whole chain is available (tf2's
"latest common time"). Errors mirror tf2's exception types and messages (``LookupException``,
``ConnectivityException``, ``ExtrapolationException``), all :class:`TransformException`.

Why not tf2 itself: it needs a ROS install; this is the part of it the ROS-free code needs.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pose2rgbd.errors import GeometryError, Pose2RGBDError
from pose2rgbd.geometry.interpolation import slerp_quat_xyzw
from pose2rgbd.geometry.rotations import canonical_quat_xyzw, quat_problem
from pose2rgbd.geometry.transforms import T_from_tq


class TransformException(Pose2RGBDError):
    """Base of the TF lookup errors (tf2_ros.TransformException)."""


class LookupException(TransformException):
    """A frame does not exist."""


class ConnectivityException(TransformException):
    """The frames are in different trees."""


class ExtrapolationException(TransformException):
    """The requested time lies outside the buffered data of a link."""


def _stamp_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (ROS 2 ``sec``/``nanosec``, ROS 1 ``secs``/``nsecs``) -> int ns."""
    sec = getattr(stamp, "sec", None)
    nsec = getattr(stamp, "nanosec", None)
    if sec is None:
        sec = stamp.secs
    if nsec is None:
        nsec = getattr(stamp, "nsec", None)
    if nsec is None:
        nsec = stamp.nsecs
    return int(sec) * 1_000_000_000 + int(nsec)


def _checked_tq(
    parent: str, child: str, x: float, y: float, z: float, qx: float, qy: float, qz: float, qw: float
) -> tuple[np.ndarray, np.ndarray]:
    """The translation and the canonical unit quaternion (w >= 0) of one transform, or GeometryError: a translation
    not finite, or a quaternion breaking :func:`~pose2rgbd.geometry.rotations.quat_problem`'s rule (the message
    layer's; tf2 refuses such a quaternion too). Scalar arithmetic, not numpy: it runs for every transform on ``/tf``
    (hundreds a second beside a render), where numpy's cost per call on 3- and 4-vectors was most of the time a TF
    message took."""
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        raise GeometryError(f"transform {parent} -> {child}: translation contains NaN or inf")
    problem = quat_problem((qx, qy, qz, qw))
    if problem is not None:
        raise GeometryError(f"transform {parent} -> {child}: rotation {problem}")
    t = np.array((x, y, z))
    if abs(qw) <= 1e-12:  # w = 0: the sign is decided on x, then y, then z
        return t, canonical_quat_xyzw(np.array((qx, qy, qz, qw)))
    s = (1.0 if qw > 0 else -1.0) / math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    return t, np.array((qx * s, qy * s, qz * s, qw * s))


def _fmt_time(ns: int) -> str:
    return f"{ns / 1e9:.6f}"


@dataclass
class _Link:
    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    t: list[np.ndarray] = field(default_factory=list)
    q: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp: int, t: np.ndarray, q: np.ndarray, cache_ns: int) -> None:
        if self.static:
            self.stamps, self.t, self.q = [stamp], [t], [q]
            return
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.t[i], self.q[i] = t, q
        else:
            self.stamps.insert(i, stamp)
            self.t.insert(i, t)
            self.q.insert(i, q)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_ns)
        if cut > 0:
            del self.stamps[:cut], self.t[:cut], self.q[:cut]

    def at(self, time_ns: int, child: str) -> np.ndarray:
        if self.static or time_ns == 0:
            i = len(self.stamps) - 1
            return T_from_tq(self.t[i], self.q[i])
        s = self.stamps
        if time_ns < s[0]:
            raise ExtrapolationException(
                f"Lookup would require extrapolation into the past.  Requested time {_fmt_time(time_ns)} but the "
                f"earliest data is at time {_fmt_time(s[0])}, when looking up transform from frame [{child}] to "
                f"frame [{self.parent}]"
            )
        if time_ns > s[-1]:
            raise ExtrapolationException(
                f"Lookup would require extrapolation into the future.  Requested time {_fmt_time(time_ns)} but the "
                f"latest data is at time {_fmt_time(s[-1])}, when looking up transform from frame [{child}] to "
                f"frame [{self.parent}]"
            )
        i = bisect.bisect_left(s, time_ns)
        if s[i] == time_ns:
            return T_from_tq(self.t[i], self.q[i])
        a = (time_ns - s[i - 1]) / (s[i] - s[i - 1])
        t = self.t[i - 1] + a * (self.t[i] - self.t[i - 1])
        return T_from_tq(t, slerp_quat_xyzw(self.q[i - 1], self.q[i], a))


# why a stamp is far after the clock of the node that got it (a transform here, a pose on the render node's topic)
CLOCKS_DIFFER = "its publisher's clock or stamp is off, or one side runs on sim time (use_sim_time) and the other not"


class TFBuffer:
    """Thread-safe TF buffer. ``cache_time_s``: how much history each dynamic link keeps."""

    def __init__(self, cache_time_s: float = 10.0) -> None:
        self._links: dict[str, _Link] = {}
        self._cache_ns = int(cache_time_s * 1e9)
        self._lock = threading.Lock()
        self.rejected = 0  # transforms refused by add_tf_message (NaN translation, bad quaternion, self transform)
        self.last_rejection = ""  # why the latest one was refused

    @staticmethod
    def _strip(frame: str) -> str:
        return frame[1:] if frame.startswith("/") else frame

    def set_transform(
        self, parent: str, child: str, stamp_ns: int, translation: Any, quat_xyzw: Any, *, static: bool = False
    ) -> None:
        """Add ``T_parent_child`` at ``stamp_ns``. A translation or quaternion that is not finite, or a quaternion
        that is not unit within :data:`QUAT_NORM_TOLERANCE`, raises GeometryError; a self transform
        LookupException."""
        x, y, z = (float(v) for v in np.asarray(translation, dtype=np.float64).reshape(3))
        qx, qy, qz, qw = (float(v) for v in np.asarray(quat_xyzw, dtype=np.float64).reshape(4))
        self._set(parent, child, stamp_ns, x, y, z, qx, qy, qz, qw, static)

    def _set(
        self, parent: str, child: str, stamp_ns: int, x: float, y: float, z: float,
        qx: float, qy: float, qz: float, qw: float, static: bool,
    ) -> None:  # fmt: skip
        parent, child = self._strip(parent), self._strip(child)
        if parent == child:
            raise LookupException(f"Self transform: parent and child frame are both '{child}'")
        t, q = _checked_tq(parent, child, x, y, z, qx, qy, qz, qw)
        with self._lock:
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != static:
                link = _Link(parent, static)
                self._links[child] = link
            link.insert(int(stamp_ns), t, q, self._cache_ns)

    def add_tf_message(
        self,
        msg: Any,
        *,
        static: bool = False,
        default_stamp_ns: int = 0,
        clock_ns: int | None = None,
        max_ahead_ns: int = 0,
    ) -> int:
        """Add every ``TransformStamped`` of a ``tf2_msgs/TFMessage``; returns how many were bad (skipped; also
        counted in :attr:`rejected`, the reason of the latest in :attr:`last_rejection`: the rules of
        :meth:`set_transform`, and with ``clock_ns`` a dynamic transform stamped more than ``max_ahead_ns`` after it
        on a link whose stamps so far were not: a link in step with the clock that jumps ahead, which a latest-time
        lookup would answer, hiding every later transform, until the clock reached its stamp. A link whose stamps
        were all ahead from its first (a bag whose stamps run on another clock than its log time) is taken as it
        comes). ``default_stamp_ns`` stands in for a zero header stamp (e.g. the bag log time)."""
        bad = 0
        for ts in msg.transforms:
            tr, r = ts.transform.translation, ts.transform.rotation
            st = _stamp_ns(ts.header.stamp)
            latest = None if clock_ns is None else clock_ns + max_ahead_ns
            if not static and latest is not None and st > latest and self._in_step(ts.child_frame_id, latest):
                assert clock_ns is not None
                bad += 1
                self.rejected += 1
                self.last_rejection = (
                    f"{ts.header.frame_id} -> {ts.child_frame_id}: stamped {_fmt_time(st)}, "
                    f"{(st - clock_ns) / 1e9:.3f} s after the node's clock ({_fmt_time(clock_ns)}; more than "
                    f"{max_ahead_ns / 1e9:g} s): {CLOCKS_DIFFER}"
                )
                continue
            try:
                self._set(ts.header.frame_id, ts.child_frame_id, st if st > 0 else default_stamp_ns,
                          float(tr.x), float(tr.y), float(tr.z), float(r.x), float(r.y), float(r.z), float(r.w),
                          static)  # fmt: skip
            except (GeometryError, TransformException) as e:
                bad += 1
                self.rejected += 1
                self.last_rejection = f"{ts.header.frame_id} -> {ts.child_frame_id}: {e}"
        return bad

    def _in_step(self, child: str, latest_ns: int) -> bool:
        """Whether the dynamic link to ``child`` has a newest stamp no later than ``latest_ns``."""
        with self._lock:
            link = self._links.get(self._strip(child))
            return link is not None and not link.static and bool(link.stamps) and link.stamps[-1] <= latest_ns

    def clear_dynamic(self) -> int:
        """Forget every dynamic link's history (the static ones stay), as tf2_ros does when time jumps back; returns
        how many links were cleared."""
        with self._lock:
            dynamic = [c for c, link in self._links.items() if not link.static]
            for c in dynamic:
                del self._links[c]
        return len(dynamic)

    def frames(self) -> list[str]:
        with self._lock:
            names = set(self._links) | {link.parent for link in self._links.values()}
        return sorted(names)

    def link(self, child: str) -> tuple[str, bool, list[int]] | None:
        """``(parent, static, stamps_ns)`` of the link above ``child`` (None for a root or unknown frame)."""
        with self._lock:
            ln = self._links.get(self._strip(child))
            return None if ln is None else (ln.parent, ln.static, list(ln.stamps))

    def ancestors(self, frame: str) -> list[str]:
        """``frame`` and its parents up to the root of its tree."""
        with self._lock:
            return self._chain(self._strip(frame))

    def lookup_up_to(
        self, frame: str, candidates: list[str] | tuple[str, ...], time_ns: int = 0
    ) -> tuple[np.ndarray, str, list[str]] | None:
        """Walk from ``frame`` up its TF ancestors to the first of ``candidates`` (nearest first; ``frame``
        itself counts). Returns ``(T_candidate_frame, candidate, chain)`` with ``chain`` from ``frame`` up to
        the candidate, or None when no candidate is an ancestor (or the lookup fails at ``time_ns``)."""
        chain = self.ancestors(frame)
        for i, f in enumerate(chain):
            if f in candidates:
                if i == 0:
                    return np.eye(4), f, [f]
                try:
                    T, _ = self.lookup_transform(f, chain[0], time_ns)
                except TransformException:
                    return None
                return T, f, chain[: i + 1]
        return None

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        seen = {frame}
        while chain[-1] in self._links:
            p = self._links[chain[-1]].parent
            if p in seen:  # a loop in the tree: stop walking
                break
            chain.append(p)
            seen.add(p)
        return chain

    def _exists(self, frame: str) -> bool:
        return frame in self._links or any(link.parent == frame for link in self._links.values())

    def lookup_transform(self, target: str, source: str, time_ns: int = 0) -> tuple[np.ndarray, int]:
        """``(T_target_source, stamp_ns)`` at ``time_ns`` (0: latest common time; the stamp returned is it)."""
        target, source = self._strip(target), self._strip(source)
        with self._lock:
            for arg, fr in (("target_frame", target), ("source_frame", source)):
                if not fr:
                    raise LookupException(f"Invalid argument passed to lookupTransform argument {arg} - frame is empty")
                if not self._exists(fr):
                    raise LookupException(f'"{fr}" passed to lookupTransform argument {arg} does not exist. ')
            if target == source:
                return np.eye(4), int(time_ns)
            up_s, up_t = self._chain(source), self._chain(target)
            common = next((f for f in up_s if f in set(up_t)), None)
            if common is None:
                raise ConnectivityException(
                    f"Could not find a connection between '{target}' and '{source}' because they are not part of "
                    "the same tree.Tf has two or more unconnected trees."
                )
            links_s = up_s[: up_s.index(common)]  # children whose link leads towards common
            links_t = up_t[: up_t.index(common)]
            if time_ns == 0:
                dyn = [self._links[c].stamps[-1] for c in links_s + links_t if not self._links[c].static]
                time_ns = min(dyn) if dyn else 0
            T_common_source = np.eye(4)
            for c in links_s:  # source -> ... -> common
                T_common_source = self._links[c].at(time_ns, c) @ T_common_source
            T_common_target = np.eye(4)
            for c in links_t:
                T_common_target = self._links[c].at(time_ns, c) @ T_common_target
        # rigid inverse of T_common_target
        R = T_common_target[:3, :3]
        inv = np.eye(4)
        inv[:3, :3] = R.T
        inv[:3, 3] = -R.T @ T_common_target[:3, 3]
        return inv @ T_common_source, int(time_ns)

    def can_transform(self, target: str, source: str, time_ns: int = 0) -> bool:
        try:
            self.lookup_transform(target, source, time_ns)
        except TransformException:
            return False
        return True
