"""The place map's file table: every file's size and SHA-256 in the manifest, checked when a map is read.

``map.json`` lists every file of the map folder with its size (``files``: name -> bytes) and its SHA-256
(``sha256``: name -> hex digest; the same digest ``sha256sum`` prints, so a map can be checked by hand too).
Opening a map checks the sizes (a ``stat`` per file: the fast path, always); :func:`verify_files` with
``hashes=True`` (``pose2rgbd map info --verify``, and the end of ``pose2rgbd map build``) reads every file and
compares its digest, which also catches a same-size change (a flipped byte) that the size check cannot. A map
written before the digests were recorded has sizes only: it loads (sizes checked) and ``--verify`` says its
digests are absent.

The digests are computed by :mod:`pose2rgbd.placemap.digests` (the writer records them, this module compares).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pose2rgbd.errors import DamagedFileError
from pose2rgbd.filehash import file_sha256
from pose2rgbd.placemap.digests import HASH
from pose2rgbd.placemap.format import MERGED_PREFIX, MapError


class MapDamagedError(MapError, DamagedFileError):
    """A file of a place map is missing, truncated or changed (its size or digest is not the manifest's)."""


def rebuild_command(path: Path, manifest: dict[str, Any]) -> str:
    """The command that builds the map at ``path`` again from its dataset; for a map merged from maps of several
    datasets (no dataset of its own: ``map build`` cannot make it), the ``map merge`` of its input maps."""
    dataset = manifest.get("dataset", {})
    inputs = [str(m.get("path")) for m in manifest.get("merged_from") or [] if isinstance(m, dict) and m.get("path")]
    if str(dataset.get("fingerprint", "")).startswith(MERGED_PREFIX) and inputs:
        maps = " ".join(shlex.quote(p) for p in inputs)
        return f"`pose2rgbd map merge {maps} --out {shlex.quote(str(path))} --overwrite`"
    ds = dataset.get("path") or "DATASET"
    return f"`pose2rgbd map build --dataset {shlex.quote(str(ds))} --out {shlex.quote(str(path))} --overwrite`"


@dataclass
class Verified:
    """What :func:`verify_files` checked."""

    files: int = 0  # files whose size was checked
    hashed: int = 0  # files whose digest was compared
    no_digest: list[str] = field(default_factory=list)  # files the manifest records no digest of

    def line(self) -> str:
        if not self.hashed and self.no_digest:
            return (
                f"sizes of {self.files} files match the manifest; no {HASH} digests recorded (a map written before "
                "they were): rebuild it to have them"
            )
        text = f"{self.hashed} of {self.files} files match the manifest's sizes and {HASH} digests"
        if self.no_digest:
            text += f"; no digest recorded for {', '.join(self.no_digest)}"
        return text


def verify_files(path: str | Path, manifest: dict[str, Any], *, hashes: bool = False) -> Verified:
    """Check every file the manifest lists: present and of its size; with ``hashes`` also its digest.

    Raises :class:`MapDamagedError` naming every file that differs and the command that rebuilds the map.
    A manifest without a file table (none was ever written without one) checks nothing."""
    p = Path(path)
    sizes = manifest.get("files") or {}
    digests = manifest.get(HASH) or {}
    out = Verified(files=len(sizes))
    bad: list[str] = []
    for name, size in sizes.items():
        f = p / name
        try:
            have = f.stat().st_size
        except FileNotFoundError:
            bad.append(f"{name} is missing")
            continue
        except OSError as e:
            bad.append(f"{name} cannot be read ({e.strerror or e})")
            continue
        if have != int(size):
            how = "truncated" if have < int(size) else "longer than written"
            bad.append(f"{name} is {have} bytes, the manifest records {int(size)} ({how})")
            continue
        if not hashes:
            continue
        if name not in digests:
            out.no_digest.append(name)
            continue
        try:
            digest = file_sha256(f)
        except OSError as e:
            bad.append(f"{name} cannot be read ({e.strerror or e})")
            continue
        if digest != digests[name]:
            bad.append(f"{name} has changed (its {HASH} is not the manifest's; same size, different content)")
            continue
        out.hashed += 1
    if bad:
        raise MapDamagedError(
            f"{p}: damaged place map: {'; '.join(bad)}. Rebuild it with {rebuild_command(p, manifest)}",
            path=p / bad[0].split(" ", 1)[0],
        )
    return out
