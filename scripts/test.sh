#!/usr/bin/env bash
# Set up (idempotent), then the whole check: lint (ruff), format, layering (import-linter), types (mypy on the
# core), the package as users install it (scripts/test_wheel.sh: sdist + wheel built, the wheel installed into a
# fresh venv and run from there), tests (pytest).
# Extra args go to pytest, e.g. `bash scripts/test.sh -m "not slow"` or `bash scripts/test.sh test/test_geometry.py`;
# such a partial run leaves out the wheel step (it says so), the whole run (no args, what CI runs) never does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
echo "[test] ruff check + format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] import-linter (layering, docs/architecture.md)"
.venv/bin/lint-imports
echo "[test] mypy (core package)"
.venv/bin/mypy
if [ $# -eq 0 ]; then
  echo "[test] the wheel in a fresh venv (scripts/test_wheel.sh)"
  bash scripts/test_wheel.sh
else
  echo "[test] pytest arguments given: a partial run, without the wheel step (run bash scripts/test_wheel.sh for it)"
fi
echo "[test] pytest"
# the ROS tests (marker ros: the live node tests, colcon build) must run here, not be skipped (POSE2RGBD_NO_ROS=1
# leaves ROS out of the set-up and lets them skip)
[ "${POSE2RGBD_NO_ROS:-0}" = 1 ] || export POSE2RGBD_REQUIRE_ROS=1
# two pytest workers on two cores: one torch / OpenMP thread each, so the workers do not oversubscribe the cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST  # DDS discovery stays on loopback (each live test also sets it)
pytest=(.venv/bin/python -m pytest -n 2 --dist loadfile "$@")
# Where the machine allows it, the tests run in a private network namespace with only a loopback interface: the
# live DDS tests (and anything else) cannot send a packet off this machine. POSE2RGBD_NO_NETNS=1 turns it off.
netns=()
if [ "${POSE2RGBD_NO_NETNS:-0}" != 1 ] && command -v unshare > /dev/null && command -v ip > /dev/null; then
  if unshare -n true 2> /dev/null; then netns=(unshare -n); elif unshare -rn true 2> /dev/null; then netns=(unshare -rn); fi
fi
if [ ${#netns[@]} -gt 0 ]; then
  echo "[test] pytest in a private network namespace (${netns[*]}; loopback only)"
  exec "${netns[@]}" sh -c 'ip link set lo up && exec "$@"' sh "${pytest[@]}"
fi
echo "[test] no private network namespace here (unshare / ip unavailable or not permitted): DDS stays on loopback"
"${pytest[@]}"
