"""Write rosbag2 recordings (mcap or sqlite3) atomically with ``rosbags``.

The bag is written into a hidden temporary sibling directory and renamed onto ``path`` only when
:meth:`BagWriter.close` succeeds; on an exception (or :meth:`BagWriter.abort`) the temporary is deleted, so
``path`` never holds a half-written bag.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pose2rgbd.atomic import make_temp_dir, os_error_message, swap_in, sweep_stale_siblings
from pose2rgbd.errors import BagError
from pose2rgbd.messages.factory import TypestoreFactory
from pose2rgbd.messages.typestore import get_typestore, normalize_msgtype
from pose2rgbd.output_guard import BAG, check_output, refuse_existing

log = logging.getLogger(__name__)

# Metadata version 8 keeps the integer QoS encoding that ROS 2 Humble's rosbag2 parses; Jazzy reads it too.
DEFAULT_METADATA_VERSION = 8


def _qos(durability: str, reliability: str = "RELIABLE", depth: int = 1, history: str = "KEEP_LAST") -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    inf = QosTime(sec=2147483647, nsec=4294967295)
    return Qos(
        history=QosHistory[history],
        depth=depth,
        reliability=QosReliability[reliability],
        durability=QosDurability[durability],
        deadline=inf,
        lifespan=inf,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=inf,
        avoid_ros_namespace_conventions=False,
    )


def qos_profiles(qos: str | Sequence[Any] | None) -> list[Any]:
    """QoS for a topic: ``None``/``"default"`` (reliable, volatile: rosbag2 picks its defaults),
    ``"transient_local"``/``"latched"`` (e.g. ``/tf_static``, so ``ros2 bag play`` latches it),
    ``"sensor_data"``/``"best_effort"``, YAML profile text as found in ``metadata.yaml``, or rosbags ``Qos`` list.
    """
    if qos is None:
        return []
    if not isinstance(qos, str):
        return list(qos)
    key = qos.strip().lower()
    if key in ("", "default"):
        return []
    if key in ("transient_local", "latched", "static"):
        return [_qos("TRANSIENT_LOCAL")]
    if key in ("sensor_data", "best_effort"):
        return [_qos("VOLATILE", "BEST_EFFORT", depth=5)]
    if key in ("reliable", "volatile"):
        return [_qos("VOLATILE", depth=10)]
    from rosbags.rosbag2.metadata import parse_qos

    try:
        return parse_qos(qos)
    except Exception as e:
        raise BagError(f"cannot parse QoS profile text {qos!r}: {e}") from e


def _failed(path: Path, what: str, e: Exception) -> BagError:
    """The error of a failed bag write: a full disk, a file-size limit, a read-only or forbidden folder as the one
    line that names the bag and what to do (:func:`pose2rgbd.atomic.os_error_message`), others as they came."""
    if isinstance(e, OSError) and (msg := os_error_message(e, path)) is not None:
        return BagError(msg)
    return BagError(f"{path}: {what}: {type(e).__name__}: {e}")


_FILE_SUFFIXES = {".mcap": "one .mcap file", ".db3": "one .db3 file", ".bag": "a ROS 1 .bag file"}


def check_bag_name(path: Path) -> None:
    """Refuse an output bag named like a single file (``out.mcap``, ``out.db3``, ``out.bag``): what is written is a
    rosbag2 folder (metadata.yaml and its storage file inside), which that name would hide. An earlier bag folder of
    that name (written before this check) is still taken."""
    what = _FILE_SUFFIXES.get(path.suffix.lower())
    if what is None or BAG.matches(path):
        return
    raise BagError(
        f"{path}: an output bag is a rosbag2 folder (metadata.yaml and {path.stem}.mcap or .db3 inside, what "
        f"`ros2 bag` and pose2rgbd read), not {what}; name the folder without {path.suffix}, e.g. "
        f"{path.with_suffix('')} (nothing was written)"
    )


class BagWriter:
    """Atomic rosbag2 writer.

    >>> with BagWriter("out_bag", storage="mcap") as w:  # doctest: +SKIP
    ...     w.add_topic("/tf_static", "tf2_msgs/msg/TFMessage", qos="transient_local")
    ...     w.write("/fix", stamp_ns, navsatfix(w.factory, stamp_ns, "gps", lat, lon, alt))

    ``inputs``: the paths being read to make this bag; ``path`` may not be, contain or lie inside one, and
    ``overwrite`` replaces only an earlier bag (:func:`pose2rgbd.output_guard.check_output`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        storage: str = "mcap",
        typestore: Any = None,
        overwrite: bool = False,
        version: int = DEFAULT_METADATA_VERSION,
        inputs: Iterable[str | Path | None] = (),
    ) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = check_output(path, BAG, inputs=inputs, overwrite=overwrite)
        check_bag_name(self.path)
        if storage not in ("mcap", "sqlite3"):
            raise BagError(f"{self.path}: storage must be 'mcap' or 'sqlite3', not {storage!r}")
        refuse_existing(self.path, overwrite=overwrite, kind=BAG)
        self.storage = storage
        self.typestore = typestore if typestore is not None else get_typestore("humble")
        self.factory = TypestoreFactory(self.typestore)  # builds messages of this bag's typestore
        self._conns: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_siblings(self.path)
        self._tmpdir = make_temp_dir(self.path, "tmp")
        self._tmp = self._tmpdir / self.path.name
        try:
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            self._writer = Writer(self._tmp, version=version, storage_plugin=plugin)  # type: ignore[arg-type]
            self._writer.open()
        except Exception as e:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            raise _failed(self.path, "cannot create bag", e) from e

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def closed(self) -> bool:
        """Finished or discarded: nothing more is written (after a failed :meth:`close`, the bag is gone)."""
        return self._closed

    @property
    def counts(self) -> dict[str, int]:
        """Messages written so far per topic."""
        return dict(self._counts)

    def add_topic(self, topic: str, msgtype: str, qos: str | Sequence[Any] | None = None) -> None:
        """Register ``topic`` with ``msgtype`` (and optional QoS, see :func:`qos_profiles`) before writing."""
        self._check_open()
        mt = normalize_msgtype(msgtype)
        if topic in self._conns:
            if self._conns[topic].msgtype != mt:
                raise BagError(f"{self.path}: topic {topic} already registered as {self._conns[topic].msgtype}")
            return
        if mt not in self.typestore.fielddefs:
            raise BagError(
                f"{self.path}: message type {mt} is unknown to the typestore; "
                "register it with pose2rgbd.bags.register_msg_definitions"
            )
        try:
            self._conns[topic] = self._writer.add_connection(
                topic, mt, typestore=self.typestore, offered_qos_profiles=qos_profiles(qos)
            )
        except Exception as e:
            raise BagError(f"{self.path}: cannot add topic {topic} ({mt}): {type(e).__name__}: {e}") from e
        self._counts[topic] = 0

    def set_custom_data(self, key: str, value: str) -> None:
        """Put ``key: value`` into the ``custom_data`` of the bag's ``metadata.yaml`` (written at :meth:`close`;
        read back by :attr:`pose2rgbd.bags.BagReader.custom_data`), e.g. the mark of the offline runtime's output
        bags (:data:`pose2rgbd.runtime.offline.NODE_MARK`)."""
        self._check_open()
        self._writer.set_custom_data(key, value)

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialize ``msg`` (type from ``msg.__msgtype__``) on ``topic`` at log time ``stamp_ns``."""
        msgtype = getattr(msg, "__msgtype__", None)
        if topic not in self._conns:
            if msgtype is None:
                raise BagError(f"{self.path}: {type(msg).__name__} has no __msgtype__; call add_topic() first")
            self.add_topic(topic, msgtype)
        conn = self._conns[topic]
        if msgtype is not None and normalize_msgtype(msgtype) != conn.msgtype:
            raise BagError(f"{self.path}: topic {topic} is {conn.msgtype}, got a {msgtype} message")
        try:
            data = self.typestore.serialize_cdr(msg, conn.msgtype)
        except Exception as e:
            raise BagError(f"{self.path}: cannot serialize {conn.msgtype} on {topic}: {type(e).__name__}: {e}") from e
        self.write_raw(topic, stamp_ns, data)

    def write_raw(self, topic: str, stamp_ns: int, data: bytes | memoryview, msgtype: str | None = None) -> None:
        """Write already CDR-serialized ``data`` (registering ``topic`` as ``msgtype`` when new)."""
        self._check_open()
        if topic not in self._conns:
            if msgtype is None:
                raise BagError(f"{self.path}: topic {topic} not registered; pass msgtype or call add_topic()")
            self.add_topic(topic, msgtype)
        stamp = int(stamp_ns)
        if stamp < 0:
            raise BagError(f"{self.path}: negative log time {stamp} on {topic}")
        try:
            self._writer.write(self._conns[topic], stamp, data)
        except Exception as e:
            raise _failed(self.path, f"cannot write to {topic}", e) from e
        self._counts[topic] += 1

    def _check_open(self) -> None:
        if self._closed:
            raise BagError(f"{self.path}: writer is closed")

    def close(self) -> None:
        """Finish the bag and move it onto ``path`` (replacing an existing one only if ``overwrite``)."""
        if self._closed:
            return
        try:
            self._writer.close()
            swap_in([(self._tmp, self.path)])  # an existing bag: overwrite=True (checked in __init__)
        except BaseException as e:
            self.abort()
            if not isinstance(e, Exception):
                raise
            raise _failed(self.path, "cannot finish bag", e) from e
        self._closed = True
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        log.debug("%s: wrote %s", self.path, self._counts)

    def abort(self) -> None:
        """Discard everything written; ``path`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # already (partially) closed: the temporary goes anyway
            self._writer.abort()
        shutil.rmtree(self._tmpdir, ignore_errors=True)
