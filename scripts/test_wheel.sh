#!/usr/bin/env bash
# pose2rgbd as users install it (run by scripts/test.sh; needs .venv from scripts/setup.sh and a package index):
#   1. build the sdist and, from it, the wheel (python -m build);
#   2. install the wheel, not editable, into a fresh venv, from a folder outside the checkout;
#   3. from there, `--help` of every command of the argparse tree, without the [train] extra;
#   4. then with torch (pinned as in setup.sh) a small chain: sim -> convert images -> map build -> localize images.
# The checkout is never on the fresh venv's path: every step checks that pose2rgbd is imported from the venv.
# KEEP=1 keeps the work folder (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/pose2rgbd-wheel.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
t0=$SECONDS
step() { echo "[test_wheel] $(printf '%3d' $((SECONDS - t0))) s  $*"; }

step "build the sdist and the wheel (from the sdist) into $work/dist"
had_egg=0
[ -e pose2rgbd.egg-info ] && had_egg=1
if ! .venv/bin/python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1; then
  cat "$work/build.log"
  exit 1
fi
[ "$had_egg" = 1 ] || rm -rf pose2rgbd.egg-info # what the sdist step wrote into the checkout
sdist=$(ls "$work"/dist/pose2rgbd-*.tar.gz)
wheel=$(ls "$work"/dist/pose2rgbd-*.whl)
.venv/bin/python - "$sdist" <<'PY'
# the sdist holds every file of the packages (but the test stand-ins) and what the colcon build reads
import re, sys, tarfile
from pathlib import Path

names = {n.split("/", 1)[1] for n in tarfile.open(sys.argv[1]).getnames() if "/" in n}
want = {p.as_posix() for pkg in ("pose2rgbd", "pose2rgbd_ros") for p in Path(pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        and not p.as_posix().startswith("pose2rgbd/testing/")}  # the test stand-ins: left out (setup.py)
cmake = re.sub(r"#.*", "", Path("CMakeLists.txt").read_text())
want |= {"setup.py", "package.xml", "CMakeLists.txt", *re.findall(r'"((?:msg|srv)/[^"]+)"', cmake)}
want |= {p.as_posix() for d in ("ros_nodes", "launch", "config") for p in Path(d).iterdir() if p.is_file()}
missing = sorted(want - names)
sys.exit(f"not in the sdist: {missing}" if missing else 0)
PY

step "a fresh venv; pip install the wheel (not editable)"
.venv/bin/python -m venv "$work/venv"
venv="$work/venv"
mkdir "$work/run"
cd "$work/run"  # outside the checkout: nothing can be imported from it
unset PYTHONPATH
"$venv/bin/python" -m pip install --disable-pip-version-check -q "$wheel"

step "--help of every command, without the [train] extra"
"$venv/bin/pose2rgbd" --help > /dev/null
"$venv/bin/python" - "$venv" <<'PY'
import contextlib, importlib.util, io, sys
from pathlib import Path

import pose2rgbd
from pose2rgbd.cli.main import build_parser, command_paths, main

assert Path(pose2rgbd.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), pose2rgbd.__file__
assert importlib.util.find_spec("torch") is None, "torch is installed: the help is not checked without [train]"
paths = command_paths(build_parser())
failed = []
for path in paths:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([*path, "--help"])
        except SystemExit as e:
            rc = e.code
    if rc != 0 or not out.getvalue().startswith("usage: pose2rgbd"):
        failed.append(f"pose2rgbd {' '.join(path)} --help: exit {rc}: {err.getvalue().strip()[-300:]}")
print(f"  {len(paths) - len(failed)}/{len(paths)} commands answer --help")
sys.exit("\n".join(failed) if failed else 0)
PY

step "pip install torch==2.13.0 (the [train] extra's torch, pinned as in scripts/setup.sh)"
"$venv/bin/python" -m pip install --disable-pip-version-check -q "torch==2.13.0"

step "sim -> convert images -> map build -> localize images"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg
p2r="$venv/bin/pose2rgbd"
"$p2r" sim --out sim --size 64 --routes survey --frames 40 --no-dataset --no-bag --no-video --posed-images \
  --no-progress > sim.log
"$p2r" convert images sim/posed_images/survey --out ds --no-progress > convert.log
"$p2r" map build --dataset ds --out map --no-progress > map.log
"$p2r" localize images sim/posed_images/survey/images --map map --out poses.csv --no-progress > localize.log
"$venv/bin/python" - "$venv" <<'PY'
import csv, sys
from pathlib import Path

import pose2rgbd
from pose2rgbd.dataset import Dataset
from pose2rgbd.placemap import PlaceMap

assert Path(pose2rgbd.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), pose2rgbd.__file__
n = len(Dataset("ds"))
keyframes = len(PlaceMap("map"))
rows = list(csv.DictReader(open("poses.csv")))
fixed = sum(r["fix"] == "true" for r in rows)
print(f"  dataset {n} frames, map {keyframes} keyframes, {fixed}/{len(rows)} images localized")
assert n == 40 and keyframes > 0 and len(rows) == 40 and fixed >= 30, (n, keyframes, len(rows), fixed)
PY
cd "$repo"
step "done"
