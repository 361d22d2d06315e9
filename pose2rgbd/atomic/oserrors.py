"""One-line messages for the errors of writing that a user can fix (disk full, read-only, permissions), naming
the output the user asked for rather than a writer's hidden temporary."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pose2rgbd.atomic.siblings import output_of

# errno -> (what happened, what to do): the errors of writing that a user can fix
OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write the output to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write the output to another disk"),
    errno.EFBIG: (
        "the file grew past what this file system or the process's file-size limit allows",
        "write the output to a file system that takes larger files (FAT32 stops at 4 GiB) or raise the limit "
        "(ulimit -f)",
    ),
    errno.EROFS: ("the file system is read-only", "write the output to a writable directory"),
    errno.EACCES: ("permission denied", "check the permissions, or write the output to a directory you own"),
    errno.EPERM: ("operation not permitted", "check the permissions, or write the output to a directory you own"),
}


def os_error_message(e: OSError, output: str | Path | None = None) -> str | None:
    """A one-line message for a disk-full / read-only / permission error, naming the path; None for others.
    ``output``: what to name when the error carries no file name (a write into an open file: the kernel's
    ``ENOSPC`` from ``write`` has none), the output the command was writing."""
    known = OS_ERRORS.get(e.errno) if e.errno is not None else None
    if known is None:
        return None
    what, todo = known
    where = e.filename if e.filename is not None else None
    if where is None and isinstance(e.__cause__, OSError):
        where = e.__cause__.filename
    if where is None and output is not None:
        where = os.fspath(output)
    where_s = ""
    if where is not None:
        where_s = f"{os.fsdecode(where)}: "
        out = output_of(os.fsdecode(where))
        if out is not None:  # a hidden temporary of an atomic writer: name the output the user asked for
            where_s = f"{out}: "
    return f"{where_s}{what} ({e.strerror or os.strerror(e.errno or 0)}); {todo}"
