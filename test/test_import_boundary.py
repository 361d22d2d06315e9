"""The core never imports rclpy or the ROS glue: checked in a fresh interpreter (gsplat's habit)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pose2rgbd

FORBIDDEN = ("rclpy", "pose2rgbd_ros", "tf2_ros", "launch", "launch_ros")


def _core_modules() -> list[str]:
    # the checkout's modules only: pose2rgbd.__path__ also names the generated interfaces' folder (.ros/)
    here = [str(Path(pose2rgbd.__file__).parent)]
    return sorted(m.name for m in pkgutil.walk_packages(here, "pose2rgbd.") if not m.name.endswith("__main__"))


def test_core_imports_without_ros():
    mods = _core_modules()
    assert "pose2rgbd.geometry" in mods and "pose2rgbd.dataset.format" in mods
    code = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"print('LOADED=' + json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {list(FORBIDDEN)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED=")][-1]
    loaded = json.loads(line.removeprefix("LOADED="))
    assert loaded == [], f"core pulled in ROS modules: {loaded}"


def test_cli_help_is_light():
    """`pose2rgbd --help` must not import torch or numba (it lists commands instantly)."""
    code = (
        "import sys, contextlib, io\n"
        "from pose2rgbd.cli.main import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    build_parser().format_help()\n"
        "print(','.join(sorted(m for m in ('torch', 'numba', 'rclpy') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == ""
