"""`colcon build` of the package (colcon and the ament / rosidl build tools from PyPI, set up by scripts/setup.sh)
and what its install space holds: node executables, launch and parameter files, the generated messages and
services, the package share found through ament_index_python. Marker ``ros`` + ``slow`` (about a minute)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pose2rgbd.config import flatten

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def _sources(dest: Path) -> None:
    """The package as a workspace holds it: the files git knows (no .venv, .ros or build outputs)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def install_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    colcon = VENV / "bin" / "colcon"
    if not colcon.exists() or shutil.which("cmake") is None:
        pytest.skip("colcon or cmake missing (bash scripts/setup.sh installs colcon)")
    ws = tmp_path_factory.mktemp("ws")
    _sources(ws / "src" / "pose2rgbd")
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV), "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"}
    out = subprocess.run(
        [str(colcon), "--log-base", "log", "build", "--base-paths", "src", "--build-base", "build",
         "--install-base", "install", "--event-handlers", "console_direct-",
         "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return ws / "install" / "pose2rgbd"


def _install_env(prefix: Path) -> dict[str, str]:
    """What sourcing the install space's setup.bash sets, for this package alone (no .ros/ of the venv)."""
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {
        "POSE2RGBD_NO_ROS_PREFIX": "1",
        "PYTHONPATH": str(site),
        "AMENT_PREFIX_PATH": f"{prefix}:{VENV}",
        "LD_LIBRARY_PATH": f"{prefix / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",
    }


def test_install_space_files(install_space: Path) -> None:
    share = install_space / "share" / "pose2rgbd"
    for name in ("render_node", "record_node", "localize_node"):
        exe = install_space / "lib" / "pose2rgbd" / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    assert {p.name for p in (share / "launch").glob("*.launch.py")} == {
        p.name for p in (REPO / "launch").glob("*.launch.py")
    }
    assert {p.name for p in (share / "config").glob("*.yaml")} == {p.name for p in (REPO / "config").glob("*.yaml")}
    assert (share / "package.xml").is_file()
    assert (install_space / "share" / "ament_index" / "resource_index" / "packages" / "pose2rgbd").is_file()
    site = install_space / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert (site / "pose2rgbd" / "nodes" / "__init__.py").is_file()  # the core, installed as files
    assert (site / "pose2rgbd_ros" / "host.py").is_file()


def test_install_space_imports(install_space: Path, tmp_path: Path) -> None:
    code = (
        "import pose2rgbd, pose2rgbd.nodes, pose2rgbd_ros.host\n"
        "from pose2rgbd.msg import RGBD, SyncedFrame\n"
        "from pose2rgbd.srv import RenderAtPose\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "m = RGBD(); m.depth.encoding = '32FC1'; SyncedFrame(); RenderAtPose.Request(); RenderAtPose.Response()\n"
        "from pose2rgbd_ros.factory import RclpyFactory\n"  # the built interfaces against the installed msg/ + srv/
        "f = RclpyFactory(); [f.cls(t) for t in ('pose2rgbd/msg/RGBD', 'pose2rgbd/msg/SyncedFrame', "
        "'pose2rgbd/srv/RenderAtPose')]\n"
        "print(pose2rgbd.__file__); print(pose2rgbd_ros.host.__file__); print(RGBD.__module__)\n"
        "print(get_package_share_directory('pose2rgbd'))\n"
    )
    env = _install_env(install_space)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    core, glue, _, share = out.stdout.split()
    assert core.startswith(str(install_space)) and glue.startswith(str(install_space)), out.stdout
    assert Path(share) == install_space / "share" / "pose2rgbd"


def test_installed_executable_runs(install_space: Path, tmp_path: Path, ros_domain_id: int) -> None:
    """`ros2 run pose2rgbd render_node` runs the installed file: without a checkpoint it exits 1 with the reason."""
    exe = install_space / "lib" / "pose2rgbd" / "render_node"
    missing = tmp_path / "missing.pt"
    env = _install_env(install_space) | {
        "ROS_DOMAIN_ID": str(ros_domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    out = subprocess.run(
        [str(exe), "--ros-args", "--params-file", str(install_space / "share" / "pose2rgbd" / "config" / "render.yaml"),
         "-p", f"engine.checkpoint:={missing}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert str(missing) in out.stdout + out.stderr


def _installed_nodes(install_space: Path, tmp_path: Path) -> dict[str, Any]:
    """What the installed package says about its nodes: executable -> (node name, declared parameters)."""
    code = (
        "import json, os\n"
        "from ament_index_python.packages import get_package_prefix\n"
        "from pose2rgbd.nodes import node_spec\n"
        "from pose2rgbd_ros.node_main import node_name_from_executable\n"
        "lib = os.path.join(get_package_prefix('pose2rgbd'), 'lib', 'pose2rgbd')\n"
        "out = {}\n"
        "for exe in sorted(os.listdir(lib)):\n"
        "    spec = node_spec(node_name_from_executable(exe))\n"
        "    out[exe] = [spec.name, sorted(spec.parameters())]\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_install_env(install_space),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.splitlines()[-1]))


def test_launch_files_name_what_the_install_space_has(install_space: Path, tmp_path: Path) -> None:
    """Every executable, parameter file, included launch file and parameter a launch file names exists in the
    install space (``ros2 launch`` itself cannot run here: launch / launch_ros have no wheels)."""
    share = install_space / "share" / "pose2rgbd"
    nodes = _installed_nodes(install_space, tmp_path)
    assert set(nodes) == {"render_node", "record_node", "localize_node"}
    common = {"use_sim_time", "autostart"}  # declared by rclpy / the host for every node
    launch_files = sorted((share / "launch").glob("*.launch.py"))
    assert launch_files
    started: set[str] = set()
    for path in launch_files:
        tree = ast.parse(path.read_text())
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            fname = getattr(call.func, "id", getattr(call.func, "attr", ""))
            kw = {k.arg: k.value for k in call.keywords}
            if fname == "Node":
                assert isinstance(kw["package"], ast.Constant) and kw["package"].value == "pose2rgbd"
                exe = kw["executable"]
                assert isinstance(exe, ast.Constant) and exe.value in nodes, f"{path.name}: executable {ast.dump(exe)}"
                assert os.access(install_space / "lib" / "pose2rgbd" / exe.value, os.X_OK)
                node_name, params = nodes[exe.value]
                assert isinstance(kw["name"], ast.Constant) and kw["name"].value == node_name, path.name
                started.add(exe.value)
                plist = kw["parameters"]
                assert isinstance(plist, ast.List)
                for d in (e for e in plist.elts if isinstance(e, ast.Dict)):
                    keys = {k.value for k in d.keys if isinstance(k, ast.Constant)}
                    assert keys, path.name
                    assert keys <= set(params) | common, (
                        f"{path.name}: not declared by {node_name}: {keys - set(params)}"
                    )
            elif fname == "PathJoinSubstitution":
                parts = [e.value for e in call.args[0].elts if isinstance(e, ast.Constant)]  # type: ignore[attr-defined]
                if len(parts) == 2 and parts[0] in ("config", "launch"):
                    assert (share / parts[0] / parts[1]).is_file(), f"{path.name}: {parts} is not installed"
            elif fname == "include":
                assert (share / "launch" / call.args[0].value).is_file()  # type: ignore[attr-defined]
    assert started == set(nodes), "every node executable is started by a launch file"
    # the installed parameter files: one node each, every parameter declared by that node
    by_name = {name: set(params) | common for name, params in nodes.values()}
    of_file = {"render": "pose2rgbd_renderer", "record": "pose2rgbd_recorder", "localize": "pose2rgbd_localizer"}
    for f in sorted((share / "config").glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        (key,) = data
        assert key == "/**", f"{f.name}: keyed {key!r}, not '/**' (a bare node name applies in the root namespace only)"
        node_name = of_file[f.stem]
        assert node_name in by_name, f"{f.name}: {node_name} is no installed node"
        names = set(flatten(data[key]["ros__parameters"]))
        assert names <= by_name[node_name], f"{f.name}: not declared: {names - by_name[node_name]}"
