"""The contract of Algorithm 2's stages and their cache in a work folder.

A :class:`Stage` makes one output (a dataset, a file, a training run) from what :meth:`Stage.key` names: its
settings and the fingerprints of its inputs (for an input made by an earlier stage, that stage's key). Run by
:func:`run_stage` in a work folder, each stage's output is ``<work>/<name>`` and its record ``<work>/<name>.stage.json``
(``{"key": ..., "state": "running" | "done"}``, written atomically before and after the run):

* ``done`` with the same key and the output there: the stage is not run again (cached);
* ``running`` with the same key and a stage that can resume (training: its own checkpoints): run again in place,
  continuing where it stopped;
* anything else (no record, another key, a stage stopped that cannot resume): the output is removed (it lies in the
  work folder, which only these stages write) and made again.

So a run of ``convert video --depth selfsup`` stopped by an error or Ctrl-C continues, when started again with the
same inputs and settings, from the last finished stage (and from the last checkpoint inside training).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.jsonio import json_text

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".stage.json"


class Stage(Protocol):
    """One step of Algorithm 2: ``run(dest)`` makes the output at ``dest``."""

    name: str  # the output's name in the work folder (and the stage's in messages)
    resumable: bool  # an interrupted run continues in its output instead of starting again

    def key(self) -> dict[str, Any]:
        """What the output is made from: settings and the inputs' fingerprints; another key makes it again."""

    def run(self, dest: Path, *, progress: bool) -> None:
        """Make the output at ``dest`` (absent, or a stopped run's when ``resumable``)."""


class Product(NamedTuple):
    """A stage's output: its ``path`` and the ``key`` it was made from (part of the key of every stage after it)."""

    path: Path
    key: dict[str, Any]


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """What tells a changed input file (or folder) from the one an output was made from: its resolved path, size
    and modification time (a folder: the time of its last change of entries)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _plain(key: dict[str, Any]) -> Any:
    """``key`` as plain JSON values (NumPy numbers, tuples and Paths as JSON has them), so that a key read back
    from its record compares equal to the same key made again."""
    return json.loads(json_text(key))


def read_record(work: Path, name: str) -> dict[str, Any] | None:
    """The record of stage ``name`` in ``work``, or None (none, or unreadable: made again)."""
    p = work / f"{name}{RECORD_SUFFIX}"
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def stage_state(stage: Stage, work: Path) -> str:
    """What :func:`run_stage` would do: ``cached`` (done, same key), ``resume`` (a stopped run it continues) or
    ``run`` (made from the start)."""
    rec = read_record(work, stage.name)
    if rec is None or rec.get("key") != _plain(stage.key()) or not (work / stage.name).exists():
        return "run"
    if rec.get("state") == "done":
        return "cached"
    return "resume" if stage.resumable and rec.get("state") == "running" else "run"


def run_stage(stage: Stage, work: Path, *, progress: bool = True) -> Product:
    """``<work>/<stage.name>``, made by ``stage`` unless a finished run with the same key is there (the module
    docstring)."""
    dest = work / stage.name
    record = work / f"{stage.name}{RECORD_SUFFIX}"
    key = _plain(stage.key())
    state = stage_state(stage, work)
    if state == "cached":
        log.info("%s: reusing %s (made earlier from the same inputs and settings)", stage.name, dest)
        return Product(dest, key)
    work.mkdir(parents=True, exist_ok=True)
    if state == "resume":
        log.info("%s: continuing the stopped run in %s", stage.name, dest)
    elif dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    rec = {"stage": stage.name, "key": key, "resumable": stage.resumable}
    write_text_atomic(record, json_text({**rec, "state": "running"}))
    stage.run(dest, progress=progress)
    write_text_atomic(record, json_text({**rec, "state": "done"}))
    return Product(dest, key)


def finished_stages(work: Path, stages: Iterable[Stage]) -> list[str]:
    """Of ``stages`` (those a run reached, in order), the ones whose output in ``work`` is done with their current
    key or a stopped run that can resume: what the same command run again reuses. Other records in the folder (an
    earlier run's, with other settings or another ``--depth``) are not named: they would be made again or not used."""
    if not work.is_dir():
        return []
    out = []
    for s in stages:
        state = stage_state(s, work)
        # a stopped run counts where it has something to continue from (``resumes_from``: the training stage's
        # checkpoint); one stopped before its first would start again, so it is not named as kept
        check = getattr(s, "resumes_from", None)
        if state == "cached" or (state == "resume" and (check is None or check(work / s.name))):
            out.append(s.name)
    return out
