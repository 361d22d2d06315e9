"""How the messages of a bag are decoded: the types its embedded definitions give, and a decoder per type.

A bag embeds the definition of each message type it holds (ROS 1 and ROS 2 ``.msg`` text, IDL); rosbag2 stores
of service-event topics embed the ``.srv`` text, from which the ``_Event`` wrapper is rebuilt here
(:func:`srv_event_types`). :func:`embedded_types` parses them into one typestore and says why a definition cannot
be used; a :class:`Decoder` tries the embedded definition, then the ROS 2 typestore of the reader's distro, and
keeps the first that fits the bytes (:class:`pose2rgbd.bags.reader.BagReader`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pose2rgbd.errors import BagError
from pose2rgbd.messages.typestore import new_typestore

log = logging.getLogger(__name__)


@dataclass
class Decoder:
    """Decodes one message type; tries candidate typestores in order and keeps the first that works."""

    msgtype: str
    candidates: list[tuple[str, Callable[[Any, str], Any]]]
    notes: list[str] = field(default_factory=list)

    def __call__(self, raw: Any) -> Any:
        errors = []
        for i, (label, fn) in enumerate(self.candidates):
            try:
                msg = fn(raw, self.msgtype)
            except Exception as e:  # rosbags raises SerdeError, KeyError, TypesysError, struct.error ...
                errors.append(f"{label}: {type(e).__name__}: {e}")
                continue
            if i:
                log.info("%s: decoding with %s (%s)", self.msgtype, label, "; ".join(errors))
                self.candidates = self.candidates[i:]
            return msg
        raise BagError(f"cannot decode a {self.msgtype} message: " + "; ".join(self.notes + errors))


# service_msgs/msg/ServiceEventInfo (ROS 2 Iron+), needed to decode service-event topics of Humble-era stores.
SERVICE_EVENT_INFO = """uint8 REQUEST_SENT = 0
uint8 REQUEST_RECEIVED = 1
uint8 RESPONSE_SENT = 2
uint8 RESPONSE_RECEIVED = 3
uint8 event_type
builtin_interfaces/Time stamp
char[16] client_gid
int64 sequence_number
"""


def is_srv_event(msgtype: str, text: str) -> bool:
    return "/srv/" in msgtype and msgtype.endswith("_Event") and "\n---\n" in "\n" + text


def srv_event_types(msgtype: str, text: str) -> dict[str, Any]:
    """Types of a rosbag2 service-event topic whose embedded definition is the ``.srv`` text (request --- response).

    rosbags 0.11.9 cannot parse that (it expects a message), so the ``_Event`` wrapper that rosbag2 records
    (``ServiceEventInfo info``, ``Request[<=1] request``, ``Response[<=1] response``) is rebuilt here.
    """
    from rosbags.typesys import get_types_from_msg

    main, sep, deps = text.partition("=" * 80 + "\n")
    deps = sep + deps if sep else ""
    lines = main.split("\n")
    cut = lines.index("---")
    base = msgtype[: -len("_Event")]
    typs: dict[str, Any] = {}
    typs.update(get_types_from_msg(SERVICE_EVENT_INFO, "service_msgs/msg/ServiceEventInfo"))
    typs.update(get_types_from_msg("\n".join(lines[:cut]) + "\n" + deps, base + "_Request"))
    typs.update(get_types_from_msg("\n".join(lines[cut + 1 :]) + "\n" + deps, base + "_Response"))
    event = f"service_msgs/ServiceEventInfo info\n{base}_Request[<=1] request\n{base}_Response[<=1] response\n"
    typs.update(get_types_from_msg(event, msgtype))
    # rosbags normalizes every name to pkg/msg/Name, turning pkg/srv/X into pkg/srv/msg/X: undo that.
    pkg = msgtype.split("/")[0]
    return _rename(typs, f"{pkg}/srv/msg/", f"{pkg}/srv/")


def _rename(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {_rename(k, old, new): _rename(v, old, new) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_rename(x, old, new) for x in obj]
        return type(obj)(items) if type(obj) in (list, tuple) else type(obj)(*items)
    return obj


def embedded_types(connections: Iterable[Any]) -> tuple[Any, dict[str, str]]:
    """A typestore of the message types that ``connections`` (rosbags connections of a bag) embed: ROS 1 / ROS 2
    ``.msg`` text, IDL, and rosbag2 service-event topics (:func:`srv_event_types`); and for each message type whose
    embedded definition cannot be used, why not."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    embedded = new_typestore(None)
    parse_err: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for c in connections:
        md = c.msgdef
        if md.format == MessageDefinitionFormat.NONE or (c.msgtype, md.data) in seen:
            continue
        seen.add((c.msgtype, md.data))
        try:
            if md.format == MessageDefinitionFormat.MSG and is_srv_event(c.msgtype, md.data):
                typs = srv_event_types(c.msgtype, md.data)
            elif md.format == MessageDefinitionFormat.MSG:
                typs = get_types_from_msg(md.data, c.msgtype)
            else:
                typs = {}
                sep = "=" * 80 + "\n"
                parts = md.data.split(sep)[1:] if md.data.startswith(f"{sep}IDL: ") else [md.data]
                for part in parts:
                    typs.update(get_types_from_idl(part.split("\n", 1)[1] if part.startswith("IDL: ") else part))
            # Register only what is new or identical; a conflicting nested type keeps the first one.
            embedded.register({k: v for k, v in typs.items() if k not in embedded.fielddefs or k == c.msgtype})
        except Exception as e:
            why = " ".join(str(e).split())
            why = why if len(why) < 160 else why[:157] + "..."
            parse_err[c.msgtype] = f"embedded definition cannot be used ({type(e).__name__}: {why})"
    return embedded, parse_err
