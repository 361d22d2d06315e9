"""The hidden siblings atomic writers create, and what the next run does with those of a killed run.

Every writer that makes an output appear all at once first writes a hidden sibling of the output and renames it
at the end (:mod:`pose2rgbd.atomic.swap`). The sibling's name carries the writer's process id::

    .<output name>.<kind>-<pid>[-<random> | .<suffix>]      kind: partial, tmp or old
    .<output name>.old-<pid>.swap                             the marker of an earlier output moved aside

Ctrl-C and SIGTERM remove the ``partial`` / ``tmp`` ones (and are held while an output is swapped); SIGKILL, a
power cut or an OOM kill cannot. :func:`sweep_stale_siblings`, called by each writer before it writes the same
output again, deals with those whose process is gone:

* ``partial`` / ``tmp`` (a new output that was never put in place): removed, with a log line;
* ``old`` (an earlier output moved aside for a replacement): put back when the output is absent (the swap was
  cut before the new one was in place); removed only when its marker says the replacement was complete (the
  marker proves it is ours and the new output whole); otherwise kept, and both are named in a warning.

Siblings it cannot attribute (no process id in the name, or a process that is still running) are only reported.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SIBLING_KINDS = ("partial", "tmp", "old")
MARKER_SUFFIX = ".swap"


def sibling_prefix(path: str | Path, kind: str) -> str:
    """The hidden name prefix a writer of ``path`` uses: ``.<name>.<kind>-<pid>``."""
    if kind not in SIBLING_KINDS:
        raise ValueError(f"kind must be one of {SIBLING_KINDS}, not {kind!r}")
    return f".{Path(path).name}.{kind}-{os.getpid()}"


def make_temp_dir(path: str | Path, kind: str = "partial") -> Path:
    """A fresh hidden directory next to ``path`` (in its parent, which must exist), named for this process.

    Made with the mode any new folder gets (``0777`` less the umask: ``drwxr-xr-x`` under the usual ``022``), not
    ``tempfile.mkdtemp``'s private ``0700``: the folder becomes the output when it is renamed into place, and another
    user (a ROS node running as one) must be able to read that as they read any folder of its owner's."""
    p = Path(path)
    prefix = sibling_prefix(p, kind) + "-"
    for _ in range(tempfile.TMP_MAX):
        d = p.parent / (prefix + secrets.token_hex(4))
        try:
            os.mkdir(d, 0o777)  # the umask applies, as to a folder made by hand
        except FileExistsError:
            continue
        return d
    raise FileExistsError(errno.EEXIST, "no free name for a hidden sibling folder", str(p.parent / prefix))


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


def marker_of(old: Path) -> Path:
    """The marker file beside an earlier output moved aside (``.<name>.old-<pid>`` -> ``.<name>.old-<pid>.swap``)."""
    return old.with_name(old.name + MARKER_SUFFIX)


def write_marker(old: Path, output: Path, state: str) -> None:
    """Record what a swap did with ``output``'s earlier version at ``old``: ``"replacing"`` before
    it is moved aside, ``"replaced"`` once the new output is in place."""
    # written in place: a torn marker reads as no marker, and without one nothing is ever removed
    marker_of(old).write_text(json.dumps({"output": output.name, "state": state}) + "\n")


def _marker_state(old: Path) -> str | None:
    try:
        d = json.loads(marker_of(old).read_text())
    except (OSError, ValueError):
        return None
    return str(d.get("state")) if isinstance(d, dict) else None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def _recover_old(old: Path, output: Path) -> bool:
    """A killed swap's earlier output: put it back, remove it, or keep it (see the module docstring). Returns
    whether it was removed."""
    state = _marker_state(old)
    try:
        if not output.exists() and not output.is_symlink():
            os.replace(old, output)
            marker_of(old).unlink(missing_ok=True)
            log.warning(
                "restored %s from %s: a run that was replacing it was killed before the new one was in place",
                output, old,
            )  # fmt: skip
            return False
        if state == "replaced":
            _remove(old)
            marker_of(old).unlink(missing_ok=True)
            log.warning("removed %s: the earlier %s, replaced by a run that was killed before it removed it", old,
                        output.name)  # fmt: skip
            return True
    except OSError as e:
        log.warning("%s: the earlier %s, moved aside by a killed run; could not recover it (%s); move it back "
                    "by hand", old, output.name, e)  # fmt: skip
        return False
    log.warning(
        "kept %s: the earlier %s, moved aside by a run that was killed while it replaced it with %s; check %s "
        "and remove whichever you do not want",
        old, output.name, output, output,
    )  # fmt: skip
    return False


def sweep_stale_siblings(path: str | Path) -> list[Path]:
    """Deal with the leftovers of killed writers of ``path`` (logging each; see the module docstring); log the
    ones that cannot be attributed.

    Returns the removed paths. Never raises: a leftover that cannot be removed or put back is reported and kept.
    """
    p = Path(path)
    stale, unknown = stale_siblings(p)
    removed: list[Path] = []
    for s in stale:
        if s.name.endswith(MARKER_SUFFIX):
            old = s.with_name(s.name[: -len(MARKER_SUFFIX)])
            if not old.exists() and not old.is_symlink():
                s.unlink(missing_ok=True)  # its swap finished (or was undone): the marker alone means nothing
            continue
        if _kind_of(p.name, s.name) == "old":
            if _recover_old(s, p):
                removed.append(s)
            continue
        try:
            _remove(s)
        except OSError as e:
            log.warning("%s: leftover of a killed run; could not remove it (%s); remove it by hand", s, e)
            continue
        log.warning("removed %s: the leftover of an earlier run of %s that was killed", s, p.name)
        removed.append(s)
    for u in unknown:
        log.warning(
            "%s looks like the leftover of an interrupted write of %s; remove it by hand if no other "
            "pose2rgbd process is writing there",
            u,
            p.name,
        )
    return removed


def _kind_of(name: str, sibling: str) -> str | None:
    m = _sibling_re(name).match(sibling)
    return m.group("kind") if m else None
