"""The `pose2rgbd` command line end to end on tiny inputs: help, render bag, record bag, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pose2rgbd.bags import open_bag
from pose2rgbd.cli.main import COMMAND_MODULES, main
from pose2rgbd.dataset import Dataset
from pose2rgbd.testing.flight_bag import write_flight_bag


@pytest.fixture(scope="module")
def flight_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    write_flight_bag(d / "flight", duration_s=2.0, size=64)
    return d / "flight"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained Base checkpoint at 64x64: the CLI plumbing does not depend on training."""
    from pose2rgbd.geometry import PinholeCamera, T_from_tq
    from pose2rgbd.methods.pose2rgbd import build_model, preset_config
    from pose2rgbd.models import DepthNormalizer, PoseNormalizer, save_checkpoint

    T = T_from_tq(np.array([[-30.0, -30, 40], [30.0, 30, 60]]), np.array([[0, 0, 0, 1.0], [0.1, 0, 0, 0.995]]))
    model = build_model(
        preset_config("base", size=64, outputs="rgbd"), DepthNormalizer(1.0, 200.0), PoseNormalizer.fit(T, "6dof-quat")
    )
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "model.pt",
        model,
        dataset_fingerprint="0123456789abcdef",
        camera=PinholeCamera.from_fov(64, 64, 90.0),
        depth_kind="metric",
    )


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for mod in COMMAND_MODULES:
        assert mod.rsplit(".", 1)[1] in out


def test_localize_images_help_puts_the_map_first_and_groups_the_checkpoint(capsys):
    """`localize images --help`: the map path is the first option, --checkpoint is not called required (a map
    alone needs none) and the checkpoint-only options sit under their own heading, not among the common ones."""
    import re

    with pytest.raises(SystemExit):
        main(["localize", "images", "--help"])
    out = capsys.readouterr().out
    assert "(required)" not in out
    sections = {m[1]: m[2] for m in re.finditer(r"^(\S[^\n]*):\n(.*?)(?=^\S|\Z)", out, re.M | re.S)}
    flags = {h: re.findall(r"^  (--[\w.-]+)", body, re.M) for h, body in sections.items()}
    assert flags["options"][0] == "--map", flags["options"]
    ck = flags["checkpoint localizer (PoseGAN)"]
    for flag in ("--checkpoint", "--batch", "--crop-scale", "--backend", "--device", "--precision"):
        assert flag in ck and flag not in flags["options"], flag
    assert {"--camera", "--no-sequence", "--out", "--method"} <= set(flags["options"])
    assert "--engine.checkpoint" in flags["checkpoint localizer (PoseGAN): engine.* settings"]
    assert "--structure.min_inliers" in flags["structure localizer (--map): structure.* settings"]


def test_render_bag_from_the_cli(flight_bag: Path, checkpoint: Path, tmp_path: Path, capsys):
    out = tmp_path / "rendered"
    rc = main(["render", "bag", "--checkpoint", str(checkpoint), "--bag", str(flight_bag), "--out", str(out)])
    assert rc == 0
    said = capsys.readouterr().out
    import re

    assert re.search(r"out of the training poses' bounds: \d+ of \d+ frames", said), said
    assert "look-ahead" not in said  # off by default: nothing to say
    with open_bag(out) as r:
        types = {t.name: t.msgtype for t in r.topics.values()}
        counts = {t.name: t.count for t in r.topics.values()}
    rgb = [t for t in types if t.endswith("rgb/image_raw")]
    depth = [t for t in types if t.endswith("depth/image_raw")]
    assert rgb and depth and types[rgb[0]] == "sensor_msgs/msg/Image"
    assert any(v == "pose2rgbd/msg/RGBD" for v in types.values())
    assert counts[rgb[0]] >= 15  # 2 s at 10 Hz, minus the first tick before TF arrives


def test_render_bag_says_what_look_ahead_served(flight_bag: Path, checkpoint: Path, tmp_path: Path, capsys):
    """With look-ahead on, the summary counts the frames its cache served, and at --rate 0 (the default) says why
    it cannot serve any there."""
    import re

    argv = ["render", "bag", "--checkpoint", str(checkpoint), "--bag", str(flight_bag), "--lookahead", "2"]
    assert main([*argv, "--out", str(tmp_path / "fast")]) == 0
    said = capsys.readouterr().out
    frames = int(re.search(r"(\d+) frames in", said).group(1))
    m = re.search(r"look-ahead: (\d+) of (\d+) frames from its cache \(.*within 0.05 m / 0.5 deg", said)
    assert m and int(m.group(2)) == frames and int(m.group(1)) <= frames, said
    assert "at --rate 0 the poses come back to back" in said and "--rate 1" in said, said
    assert main([*argv, "--out", str(tmp_path / "real_time"), "--rate", "4"]) == 0
    said = capsys.readouterr().out
    assert "look-ahead: " in said and "--rate 0" not in said, said


def test_record_bag_from_the_cli(flight_bag: Path, tmp_path: Path):
    out = tmp_path / "recorded"
    assert main(["record", "bag", "--bag", str(flight_bag), "--out", str(out)]) == 0
    ds = Dataset(out)
    assert len(ds) >= 15 and ds.manifest.depth_kind == "none"
    assert np.isfinite(ds.frames.latlonalt).all()


def test_record_bag_again_says_nothing_was_new_and_what_another_flight_needs(
    flight_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same bag recorded again into its dataset adds nothing (a resume past its end): the summary says so, and
    that another flight of the same stamps goes into a new dataset and `dataset merge`."""
    out = tmp_path / "recorded"
    assert main(["record", "bag", "--bag", str(flight_bag), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "nothing was new" not in first
    n = len(Dataset(out))
    assert main(["record", "bag", "--bag", str(flight_bag), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "recorded 0 frames" in said and "nothing was new" in said and "`pose2rgbd dataset merge`" in said, said
    assert len(Dataset(out)) == n


def test_record_bag_refuses_another_flight_of_the_same_stamps_and_counts_what_it_received(
    flight_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second flight with the same stamps (a simulator's other export, a bag re-stamped) recorded into a dataset:
    a resume would skip its first part without a word; the image at the dataset's last frame's stamp is not the one
    recorded there, so it is refused and the dataset left as it was. The summary counts the messages received apart
    from what was dropped."""
    out = tmp_path / "recorded"
    assert main(["record", "bag", "--bag", str(flight_bag), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert re.search(r"\(\d+ GPS fixes and \d+ odometry messages received\)", said), said
    assert "'fixes'" not in said and "'odometry'" not in said, said  # not among the dropped
    before = (out / "frames.csv").read_bytes()
    other = tmp_path / "other"
    write_flight_bag(other, duration_s=3.0, size=64, hfov_deg=60.0)  # the same stamps, other views, a second longer
    assert main(["record", "bag", "--bag", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr()
    assert "is not the image the dataset" in err.err + err.out and "`pose2rgbd dataset merge`" in err.err + err.out, err
    assert (out / "frames.csv").read_bytes() == before


def test_record_bag_out_bag_messages_say_what_is_wrong(
    flight_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out-bag at a folder of the user's files is refused without advice to pass --overwrite (which would be refused
    too), and --out-bag at the dataset's own folder says the two outputs are one folder, not "the input"."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("mine")
    assert main(["record", "bag", "--bag", str(flight_bag), "--out", str(tmp_path / "d1"), "--out-bag", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is a folder that is not a bag; --overwrite only replaces an earlier bag" in err, err
    assert "pass --overwrite" not in err and (mine / "a.txt").read_text() == "mine", err
    d2 = tmp_path / "d2"
    assert main(["record", "bag", "--bag", str(flight_bag), "--out", str(d2), "--out-bag", str(d2)]) == 2
    err = capsys.readouterr().err
    assert f"the output bag {d2} and the dataset {d2} are one folder" in err and "is the input" not in err, err
    assert not d2.exists()


def test_cli_errors_are_messages_not_tracebacks(flight_bag: Path, tmp_path: Path, capsys):
    rc = main(["render", "bag", "--checkpoint", str(tmp_path / "nope.pt"), "--bag", str(flight_bag), "--out", "x"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nope.pt" in err and "Traceback" not in err
    assert main(["dataset", "info", str(tmp_path / "missing")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
