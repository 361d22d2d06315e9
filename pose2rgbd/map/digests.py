"""The digests of a place map's files (``map.json``'s ``sha256`` table beside the sizes in ``files``); compared
on reading by :mod:`pose2rgbd.map.verify`.

SHA-256 from hashlib, read in 1 MiB chunks: on the machines measured it was the fastest digest hashlib offers
(the CPU's SHA extensions: about 0.8 GB/s on one core, BLAKE2b 0.45 GB/s), and it is the digest ``sha256sum``
prints, so a map can be checked by hand too; see docs/place-map.md for the cost on a map.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

HASH = "sha256"
CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_table(folder: str | Path, exclude: str) -> dict[str, dict[str, Any]]:
    """The manifest entries of every file in ``folder`` but ``exclude`` (the manifest): ``files`` (name -> size
    in bytes) and ``sha256`` (name -> hex digest)."""
    paths = [p for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != exclude]
    return {"files": {p.name: p.stat().st_size for p in paths}, HASH: {p.name: file_digest(p) for p in paths}}
