"""Ctrl-C and SIGTERM where native code and worker processes are involved: pycolmap's import (glog's failure-signal
handler took SIGTERM: a native stack dump, no cleanup) and the worker processes of ``map build --workers N`` (each
printed a ``KeyboardInterrupt`` traceback on Ctrl-C). Each runs a real process and sends it a real signal."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

pytest.importorskip("pycolmap")


def _run(script: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=REPO,
                          env=ENV, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize("thread", ["main thread", "another thread"])
def test_pycolmaps_import_leaves_sigterm_to_the_commands_handler(thread: str) -> None:
    """pycolmap imported as pose2rgbd imports it (on the main thread, or in another, where Python cannot install a
    handler), then SIGTERM: the command line's handler raises (its ``terminated`` path), no native stack dump."""
    r = _run(f"""
        import os, signal, sys, threading, time
        from pose2rgbd.atomic import signal_deferral
        from pose2rgbd.cli.main import _sigterm_as_interrupt, _Terminated

        def load():
            from pose2rgbd.geometry.colmap_import import pycolmap
            assert pycolmap.AbsolutePoseEstimationOptions

        try:
            with _sigterm_as_interrupt(), signal_deferral():
                if {thread == "main thread"}:
                    load()
                else:
                    t = threading.Thread(target=load)
                    t.start()
                    t.join()
                assert "pycolmap" in sys.modules
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
        except _Terminated:
            print("terminated by Python's handler")
    """)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    assert "terminated by Python's handler" in r.stdout
    assert "Aborted at" not in r.stderr and "SIGTERM (@" not in r.stderr


def test_pycolmaps_import_keeps_a_handler_installed_from_c() -> None:
    """A SIGTERM action installed from C, which Python's view of the handlers does not see (rclpy's in a ROS node;
    here SIG_IGN through the C library): pycolmap imported as pose2rgbd imports it leaves it in place. Installing
    Python's view again (SIG_DFL) made the localize node die at once on SIGTERM after its first image."""
    r = _run("""
        import ctypes, signal, sys
        libc = ctypes.CDLL(None)
        libc.signal.restype = ctypes.c_void_p
        libc.signal(int(signal.SIGTERM), ctypes.c_void_p(1))  # SIG_IGN, from C: Python still says SIG_DFL
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

        def ignored():
            status = open("/proc/self/status").read()
            mask = int(next(x for x in status.splitlines() if x.startswith("SigIgn:")).split()[1], 16)
            return bool(mask & (1 << (int(signal.SIGTERM) - 1)))

        assert ignored()
        from pose2rgbd.geometry.colmap_import import pycolmap
        assert "pycolmap" in sys.modules and pycolmap.AbsolutePoseEstimationOptions
        print("still ignored" if ignored() else "replaced")
    """)
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    assert r.stdout.strip() == "still ignored", r.stdout


def test_map_build_sigterm_after_pycolmap_was_imported_cleans_up_and_exits_143(map_world: dict, tmp_path: Path) -> None:
    """`map build`, SIGTERM once its self-calibration has localized keyframes (pycolmap imported by the structure
    localizer): the same end as Ctrl-C -- "terminated (SIGTERM); nothing half-written was kept", exit 143, no hidden
    partial map left. Before: glog's stack dump, the process killed, `.m.partial-*` left behind."""
    out = tmp_path / "m"
    argv = ["map", "build", "--dataset", str(map_world["dataset"]), "--out", str(out), "--sources", "0",
            "--stride", "6", "--workers", "1", "--no-progress"]  # fmt: skip
    r = _run(f"""
        import os, signal, sys, time
        import pose2rgbd.inference.self_calibration as sc
        from pose2rgbd.cli.main import main

        calibrate = sc.self_calibrate

        def then_sigterm(*args, **kwargs):
            calibrate(*args, **kwargs)
            if "pycolmap" not in sys.modules:
                sys.exit("the self-calibration did not import pycolmap: the test shows nothing")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

        sc.self_calibrate = then_sigterm
        sys.exit(main({argv!r}))
    """)
    assert r.returncode == 143, (r.returncode, r.stderr[-3000:])
    assert "pose2rgbd map: terminated (SIGTERM); nothing half-written was kept" in r.stderr
    assert "Aborted at" not in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_no_module_imports_pycolmap_but_the_one_that_keeps_the_handlers() -> None:
    """Every import of pycolmap in pose2rgbd goes through pose2rgbd.geometry.colmap_import (type-checking imports
    aside): a new one elsewhere would bring glog's SIGTERM handler back."""
    core = REPO / "pose2rgbd"
    found = []
    for p in sorted(core.rglob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "pycolmap" or n.startswith("pycolmap.") for n in names):
                found.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert found and {f.rsplit(":", 1)[0] for f in found} == {"pose2rgbd/geometry/colmap_import.py"}, found


_POOL_SCRIPT = """
import os, sys, time
from pathlib import Path

from pose2rgbd.placemap.pool import ordered_map

MARKS = Path(sys.argv[1])
if __name__ == "__mp_main__":  # a worker starting (spawn imports this script again): slow start-up, as its imports
    (MARKS / f"start-{os.getpid()}").touch()
    time.sleep(float(sys.argv[2]))


def setup():
    return None


def work(ctx, item):
    (MARKS / f"work-{os.getpid()}").touch()
    return item


if __name__ == "__main__":
    try:
        for _ in ordered_map(work, range(1000), workers=2, setup=setup):
            time.sleep(0.2)  # the parent is the slow part (writing the map): the workers wait for work
    except KeyboardInterrupt:
        print("interrupted once", flush=True)
"""


@pytest.mark.parametrize("when", ["start", "work"])
def test_ctrl_c_to_the_process_group_leaves_the_pool_workers_quiet(tmp_path: Path, when: str) -> None:
    """A terminal's Ctrl-C reaches every process of its group: the pool's workers, while they start or while they
    wait for work, ignore it; the parent alone is interrupted, and nothing else is printed (before: a
    `KeyboardInterrupt` traceback from every worker)."""
    script = tmp_path / "pool_script.py"
    script.write_text(_POOL_SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    start_s = 2.0 if when == "start" else 0.0
    proc = subprocess.Popen([sys.executable, str(script), str(marks), str(start_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.glob(f"{when}-*"))) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"the two workers did not {when} in 60 s"
            time.sleep(0.05)
        time.sleep(0.3 if when == "work" else 0.0)  # both have done some work and wait for more
        os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends it: to the whole foreground process group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "interrupted once\n"
    assert "KeyboardInterrupt" not in err and "Traceback" not in err, err
