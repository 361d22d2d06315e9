"""Shared by test_image_sequence.py and test_render_trajectory.py: an output path that cannot be written, by fault."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

FAULTS = ("folder is a file", "read-only folder", "read-only file system")


def unwritable_output(
    fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, *, folder: str, nested: bool
) -> tuple[Path, str]:
    """An output path that cannot be written for ``fault``, and what its error must say: its folder ``folder`` a file
    (root too cannot write there), a folder without write permission (not for root: root ignores permissions, the
    test is skipped), or a read-only file system (the kernel's EROFS, raised where a file is made; ``nested``: the
    output in a folder still to be made under ``tmp_path``, else right in it)."""
    if fault == "folder is a file":
        (tmp_path / folder).write_text("my notes\n")
        return tmp_path / folder / name, f"{tmp_path / folder} is a file, not a folder; choose another --out"
    if fault == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder: permissions do not stop it")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / name, f"its folder {ro} is not writable (Permission denied); choose another --out, or make {ro} "
    real = tempfile.TemporaryFile

    def read_only(*a: object, **k: object) -> object:
        if str(k.get("dir", "")).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(k["dir"]))
        return real(*a, **k)  # type: ignore[call-overload]

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    if nested:
        return (
            tmp_path / "out" / name,
            f"{tmp_path / 'out'} would be made in {tmp_path}, which is on a read-only file system",
        )
    return tmp_path / name, f"its folder {tmp_path} is on a read-only file system"
