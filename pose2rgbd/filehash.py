"""The SHA-256 of a file, read in 1 MiB chunks: the one file digest of the package (the place map's file table,
:mod:`pose2rgbd.placemap.digests`, and the training cache's deep source check, :mod:`pose2rgbd.dataset.cache`).

SHA-256 from hashlib: on the machines measured it was the fastest digest hashlib offers (the CPU's SHA
extensions: about 0.8 GB/s on one core, BLAKE2b 0.45 GB/s), and it is the digest ``sha256sum`` prints, so a file
can be checked by hand too. Read in chunks so that a file of any size costs 1 MiB of memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of the file at ``path`` (raises ``OSError`` when it cannot be read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
