"""A damaged place map is refused, naming the file and the command that rebuilds it: every file's size is checked
when a map is opened (a truncated or missing file), its SHA-256 with `map info --verify` and at the end of
`map build` (a same-size change); maps written before the digests were recorded still load."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.errors import DamagedFileError
from pose2rgbd.placemap import PlaceMap
from pose2rgbd.placemap.verify import MapDamagedError

# every kind of file of a map with depth: the blobs, their offsets, the feature arrays, the index, the vocabulary
FILES = ["images.bin", "depth.bin", "vocabulary.npz", "kp_desc.npy", "kp_xyz.npy", "poses.npy", "global.npy",
         "images_offsets.npy", "kp_offsets.npy"]  # fmt: skip


@pytest.fixture
def copy(map_world: dict, tmp_path: Path) -> Path:
    m = tmp_path / "map"
    shutil.copytree(map_world["map"], m)
    return m


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x40
    path.write_bytes(bytes(data))


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_naming(err: str, name: str, m: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert name in err and "damaged place map" in err
    assert f"pose2rgbd map build --dataset {Path(json.loads((m / 'map.json').read_text())['dataset']['path'])}" in err
    assert f"--out {m} --overwrite" in err


def test_manifest_records_every_files_size_and_sha256(map_world: dict) -> None:
    m = map_world["map"]
    manifest = json.loads((m / "map.json").read_text())
    names = sorted(p.name for p in m.iterdir() if p.name != "map.json")
    assert sorted(manifest["files"]) == names and sorted(manifest["sha256"]) == names
    for n in names:
        assert manifest["files"][n] == (m / n).stat().st_size
        assert manifest["sha256"][n] == hashlib.sha256((m / n).read_bytes()).hexdigest()
    assert PlaceMap(m, verify=True).verified.hashed == len(names)


@pytest.mark.parametrize("name", FILES)
def test_truncated_map_file_is_refused_at_load_and_at_the_cli(
    name: str, copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a truncated images.bin passed `map info` and crashed the hybrid render in cv2; a truncated
    vocabulary.npz gave a BadZipFile traceback."""
    _truncate(copy / name)
    with pytest.raises(MapDamagedError, match=rf"{name} is \d+ bytes, the manifest records \d+ \(truncated\)") as e:
        PlaceMap(copy)
    assert isinstance(e.value, DamagedFileError) and e.value.path == copy / name
    rc, _, err = _cli(capsys, "map", "info", copy)
    assert rc == 2
    _one_line_naming(err, name, copy)


def test_missing_map_file_is_named(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "kp_xy.npy").unlink()
    with pytest.raises(MapDamagedError, match=r"kp_xy\.npy is missing"):
        PlaceMap(copy)
    rc, _, err = _cli(capsys, "map", "info", copy)
    assert rc == 2
    _one_line_naming(err, "kp_xy.npy", copy)


def test_a_file_that_fails_to_load_is_named_by_its_digest(copy: Path) -> None:
    """A changed vocabulary.npz fails its zip CRC when opened: the digests name it (not a BadZipFile)."""
    _flip(copy / "vocabulary.npz")
    with pytest.raises(MapDamagedError, match=r"vocabulary\.npz has changed"):
        PlaceMap(copy)


@pytest.mark.parametrize("name", ["images.bin", "kp_desc.npy", "global.npy"])
def test_verify_catches_a_same_size_change(name: str, copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A flipped byte keeps the size: opening passes (the fast path checks sizes), --verify names the file."""
    _flip(copy / name)
    PlaceMap(copy)
    with pytest.raises(MapDamagedError, match=rf"{name} has changed"):
        PlaceMap(copy, verify=True)
    assert _cli(capsys, "map", "info", copy)[0] == 0
    rc, _, err = _cli(capsys, "map", "info", copy, "--verify")
    assert rc == 2
    _one_line_naming(err, name, copy)


def test_verify_of_an_intact_map_says_what_it_checked(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, "map", "info", copy, "--verify")
    n = len(json.loads((copy / "map.json").read_text())["files"])
    assert rc == 0 and f"verified     {n} of {n} files match the manifest's sizes and sha256 digests" in out
    rc, out, _ = _cli(capsys, "map", "info", copy, "--verify", "--json")
    assert rc == 0 and json.loads(out)["verified"].startswith(f"{n} of {n} files")


def test_map_written_before_the_digests_still_loads(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest with sizes only (as written before): opens, --verify reports the digests absent, and a
    truncated file is still refused by its size."""
    manifest = json.loads((copy / "map.json").read_text())
    del manifest["sha256"]
    (copy / "map.json").write_text(json.dumps(manifest))
    assert len(PlaceMap(copy)) > 0
    rc, out, _ = _cli(capsys, "map", "info", copy, "--verify")
    assert rc == 0 and "no sha256 digests recorded" in out
    _truncate(copy / "depth.bin")
    rc, _, err = _cli(capsys, "map", "info", copy, "--verify")
    assert rc == 2
    _one_line_naming(err, "depth.bin", copy)


def test_localize_with_a_truncated_map_is_one_line(
    copy: Path, map_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.dataset import Dataset

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), Dataset(map_world["dataset"]).read_rgb(0)[..., ::-1])
    _truncate(copy / "images.bin")
    rc, _, err = _cli(capsys, "localize", "images", folder, "--map", copy, "--out", tmp_path / "p.csv", "--no-progress")
    assert rc == 2
    _one_line_naming(err, "images.bin", copy)
    assert not (tmp_path / "p.csv").exists()


def test_map_build_verifies_what_it_renamed_into_place(
    map_world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digests are compared once the map is in place: a file changed between writing and the rename (here:
    a byte flipped just before the check) fails the build naming it."""
    import pose2rgbd.placemap.build as build
    from pose2rgbd.placemap import MapBuildConfig, MapSelection

    real = build.verify_files

    def damaged_on_the_way(path: Path, manifest: dict, *, hashes: bool = False):  # type: ignore[no-untyped-def]
        _flip(Path(path) / "global.npy", 0.9)
        return real(path, manifest, hashes=hashes)

    monkeypatch.setattr(build, "verify_files", damaged_on_the_way)
    cfg = MapBuildConfig(selection=MapSelection(sources=[0], stride=4))
    with pytest.raises(MapDamagedError, match=r"global\.npy has changed"):
        build.build_map(map_world["dataset"], tmp_path / "m", cfg, progress=False)
    monkeypatch.setattr(build, "verify_files", real)
    build.build_map(map_world["dataset"], tmp_path / "m2", cfg, progress=False)
    assert np.all(np.isfinite(PlaceMap(tmp_path / "m2", verify=True).global_desc))
