"""The digests of a place map's files (``map.json``'s ``sha256`` table beside the sizes in ``files``); compared
on reading by :mod:`pose2rgbd.placemap.verify`.

Each is :func:`pose2rgbd.filehash.file_sha256` (SHA-256 read in 1 MiB chunks, the digest ``sha256sum`` prints, so
a map can be checked by hand too); see docs/place-map.md for the cost on a map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pose2rgbd.filehash import file_sha256

HASH = "sha256"


def file_table(folder: str | Path, exclude: str) -> dict[str, dict[str, Any]]:
    """The manifest entries of every file in ``folder`` but ``exclude`` (the manifest): ``files`` (name -> size
    in bytes) and ``sha256`` (name -> hex digest)."""
    paths = [p for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != exclude]
    return {"files": {p.name: p.stat().st_size for p in paths}, HASH: {p.name: file_sha256(p) for p in paths}}
