"""Static checks of the ROS packaging: package.xml, CMakeLists.txt, launch files, params files, interfaces."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pose2rgbd.config import describe, flatten, load_yaml
from pose2rgbd.nodes import LocalizerConfig, RecorderConfig, RendererConfig

REPO = Path(__file__).resolve().parents[1]
NODE_CONFIGS = {
    "pose2rgbd_renderer": RendererConfig,
    "pose2rgbd_recorder": RecorderConfig,
    "pose2rgbd_localizer": LocalizerConfig,
}
PARAMS_FILES = {
    "render.yaml": "pose2rgbd_renderer",
    "record.yaml": "pose2rgbd_recorder",
    "localize.yaml": "pose2rgbd_localizer",
}


def _cmake() -> str:
    text = (REPO / "CMakeLists.txt").read_text()
    return re.sub(r"#.*", "", text)


def _installed_programs() -> set[str]:
    """CMakeLists.txt installs every ros_nodes/*_node (a glob)."""
    text = _cmake()
    assert re.search(r'file\(GLOB (\w+) "\$\{CMAKE_CURRENT_SOURCE_DIR\}/ros_nodes/\*_node"\)', text), text
    assert re.search(r"install\(PROGRAMS \$\{POSE2RGBD_NODE_PROGRAMS\} DESTINATION lib/\$\{PROJECT_NAME\}\)", text)
    return {p.name for p in (REPO / "ros_nodes").glob("*_node")}


def test_package_xml_is_valid() -> None:
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(REPO / "package.xml"))
    pkg.validate()
    assert pkg.name == "pose2rgbd" and pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]
    deps = {d.name for d in pkg.build_depends + pkg.exec_depends + pkg.buildtool_depends}
    # every ROS package the rclpy runtime and the interfaces import
    for name in ("rclpy", "tf2_msgs", "std_srvs", "diagnostic_msgs", "rcl_interfaces", "sensor_msgs",
                 "geometry_msgs", "nav_msgs", "std_msgs", "rosidl_default_generators", "launch_ros"):  # fmt: skip
        assert name in deps, name
    from catkin_pkg.package_version import __name__ as _  # noqa: F401  (catkin_pkg fully importable)


def test_cmake_references_existing_files() -> None:
    text = _cmake()
    for rel in re.findall(r'"((?:msg|srv)/[^"]+)"', text):
        assert (REPO / rel).is_file(), rel
    for m in re.finditer(r"install\(FILES(.*?)DESTINATION", text, re.S):
        for rel in m.group(1).split():
            assert (REPO / rel).is_file(), rel
    for m in re.finditer(r"install\(DIRECTORY(.*?)DESTINATION", text, re.S):
        for rel in m.group(1).split():
            assert (REPO / rel).is_dir(), rel
    for m in re.findall(r"ament_python_install_package\((\w+)\)", text):
        assert (REPO / m / "__init__.py").is_file(), m
    # the core must not have msg/srv subpackages: rosidl installs the generated ones at that place
    assert not (REPO / "pose2rgbd" / "msg").exists() and not (REPO / "pose2rgbd" / "srv").exists()
    interfaces = {Path(p).name for p in re.findall(r'"((?:msg|srv)/[^"]+)"', text)}
    on_disk = {p.name for p in (REPO / "msg").glob("*.msg")} | {p.name for p in (REPO / "srv").glob("*.srv")}
    assert interfaces == on_disk


def test_node_executables() -> None:
    from pose2rgbd.nodes import NODES

    assert _installed_programs() == {f"{short}_node" for short in NODES}  # one executable per node table entry
    for name in _installed_programs():
        p = REPO / "ros_nodes" / name
        assert os.access(p, os.X_OK), f"{p} is not executable"
        text = p.read_text()
        assert text.startswith("#!/usr/bin/env python3")
        mod = re.search(r"from (pose2rgbd_ros\.\w+) import main", text)
        assert mod and mod.group(1) == "pose2rgbd_ros.node_main", p
        assert (REPO / (mod.group(1).replace(".", "/") + ".py")).is_file()


def _launch_files() -> list[Path]:
    files = sorted((REPO / "launch").glob("*.launch.py"))
    assert {f.name for f in files} >= {"render.launch.py", "record.launch.py", "pose2rgbd.launch.py"}
    return files


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if fname == name:
                out.append(node)
    return out


def _kw(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def _declared_args(tree: ast.AST) -> dict[str, ast.Call]:
    out = {}
    for c in _calls(tree, "DeclareLaunchArgument"):
        assert isinstance(c.args[0], ast.Constant)
        out[c.args[0].value] = c
    return out


@pytest.mark.parametrize("path", _launch_files(), ids=lambda p: p.name)
def test_launch_file_statically(path: Path) -> None:
    tree = ast.parse(path.read_text())
    args = _declared_args(tree)
    for name, call in args.items():
        desc = _kw(call, "description")
        assert isinstance(desc, ast.Constant) and str(desc.value).strip(), f"{path.name}: {name} has no description"
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration") if isinstance(c.args[0], ast.Constant)}
    assert used <= set(args), f"{path.name}: undeclared {used - set(args)}"
    # every string list of PathJoinSubstitution(FindPackageShare, 'config'|'launch', file) must exist
    for c in _calls(tree, "PathJoinSubstitution"):
        elts = c.args[0].elts  # type: ignore[attr-defined]
        parts = [e.value for e in elts if isinstance(e, ast.Constant)]
        if parts and not any(isinstance(e, ast.Name) and e.id != "share" for e in elts):  # variable file names
            assert (REPO / Path(*parts)).is_file(), f"{path.name}: {parts} not in the package"
    programs = _installed_programs()
    for node in _calls(tree, "Node"):
        exe = _kw(node, "executable")
        assert isinstance(exe, ast.Constant) and exe.value in programs, f"{path.name}: {ast.dump(exe)}"
        name = _kw(node, "name")
        assert isinstance(name, ast.Constant) and name.value in NODE_CONFIGS
        declared = set(describe(NODE_CONFIGS[name.value])) | {"use_sim_time"}
        params = _kw(node, "parameters")
        assert isinstance(params, ast.List)
        for d in params.elts:
            if isinstance(d, ast.Dict):
                keys = {k.value for k in d.keys if isinstance(k, ast.Constant)}
                assert keys <= declared, f"{path.name}: undeclared parameters {keys - declared}"
    for inc in _calls(tree, "include"):  # pose2rgbd.launch.py's helper: include(file, **launch_args)
        target = REPO / "launch" / inc.args[0].value  # type: ignore[attr-defined]
        assert target.is_file()
        inner = set(_declared_args(ast.parse(target.read_text())))
        passed = {k.arg for k in inc.keywords}
        assert passed <= inner, f"{target.name} does not declare {passed - inner}"


@pytest.mark.parametrize(("fname", "node"), sorted(PARAMS_FILES.items()))
def test_params_files_match_the_schema(fname: str, node: str) -> None:
    path = REPO / "config" / fname
    data = yaml.safe_load(path.read_text())
    # '/**': the node's section whatever its namespace (a bare node name applies in the root namespace only)
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]
    cls = NODE_CONFIGS[node]
    declared = set(describe(cls))
    names = set(flatten(data["/**"]["ros__parameters"]))
    assert names <= declared, f"{fname}: not declared by {cls.__name__}: {names - declared}"
    load_yaml(cls, path, section="/**")  # types check too
    load_yaml(cls, path)  # and as `pose2rgbd render bag --config` reads it
    # documented defaults equal the schema's (except what a launch file sets)
    defaults = {k: v for k, (v, _) in describe(cls).items()}
    for k, v in flatten(data["/**"]["ros__parameters"]).items():
        assert v == defaults[k], f"{fname}: {k} = {v!r} differs from the schema default {defaults[k]!r}"


def test_interfaces_shipped_as_package_data_are_identical() -> None:
    res = REPO / "pose2rgbd" / "resources"
    for sub, ext in (("msg", "msg"), ("srv", "srv")):
        repo_files = sorted((REPO / sub).glob(f"*.{ext}"))
        assert repo_files
        for f in repo_files:
            copy = res / sub / f.name
            assert copy.is_file() and copy.read_text() == f.read_text(), (
                f"{copy} differs from {f}; copy {sub}/ to pose2rgbd/resources/{sub}/"
            )
    setup = (REPO / "setup.py").read_text()
    assert '"resources/**/*"' in setup or "'resources/**/*'" in setup


def test_custom_msgs_register_and_roundtrip() -> None:
    import numpy as np

    from pose2rgbd.messages import TypestoreFactory, msg_definitions, new_typestore, register_custom_msgs

    ts = register_custom_msgs(new_typestore("humble"))
    register_custom_msgs(ts)  # idempotent
    assert set(msg_definitions()) == {"pose2rgbd/msg/RGBD", "pose2rgbd/msg/SyncedFrame"}
    f = TypestoreFactory(ts)
    msg = f.new("pose2rgbd/msg/SyncedFrame", header={"frame_id": "cam"})
    msg.fix.position_covariance = np.arange(9, dtype=np.float64)
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, "pose2rgbd/msg/SyncedFrame"), "pose2rgbd/msg/SyncedFrame")
    assert back.header.frame_id == "cam" and back.fix.position_covariance[8] == 8.0


def test_core_never_imports_rclpy() -> None:
    code = (
        "import sys, pose2rgbd.nodes, pose2rgbd.runtime, pose2rgbd.runtime.offline, pose2rgbd.inference, "
        "pose2rgbd.cli.render, pose2rgbd.cli.record\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'pose2rgbd_ros', 'tf2_ros', 'launch_ros')]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for py in (REPO / "pose2rgbd").rglob("*.py"):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] in ("rclpy", "pose2rgbd_ros") for n in names), f"{py} imports {names}"
