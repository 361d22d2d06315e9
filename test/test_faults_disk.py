"""Fault rows of docs/reliability.md about where outputs go: a file-size limit or a full disk in `map build`,
`train` and `sim`, and a `--cache-root` that is a symbolic link loop, a dangling link or a file.

The file-size limit is the kernel's own: each command runs in a child process whose ``RLIMIT_FSIZE`` is set, so
its writes fail with ``EFBIG`` ("File too large", what a FAT32 disk gives past 4 GiB) exactly where they would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pose2rgbd.cli.main import main
from pose2rgbd.experiments.toy import make_toy_dataset

REPO = Path(__file__).resolve().parents[1]
# the command line under a file-size limit (bytes, argv[1]); Python ignores SIGXFSZ, so a write past it is EFBIG
_LIMITED = (
    "import resource, sys\n"
    "lim = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))\n"
    "from pose2rgbd.cli.main import main\n"
    "sys.exit(main(sys.argv[2:]))"
)
EFBIG_TODO = "raise the limit (ulimit -f)"


def run_limited(limit: int, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *argv], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)  # fmt: skip


def one_line_error(r: subprocess.CompletedProcess[str], command: str, path: Path) -> str:
    """The command failed with one error line naming ``path`` and what to do, and no traceback."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith(f"pose2rgbd {command}: error:")]
    assert len(errors) == 1, r.stderr
    assert f"error: {path}" in errors[0] and "File too large" in errors[0] and EFBIG_TODO in errors[0], errors[0]
    return errors[0]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def textured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 simulated survey frames at 64x64 with depth: enough texture for a place map."""
    from pose2rgbd.sim import SimConfig
    from pose2rgbd.sim.export import export_dataset, world_of

    cfg = SimConfig(width=64, height=64, routes=["survey"], frames=40)
    return export_dataset(cfg, tmp_path_factory.mktemp("sim") / "dataset", progress=False, world=world_of(cfg))


# ------------------------------------------------------------------------------------------------ map build
@pytest.mark.parametrize("earlier", [False, True], ids=["new", "overwrite"])
def test_a_file_size_limit_in_map_build_is_one_line_and_leaves_no_map(
    earlier: bool, textured: Path, tmp_path: Path
) -> None:
    out = tmp_path / "maps" / "m"
    before: dict[str, bytes] = {}
    if earlier:  # an earlier map: it stays as it was
        assert main(["map", "build", "--dataset", str(textured), "--out", str(out), "--no-progress"]) == 0
        before = snapshot(out)
    argv = ["map", "build", "--dataset", str(textured), "--out", str(out), "--no-progress"]
    r = run_limited(100_000, *argv, *(["--overwrite"] if earlier else []))  # the map is about 2 MB
    one_line_error(r, "map", out)
    assert hidden(out.parent) == []  # the unfinished map folder is gone (its close failed too)
    if earlier:
        assert snapshot(out) == before
    else:
        assert not out.exists()


# ---------------------------------------------------------------------------------------------------- train
def test_a_file_size_limit_in_train_is_one_line_and_leaves_no_checkpoint(tmp_path: Path) -> None:
    ds = make_toy_dataset(tmp_path / "ds", n_survey=6, n_route=2, size=8)
    out = tmp_path / "run"
    # the 64x64 training cache (under 140 kB a file) fits, the checkpoint (megabytes) does not
    r = run_limited(300_000, "train", "--dataset", str(ds), "--out", str(out), "--size", "64", "--epochs", "1",
                    "--no-progress", "--no-tensorboard")  # fmt: skip
    one_line_error(r, "train", out)
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    # stopped before its first checkpoint: what it wrote (config.yaml, split.json, log.csv) is removed, then the
    # folder it made; no half-written checkpoint under a hidden name either
    assert not out.exists(), hidden(out) + sorted(p.name for p in out.iterdir())


# ------------------------------------------------------------------------------------------------------ sim
SIM = ["--size", "32", "--duration", "2", "--route-duration", "1", "--no-progress", "--no-video"]


@pytest.mark.parametrize("what", ["bag", "dataset"])
@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "empty-out"])
def test_a_file_size_limit_in_sim_leaves_no_folders_behind(what: str, out_exists: bool, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    if out_exists:
        out.mkdir()
    only = ["--no-dataset"] if what == "bag" else ["--no-bag"]
    r = run_limited(3_000 if what == "dataset" else 300_000, "sim", "--out", str(out), *SIM, *only)
    one_line_error(r, "sim", out / "bags" / "survey" if what == "bag" else out)
    assert list(out.iterdir()) == []  # no empty bags/ folder, no staging folder (OUT itself stays)


# -------------------------------------------------------------------------------------------- --cache-root
def _links(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    loop, dangling, a_file = tmp_path / "loop", tmp_path / "dangling", tmp_path / "a_file"
    os.symlink(tmp_path / "loop2", loop)
    os.symlink(loop, tmp_path / "loop2")
    os.symlink(tmp_path / "gone", dangling)
    a_file.write_text("not a folder\n")
    return {
        "loop": (loop, f"--cache-root {loop} is a symbolic link loop; remove the link"),
        "under-loop": (
            loop / "caches",
            f"--cache-root {loop / 'caches'} lies under {loop}, which is a symbolic link loop",
        ),
        "dangling": (
            dangling,
            f"--cache-root {dangling} is a symbolic link to {tmp_path / 'gone'}, which does not exist",
        ),
        "file": (a_file, f"--cache-root {a_file}: cannot make the cache folder {a_file} (File exists"),
    }


@pytest.mark.parametrize("root", ["loop", "under-loop", "dangling", "file"])
@pytest.mark.parametrize("command", ["dataset cache", "train"])
def test_a_cache_root_that_cannot_hold_a_folder_is_a_clear_error(
    command: str, root: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = make_toy_dataset(tmp_path / "ds", n_survey=6, n_route=2, size=8)
    cache_root, expected = _links(tmp_path)[root]
    out = tmp_path / "run"
    argv = (
        ["dataset", "cache", str(ds), "--size", "16"]
        if command == "dataset cache"
        else ["train", "--dataset", str(ds), "--out", str(out), "--size", "64", "--no-progress"]
    )
    rc = main([*argv, "--cache-root", str(cache_root)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and expected in err, err
    assert not out.exists() and not (ds / "cache").exists()
