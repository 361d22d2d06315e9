"""Is an MP4 / MOV file whole? A walk over its top-level boxes (ISO/IEC 14496-12), nothing decoded.

A recording cut short -- a camera that lost power, a copy that stopped -- fails in two ways downstream: with the
index (``moov``) at the end, as cameras write it, OpenCV cannot open the file and the GPMF parser finds "no
telemetry track"; with the index at the front ("faststart", as web tools write it), OpenCV opens it and decodes
frames until the data runs out, the last one half decoded, and nothing says that most of the video is missing.
Neither library says why. The top-level boxes do: each declares its size, so a box that runs past the end of the
file, or a file without ``moov``, was cut. Written here because no installed library (OpenCV, the GPMF parser)
reports it; it reads a few bytes per top-level box.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

# top-level box types that start an MP4 / MOV / 3GP file (the first box is one of these)
_FIRST = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}


def top_level_boxes(path: str | Path) -> list[tuple[str, int, int]] | None:
    """``[(type, offset, declared size)]`` of the file's top-level boxes, or None when it is not an MP4 / MOV file.
    A box whose size runs past the end of the file is the last one listed."""
    p = Path(path)
    end = os.path.getsize(p)
    boxes: list[tuple[str, int, int]] = []
    with open(p, "rb") as f:
        k = 0
        while k + 8 <= end:
            f.seek(k)
            head = f.read(16)
            size, kind = struct.unpack(">I4s", head[:8])
            if not boxes and kind not in _FIRST:
                return None
            if size == 1:  # 64-bit size after the type
                if len(head) < 16:
                    break
                size = struct.unpack(">Q", head[8:16])[0]
            elif size == 0:  # the box runs to the end of the file
                size = end - k
            if size < 8:
                boxes.append((kind.decode("latin-1"), k, size))
                break
            boxes.append((kind.decode("latin-1"), k, size))
            k += size
    return boxes or None


def truncation(path: str | Path) -> str | None:
    """Why the MP4 / MOV file ``path`` is cut short, in words, or None (whole, or not an MP4 / MOV file)."""
    try:
        boxes = top_level_boxes(path)
        end = os.path.getsize(path)
    except OSError:
        return None
    if not boxes:
        return None
    kind, offset, size = boxes[-1]
    if size < 8:
        return f"the file is damaged: its top-level box {kind!r} at byte {offset} declares {size} bytes"
    if offset + size > end:
        share = 100.0 * end / (offset + size)
        return (
            f"the file is truncated: its {kind!r} box declares {size:,} bytes from byte {offset:,}, but the file ends "
            f"after {end:,} bytes (about {share:.0f} % of the {offset + size:,} bytes it should have; a copy cut short "
            "or a recording that stopped without closing the file)"
        )
    if not any(k == "moov" for k, _, _ in boxes):
        return (
            "the file is truncated or unfinished: it has no 'moov' box (the index a camera writes when a recording "
            "ends; the camera lost power, or a copy was cut short)"
        )
    return None
