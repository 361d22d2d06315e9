#!/usr/bin/env bash
# Idempotent set-up on a fresh clone: a .venv with pose2rgbd (editable), its dev tools and ROS 2 Jazzy from PyPI
# wheels (scripts/setup_ros.sh: about 100 s more on the first run).
# torch is pinned to 2.13.0 here: on machines that carry that wheel locally it is the CPU build; an unpinned
# `torch` would pull several GB of CUDA packages. Set PYTHON=python3.10|3.11|3.12 to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" - <<'PYCHECK'
import sys
if not ((3, 10) <= sys.version_info[:2] <= (3, 12)):
    sys.exit(f"pose2rgbd needs Python 3.10-3.12 (ROS 2 Humble uses 3.10, Jazzy 3.12); this is {sys.version.split()[0]}")
PYCHECK
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.pose2rgbd-installed-$(cat setup.py scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing torch==2.13.0 and pose2rgbd[dev] into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install --disable-pip-version-check -q "torch==2.13.0"
  # compat mode: a path entry, so a checkout run from its own root (a git worktree, a test run) imports its own
  # pose2rgbd before the installed one
  .venv/bin/python -m pip install --disable-pip-version-check -q -e ".[dev]" --config-settings editable_mode=compat
  rm -f .venv/.pose2rgbd-installed-*
  touch "$stamp"
fi
# Open3D (the fused geometry of a place) links the system's libusb-1.0; a bare Debian / Ubuntu lacks it
if ! .venv/bin/python -c "import open3d" 2> /dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "[setup] installing libusb-1.0-0 (Open3D links it) with apt-get"
    apt-get update -qq > /dev/null && apt-get install -y -qq libusb-1.0-0 > /dev/null
  fi
  .venv/bin/python -c "import open3d" 2> /dev/null || {
    echo "[setup] Open3D does not load (the fused geometry and its tests need it): install libusb-1.0" \
      "(sudo apt install libusb-1.0-0), then run this again" >&2
    exit 1
  }
fi
# ROS 2 Jazzy wheels + the interfaces built into .ros/ (skip with POSE2RGBD_NO_ROS=1; the core never needs them)
bash scripts/setup_ros.sh
