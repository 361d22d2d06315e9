"""Fault injection: each row of the fault table in docs/reliability.md, with the message the user sees and the
promise that the input (and any earlier output) is byte-identical afterwards.

Disk full, read-only and permission errors are simulated by making the write call raise the ``OSError`` the
kernel would give (``ENOSPC`` / ``EROFS`` / ``EACCES``): a real small or read-only file system needs root
(mount) and file permissions do not stop root, so these would not run the same everywhere.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pose2rgbd.atomic import stale_siblings, sweep_stale_siblings
from pose2rgbd.cli.main import main
from pose2rgbd.dataset import Dataset, build_cache
from pose2rgbd.errors import BagError, ConfigError, DatasetError
from pose2rgbd.experiments.toy import make_toy_dataset

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and ("-" in p.name))


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return make_toy_dataset(tmp_path / "ds", n_survey=9, n_route=3, size=SIZE)


def _png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    path.write_bytes(buf.tobytes())


# ----------------------------------------------------------------------------------------- item 10: bad files
def _garbage_png(ds: Path) -> tuple[str, str]:
    (ds / "rgb/000003.png").write_bytes(b"this is not a png\n" * 4)
    return "rgb/000003.png", "cannot decode image"


def _wrong_size_png(ds: Path) -> tuple[str, str]:
    _png(ds / "rgb/000003.png", np.full((48, 80, 3), 128, np.uint8))
    return "rgb/000003.png", f"image is 80x48, the manifest camera is {SIZE}x{SIZE}; images are never resized"


def _grey16_png(ds: Path) -> tuple[str, str]:
    _png(ds / "rgb/000003.png", np.full((SIZE, SIZE), 200, np.uint16))  # would read as all-black if cut to 8 bit
    return "rgb/000003.png", "16-bit image; dataset images must be 8-bit"


def _depth_wrong_shape(ds: Path) -> tuple[str, str]:
    np.save(ds / "depth/000003.npy", np.ones((10, 10), np.float32))
    return "depth/000003.npy", f"depth is float32 (10, 10), expected float32 ({SIZE}, {SIZE})"


def _depth_wrong_dtype(ds: Path) -> tuple[str, str]:
    np.save(ds / "depth/000003.npy", np.ones((SIZE, SIZE), np.float64))
    return "depth/000003.npy", f"depth is float64 ({SIZE}, {SIZE}), expected float32"


def _depth_garbage(ds: Path) -> tuple[str, str]:
    (ds / "depth/000003.npy").write_bytes(b"\x00garbage")
    return "depth/000003.npy", "cannot read depth"


BAD_FILES = {
    "garbage-png": _garbage_png,
    "png-48x80-in-32x32": _wrong_size_png,
    "png-16bit-grey": _grey16_png,
    "depth-wrong-shape": _depth_wrong_shape,
    "depth-float64": _depth_wrong_dtype,
    "depth-not-npy": _depth_garbage,
}


@pytest.mark.parametrize("fault", list(BAD_FILES))
def test_bad_dataset_file_is_named_by_info_deep_and_refused_by_loaders(
    fault: str, toy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rel, why = BAD_FILES[fault](toy)
    before = snapshot(toy)
    # the default check looks for the files and reads a sample (the first image, the depth maps of up to 16
    # frames: all of the toy's); a bad file in it is the verdict, exit 1; --deep reads them all
    sampled = rel.startswith("depth")
    assert main(["dataset", "info", str(toy)]) == (1 if sampled else 0)
    out = capsys.readouterr().out
    assert "--deep reads every image" in out
    assert (f"INVALID: {rel}: " in out and "found in a sample" in out and why in out.splitlines()[0]) == sampled, out
    assert main(["dataset", "info", "--deep", "--no-progress", str(toy)]) == 1
    out = capsys.readouterr().out
    assert f"{toy}: pose2rgbd dataset v1, INVALID: 1 bad file(s)" in out
    bad = [ln for ln in out.splitlines() if ln.startswith("  bad file")]
    assert len(bad) == 1 and bad[0].startswith(f"  bad file     {rel}: ") and why in bad[0], out
    # the loader and the cache builder refuse it, naming the file; nothing is resized or kept
    ds = Dataset(toy)
    read = ds.read_rgb if rel.startswith("rgb") else ds.read_depth
    with pytest.raises(DatasetError, match=re.escape(str(toy / rel))) as e:
        read(3)
    assert why in str(e.value)
    with pytest.raises(DatasetError, match=re.escape(str(toy / rel))):
        build_cache(toy, 16, progress=False)
    assert main(["dataset", "cache", str(toy), "--size", "16"]) == 2
    assert str(toy / rel) in capsys.readouterr().err
    assert snapshot(toy) == before  # no half cache, and no empty cache folder either
    assert not (toy / "cache").exists()


def test_negative_depth_is_invalid_and_counted(toy: Path, capsys: pytest.CaptureFixture[str], caplog) -> None:
    d = np.load(toy / "depth/000002.npy")
    d[:2, :5] = -3.0
    np.save(toy / "depth/000002.npy", d)
    before = snapshot(toy)
    assert main(["dataset", "info", "--deep", "--no-progress", str(toy)]) == 0
    out = capsys.readouterr().out
    assert "valid (all 12 frames' files read)" in out
    assert "depth < 0    10 pixel(s) in 1 file(s), read as invalid (NaN)" in out
    got, n = Dataset(toy).read_depth_counted(2)
    assert n == 10 and np.isnan(got[:2, :5]).all() and not np.isnan(got[2:]).any()
    assert snapshot(toy) == before
    with caplog.at_level(logging.WARNING):
        cache = build_cache(toy, SIZE, progress=False)
    assert "10 negative depth pixel(s) read as invalid (NaN)" in caplog.text
    assert cache.depth is not None and np.isnan(cache.depth[2, :2, :5]).all()
    assert not (np.asarray(cache.depth) < 0).any()


# ------------------------------------------------------------------------------- item 12: OS errors at the CLI
OS_FAULTS = {
    "disk-full": (errno.ENOSPC, "no space left on the device", "free some space or write the output"),
    "read-only": (errno.EROFS, "the file system is read-only", "write the output to a writable directory"),
    "permission": (errno.EACCES, "permission denied", "check the permissions"),
}


@pytest.mark.parametrize("fault", list(OS_FAULTS))
def test_os_error_while_writing_is_a_message_not_a_traceback(
    fault: str, toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, what, todo = OS_FAULTS[fault]
    import pose2rgbd.dataset.cache as cache_mod

    real_save = np.save

    def failing_save(file: object, *a: object, **k: object) -> None:  # the kernel's answer to a write
        raise OSError(code, os.strerror(code), str(file))

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    root = tmp_path / "caches"
    before = snapshot(toy)
    assert main(["dataset", "cache", str(toy), "--size", "16", "--cache-root", str(root)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pose2rgbd dataset: error: {root}/16-") and what in last and todo in last, err
    assert ".partial-" not in last  # names the output asked for, not the writer's hidden temporary
    assert "Traceback" not in err
    assert snapshot(toy) == before
    assert not root.exists()  # no half cache, no hidden leftover, and the --cache-root folder it made is gone
    # -v adds the traceback
    assert main(["-v", "dataset", "cache", str(toy), "--size", "16", "--cache-root", str(root)]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setattr(cache_mod.np, "save", real_save)


SIM = ["--size", "16", "--duration", "2", "--route-duration", "1", "--no-progress", "--no-video"]


@pytest.mark.parametrize("target", ["dataset", "bag"])
def test_disk_full_in_sim_keeps_the_earlier_output(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    assert main(["sim", "--out", str(out), *SIM]) == 0
    capsys.readouterr()
    before = snapshot(out)
    calls = {"n": 0}

    def full(*a: object, **k: object) -> None:
        calls["n"] += 1
        if calls["n"] > 3:  # a few writes succeed, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(a[0]) if target == "dataset" else None)
        return real(*a, **k)

    if target == "dataset":
        import pose2rgbd.dataset.writer as fmt

        real = fmt._atomic_write_bytes
        monkeypatch.setattr(fmt, "_atomic_write_bytes", full)
        only = ["--no-bag"]
    else:
        from rosbags.rosbag2 import Writer

        real = Writer.write
        monkeypatch.setattr(Writer, "write", lambda self, *a, **k: full(self, *a, **k))
        only = ["--no-dataset"]
    assert main(["sim", "--out", str(out), *SIM, *only, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pose2rgbd sim: error: ") and "free some space or write the output to another disk" in err
    if target == "dataset":
        assert f"{out / 'dataset'}: no space left on the device" in err
    else:
        assert str(out / "bags") in err and "No space left on device" in err
    assert snapshot(out) == before  # the earlier output is untouched, nothing half-written sits next to it
    assert hidden_leftovers(out) == [] and hidden_leftovers(out / "bags") == []


def test_read_only_dataset_names_cache_root(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pose2rgbd.dataset.cache as cache_mod

    real = cache_mod.make_temp_dir

    def read_only(path: Path, kind: str = "partial") -> Path:
        if Path(path).is_relative_to(toy) or Path(path).is_relative_to(tmp_path / "ro"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(Path(path).parent))
        return real(path, kind)

    monkeypatch.setattr(cache_mod, "make_temp_dir", read_only)
    before = snapshot(toy)
    assert main(["dataset", "cache", str(toy), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the training cache into" in err and "pass --cache-root DIR" in err, err
    assert err.rstrip().endswith("to keep caches in a writable directory"), err  # one instruction, not two
    assert snapshot(toy) == before
    # a read-only --cache-root: the flag named, one instruction
    assert main(["dataset", "cache", str(toy), "--size", "16", "--cache-root", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert f"--cache-root {tmp_path / 'ro'}: cannot write the training cache" in err, err
    assert err.rstrip().endswith("choose a writable --cache-root, or leave it out to keep the cache in the dataset's "
                                 "folder"), err  # fmt: skip
    # and the advice works
    assert main(["dataset", "cache", str(toy), "--size", "16", "--cache-root", str(tmp_path / "c")]) == 0
    assert snapshot(toy) == before


def test_broken_pipe_exits_quietly(toy: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pose2rgbd.cli.main", "dataset", "info", str(toy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=60)
    assert rc == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize(
    "content, says",
    [("", "it is empty"), ("- a\n- b\n", "it is a list"), ("other: 1\n", "no 'rosbag2_bagfile_information'")],
    ids=["empty", "list", "foreign-mapping"],
)
def test_bad_rosbag2_metadata_is_a_bag_error(
    content: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.bags import open_bag
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=0.5, size=16)
    (bag / "metadata.yaml").write_text(content)
    before = snapshot(bag)
    with pytest.raises(BagError, match=r"metadata\.yaml is not rosbag2 metadata") as e:
        open_bag(bag)
    assert says in str(e.value) and str(bag) in str(e.value)
    assert main(["bag", "info", str(bag)]) == 2
    err = capsys.readouterr().err
    assert "metadata.yaml is not rosbag2 metadata" in err and "delete it to read the" in err
    assert snapshot(bag) == before


def _truncate_rgb(c: Path) -> None:
    data = (c / "rgb.npy").read_bytes()
    (c / "rgb.npy").write_bytes(data[: len(data) // 2])  # np.load: "mmap length is greater than file size"


def _empty_meta(c: Path) -> None:
    (c / "meta.yaml").write_text("")  # was an AttributeError on None


def _missing_array(c: Path) -> None:
    (c / "stamp_ns.npy").unlink()


def _wrong_frames(c: Path) -> None:
    np.save(c / "stamp_ns.npy", np.zeros(3, np.int64))


@pytest.mark.parametrize("damage", [_truncate_rgb, _empty_meta, _missing_array, _wrong_frames])
def test_damaged_training_cache_is_rebuilt(damage, toy: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = build_cache(toy, 16, progress=False)
    rgb, depth = np.array(good.rgb), np.array(good.depth)
    cdir = good.path
    del good
    damage(cdir)
    dataset_files = {k: v for k, v in snapshot(toy).items() if not k.startswith("cache")}
    with caplog.at_level(logging.WARNING):
        again = build_cache(toy, 16, progress=False)
    assert f"{cdir}: damaged training cache" in caplog.text and "rebuilding it" in caplog.text
    assert again.path == cdir
    np.testing.assert_array_equal(np.asarray(again.rgb), rgb)
    np.testing.assert_array_equal(np.asarray(again.depth), depth)
    assert {k: v for k, v in snapshot(toy).items() if not k.startswith("cache")} == dataset_files
    assert hidden_leftovers(cdir.parent) == []


def test_trajectory_row_with_zero_quaternion_is_named(tmp_path: Path) -> None:
    from pose2rgbd.convert.trajectories import read_trajectory_csv

    p = tmp_path / "traj.csv"
    p.write_text("frame,time_s,tx,ty,tz,qx,qy,qz,qw\n0,0.0,0,0,10,0,0,0,1\n1,0.1,1,0,10,0,0,0,0\n")
    before = p.read_bytes()
    with pytest.raises(ConfigError, match=r"traj.csv: row 3 has a zero quaternion .* e\.g\. 0,0,0,1"):
        read_trajectory_csv(p)
    assert p.read_bytes() == before


def test_trajectory_row_with_a_quaternion_not_of_unit_length_is_named(tmp_path: Path) -> None:
    """As a TUM file's: a quaternion of length 1.249 is refused, not normalized in silence; one rounded to 6 digits
    (length 1 within 1e-3) is taken."""
    from pose2rgbd.convert.trajectories import read_trajectory_csv

    p = tmp_path / "traj.csv"
    p.write_text("frame,time_s,tx,ty,tz,qx,qy,qz,qw\n0,0.0,0,0,10,0,0,0,1\n1,0.1,1,0,10,0.5,0.5,0.5,0.9\n")
    with pytest.raises(ConfigError, match=r"traj.csv: row 3: quaternion \(qx, qy, qz, qw\) has length 1\.2490, not 1"):
        read_trajectory_csv(p)
    p.write_text("frame,time_s,tx,ty,tz,qx,qy,qz,qw\n0,0.0,0,0,10,0.707107,0,0,0.707107\n")
    assert read_trajectory_csv(p)[1].shape == (1, 4, 4)


# ------------------------------------------------------------------- item 13: SIGTERM and leftovers of a kill
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _leftovers(out: Path) -> tuple[Path, Path, Path]:
    """A killed run's directory, a killed run's file, and one of a running process (pid 1) next to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    dead_dir = out.parent / f".{out.name}.partial-{_dead_pid()}-abcd1234"
    dead_dir.mkdir()
    (dead_dir / "frames.csv").write_text("half\n")
    dead_file = out.parent / f".{out.name}.tmp-{_dead_pid()}"
    dead_file.write_bytes(b"half")
    alive = out.parent / f".{out.name}.partial-1-efgh5678"
    alive.mkdir()
    return dead_dir, dead_file, alive


def _write_dataset(out: Path) -> None:
    make_toy_dataset(out, n_survey=4, n_route=2, size=16)


def _write_cache(out: Path) -> None:
    ds = make_toy_dataset(out.parent.parent / "src", n_survey=4, n_route=2, size=16)
    assert build_cache(ds, 8, cache_root=out.parent, progress=False).path == out


def _cache_out(tmp_path: Path) -> Path:
    ds = make_toy_dataset(tmp_path / "probe", n_survey=4, n_route=2, size=16)
    return tmp_path / "caches" / f"8-{Dataset(ds).fingerprint()}"


def _write_bag(out: Path) -> None:
    from pose2rgbd.testing.flight_bag import write_flight_bag

    write_flight_bag(out, duration_s=0.3, size=16)


def _write_checkpoint(out: Path) -> None:
    torch = pytest.importorskip("torch")
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer, save_checkpoint

    torch.manual_seed(0)
    pn = PoseNormalizer("6dof-quat", np.arange(7) - 10.0, np.arange(7) + 10.0)
    model = build_model(preset_config("slice10", size=64, outputs="rgbd"), DepthNormalizer(2.0, 300.0), pn)
    save_checkpoint(out, model, dataset_fingerprint="f", camera=None)


WRITERS = {
    "dataset": (lambda tmp: tmp / "out" / "ds", _write_dataset),
    "training-cache": (_cache_out, _write_cache),
    "bag": (lambda tmp: tmp / "out" / "flight", _write_bag),
    "checkpoint": (lambda tmp: tmp / "out" / "best.pt", _write_checkpoint),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_leftovers_of_a_killed_run_are_removed_by_the_next_write(
    writer: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out_of, write = WRITERS[writer]
    out = out_of(tmp_path)
    dead_dir, dead_file, alive = _leftovers(out)
    alive_before = snapshot(alive)
    neighbour = out.parent / "unrelated.txt"
    neighbour.write_text("mine")
    with caplog.at_level(logging.WARNING):
        write(out)
    assert out.exists()
    assert not dead_dir.exists() and not dead_file.exists()
    assert f"removed {dead_dir}: the leftover of an earlier run of {out.name} that was killed" in caplog.text
    assert f"removed {dead_file}" in caplog.text
    # a running process's work is never touched, only reported
    assert alive.is_dir() and snapshot(alive) == alive_before
    assert f"{alive} looks like the leftover of an interrupted write of {out.name}" in caplog.text
    assert neighbour.read_text() == "mine"


def test_sweep_matches_only_siblings_of_that_output(tmp_path: Path) -> None:
    pid = _dead_pid()
    keep = [
        tmp_path / f".other.partial-{pid}-x",  # another output
        tmp_path / f".ds2.partial-{pid}-x",  # a name that starts like it
        tmp_path / f"ds.partial-{pid}-x",  # not hidden
        tmp_path / ".ds.backup-1",  # not one of our kinds
    ]
    for k in keep:
        k.mkdir()
    back = tmp_path / f".ds.old-{pid}"  # an earlier ds moved aside by a killed swap: put back, never removed
    back.mkdir()
    (back / "mine.txt").write_text("earlier")
    mp4 = tmp_path / f".ds.partial-{pid}.mp4"  # the simulator's video: suffix after the pid
    mp4.write_bytes(b"x")
    assert sorted(sweep_stale_siblings(tmp_path / "ds")) == [mp4]
    assert not back.exists() and (tmp_path / "ds" / "mine.txt").read_text() == "earlier"
    assert all(k.exists() for k in keep)
    assert stale_siblings(tmp_path / "ds") == ([], [])


def test_sigterm_is_handled_like_ctrl_c_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    cmd = [sys.executable, "-m", "pose2rgbd.cli.main", "sim", "--out", str(out), "--no-bag", "--no-video"]
    cmd += ["--size", "32", "--duration", "600", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        # some frames into the hidden dataset: the first frame written (the renderer's kernels compile before it,
        # about 20 s where numba's cache is cold)
        deadline = time.monotonic() + 240
        while not (out.is_dir() and any(out.glob(".dataset.partial-*/**/rgb/*.png"))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the simulator did not write a frame in 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err_b = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_b.decode()
    assert proc.returncode == 143, err  # a native crash at exit (-11) prints its stacks here (faulthandler)
    assert "pose2rgbd sim: terminated (SIGTERM); nothing half-written was kept" in err
    assert "Traceback" not in err
    assert not (out / "dataset").exists()
    assert hidden_leftovers(out) == []  # the writer's own cleanup ran, as for Ctrl-C


def test_sigkill_leftover_is_removed_by_the_next_run_of_the_command(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    left = out / f".dataset.partial-{_dead_pid()}-zzzz9999"  # what SIGKILL leaves (no handler can run)
    (left / "rgb").mkdir(parents=True)
    cmd = [sys.executable, "-m", "pose2rgbd.cli.main", "sim", "--out", str(out), "--no-bag", "--no-video"]
    cmd += ["--size", "16", "--duration", "2", "--route-duration", "1", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"removed {left}: the leftover of an earlier run of dataset that was killed" in r.stderr
    assert hidden_leftovers(out) == [] and (out / "dataset" / "manifest.yaml").is_file()


def test_disk_full_while_saving_a_checkpoint_names_the_disk_and_keeps_the_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save's zip writer reported a full disk as "unexpected pos"; the checkpoint writer now raises the
    OSError (ENOSPC), which the CLI turns into "no space left on the device", and the earlier file stays."""
    import pose2rgbd.atomic.swap as swapmod
    from pose2rgbd.geometry import PinholeCamera
    from pose2rgbd.models import save_checkpoint
    from pose2rgbd.testing.ground_plane import make_ground_plane_checkpoint

    model = make_ground_plane_checkpoint(16).model
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, model, dataset_fingerprint="x", camera=PinholeCamera.from_fov(16, 16, 90.0))
    before = path.read_bytes()

    class FullDisk:
        def __init__(self, name: object, mode: str) -> None:
            self.f = open(name, mode)  # noqa: SIM115 - closed in __exit__

        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.f.name)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    monkeypatch.setattr(swapmod, "open", FullDisk, raising=False)  # the one single-file writer (atomic_file)
    with pytest.raises(OSError) as err:
        save_checkpoint(path, model, dataset_fingerprint="x", camera=PinholeCamera.from_fov(16, 16, 90.0))
    assert err.value.errno == errno.ENOSPC
    from pose2rgbd.atomic import os_error_message

    msg = os_error_message(err.value)
    assert msg is not None and msg.startswith(f"{path}: no space left on the device"), msg
    assert path.read_bytes() == before  # the earlier checkpoint is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no hidden leftover


def test_disk_full_while_recording_stops_says_why_and_keeps_the_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The record node's edge (the same logic live and offline): a write error stops recording with a message
    naming the disk, the frames already written stay a readable, resumable dataset, the command exits 2."""
    import pose2rgbd.dataset.writer as fmt
    from pose2rgbd.dataset import Dataset
    from pose2rgbd.testing.flight_bag import write_flight_bag

    bag = tmp_path / "flight"
    write_flight_bag(bag, duration_s=3.0, size=32)
    before = snapshot(bag)
    real_add = fmt.DatasetWriter.add_frame

    def add_frame(self: Any, *a: Any, **k: Any) -> Any:
        if len(self) >= 5:  # five frames fit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path / "rgb" / "000005.png"))
        return real_add(self, *a, **k)

    monkeypatch.setattr(fmt.DatasetWriter, "add_frame", add_frame)
    out = tmp_path / "rec"
    assert main(["record", "bag", "--bag", str(bag), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the dataset: " in err and "no space left on the device" in err, err
    assert "Traceback" not in err
    assert len(Dataset(out)) == 5  # what was written before the disk filled stays a valid dataset
    assert snapshot(bag) == before
