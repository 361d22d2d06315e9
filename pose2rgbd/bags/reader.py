"""Read ROS 1 bags and rosbag2 recordings (sqlite3 / mcap, optionally zstd file-compressed) with ``rosbags``.

Why not simply ``rosbags.highlevel.AnyReader``: it trusts ``metadata.yaml`` and matches its topics to the
storage file's connections *including the QoS text*; when the two disagree (bags written by older ros2 bag,
e.g. ros2/rosbag2's talker fixtures) it silently yields nothing. It also refuses a whole bag when one embedded
definition cannot be parsed. Here the storage files are the source of truth: ``metadata.yaml`` only names the
files and the compression, and is cross-checked (a disagreement is logged, never hides messages). Each message
type is decoded with the bag's embedded definition, falling back to the ROS 2 typestore of ``default_distro``
when the embedded one is missing, unparsable or does not fit the bytes; a topic with no usable definition is
listed with its reason in :attr:`TopicInfo.error` and skipped (with a warning) unless asked for explicitly.
"""

from __future__ import annotations

import heapq
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pose2rgbd.bags.decoding import Decoder, embedded_types
from pose2rgbd.errors import BagError
from pose2rgbd.messages.typestore import get_typestore, normalize_msgtype

log = logging.getLogger(__name__)

_STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
# the encodings of a depth image (REP-118: 32FC1 metres; 16UC1 millimetres)
DEPTH_ENCODINGS = ("32FC1", "16UC1")


@dataclass(frozen=True)
class TopicInfo:
    """One topic: name, ROS 2 style type (``'sensor_msgs/msg/NavSatFix'``, also for ROS 1 bags), message count.

    ``error`` is ``None`` when the topic can be decoded, else why not (it is still listed and counted).
    """

    name: str
    msgtype: str
    count: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BagMessage:
    """A decoded message. ``stamp_ns``: the bag's log (receive) time, not ``header.stamp``."""

    topic: str
    stamp_ns: int
    msg: Any
    msgtype: str = ""


@dataclass
class _Source:
    """One opened storage file (rosbags reader object) of a recording."""

    file: Path
    kind: str  # "rosbag1" | "sqlite3" | "mcap"
    reader: Any
    compressed_messages: bool = False


def open_bag(path: str | Path, *, default_distro: str = "humble") -> BagReader:
    """Open a bag: ROS 1 ``.bag``, rosbag2 directory, bare ``.mcap`` / ``.db3`` (optionally ``.zstd``) file.

    Use as a context manager (``with open_bag(p) as bag:``) or call ``close()``.
    """
    return BagReader(path, default_distro=default_distro)


def repair_hint(storage_id: str, f: Path) -> str:
    """The tool that copies what is intact out of a damaged storage file of ``storage_id`` (a recording killed before
    it was finished, a copy cut short), as a sentence for an error message; an empty file has nothing to recover."""
    try:
        if f.stat().st_size == 0:
            return "The file is empty (0 bytes): nothing in it to recover; copy it again from where it was recorded"
    except OSError:
        pass
    name, first = f.name, ""
    if name.endswith(".zstd"):  # the tools read the storage file, not its compressed copy
        name = name[: -len(".zstd")]
        first = f"decompress it first (`zstd -d {f.name}`), then "
    if storage_id == "mcap":
        tool = (f"the mcap CLI's `mcap recover {name} -o recovered.mcap` copies what is intact into a new file; "
                "pose2rgbd reads a bare .mcap file as a bag")  # fmt: skip
    elif storage_id == "sqlite3":
        tool = (f"SQLite's `sqlite3 {name} .recover | sqlite3 recovered.db3` copies what is intact into a new file; "
                "pose2rgbd reads a bare .db3 file as a bag (`ros2 bag reindex FOLDER` writes a rosbag2 folder's "
                "metadata.yaml, for ros2 bag)")  # fmt: skip
    elif storage_id == "rosbag1":
        tool = (f"ROS 1's `rosbag reindex {name}` rebuilds the index of a bag whose recording was stopped before "
                "it was closed (it keeps the original as .orig.bag)")  # fmt: skip
    else:
        return ""
    text = first + tool
    return text[0].upper() + text[1:]


class BagReader:
    """An opened recording; see :func:`open_bag`."""

    def __init__(self, path: str | Path, *, default_distro: str = "humble") -> None:
        self.path = Path(path)
        self.default_distro = default_distro
        self.storage = ""  # "rosbag1" | "sqlite3" | "mcap", with "+zstd" when file-compressed
        self.metadata: dict[str, Any] | None = None  # parsed metadata.yaml (rosbag2 directories)
        self._stack = ExitStack()
        self._sources: list[_Source] = []
        self._topics: dict[str, TopicInfo] = {}
        self._decoders: dict[str, Decoder] = {}
        self._warned: set[str] = set()
        self._closed = False
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise

    # ------------------------------------------------------------------ opening
    def _fail(self, what: str, e: BaseException | None = None, hint: str = "") -> BagError:
        cause = f": {type(e).__name__}: {str(e).rstrip('.')}" if e is not None else ""
        return BagError(f"{self.path}: {what}{cause}" + (f". {hint}" if hint else ""))

    def _open(self) -> None:
        p = self.path
        if not p.exists():
            raise self._fail("no such bag file or directory")
        if p.is_dir():
            files, storage_id, mode = self._resolve_dir(p)
        elif p.suffix == ".bag":
            files, storage_id, mode = [p], "rosbag1", ""
        else:
            storage_id = self._storage_of(p)
            mode = "file" if p.suffix == ".zstd" else ""
            files = [p]
        self.storage = storage_id + ("+zstd" if mode == "file" else "")
        for f in files:
            self._sources.append(self._open_source(f, storage_id, mode))
        self._build_topics()

    def _storage_of(self, f: Path) -> str:
        name = f.name[: -len(".zstd")] if f.name.endswith(".zstd") else f.name
        for suf, kind in _STORAGE_SUFFIXES.items():
            if name.endswith(suf):
                return kind
        if name.endswith(".bag.active"):  # ROS 1's rosbag record writes this until it closes the bag
            raise self._fail(
                f"{f.name!r} is a ROS 1 recording that was never closed (rosbag record was stopped before it renamed "
                f"it); ROS 1's `rosbag reindex {f.name}` rebuilds its index, then rename it to "
                f"{name[: -len('.active')]}"
            )
        raise self._fail(
            f"unrecognised bag file {f.name!r}; expected a ROS 1 .bag, a rosbag2 directory or a .mcap/.db3 file"
        )

    def _resolve_dir(self, d: Path) -> tuple[list[Path], str, str]:
        meta = d / "metadata.yaml"
        if not meta.exists():
            files = sorted(f for f in d.iterdir() if f.is_file() and any(f.name.endswith(s) for s in (".mcap", ".db3")))
            zfiles = sorted(f for f in d.iterdir() if f.name.endswith((".mcap.zstd", ".db3.zstd")))
            if not files and not zfiles:
                listing = ", ".join(sorted(x.name for x in d.iterdir())[:20]) or "(empty)"
                raise self._fail(
                    f"not a rosbag2 directory: no metadata.yaml and no .mcap/.db3 file (contains {listing})"
                )
            log.info("%s: no metadata.yaml; reading storage files directly", d)
            chosen = files or zfiles
            kinds = {self._storage_of(f) for f in chosen}
            if len(kinds) > 1:
                raise self._fail(f"mixed storage files without metadata.yaml: {[f.name for f in chosen]}")
            return chosen, kinds.pop(), "" if files else "file"
        from ruamel.yaml import YAML  # a rosbags dependency

        try:
            doc = YAML(typ="safe").load(meta.read_text())
        except Exception as e:
            raise self._fail("cannot parse metadata.yaml", e) from e
        info = doc.get("rosbag2_bagfile_information") if isinstance(doc, dict) else None
        if not isinstance(info, dict):
            got = (
                "it is empty"
                if doc is None
                else (
                    f"it is a {type(doc).__name__}"
                    if not isinstance(doc, dict)
                    else "it has no 'rosbag2_bagfile_information' mapping"
                )
            )
            raise self._fail(
                f"metadata.yaml is not rosbag2 metadata ({got}); restore it, or delete it to read the "
                ".mcap / .db3 storage files directly"
            )
        try:
            storage_id = str(info.get("storage_identifier") or "")
            rel = [Path(str(x)).name for x in info.get("relative_file_paths") or []]
            mode = str(info.get("compression_mode") or "").lower()
            fmt = str(info.get("compression_format") or "").lower()
        except Exception as e:
            raise self._fail("cannot parse metadata.yaml", e) from e
        self.metadata = info
        if mode == "none":
            mode = ""
        if mode and fmt != "zstd":
            raise self._fail(f"compression format {fmt!r} (mode {mode}) is not supported; only zstd")
        if mode not in ("", "file", "message"):
            raise self._fail(f"unknown compression_mode {mode!r} in metadata.yaml")
        if storage_id not in ("sqlite3", "mcap"):
            raise self._fail(f"storage plugin {storage_id!r} is not supported (only sqlite3 and mcap)")
        if not rel:
            raise self._fail("metadata.yaml lists no relative_file_paths")
        files = [d / r for r in rel]
        if missing := [f.name for f in files if not f.exists()]:
            raise self._fail(f"storage files named in metadata.yaml are missing: {missing}")
        return files, storage_id, mode

    def _open_source(self, f: Path, storage_id: str, mode: str) -> _Source:
        if storage_id == "rosbag1":
            from rosbags.rosbag1 import Reader as Reader1

            reader_cls: Any = Reader1
        elif storage_id == "mcap":
            from rosbags.rosbag2.storage_mcap import McapReader

            reader_cls = McapReader
        else:
            from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

            reader_cls = Sqlite3Reader
        path = f
        if mode == "file" or f.name.endswith(".zstd"):
            path = self._decompress(f)
        try:
            reader = reader_cls(path)
            reader.open()
        except Exception as e:
            raise self._fail(f"cannot open {storage_id} storage {f.name} (corrupt or truncated?)", e,
                             hint=repair_hint(storage_id, f)) from e  # fmt: skip
        self._stack.callback(reader.close)
        return _Source(f, storage_id, reader, compressed_messages=mode == "message")

    def _decompress(self, f: Path) -> Path:
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
        except ImportError:
            from backports import zstd  # a rosbags dependency on Python < 3.14
        tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="pose2rgbd-bag-")))
        out = tmp / (f.name[: -len(".zstd")] if f.name.endswith(".zstd") else f.name)
        try:
            with f.open("rb") as raw, zstd.open(raw, "rb") as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except Exception as e:
            raise self._fail(f"cannot zstd-decompress {f.name}", e, hint=repair_hint("", f)) from e  # empty: says so
        return out

    def _build_topics(self) -> None:
        ros1 = any(s.kind == "rosbag1" for s in self._sources)
        embedded, parse_err = embedded_types(c for src in self._sources for c in src.reader.connections)
        self._embedded_store = embedded
        fallback = None if ros1 else get_typestore(self.default_distro)

        counts: dict[str, int] = {}
        types: dict[str, str] = {}
        for src in self._sources:
            for c in src.reader.connections:
                mt = normalize_msgtype(c.msgtype)
                if c.topic in types and types[c.topic] != mt:
                    log.warning("%s: topic %s has several types (%s, %s)", self.path, c.topic, types[c.topic], mt)
                types.setdefault(c.topic, mt)
                counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
                if c.msgtype in self._decoders:
                    continue
                cands: list[tuple[str, Callable[[Any, str], Any]]] = []
                if c.msgtype in embedded.fielddefs:
                    fn = embedded.deserialize_ros1 if src.kind == "rosbag1" else embedded.deserialize_cdr
                    cands.append(("embedded definition", fn))
                if fallback is not None and c.msgtype in fallback.fielddefs:
                    cands.append((f"{self.default_distro} typestore", fallback.deserialize_cdr))
                notes = [parse_err[c.msgtype]] if c.msgtype in parse_err else []
                self._decoders[c.msgtype] = Decoder(c.msgtype, cands, notes)
        for topic, mt in sorted(types.items()):
            dec = self._decoders.get(mt) or next(d for k, d in self._decoders.items() if normalize_msgtype(k) == mt)
            err = None
            if not dec.candidates:
                why = dec.notes[0] if dec.notes else "the bag embeds no definition"
                err = f"no usable definition for {mt}: {why}, and the {self.default_distro} typestore lacks it"
            self._topics[topic] = TopicInfo(topic, mt, counts[topic], err)
        self._crosscheck_metadata()

    def _crosscheck_metadata(self) -> None:
        if not self.metadata:
            return
        try:
            meta_counts = {
                t["topic_metadata"]["name"]: int(t["message_count"])
                for t in self.metadata.get("topics_with_message_count") or []
            }
        except Exception:
            log.warning("%s: metadata.yaml topics_with_message_count is malformed; ignored", self.path)
            return
        storage_counts = {k: v.count for k, v in self._topics.items()}
        if meta_counts != storage_counts:
            log.warning(
                "%s: metadata.yaml disagrees with the storage files (metadata %s, storage %s); using the storage",
                self.path,
                meta_counts,
                storage_counts,
            )

    # ------------------------------------------------------------------ public API
    def close(self) -> None:
        self._stack.close()
        self._sources = []
        self._closed = True

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topic name -> :class:`TopicInfo`, sorted by name."""
        return dict(self._topics)

    @property
    def custom_data(self) -> dict[str, str]:
        """The ``custom_data`` of a rosbag2 directory's ``metadata.yaml`` (rosbag2 metadata version 6 and later:
        string keys and values a writer put there, e.g. the ``pose2rgbd.node`` mark of an output bag of the offline
        runtime); empty for a bag without it, a ROS 1 bag or bare storage files (no ``metadata.yaml``). The same for
        both storage plugins: the YAML file holds it, not the .mcap / .db3 file."""
        data = (self.metadata or {}).get("custom_data")
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self._topics.values())

    @property
    def start_ns(self) -> int:
        """Log time of the first message (0 for an empty bag)."""
        if not self.message_count:
            return 0
        return min(s.reader.start_time if s.kind == "rosbag1" else s.reader.metadata.start_time for s in self._sources)

    @property
    def end_ns(self) -> int:
        """Log time of the last message (inclusive; 0 for an empty bag)."""
        if not self.message_count:
            return 0
        # rosbags reports one past the last message for both ROS 1 and rosbag2.
        return max(s.reader.end_time if s.kind == "rosbag1" else s.reader.metadata.end_time for s in self._sources) - 1

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def topics_of_type(self, msgtype: str) -> list[str]:
        """Topics whose type is ``msgtype`` (``'sensor_msgs/msg/Image'`` or ``'sensor_msgs/Image'``)."""
        mt = normalize_msgtype(msgtype)
        return [t.name for t in self._topics.values() if t.msgtype == mt]

    def describe_topics(self) -> str:
        """One line per topic: ``name  type  count``."""
        if not self._topics:
            return "  (no topics)"
        w = max(len(t) for t in self._topics)
        lines = [f"  {t.name:<{w}}  {t.msgtype}  ({t.count} message{'' if t.count == 1 else 's'})"
                 for t in self._topics.values()]  # fmt: skip
        return "\n".join(lines)

    def first_encoding(self, topic: str) -> str | None:
        """The ``encoding`` of an Image topic's first message (``format`` of a CompressedImage's), None where it has
        none or cannot be read: tells a camera's images (``rgb8``) from a depth image (:data:`DEPTH_ENCODINGS`)."""
        try:
            for m in self.messages([topic]):
                return str(getattr(m.msg, "encoding", "") or getattr(m.msg, "format", "")) or None
        except BagError:
            return None
        return None

    def topic_name(self, name: str) -> str:
        """``name`` as the bag spells it: a name given without its leading slash (``fix``) is the bag's ``/fix``
        (and ``/fix`` a bag's ``fix``, where a recorder kept it relative); else ``name`` unchanged."""
        if name in self._topics:
            return name
        for other in ("/" + name.lstrip("/"), name.lstrip("/")):
            if other in self._topics:
                return other
        return name

    def find_topic(self, msgtype: str, name: str | None = None, key: str = "") -> str:
        """The topic of type ``msgtype``; ``name`` (when given) must exist and have that type (spelled with or
        without its leading slash: :meth:`topic_name`). ``key``: the config key that names it (``topics.gps``), for
        the message when several topics have the type.

        Raises :class:`BagError` listing every topic and its type when it is missing or ambiguous.
        """
        mt = normalize_msgtype(msgtype)
        how = f"--{key} TOPIC" if key else "the command's topic flag or setting"
        cands = self.topics_of_type(mt)
        if name:
            name = self.topic_name(name)
            info = self._topics.get(name)
            if info is not None and info.msgtype == mt:
                return name
            what = "not in bag" if info is None else f"has type {info.msgtype}, expected {mt}"
            of_type = (
                f"the bag's topics of type {mt}: {', '.join(cands)} (give one with {how})"
                if cands
                else f"the bag has no topic of type {mt}"
            )
            raise BagError(f"{self.path}: topic {name!r} {what}; {of_type}. Topics:\n{self.describe_topics()}")
        if len(cands) == 1:
            return cands[0]
        if not cands:
            raise BagError(f"{self.path}: no topic of type {mt}: the bag does not carry it. Topics:\n"
                           f"{self.describe_topics()}")  # fmt: skip
        raise BagError(
            f"{self.path}: {len(cands)} topics of type {mt} ({', '.join(cands)}); name the one to use ({how}). "
            f"Topics:\n{self.describe_topics()}"
        )

    def messages(
        self,
        topics: Iterable[str] | None = None,
        *,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[BagMessage]:
        """Decoded messages in log-time order, optionally only ``topics`` and ``start_ns <= t < stop_ns``."""
        for topic, stamp, msgtype, raw, decoder in self._raw(topics, start_ns, stop_ns):
            try:
                msg = decoder(raw)
            except BagError as e:
                raise BagError(f"{self.path}: topic {topic} at {stamp} ns: {e}") from e
            yield BagMessage(topic, stamp, msg, msgtype)

    def raw_messages(
        self,
        topics: Iterable[str] | None = None,
        *,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[tuple[str, int, str, bytes]]:
        """Undecoded ``(topic, stamp_ns, msgtype, data)``; data is CDR (rosbag2) or ROS 1 serialization."""
        for topic, stamp, msgtype, raw, _ in self._raw(topics, start_ns, stop_ns, decode=False):
            yield topic, stamp, msgtype, bytes(raw)

    def _select(self, topics: Iterable[str] | None, decode: bool = True) -> set[str]:
        if topics is None and not decode:
            return set(self._topics)
        if topics is None:
            wanted = set()
            for t in self._topics.values():
                if t.error:
                    if t.name not in self._warned:
                        log.warning("%s: skipping topic %s (%d msgs): %s", self.path, t.name, t.count, t.error)
                        self._warned.add(t.name)
                else:
                    wanted.add(t.name)
            return wanted
        wanted = {topics} if isinstance(topics, str) else set(topics)
        if missing := sorted(wanted - self._topics.keys()):
            raise BagError(f"{self.path}: topic(s) {missing} not in bag; topics:\n{self.describe_topics()}")
        for name in sorted(wanted):
            if decode and (err := self._topics[name].error):
                raise BagError(f"{self.path}: topic {name} cannot be decoded: {err}")
        return wanted

    def _raw(
        self, topics: Iterable[str] | None, start_ns: int | None, stop_ns: int | None, decode: bool = True
    ) -> Iterator[tuple[str, int, str, Any, Decoder]]:
        if self._closed:
            raise BagError(f"{self.path}: bag is closed")
        wanted = self._select(topics, decode)
        gens = []
        for src in self._sources:
            conns = [c for c in src.reader.connections if c.topic in wanted]
            if conns:  # an empty list would mean "all" to rosbags
                gens.append(self._source_iter(src, conns, start_ns, stop_ns))
        yield from (gens[0] if len(gens) == 1 else heapq.merge(*gens, key=lambda x: x[1]))

    def _source_iter(
        self, src: _Source, conns: list[Any], start_ns: int | None, stop_ns: int | None
    ) -> Iterator[tuple[str, int, str, Any, Decoder]]:
        decoders = {c.id: self._decoders[c.msgtype] for c in conns}
        if src.compressed_messages:
            try:
                from compression import zstd  # type: ignore[import-not-found]
            except ImportError:
                from backports import zstd
        it = src.reader.messages(conns, start_ns, stop_ns)
        while True:
            try:
                conn, stamp, data = next(it)
                if src.compressed_messages:
                    data = zstd.decompress(data)
            except StopIteration:
                return
            except BagError:
                raise
            except Exception as e:
                # a message that does not decompress is damaged inside: no tool recovers it
                hint = "" if src.compressed_messages else f". {repair_hint(src.kind, src.file)}"
                raise BagError(
                    f"{self.path}: cannot read messages from {src.file.name} (corrupt or truncated?): "
                    f"{type(e).__name__}: {str(e).rstrip('.')}{hint}"
                ) from e
            yield conn.topic, stamp, normalize_msgtype(conn.msgtype), data, decoders[conn.id]
