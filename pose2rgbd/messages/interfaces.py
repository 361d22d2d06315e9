"""The custom interfaces of pose2rgbd (``msg/*.msg``, ``srv/*.srv``) for rosbags typestores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pose2rgbd.messages.typestore import register_msg_definitions

CUSTOM_MSGS = ("RGBD", "SyncedFrame")
CUSTOM_SRVS = ("RenderAtPose",)


def interface_dir() -> Path:
    """Where the .msg / .srv files are read from: the repository's ``msg/`` + ``srv/`` in a source checkout,
    else the copy shipped as package data (``pose2rgbd/resources``); a test keeps the two identical."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "msg" / "RGBD.msg").is_file() and (repo / "package.xml").is_file():
        return repo
    return Path(__file__).resolve().parents[1] / "resources"


def _strip_comments(text: str) -> str:
    lines = []
    for ln in text.splitlines():
        ln = ln.split("#", 1)[0].rstrip()
        if ln.strip():
            lines.append(ln)
    return "\n".join(lines) + "\n"


def msg_definitions() -> dict[str, str]:
    """``{'pose2rgbd/msg/RGBD': text, ...}`` for registering with a rosbags typestore."""
    base = interface_dir() / "msg"
    return {f"pose2rgbd/msg/{n}": _strip_comments((base / f"{n}.msg").read_text()) for n in CUSTOM_MSGS}


def register_custom_msgs(typestore: Any) -> Any:
    """Register pose2rgbd/msg/* with a rosbags typestore (idempotent); returns the typestore."""
    if not all(f"pose2rgbd/msg/{n}" in typestore.fielddefs for n in CUSTOM_MSGS):
        register_msg_definitions(typestore, msg_definitions())
    return typestore


def _field_names(text: str) -> tuple[str, ...]:
    """The field names of a .msg text (or one part of a .srv): ``type name [default]`` lines, not constants."""
    names = []
    for ln in _strip_comments(text).splitlines():
        parts = ln.split()
        if len(parts) >= 2 and "=" not in ln:
            names.append(parts[1])
    return tuple(names)


def interface_fields(msgtype: str) -> dict[str, tuple[str, ...]] | None:
    """The field names of one of pose2rgbd's own interfaces as its ``msg/`` or ``srv/`` file defines them: for
    ``pose2rgbd/msg/RGBD`` (or ``pose2rgbd/RGBD``) ``{"": (...)}``, for ``pose2rgbd/srv/RenderAtPose``
    ``{"Request": (...), "Response": (...)}``; None for another package's type or a name it does not define."""
    parts = msgtype.split("/")
    if parts[0] != "pose2rgbd" or len(parts) not in (2, 3):
        return None
    kind, name = ("msg", parts[1]) if len(parts) == 2 else (parts[1], parts[2])
    if (kind, name) not in {("msg", n) for n in CUSTOM_MSGS} | {("srv", n) for n in CUSTOM_SRVS}:
        return None
    text = (interface_dir() / kind / f"{name}.{kind}").read_text()
    if kind == "msg":
        return {"": _field_names(text)}
    request, _, response = text.partition("\n---")
    return {"Request": _field_names(request), "Response": _field_names(response)}
