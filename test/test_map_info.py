"""`pose2rgbd map info` says what a map is and what it takes on disk: a map merged from several datasets lists each
(path, name, frames, fingerprint) and the notes its merge recorded; the size is every file of the map folder, the
fused geometry in `fused/` included, with what is what."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_map_merge import _halves


def _files_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _as_dataset(src: Path, dst: Path, name: str) -> Path:
    """A copy of map ``src`` as if built from another dataset: its own path, name and fingerprint."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "map.json").read_text())
    m["dataset"].update(path=f"/data/{name}", name=name, fingerprint=f"{name}-" + m["dataset"]["fingerprint"])
    (dst / "map.json").write_text(json.dumps(m))
    return dst


def test_map_info_of_a_merged_map_lists_its_datasets_and_the_merge_notes(
    map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`map info` of a map merged from several datasets named only "merged from 3 datasets": not which, nor what
    the merge noted (a view kept once, depth left out: printed once by `map merge`, then never again). It lists
    each dataset and every note; `--json` has them (`dataset.datasets`, `merge_notes`)."""
    from pose2rgbd.cli.main import main

    halves = _halves(map_world, tmp_path, "--localization-only", "--max-features", "200")
    a = halves[0]
    b = _as_dataset(halves[1], tmp_path / "b", "flight-b")
    twin = _as_dataset(halves[0], tmp_path / "twin", "flight-a-again")  # a's keyframes again: kept once, a note
    out = tmp_path / "merged"
    capsys.readouterr()
    assert main(["map", "merge", str(a), str(b), str(twin), "--out", str(out), "--no-progress"]) == 0
    merged = capsys.readouterr().out
    manifest = json.loads((out / "map.json").read_text())
    notes = manifest["merge_notes"]
    assert any("views an earlier map holds already" in n for n in notes), notes
    leaves = manifest["dataset"]["datasets"]
    assert [d["name"] for d in leaves] == ["sim-seed0", "flight-b", "flight-a-again"]

    assert main(["map", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"  dataset      merged from 3 datasets \(fingerprint merged-\w+, world frame map\)", text), text
    for d in leaves:
        line = f"               - {d['path']} ({d['name']}: {d['frames']} frames, fingerprint {d['fingerprint']})"
        assert line in text, text
    for n in notes:
        assert f"  note         {n}" in text, text
    for n in notes:  # `map merge` prints its summary with the notes, each once
        assert merged.count(n) == 1, merged
    # a merged map is made again by merging its inputs again, not by `map build` (it has no dataset of its own)
    from pose2rgbd.placemap.verify import rebuild_command

    again_cmd = rebuild_command(out, manifest)
    assert again_cmd == f"`pose2rgbd map merge {a.resolve()} {b.resolve()} {twin.resolve()} --out {out} --overwrite`"

    assert main(["map", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["merge_notes"] == notes
    got = [{k: d[k] for k in ("path", "name", "fingerprint", "frames")} for d in info["dataset"]["datasets"]]
    assert got == [{k: d[k] for k in ("path", "name", "fingerprint", "frames")} for d in leaves]
    # the merged map merged again with one of its inputs: two maps, still three datasets (the stored name counted the
    # maps: "merged from 2 datasets")
    again = tmp_path / "again"
    assert main(["map", "merge", str(out), str(b), "--out", str(again), "--no-progress"]) == 0
    assert json.loads((again / "map.json").read_text())["dataset"]["name"] == "merged from 3 datasets"
    capsys.readouterr()
    assert main(["map", "info", str(again)]) == 0
    text = capsys.readouterr().out
    assert "  dataset      merged from 3 datasets (fingerprint merged-" in text, text
    assert all(f"               - {d['path']} ({d['name']}: " in text for d in leaves), text
    # a built map: no notes, one dataset line
    assert main(["map", "info", str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["merge_notes"] == []
    assert main(["map", "info", str(a)]) == 0
    text = capsys.readouterr().out
    assert "  note " not in text and "               - " not in text, text


def test_map_info_size_is_the_map_folder_on_disk_fused_geometry_included(
    map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The size `map info` printed was the sum of the manifest's file table: neither the manifest nor the fused
    geometry `map fuse` stores in fused/ (as large as the keyframes on the test world). It is every file of the
    folder, split into the keyframe store (the rate per 1,000 keyframes is its), the fused geometry and anything
    else, named (a partial fused geometry a killed `map fuse` left)."""
    from pose2rgbd.cli.main import main

    m = tmp_path / "map"
    shutil.copytree(map_world["map"], m)
    store = _files_bytes(m)
    capsys.readouterr()
    assert main(["map", "info", str(m), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_bytes"] == store and info["size_parts"] == {"keyframe_store": store, "fused": 0, "other": 0}
    assert main(["map", "info", str(m)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  size "))
    per = store / 1e6 * 1000 / info["keyframes"]
    assert line == f"  size         {store / 1e6:.1f} MB ({per:.0f} MB per 1,000 keyframes)", line

    assert main(["map", "fuse", "--map", str(m), "--no-progress", "--voxel-size", "2.0"]) == 0
    fused = _files_bytes(m / "fused")
    assert fused > 0 and _files_bytes(m) == store + fused
    capsys.readouterr()
    assert main(["map", "info", str(m), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_bytes"] == store + fused, (info["size_bytes"], store, fused)
    assert info["size_parts"] == {"keyframe_store": store, "fused": fused, "other": 0}
    assert info["size_mb_per_1000_keyframes"] == pytest.approx(per)
    assert main(["map", "info", str(m)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  size "))
    want = (f"  size         {(store + fused) / 1e6:.1f} MB on disk: {store / 1e6:.1f} MB keyframe store ({per:.0f} "
            f"MB per 1,000 keyframes), {fused / 1e6:.1f} MB fused geometry (fused/)")  # fmt: skip
    assert line == want, line

    # what a killed `map fuse` leaves (its hidden partial folder) and a file put there by hand: counted, named
    partial = m / ".fused.partial-4242-0a1b2c3d"
    partial.mkdir()
    (partial / "vertices.npy").write_bytes(b"\0" * 300_000)
    (m / "notes.txt").write_bytes(b"x" * 1000)
    assert main(["map", "info", str(m), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size_bytes"] == store + fused + 301_000
    assert info["size_parts"]["other"] == 301_000 and info["size_other_names"] == [partial.name, "notes.txt"]
    assert main(["map", "info", str(m)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  size "))
    assert f", 0.3 MB in other files ({partial.name}, notes.txt: not part of the map; a hidden .fused.partial-" in line
    assert "interrupted `map fuse` left: remove it)" in line, line
    # the earlier fused geometry moved aside (.fused.old-): never "remove it", the next map fuse puts it back
    from pose2rgbd.cli.map import _size_words

    aside = _size_words({**info, "size_other_names": [".fused.old-4242"]})
    assert "remove it" not in aside and "keep it, the next `map fuse` of this map puts it back" in aside, aside
