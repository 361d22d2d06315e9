"""The one check before anything is written to (or replaced at) an output path.

Every command and writer that can replace an output (bags, datasets, training runs, evaluation folders,
trajectory files) calls :func:`check_output` first. It refuses, whatever ``overwrite`` says:

- an output that *is*, *contains* or *lies inside* one of the inputs (symlinks resolved): replacing it would
  delete the recording being read;
- with ``overwrite``, an existing path that is not an output of the same kind (a bag folder has
  ``metadata.yaml``, a dataset ``manifest.yaml``, a training run ``config.yaml`` or ``*.pt``, ...): replacing
  it would delete something the user made by other means.

:func:`refuse_existing` is the one overwrite policy: an existing output is replaced only with ``overwrite``;
without it every writer and command raises the same :class:`~pose2rgbd.errors.OutputExistsError` with the same
message (``OUT exists; pass --overwrite to replace it (nothing was written)``). It first lets
:func:`pose2rgbd.atomic.sweep_stale_siblings` put back an earlier output that a killed run had moved aside, so
that the question is asked of what is really there.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pose2rgbd.atomic import sweep_stale_siblings
from pose2rgbd.errors import OutputError, OutputExistsError

__all__ = ["OutputError", "OutputExistsError", "OutputKind", "check_not_foreign_dir", "check_output",
           "refuse_existing"]  # fmt: skip


@dataclass(frozen=True)
class OutputKind:
    """What an output of one kind looks like on disk."""

    name: str  # "bag", "dataset", ...
    is_dir: bool
    markers: tuple[str, ...] = ()  # a directory of this kind holds at least one of these (glob patterns)
    suffixes: tuple[str, ...] = ()  # a file of this kind ends in one of these (empty: any)
    excludes: tuple[str, ...] = ()  # ... and none of these (a folder of another kind that holds a marker too)

    def matches(self, path: Path) -> bool:
        if self.is_dir:
            return (
                path.is_dir()
                and any(any(path.glob(m)) for m in self.markers)
                and not any(any(path.glob(m)) for m in self.excludes)
            )
        return path.is_file() and (not self.suffixes or path.name.endswith(self.suffixes))


BAG = OutputKind("bag", True, ("metadata.yaml",))
DATASET = OutputKind("dataset", True, ("manifest.yaml",))
# a dataset may hold a .pt of its own (the depth network `convert video` keeps): it is still no training run
TRAINING_RUN = OutputKind("training run", True, ("config.yaml", "*.pt", "log.csv"), excludes=("manifest.yaml",))
EVALUATION = OutputKind("evaluation", True, ("metrics.json", "metrics.md"))
POSED_IMAGES = OutputKind("posed images", True, ("transforms.json",))
VIDEO = OutputKind("video", False, suffixes=(".mp4", ".avi", ".mkv"))
RENDERS = OutputKind("render", True, ("rgb_000000.png", "depth_000000.npy"))  # render trajectory's folder
FILE = OutputKind("file", False)


def _resolved(p: str | Path) -> Path:
    return Path(os.path.realpath(Path(p).expanduser()))


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def check_output(
    out: str | Path,
    kind: OutputKind,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> Path:
    """Raise :class:`OutputError` if writing ``out`` (an output of ``kind``) could destroy an input or a
    foreign file; returns ``out`` as a Path. See the module docstring for the rules."""
    p = Path(out)
    check_links(p)
    rp = _resolved(p)
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        ri = _resolved(inp)
        if _within(rp, ri) or _within(ri, rp):
            how = "is" if rp == ri else ("lies inside" if _within(rp, ri) else "contains")
            raise OutputError(
                f"output {p} {how} the input {inp}; writing it would destroy the input. Choose an output "
                "path outside the input (nothing was written)"
            )
    if overwrite and (p.exists() or p.is_symlink()):
        if kind.is_dir and p.is_dir() and not any(p.iterdir()):
            return p  # an empty folder holds nothing to lose
        if not kind.matches(p):
            what = "a folder" if p.is_dir() else "a file"
            looks = (
                f"a {kind.name} folder has {' or '.join(kind.markers)}"
                if kind.is_dir
                else f"a {kind.name} is a file" + (f" ending in {', '.join(kind.suffixes)}" if kind.suffixes else "")
            )
            raise OutputError(
                f"{p} exists and is {what} that is not a {kind.name} ({looks}); --overwrite only replaces an "
                f"earlier {kind.name}. Choose another output path or move {p} away yourself (nothing was written)"
            )
    return p


def check_links(path: str | Path, name: str = "output") -> None:
    """Refuse an output that is, or lies under, a symbolic link to nothing (a dangling link) or a link loop:
    writing there fails only after the work, with a bare OS error. ``name``: what the path is to the user (an
    ``output``, a ``--cache-root``)."""
    p = Path(path)
    for anc in (p, *p.parents):
        if not anc.is_symlink():
            continue
        try:
            os.stat(anc)
        except OSError as e:
            target = os.readlink(anc)
            loop = e.errno == errno.ELOOP
            what = "a symbolic link loop" if loop else f"a symbolic link to {target}, which does not exist"
            where = "is" if anc == p else f"lies under {anc}, which is"
            fix = "remove the link" if loop else "create its target, remove the link"
            raise OutputError(
                f"{name} {p} {where} {what}; {fix}, or choose another {name} path (nothing was written)"
            ) from None


def check_not_foreign_dir(path: str | Path, kind: OutputKind, *, what_to_do: str) -> None:
    """Refuse to write *into* an existing non-empty folder that is not of ``kind`` (e.g. appending frames to a
    folder that is not a dataset would overwrite the user's files)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p} is a file, not a {kind.name} folder; {what_to_do}")
    if p.is_dir() and any(p.iterdir()) and not kind.matches(p):
        raise OutputError(
            f"{p} is a folder with other files in it and not a pose2rgbd {kind.name} "
            f"(no {' or '.join(kind.markers)}); {what_to_do} (nothing was written)"
        )


def refuse_existing(
    out: str | Path, *, overwrite: bool, holds: str = "", instead: str = "", nothing: str = "nothing was written"
) -> Path:
    """The one overwrite policy: raise :class:`OutputExistsError` if ``out`` exists and ``overwrite`` is not
    set. ``holds``: what is there, when worth saying (``an earlier training run (config.yaml, last.pt)``);
    ``instead``: the other ways on (``pass --resume to continue it, ``); ``nothing``: what the refusal left as
    it was. An earlier output that a killed run had moved aside is put back first
    (:func:`pose2rgbd.atomic.sweep_stale_siblings`)."""
    p = Path(out)
    sweep_stale_siblings(p)
    if overwrite or not (p.exists() or p.is_symlink()):
        return p
    what = f"holds {holds}" if holds else "exists"
    raise OutputExistsError(f"{p} {what}; {instead}pass --overwrite to replace it ({nothing})")
