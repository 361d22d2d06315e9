"""Leftovers of atomic writers: name the hidden siblings they create, and sweep those of killed runs.

Every writer that makes an output appear all at once (a dataset, a training cache, a bag, a checkpoint, a
simulator video) first writes a hidden sibling of the output and renames it at the end. The sibling's name
carries the writer's process id::

    .<output name>.<kind>-<pid>[-<random> | .<suffix>]      kind: partial, tmp or old

Ctrl-C and SIGTERM remove it (the CLI turns SIGTERM into the same KeyboardInterrupt as Ctrl-C); SIGKILL, a
power cut or an OOM kill cannot. :func:`sweep_stale_siblings`, called by each writer before it writes the same
output again, removes the siblings whose process is gone (with a log line) and reports, without touching,
those it cannot attribute (no process id in the name, or a process that is still running).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

SIBLING_KINDS = ("partial", "tmp", "old")


def sibling_prefix(path: str | Path, kind: str) -> str:
    """The hidden name prefix a writer of ``path`` uses: ``.<name>.<kind>-<pid>``."""
    if kind not in SIBLING_KINDS:
        raise ValueError(f"kind must be one of {SIBLING_KINDS}, not {kind!r}")
    return f".{Path(path).name}.{kind}-{os.getpid()}"


def make_temp_dir(path: str | Path, kind: str = "partial") -> Path:
    """A fresh hidden directory next to ``path`` (in its parent, which must exist), named for this process."""
    p = Path(path)
    return Path(tempfile.mkdtemp(prefix=sibling_prefix(p, kind) + "-", dir=p.parent))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (ours included)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: assume alive, never remove
    return True


def _sibling_re(name: str) -> re.Pattern[str]:
    kinds = "|".join(SIBLING_KINDS)
    return re.compile(rf"^\.{re.escape(name)}\.(?P<kind>{kinds})(?:-(?P<pid>\d+)(?:[-.].*)?|-.*|)$")


_ANY_SIBLING = re.compile(rf"^\.(?P<name>.+)\.(?:{'|'.join(SIBLING_KINDS)})-\d+(?:[-.].*)?$")


def output_of(path: str | Path) -> Path | None:
    """The output a hidden sibling (or a file inside one) is being written for, or None: turns
    ``d/.ds.partial-12-x/rgb/1.png`` into ``d/ds`` so that messages name what the user asked for (also through a
    staging folder of :class:`StagedOutputs`: ``d/.ds.partial-12-stage/.ds.partial-12-y/rgb/1.png`` -> ``d/ds``)."""
    p = Path(path)
    for anc in (p, *p.parents):
        m = _ANY_SIBLING.match(anc.name)
        if m:
            out = anc.parent / m.group("name")
            return output_of(out) or out
    return None


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends (a few renames that belong together); they are delivered
    right after it. Outside the main thread, or where signals cannot be masked, the block runs as it is."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class StagedOutputs:
    """Several outputs that must change together (the simulator's dataset, bags, videos and the config that
    describes them): each is written into a hidden staging folder beside its target
    (``.<name>.partial-<pid>-stage/<name>``) by its own atomic writer, and :meth:`commit` moves them all into
    place (earlier ones aside, then deleted) with Ctrl-C / SIGTERM held, after which :meth:`commit` writes the
    files given to it. An error or an interruption before :meth:`commit` removes the staging folders and leaves
    every earlier output as it was; a killed run's staging folders are swept like any hidden sibling."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (staging folder, final target)

    def stage(self, target: str | Path) -> Path:
        """Where to write ``target`` now (its writer's own atomic write happens inside the staging folder)."""
        t = Path(target)
        t.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_siblings(t)
        folder = t.parent / f"{sibling_prefix(t, 'partial')}-stage"
        folder.mkdir()
        self._staged.append((folder, t))
        return folder / t.name

    def stage_files(self, target: str | Path) -> Path:
        """A staging folder for several files that go into the folder holding ``target`` (a video and its CSVs:
        ``target`` is the video); the folder's other files stay."""
        t = Path(target)
        t.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_siblings(t)
        folder = t.parent / f"{sibling_prefix(t, 'partial')}-stage"
        folder.mkdir()
        self._staged.append((folder, t.parent))
        return folder

    def discard(self) -> None:
        for folder, _ in self._staged:
            shutil.rmtree(folder, ignore_errors=True)
        self._staged.clear()

    def commit(self, files: dict[Path, str] | None = None) -> None:
        """Move every staged output into place, then write ``files`` (path -> text) atomically."""
        aside: list[Path] = []
        with signals_deferred():
            for folder, target in self._staged:
                moves = (
                    [(folder / target.name, target)]
                    if (folder / target.name).exists()
                    else [(f, target / f.name) for f in sorted(folder.iterdir())]
                )
                for src, dst in moves:
                    if dst.exists() or dst.is_symlink():
                        old = dst.with_name(sibling_prefix(dst, "old"))
                        os.replace(dst, old)
                        aside.append(old)
                    os.replace(src, dst)
            for path, text in (files or {}).items():
                write_text_atomic(path, text)
        for old in aside:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        self.discard()


def stale_siblings(path: str | Path) -> tuple[list[Path], list[Path]]:
    """``(stale, unknown)`` hidden siblings of ``path``: stale ones carry the id of a process that no longer
    exists; unknown ones have no process id in their name (older versions) or belong to a running process."""
    p = Path(path)
    parent = p.parent
    if not parent.is_dir():
        return [], []
    pat = _sibling_re(p.name)
    stale: list[Path] = []
    unknown: list[Path] = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return [], []
    for e in entries:
        m = pat.match(e.name)
        if not m:
            continue
        pid = m.group("pid")
        if pid is not None and not pid_alive(int(pid)):
            stale.append(e)
        elif pid is None or int(pid) != os.getpid():
            unknown.append(e)
    return stale, unknown


def sweep_stale_siblings(path: str | Path) -> list[Path]:
    """Remove the leftovers of killed writers of ``path`` (logging each); log the ones that cannot be attributed.

    Returns the removed paths. Never raises: a leftover that cannot be removed is reported and kept.
    """
    stale, unknown = stale_siblings(path)
    removed: list[Path] = []
    for s in stale:
        try:
            if s.is_dir() and not s.is_symlink():
                shutil.rmtree(s)
            else:
                s.unlink()
        except OSError as e:
            log.warning("%s: leftover of a killed run; could not remove it (%s); remove it by hand", s, e)
            continue
        log.warning("removed %s: the leftover of an earlier run of %s that was killed", s, Path(path).name)
        removed.append(s)
    for u in unknown:
        log.warning(
            "%s looks like the leftover of an interrupted write of %s; remove it by hand if no other "
            "pose2rgbd process is writing there",
            u,
            Path(path).name,
        )
    return removed


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


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a hidden sibling and rename it onto ``path`` (a reader never sees half a file)."""
    p = Path(path)
    tmp = p.with_name(sibling_prefix(p, "tmp") + p.suffix)
    try:
        tmp.write_text(text)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
