"""The pip install path (setup.py): what a regular, non-editable install holds, and the help of every command
without the optional [train] extra. scripts/test_wheel.sh installs the built wheel into a fresh venv and runs the
commands from there (the test command runs it before pytest)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pose2rgbd.cli.main import build_parser, command_paths
from pose2rgbd.errors import EXTRA_MODULES
from pose2rgbd.messages.interfaces import CUSTOM_MSGS, CUSTOM_SRVS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pose2rgbd", "pose2rgbd_ros")
BUILD_FILES = ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


NOT_SHIPPED = "pose2rgbd/testing/"  # the stand-ins of the tests and benchmarks (setup.py leaves them out)


def _package_files() -> set[str]:
    """Every file of the installed packages as the source tree has it (code and the data they read), less the
    test stand-ins."""
    out = set()
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                out.add(p.relative_to(REPO).as_posix())
    return {n for n in out if not n.startswith(NOT_SHIPPED)}


def test_every_package_directory_has_its_init() -> None:
    """A folder of modules without ``__init__.py`` is a namespace package: find_packages leaves it out of the
    wheel, and a non-editable install then fails on import (``pose2rgbd.convert.sources`` was one)."""
    missing = []
    for pkg in PACKAGES:
        for d in [REPO / pkg, *(p for p in (REPO / pkg).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts:
                continue
            if any(d.glob("*.py")) and not (d / "__init__.py").is_file():
                missing.append(d.relative_to(REPO).as_posix())
    assert not missing, f"package folders without __init__.py: {missing}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of the source tree (the checkout itself is not written to)."""
    d = tmp_path_factory.mktemp("wheel")
    src = d / "src"
    src.mkdir()
    for name in BUILD_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=SKIP)
    # no build isolation: the setuptools installed here builds it, so the test needs no package index
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(d / "dist"),
           str(src)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=d, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = (d / "dist").glob("pose2rgbd-*.whl")
    return whl


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_package_files() - names)
    assert not missing, f"in the source tree, not in the wheel: {missing}"
    extra = sorted(n for n in names if not n.startswith("pose2rgbd-") and n not in _package_files())
    assert not extra, f"in the wheel, not in the source tree (or test stand-ins): {extra}"
    # the data the package reads at run time: the interface definitions (messages/interfaces.py)
    for n in CUSTOM_MSGS:
        assert f"pose2rgbd/resources/msg/{n}.msg" in names
    for n in CUSTOM_SRVS:
        assert f"pose2rgbd/resources/srv/{n}.srv" in names
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "pose2rgbd = pose2rgbd.cli.main:main" in zipfile.ZipFile(wheel).read(meta).decode()


def test_the_unpacked_wheel_reads_its_interfaces_and_imports_every_source(wheel: Path, tmp_path: Path) -> None:
    """From the wheel's files alone (no checkout on the path), the message definitions are read from the package
    data and every conversion source imports."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import json, pose2rgbd\n"
        "from pose2rgbd.convert import SOURCES\n"
        "from pose2rgbd.messages.interfaces import interface_dir, msg_definitions\n"
        "for load in SOURCES.values(): load()\n"
        "got = {'file': pose2rgbd.__file__, 'dir': str(interface_dir()), 'msgs': sorted(msg_definitions())}\n"
        "print(json.dumps(got))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(site)
    assert Path(got["dir"]) == site / "pose2rgbd" / "resources"
    assert got["msgs"] == sorted(f"pose2rgbd/msg/{n}" for n in CUSTOM_MSGS)


# A fresh interpreter where the modules of the optional extras cannot be imported (as after `pip install
# pose2rgbd` without [train]); it runs `--help` of every command of the argparse tree and reports each one.
_WITHOUT_EXTRAS = """
import contextlib, io, json, sys
from importlib.abc import MetaPathFinder

BLOCKED = set(json.loads(sys.argv[1]))


class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from pose2rgbd.cli.main import build_parser, command_paths, main

report = {}
for path in command_paths(build_parser()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([*path, "--help"])
        except SystemExit as e:
            rc = e.code
    report[" ".join(path)] = {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}
report["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps(report))
"""


def test_the_help_of_every_command_works_without_the_train_extra() -> None:
    paths = [" ".join(p) for p in command_paths(build_parser())]
    assert {"train", "evaluate", "convert images", "map build", "localize images"} <= set(paths)
    r = subprocess.run([sys.executable, "-c", _WITHOUT_EXTRAS, json.dumps(sorted(EXTRA_MODULES))],
                       capture_output=True, text=True, cwd=REPO, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report.pop("imported") == []
    assert sorted(report) == sorted(paths)
    bad = {k: v["rc"] for k, v in report.items() if v["rc"] != 0 or not v["out"].startswith("usage: pose2rgbd")}
    assert not bad, {k: report[k]["err"][-500:] for k in bad}
    for cmd in ("train", "evaluate"):  # their settings come from code that needs torch: the help says so
        text = " ".join(report[cmd]["out"].split())
        assert "--dataset" in text and "--out" in text, text
        assert "The settings of this command" in text and "pip install 'pose2rgbd[train]'" in text, text
