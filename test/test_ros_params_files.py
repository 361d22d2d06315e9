"""A ROS 2 params file with no section for the node it is given to (a bare node name under a namespace): named in a
warning at start, where rcl applies nothing and says nothing. No ROS needed: the matching is rcl's key rules."""

from __future__ import annotations

from pathlib import Path

from pose2rgbd_ros.params_files import key_matches, params_files, unmatched_params_files

FQN = "/pose2rgbd/pose2rgbd_renderer"


def test_keys_match_as_rcl_matches_them() -> None:
    for key in ("/**", "/pose2rgbd/pose2rgbd_renderer", "/pose2rgbd/*", "/**/pose2rgbd_renderer", "/*/pose2rgbd_*"):
        assert key_matches(key, FQN), key
    for key in ("pose2rgbd_renderer", "/pose2rgbd_renderer", "/other/pose2rgbd_renderer", "/pose2rgbd/other", "/*"):
        assert not key_matches(key, FQN), key
    assert key_matches("pose2rgbd_renderer", "/pose2rgbd_renderer")  # a bare name: the root namespace only
    assert key_matches("/**", "/pose2rgbd_renderer") and key_matches("/**", "/a/b/c")


def test_a_params_file_keyed_by_the_bare_name_is_named_under_a_namespace(tmp_path: Path) -> None:
    bare = tmp_path / "mine.yaml"
    bare.write_text("pose2rgbd_renderer:\n  ros__parameters:\n    rate_hz: 5.0\n")
    shipped = Path(__file__).resolve().parents[1] / "config" / "render.yaml"
    argv = ["render_node", "--ros-args", "-r", "__ns:=/pose2rgbd", "--params-file", str(bare), "--params-file",
            str(shipped), "-p", "rate_hz:=3.0"]  # fmt: skip
    assert params_files(argv) == [bare, shipped]
    assert params_files(["render_node", "--params-file", str(bare)]) == []  # not a ROS argument: not rcl's
    (msg,) = unmatched_params_files(argv, FQN)
    assert msg.startswith(f"params file {bare}: no section applies to this node {FQN} (its sections: "
                          "'pose2rgbd_renderer'), so none of its values was set") and "'/**'" in msg  # fmt: skip
    assert unmatched_params_files(argv, "/pose2rgbd_renderer") == []  # in the root namespace the bare name applies
    assert unmatched_params_files([*argv[:4], "--params-file", str(tmp_path / "missing.yaml")], FQN) == []
