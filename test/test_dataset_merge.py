"""`pose2rgbd dataset merge`: datasets of one place joined into one training dataset (pose2rgbd.dataset.merge)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.dataset import Dataset, DatasetWriter, Manifest
from pose2rgbd.dataset.splits import make_split
from pose2rgbd.geometry.camera import PinholeCamera
from pose2rgbd.geometry.geodesy import Datum, T_world_world

CAM = PinholeCamera(40, 30, 35.0, 35.0, 20.0, 15.0)
LAT, LON, ALT = 47.3977, 8.5456, 488.0


def _flight(
    path: Path,
    *,
    datum: Datum | None,
    seed: int,
    n: int = 6,
    start_ns: int = 10**18,
    depth: bool = True,
    camera: PinholeCamera = CAM,
    sources: int = 1,
    lat_offset: float = 0.0,
    plain: bool = False,
) -> Path:
    """A small dataset whose cameras fly over known GPS positions, posed in its datum's frame (the world at the
    datum's origin, or a made-up frame without one)."""
    rng = np.random.default_rng(seed)
    man = Manifest(f"flight{seed}", camera, depth_kind="metric" if depth else "none", datum=datum,
                   world_frame="enu" if datum is not None else "mocap",
                   sources=[{"id": s, "kind": "bag", "name": f"f{seed}-{s}"} for s in range(sources)])  # fmt: skip
    with DatasetWriter(path, man) as w:
        for i in range(n):
            lla = (LAT + lat_offset + 1e-5 * i + 1e-4 * seed, LON + 2e-5 * i, ALT + 10.0)
            T = np.eye(4)
            T[:3, 3] = datum.to_world(*lla) if datum is not None else [i, 0.0, 10.0]
            rgb = rng.integers(0, 255, (camera.height, camera.width, 3), dtype=np.uint8)
            if plain:  # one colour: a small PNG, of one size for every frame
                rgb[:] = 40 + 10 * seed
            d = np.full((camera.height, camera.width), 5.0 + i, np.float32) if depth else None
            w.add_frame(start_ns + i * 10**8, T, rgb, d, latlonalt=lla, source_id=i % sources)
    return path


def test_merge_moves_a_dataset_of_another_datum_into_the_first_frame_through_the_gps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two flights each converted with its own datum (its first fix): the second's poses are moved into the first's
    ENU frame, so that each camera sits at its own GPS fix in that frame; the files are hard links, nothing decoded;
    the flights are sources 0 and 1, and the route split trains on the first and holds out the second."""
    da, db = Datum(LAT, LON, ALT), Datum(LAT + 1e-4, LON + 3e-4, ALT + 2.0)
    a = _flight(tmp_path / "a", datum=da, seed=0)
    b = _flight(tmp_path / "b", datum=db, seed=1, sources=2)
    out = tmp_path / "m"
    assert main(["dataset", "merge", str(a), str(b), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"{out}: 12 frames merged from 2 datasets" in text, text
    assert f"`pose2rgbd train --method hybrid --dataset {out} --split blocks --out runs/m`" in text, text
    shift = np.linalg.norm(T_world_world(da, db)[:3, 3])
    assert f"poses moved {shift:.2f} m" in text and "moved into a's frame through the GPS" in text, text
    m, A, B = Dataset(out), Dataset(a), Dataset(b)
    f = m.frames
    assert len(m) == 12 and m.manifest.datum == da and m.manifest.world_frame == "enu"
    want = da.to_enu(*f.latlonalt.T)  # every camera at its own fix in the first dataset's frame
    assert np.abs(f.translation - want).max() < 1e-6
    assert np.abs(f.translation[6:] - B.frames.translation).max() > 10  # moved indeed
    np.testing.assert_allclose(f.translation[:6], A.frames.translation)
    assert f.source_id.tolist() == [0] * 6 + [1, 2] * 3
    assert [s["dataset"] for s in m.manifest.sources] == ["a", "b", "b"]  # the folders they came from
    moved = m.manifest.extra["merge"]["datasets"][1]["moved"]["T_merged_input_xyz_qxyzw"]  # the move itself
    from pose2rgbd.geometry.transforms import T_from_tq

    np.testing.assert_allclose(T_from_tq(moved[:3], moved[3:]), T_world_world(da, db), atol=1e-9)
    assert (out / f.rgb[7]).read_bytes() == (b / B.frames.rgb[1]).read_bytes()
    assert (out / f.rgb[7]).stat().st_ino == (b / B.frames.rgb[1]).stat().st_ino  # a hard link: not copied
    np.testing.assert_array_equal(m.read_depth(7), B.read_depth(1))
    split = make_split(f.source_id, f.stamp_ns, "route", test_fraction=0.1)
    assert set(split.train.tolist()) == set(range(6))
    rec = m.manifest.extra["merge"]
    assert [d["kept"] for d in rec["datasets"]] == [6, 6] and rec["datasets"][1]["moved"]["shift_m"] > 20
    # a flight 5 km away is merged as asked, with a warning: most likely another place
    far = _flight(tmp_path / "far", datum=Datum(LAT + 0.045, LON, ALT), seed=3, lat_offset=0.045)
    assert main(["dataset", "merge", str(a), str(far), "--out", str(tmp_path / "af"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "none of its cameras comes within 503" in text and "most likely another place" in text, text
    assert "most likely another place" not in (out / "manifest.yaml").read_text()  # the flights of one place: none
    # the rigid move is the Earth's: the same as through lat/lon/alt
    T = T_world_world(da, db)
    np.testing.assert_allclose(B.frames.translation @ T[:3, :3].T + T[:3, 3], f.translation[6:], atol=1e-6)


def test_merge_keeps_one_frame_as_it_is_and_a_view_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """One datum: poses unchanged. A dataset holding frames of the first again (a copy appended to) adds only its
    own frames, with a note; the manifest keeps the largest stated pose error and the worst import check."""
    d = Datum(LAT, LON, ALT)
    a = _flight(tmp_path / "a", datum=d, seed=0)
    b = _flight(tmp_path / "b", datum=d, seed=1, start_ns=2 * 10**18)
    for p, err, check in ((a, 0.4, "ok"), (b, 1.5, "check")):  # stated by a producer
        man = yaml_load(p / "manifest.yaml")
        man["pose_error"] = {"horizontal_m": err, "vertical_m": 2 * err}
        man["extra"]["pose_check"] = check
        (p / "manifest.yaml").write_text(yaml_dump(man))
    both = tmp_path / "ab"
    assert main(["dataset", "merge", str(a), str(b), "--out", str(both), "--no-progress"]) == 0
    capsys.readouterr()
    m = Dataset(both)
    np.testing.assert_allclose(m.frames.translation[6:], Dataset(b).frames.translation)
    assert m.manifest.pose_error["horizontal_m"] == 1.5 and m.manifest.pose_error["vertical_m"] == 3.0
    assert m.manifest.extra["pose_check"] == "check"
    # the merged dataset merged again with one of its inputs: b's frames are there already, nothing to merge
    again = tmp_path / "again"
    assert main(["dataset", "merge", str(both), str(b), "--out", str(again), "--no-progress"]) == 2
    assert "no dataset after" in capsys.readouterr().err and not again.exists()
    # ... and with a third flight: b adds nothing (a warning, a note), its source is not declared empty; the sources
    # keep naming the dataset they came from (a and b through the merged input)
    c = _flight(tmp_path / "c", datum=d, seed=2, start_ns=3 * 10**18)
    assert main(["dataset", "merge", str(both), str(b), str(c), "--out", str(again), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "0 of 6 frames" in text and "6 of its 6 frames left out, the same views" in text, text
    assert f"{b} adds no frame to the merge" in caplog.text, caplog.text
    m3 = Dataset(again)
    assert len(m3) == 18 and [s["dataset"] for s in m3.manifest.sources] == ["a", "b", "c"]
    assert sorted(set(m3.frames.source_id.tolist())) == [0, 1, 2]


def test_merge_refuses_what_cannot_be_one_dataset_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another camera (the same one resized: --size named), another depth kind, datasets without a datum (unless
    --same-frame), one given twice, a single dataset: each refused with what to do; the output never appears."""
    d = Datum(LAT, LON, ALT)
    a = _flight(tmp_path / "a", datum=d, seed=0)
    out = tmp_path / "m"
    cases = {
        "small": (dict(datum=d, camera=CAM.scaled(20, 15)), "the same camera at another size: convert or record it "
                  "again with --size 40x30"),
        "other": (dict(datum=d, camera=PinholeCamera(40, 30, 50.0, 50.0, 20.0, 15.0)), "frames of another camera do "
                  "not belong in one dataset"),
        "rgb": (dict(datum=d, depth=False), "has depth of kind 'none'"),
    }  # fmt: skip
    for name, (kw, what) in cases.items():
        other = _flight(tmp_path / name, seed=1, **kw)  # type: ignore[arg-type]
        assert main(["dataset", "merge", str(a), str(other), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert what in err, err
        assert not out.exists()
    est = _flight(tmp_path / "est", datum=d, seed=4)  # depth a network estimated (convert video --depth selfsup)
    man = yaml_load(est / "manifest.yaml")
    man["extra"]["depth"] = {"source": "selfsup-depth"}
    (est / "manifest.yaml").write_text(yaml_dump(man))
    assert main(["dataset", "merge", str(a), str(est), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "depth is estimated (selfsup-depth)" in err and "'s measured (or not said)" in err, err
    for args, what in (([a, a], "is given twice"), ([a], "needs two datasets or more")):
        assert main(["dataset", "merge", *map(str, args), "--out", str(out), "--no-progress"]) == 2
        assert what in capsys.readouterr().err
    x = _flight(tmp_path / "x", datum=None, seed=2)
    y = _flight(tmp_path / "y", datum=None, seed=3, start_ns=3 * 10**18)
    assert main(["dataset", "merge", str(x), str(y), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "neither" in err and "has a GPS datum: nothing relates their world frames" in err and "--same-frame" in err
    assert not out.exists()
    assert main(["dataset", "merge", str(x), str(y), "--out", str(out), "--same-frame", "--no-progress"]) == 0
    assert "taken to share one world frame (--same-frame)" in capsys.readouterr().out
    np.testing.assert_allclose(Dataset(out).frames.translation[6:], Dataset(y).frames.translation)
    # an existing output is not replaced without --overwrite
    before = (out / "frames.csv").read_bytes()
    assert main(["dataset", "merge", str(x), str(y), "--out", str(out), "--same-frame", "--no-progress"]) != 0
    assert (out / "frames.csv").read_bytes() == before
    capsys.readouterr()


def test_merge_into_a_robot_frame_fitted_twice_keeps_the_poses(tmp_path: Path) -> None:
    """Two bags converted into one robot TF frame, each with its datum and fitted T_world_enu: where the fits place a
    fix within half a metre of each other the datasets are in one frame and their poses are kept."""
    T = np.eye(4)
    T[:3, 3] = [5.0, -3.0, 0.0]
    da = Datum(LAT, LON, ALT).with_world(T)
    T2 = T.copy()
    T2[:3, 3] += [0.2, 0.0, 0.0]  # the second fit 20 cm off
    db = Datum(LAT, LON, ALT).with_world(T2)
    a = _flight(tmp_path / "a", datum=da, seed=0)
    b = _flight(tmp_path / "b", datum=db, seed=1)
    for p in (a, b):
        man = yaml_load(p / "manifest.yaml")
        man["world_frame"] = "map"
        (p / "manifest.yaml").write_text(yaml_dump(man))
    from pose2rgbd.dataset.merge import merge_datasets

    r = merge_datasets([a, b], tmp_path / "m")
    assert r.inputs[1].shift_m is None
    assert r.notes == ["b and a name one frame 'map' and their GPS fits place a fix up to 0.20 m apart in it (within "
                       "0.5 m: one frame, the poses kept as they are)"]  # fmt: skip
    np.testing.assert_allclose(Dataset(r.path).frames.translation[6:], Dataset(b).frames.translation)
    shutil.rmtree(r.path)
    T2[:3, 3] += [3.0, 0.0, 0.0]  # 3.2 m: another frame of the same name (a robot's map started elsewhere)
    man = yaml_load(b / "manifest.yaml")
    man["datum"] = Datum(LAT, LON, ALT).with_world(T2).to_dict()
    (b / "manifest.yaml").write_text(yaml_dump(man))
    r = merge_datasets([a, b], tmp_path / "m")
    assert r.inputs[1].shift_m is not None and abs(r.inputs[1].shift_m - 3.2) < 1e-6, r.inputs
    assert json.dumps(r.notes)  # said


def yaml_load(p: Path) -> dict:  # type: ignore[type-arg]
    import yaml

    out: dict = yaml.safe_load(p.read_text())  # type: ignore[type-arg]
    return out


def yaml_dump(d: dict) -> str:  # type: ignore[type-arg]
    import yaml

    return str(yaml.safe_dump(d, sort_keys=False))


def test_two_flights_converted_with_their_own_datums_land_in_one_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: one route flown twice an hour apart, each bag converted on its own, the second with a datum 30 m
    away. Merged, the second flight's cameras are where the first flight's were at the same point of the route (the
    GPS moved them, not a guess), and the merged dataset trains as any other would be read (route split by flight)."""
    from pose2rgbd.testing.flight_bag import T0_NS, write_flight_bag

    a_bag, b_bag = tmp_path / "bag_a", tmp_path / "bag_b"
    write_flight_bag(a_bag, duration_s=2.0, size=32)
    write_flight_bag(b_bag, duration_s=2.0, size=32, t0_ns=T0_NS + 3600 * 10**9)
    a, b, m = tmp_path / "a", tmp_path / "b", tmp_path / "m"
    assert main(["convert", "bag", str(a_bag), "--out", str(a), "--no-progress"]) == 0
    first = Dataset(a).manifest.datum
    assert first is not None
    lat, lon, alt = first.from_enu(np.array([30.0, -10.0, 2.0]))
    datum = f"{float(lat):.9f},{float(lon):.9f},{float(alt):.3f}"
    assert main(["convert", "bag", str(b_bag), "--out", str(b), "--datum", datum, "--no-progress"]) == 0
    A, B = Dataset(a), Dataset(b)
    for rel in B.frames.rgb:  # the simulated flight renders the route's views byte for byte: another day's light
        img = cv2.imread(str(b / rel))
        cv2.imwrite(str(b / rel), np.minimum(img, 254) + 1)
    assert np.abs(B.frames.translation - A.frames.translation).max() > 25  # two frames
    assert main(["dataset", "merge", str(a_bag), str(b), "--out", str(m), "--no-progress"]) == 2  # a bag, not converted
    assert f"{a_bag} is a rosbag2 recording, not a dataset" in capsys.readouterr().err
    assert main(["dataset", "merge", str(a), str(b), "--out", str(m), "--no-progress"]) == 0
    capsys.readouterr()
    M = Dataset(m)
    assert len(M) == len(A) + len(B) and set(M.frames.source_id.tolist()) == {0, 1}
    n = min(len(A), len(B))
    gap = np.linalg.norm(M.frames.translation[len(A) : len(A) + n] - A.frames.translation[:n], axis=1)
    assert gap.max() < 0.05, gap  # the same point of the route, in one frame
    split = make_split(M.frames.source_id, M.frames.stamp_ns, "route", test_fraction=0.1)
    assert set(split.train.tolist()) == set(range(len(A)))
    assert (m / "report" / "merge.png").stat().st_size > 10_000  # the flights from above, in one frame
    for k, d in enumerate((a, b)):  # each conversion's own report kept, as it was
        own = sorted(f.relative_to(d / "report") for f in (d / "report").rglob("*") if f.is_file())
        assert own, f"{d}: the conversion wrote no report"
        kept = m / "report" / "inputs" / f"{k:02d}-{d.name}"
        assert sorted(f.relative_to(kept) for f in kept.rglob("*") if f.is_file()) == own
        assert all((kept / f).read_bytes() == (d / "report" / f).read_bytes() for f in own)
    assert main(["dataset", "info", str(m)]) == 0  # an hour between the flights: not an hour of frames
    text = capsys.readouterr().out
    assert "3601.9 s, 2 source(s) (3.8 s within its sources: they lie apart in time)" in text, text
    assert f"  merged from  {b.resolve()}: {len(B)} of {len(B)} frames, moved " in text, text
    assert f"  source 1     bag_b (b): {len(B)} frames" in text, text


def test_an_inputs_own_identical_frames_stay_only_other_inputs_twins_go() -> None:
    """The same-view rule compares inputs with each other, never an input with itself: a recording's repeated
    frames (kept on purpose) stay; the same image or the same instant and pose in a later input goes."""
    from pose2rgbd.dataset.same_views import SameViews

    v, T = SameViews(), np.eye(4)
    assert v.offer(0, b"img", 100, T) and v.offer(0, b"img", 100, T)  # input 0's own twins: both kept
    assert not v.offer(1, b"img", 5 * 10**9, T)  # input 1: the same bytes
    U = T.copy()
    U[0, 3] = 0.03
    assert not v.offer(1, b"other", 100 + 500_000, U)  # the same instant (0.5 ms) and pose (3 cm)
    U[0, 3] = 0.2
    assert v.offer(1, b"third", 100, U)  # 20 cm away: another view


def test_merge_of_datasets_without_sources_copied_across_file_systems_rgb_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest may declare no sources (optional): its frames' ids stand for themselves (was a KeyError). Where a
    link is refused (another file system), the files are copied and the note says why and how much. An RGB-only
    merge's next step trains the default kind (the hybrid needs metric depth)."""
    import errno
    import os

    d = Datum(LAT, LON, ALT)
    a = _flight(tmp_path / "a", datum=d, seed=0, depth=False)
    b = _flight(tmp_path / "b", datum=d, seed=1, depth=False, start_ns=2 * 10**18)
    man = yaml_load(b / "manifest.yaml")
    man["sources"] = []
    (b / "manifest.yaml").write_text(yaml_dump(man))

    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    out = tmp_path / "m"
    assert main(["dataset", "merge", str(a), str(b), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    m = Dataset(out)
    assert len(m) == 12 and [s["name"] for s in m.manifest.sources] == ["f0-0", "source 0"]
    assert m.frames.source_id.tolist() == [0] * 6 + [1] * 6
    assert "MB of images and depth copied, not linked: the output is on another file system than the inputs" in text
    assert (out / m.frames.rgb[0]).stat().st_ino != (a / Dataset(a).frames.rgb[0]).stat().st_ino  # a copy
    assert f"`pose2rgbd train --dataset {out} --split blocks --out runs/m`" in text, text  # no --method hybrid


def test_merge_hashes_only_images_whose_size_another_input_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes are the same size: an image no other input has a file of its size is never read to be hashed
    (a merge of flights reads next to nothing); one whose size another input shares is, and its twin goes."""
    import hashlib

    import pose2rgbd.dataset.merge as merge_mod

    d = Datum(LAT, LON, ALT)
    a = _flight(tmp_path / "a", datum=d, seed=0)  # noise: large PNGs
    b = _flight(tmp_path / "b", datum=d, seed=1, start_ns=2 * 10**18, plain=True)  # one colour: small ones
    hashed: list[int] = []
    real = hashlib.sha1

    def counting(data: bytes = b"") -> object:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(merge_mod.hashlib, "sha1", counting)
    r = merge_mod.merge_datasets([a, b], tmp_path / "m")
    assert r.frames == 12 and hashed == []
    shutil.copytree(b, tmp_path / "b2")  # b again under another name: the same sizes, hashed, all left out
    r = merge_mod.merge_datasets([a, b, tmp_path / "b2"], tmp_path / "m2")
    assert r.frames == 12 and len(hashed) == 12 and [i.kept for i in r.inputs] == [6, 6, 0]


def test_inputs_of_one_folder_name_are_told_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two simulator outputs, each OUT/dataset: the merged sources name them sim1/dataset and sim2/dataset (were:
    "dataset" twice, in `dataset info` and in merge.png's legend)."""
    from pose2rgbd.dataset.merge import input_labels

    d = Datum(LAT, LON, ALT)
    a = _flight(tmp_path / "sim1" / "dataset", datum=d, seed=0, sources=2)
    b = _flight(tmp_path / "sim2" / "dataset", datum=d, seed=1, start_ns=2 * 10**18)
    assert input_labels([a, b]) == ["sim1/dataset", "sim2/dataset"]
    assert input_labels([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]
    assert main(["dataset", "merge", str(a), str(b), "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    capsys.readouterr()
    m = Dataset(tmp_path / "m")
    assert [s["dataset"] for s in m.manifest.sources] == ["sim1/dataset", "sim1/dataset", "sim2/dataset"]
    assert (tmp_path / "m" / "report" / "merge.png").stat().st_size > 0
