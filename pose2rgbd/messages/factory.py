"""How messages are built: the :class:`MessageFactory` protocol and its rosbags implementation.

Every builder of :mod:`pose2rgbd.messages.build` takes a factory first. :class:`TypestoreFactory` (this module)
builds rosbags typestore messages (bags, conversion, the offline runtime); ``pose2rgbd_ros.factory.RclpyFactory``
builds rclpy messages (the live nodes). Readers (:mod:`pose2rgbd.messages.read`) only access fields, so they
accept both.

rosbags message classes are dataclasses whose every field is required; this factory fills the ones not
given with ROS defaults (0, '', False, empty sequences, zero arrays, default nested messages), turns
nested dicts into messages and lists of numbers into numpy arrays of the field's dtype, as the CDR
serializer expects.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

import numpy as np
from rosbags.typesys.store import Nodetype

from pose2rgbd.errors import BagError
from pose2rgbd.messages.typestore import get_typestore

_NUMPY = {
    "bool": np.bool_,
    "byte": np.uint8,
    "char": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


class MessageFactory(Protocol):
    """Builds ROS messages by type name (``'sensor_msgs/msg/Image'``); fields not given get their defaults,
    nested messages may be given as dicts. ``byte_as_bytes``: the ``byte`` type is a length-1 ``bytes``
    (rclpy) rather than an int (rosbags)."""

    byte_as_bytes: bool

    def new(self, msgtype: str, **fields: Any) -> Any: ...


class TypestoreFactory:
    """Build rosbags messages of ``typestore`` by name: ``f.new('sensor_msgs/msg/Image', height=4, ...)``."""

    byte_as_bytes = False

    def __init__(self, typestore: Any) -> None:
        self.typestore = typestore

    def new(self, msgtype: str, **fields: Any) -> Any:
        ts = self.typestore
        if msgtype not in ts.fielddefs:
            raise BagError(f"message type {msgtype} is not in the typestore")
        cls = ts.types[msgtype]
        _, defs = ts.fielddefs[msgtype]
        names = {n for n, _ in defs}
        unknown = set(fields) - names
        if unknown:
            raise BagError(f"{msgtype} has no field(s) {sorted(unknown)}")
        kwargs = {}
        for name, desc in defs:
            kwargs[name] = self._coerce(desc, fields[name]) if name in fields else self._default(desc)
        return cls(**kwargs)

    def _default(self, desc: Any) -> Any:
        kind, rest = desc
        if kind == Nodetype.BASE:
            typ = rest[0]
            if typ == "string":
                return ""
            if typ == "bool":
                return False
            if typ in ("float32", "float64"):
                return 0.0
            return 0
        if kind == Nodetype.NAME:
            return self.new(rest)
        if kind == Nodetype.ARRAY:
            sub, n = rest
            if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
                return np.zeros(n, dtype=_NUMPY[sub[1][0]])
            return [self._default(sub) for _ in range(n)]
        if kind == Nodetype.SEQUENCE:
            sub, _ = rest
            if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
                return np.zeros(0, dtype=_NUMPY[sub[1][0]])
            return []
        raise BagError(f"unsupported field description {desc}")

    def _coerce(self, desc: Any, value: Any) -> Any:
        kind, rest = desc
        if kind == Nodetype.NAME and isinstance(value, dict):
            return self.new(rest, **value)
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            sub = rest[0]
            if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
                return np.ascontiguousarray(np.asarray(value, dtype=_NUMPY[sub[1][0]]).ravel())
            if sub[0] == Nodetype.NAME:
                return [self.new(sub[1], **v) if isinstance(v, dict) else v for v in value]
            return list(value)
        return value


@cache
def default_factory(distro: str = "humble") -> TypestoreFactory:
    """A :class:`TypestoreFactory` over the cached, shared typestore of ``distro`` (what :class:`BagWriter`
    uses by default). Pass ``TypestoreFactory(writer.typestore)`` when a bag is written with another one."""
    return TypestoreFactory(get_typestore(distro))
