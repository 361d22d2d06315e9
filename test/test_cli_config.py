"""Flags generated from the config schemas: every key has its flag, one override path, errors name the key."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from toy_renderer import ToyRenderer, toy_recipe

from pose2rgbd.cli.main import build_parser, main
from pose2rgbd.config import Leaf, to_dict
from pose2rgbd.config_cli import SCHEMA, config_data, config_from_args
from pose2rgbd.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parents[1]

# every command built on a config schema, with the arguments it requires
COMMANDS: dict[str, list[str]] = {
    "train": ["train", "--dataset", "d", "--out", "o"],
    "render bag": ["render", "bag", "--bag", "b", "--out", "o"],
    "render trajectory": ["render", "trajectory", "--trajectory", "t.csv", "--out", "o"],
    "record bag": ["record", "bag", "--bag", "b"],
    "convert bag": ["convert", "bag", "b", "--out", "o"],
    "convert video": ["convert", "video", "v.mp4", "--gps", "g.csv", "--out", "o"],
    "convert gps-odom": ["convert", "gps-odom", "b", "--report", "r"],
    "convert images": ["convert", "images", "t.json", "--out", "o"],
    "sim": ["sim", "--out", "o"],
    "experiments": ["experiments", "--out", "o"],
    "evaluate": ["evaluate", "--checkpoint", "c.pt", "--dataset", "d"],
}


def _parse(argv: list[str]) -> Any:
    return build_parser().parse_args(argv)


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, list):
        return ",".join(_text(x) for x in v)
    if isinstance(v, dict):  # a mapping field (e.g. train.groups) is given as YAML flow text
        return yaml.safe_dump(v, default_flow_style=True).strip()
    return str(v)


def _other(leaf: Leaf, choices: Any, limits: tuple[float, float] | None = None) -> Any:
    """A value of the leaf's type that differs from its default (within the key's range, ``limits``, if it has one)."""
    if choices:
        return next(c for c in choices if c != _text(leaf.default))
    tp, d = leaf.type, leaf.default
    if typing.get_origin(tp) in (typing.Union, type(int | None)):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        return not d
    lo, hi = limits or (-math.inf, math.inf)
    if tp is int:
        return next(v for v in (d + 3, d - 3, d + 1, d - 1) if lo <= v <= hi)
    if tp is float:
        d = d or 0.0
        return next(v for v in (d + 0.25, d - 0.25, (lo + d) / 2, (d + hi) / 2) if lo <= v <= hi and v != d)
    if typing.get_origin(tp) in (list, tuple):
        inner = typing.get_args(tp)[0]
        return {int: [7, 8, 9], float: [1.5, -2.0, 3.0], str: ["a", "b"]}[inner]
    if typing.get_origin(tp) is dict:
        return {"model": {"lr": 0.5}}
    return f"{d}x"


def _dig(d: dict, key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_leaf_has_its_dotted_flag_and_round_trips(command: str) -> None:
    base = COMMANDS[command]
    args = _parse(base)
    schema = getattr(args, SCHEMA)
    assert schema.leaves, command
    default = config_from_args(args)
    # 1. each key's flag, given its default as text, rebuilds the default config (parse + coercion + validation)
    argv = [*base, *(f"--{key}={_text(leaf.default)}" for key, leaf in schema.leaves.items())]
    assert _as_dict(config_from_args(_parse(argv))) == _as_dict(default)
    # 2. each key's flag carries a changed value to that key (types parsed from the text)
    parser = build_parser()
    parser.parse_args(base)  # adds the generated flags to the command's parser
    sub = _subparser(parser, base)
    expected = {
        key: _other(leaf, sub._option_string_actions[f"--{key}"].choices, schema.ranges.get(key))
        for key, leaf in schema.leaves.items()
    }
    data = config_data(_parse([*base, *(f"--{key}={_text(v)}" for key, v in expected.items())]))
    for key, v in expected.items():
        assert _dig(data, key) == v, key


def _as_dict(cfg: Any) -> Any:
    return {k: to_dict(v) for k, v in cfg.items()} if isinstance(cfg, dict) else to_dict(cfg)


def _subparser(parser: Any, argv: list[str]) -> Any:
    """The (populated) parser of the command named by the leading words of ``argv``."""
    p = parser
    for word in argv:
        if word.startswith("-"):
            break
        subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs or word not in subs[0].choices:
            break
        p = subs[0].choices[word]
    return p


def test_set_with_a_misspelt_key_names_the_closest_keys(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse([*COMMANDS["render bag"], "--set", "engine.chekpoint=m.pt"])
    with pytest.raises(ConfigError, match=r"unknown key 'engine\.chekpoint'; did you mean engine\.checkpoint"):
        config_from_args(args)
    args = _parse([*COMMANDS["train"], "--set", "train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"did you mean train\.lr\b"):
        config_from_args(args)
    # through main: a message and exit code 2, no traceback
    rc = main([*COMMANDS["record bag"], "--set", "sync.polcy=approximate"])
    err = capsys.readouterr().err
    assert rc == 2 and "sync.policy" in err and "Traceback" not in err


def test_wrong_type_names_the_key_and_the_expected_type() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr.*expected a number, got 'fast'"):
        config_from_args(_parse([*COMMANDS["train"], "--set", "train.lr=fast"]))
    with pytest.raises(ConfigError, match=r"--train\.epochs \(train\.epochs\): expected an integer, got '2\.5'"):
        config_from_args(_parse([*COMMANDS["train"], "--train.epochs", "2.5"]))
    with pytest.raises(ConfigError, match=r"--lr \(train\.lr\): expected a number"):
        config_from_args(_parse([*COMMANDS["train"], "--lr", "x"]))
    with pytest.raises(ConfigError, match=r"publish\.rgb.*expected true or false"):
        config_from_args(_parse([*COMMANDS["render bag"], "--publish.rgb", "maybe"]))
    # and what the key is for, from its help: a WIDTHxHEIGHT for the side of a square image says so
    with pytest.raises(ConfigError, match=r"got '100x50' \(model\.size: square output resolution"):
        config_from_args(_parse([*COMMANDS["train"], "--set", "model.size=100x50"]))
    # validation by the config class itself (its __post_init__, run by construction)
    with pytest.raises(ConfigError, match=r"model\.size 100 must be a power of two"):
        config_from_args(_parse([*COMMANDS["train"], "--size", "100"]))


def test_precedence_file_then_flags_and_set_in_command_line_order(tmp_path: Path) -> None:
    f = tmp_path / "train.yaml"
    f.write_text("model:\n  preset: base\ntrain:\n  lr: 0.5\n  epochs: 7\n")
    base = [*COMMANDS["train"], "--config", str(f)]
    cfg = config_from_args(_parse(base))
    assert (cfg["train"].lr, cfg["train"].epochs, cfg["model"].preset) == (0.5, 7, "base")
    cfg = config_from_args(_parse([*base, "--lr", "0.2"]))
    assert cfg["train"].lr == 0.2 and cfg["train"].epochs == 7  # file keys not overridden stay
    cfg = config_from_args(_parse([*base, "--lr", "0.2", "--set", "train.lr=0.3"]))
    assert cfg["train"].lr == 0.3
    cfg = config_from_args(_parse([*base, "--set", "train.lr=0.3", "--train.lr", "0.2"]))
    assert cfg["train"].lr == 0.2
    # --config after the flags still ranks below them
    cfg = config_from_args(_parse([*COMMANDS["train"], "--lr", "0.2", "--config", str(f)]))
    assert cfg["train"].lr == 0.2 and cfg["train"].epochs == 7


def test_a_ros_params_file_configures_the_record_command() -> None:
    cfg = config_from_args(_parse([*COMMANDS["record bag"], "--config", str(REPO / "config" / "record.yaml")]))
    assert cfg.mount.source == "auto" and cfg.datum == "" and cfg.size == ""
    cfg = config_from_args(_parse([*COMMANDS["record bag"], "--config", str(REPO / "config" / "record.yaml"),
                                   "--datum", "44.43,26.1,80", "--size", "320x240"]))  # fmt: skip
    assert cfg.datum_obj().lat_deg == 44.43 and cfg.size == "320x240"


def test_misspelt_key_in_a_config_file_suggests_the_valid_one(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("engine:\n  chekpoint: m.pt\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['chekpoint'\]; did you mean checkpoint"):
        config_from_args(_parse([*COMMANDS["render bag"], "--config", str(f)]))


@pytest.mark.parametrize(
    ("command", "alias_argv", "dotted_argv"),
    [
        ("train", ["--lr", "0.2", "--size", "64", "--no-progress", "--batch-size", "4"],
         ["--train.lr", "0.2", "--model.size", "64", "--train.progress", "false", "--train.batch_size", "4"]),
        ("render bag", ["--checkpoint", "m.pt", "--rate-hz", "5", "--pose-topic", "/p", "--precision", "fp32"],
         ["--engine.checkpoint", "m.pt", "--rate_hz", "5", "--topics.pose", "/p", "--engine.precision", "fp32"]),
        ("render trajectory", ["--checkpoint", "m.pt", "--threads", "1"],
         ["--engine.checkpoint", "m.pt", "--engine.threads", "1"]),
        ("record bag", ["--out", "ds", "--info-topic", "/ci", "--mount", "config", "--max-gap", "0.2",
                        "--mount-rpy", "0,30,0", "--mount-xyz", "0.1,0,0", "--jpg"],
         ["--output.dataset", "ds", "--topics.camera_info", "/ci", "--mount.source", "config",
          "--sync.max_gap_s", "0.2", "--mount.rpy_deg", "0,30,0", "--mount.translation", "[0.1, 0, 0]",
          "--output.rgb_encoding", "jpg"]),
        ("convert bag", ["--camera-info-topic", "/ci", "--mount-rpy", "0,30,0", "--no-estimate", "--jpg",
                         "--max-lag", "2", "--time-offset", "0.4"],
         ["--topics.camera_info", "/ci", "--mount.rpy_deg", "[0, 30, 0]", "--estimate_offset", "false",
          "--output.rgb_encoding", "jpg", "--sync.max_lag_s", "2", "--time_offset_s", "0.4"]),
        ("sim", ["--size", "32", "24", "--gps-noise", "1", "--no-compressed", "--rate", "24"],
         ["--width", "32", "--height", "24", "--gps_noise_h_m", "1", "--gps_noise_v_m", "1.6",
          "--compressed", "false", "--camera_rate_hz", "24"]),
        ("experiments", ["--splits", "route", "--tables", "1", "4", "--sim-stride", "5"],
         ["--splits", "route", "--tables", "1,4", "--sim_stride", "5"]),
        ("evaluate", ["--split", "route", "--max-frames", "7", "--no-baseline", "--rot-weight", "12.5",
                      "--fly-frames", "9", "--fps", "5", "--device", "cpu", "--allow-other-dataset", "--no-progress"],
         ["--split", "route", "--max_frames", "7", "--baseline", "false", "--rot_weight_m", "12.5",
          "--fly_frames", "9", "--fps", "5", "--device", "cpu", "--allow_other_dataset", "--progress=false"]),
    ],
)  # fmt: skip
def test_aliases_feed_the_same_keys(command: str, alias_argv: list[str], dotted_argv: list[str]) -> None:
    a = config_from_args(_parse([*COMMANDS[command], *alias_argv]))
    b = config_from_args(_parse([*COMMANDS[command], *dotted_argv]))
    assert _as_dict(a) == _as_dict(b)
    assert _as_dict(a) != _as_dict(config_from_args(_parse(COMMANDS[command])))


def test_every_alias_names_a_key_of_its_schema() -> None:
    from pose2rgbd.cli import convert, evaluate, experiments, record, render, sim

    tables = [(render.BAG_ALIASES, "render bag"),
              (render.engine_aliases(), "render trajectory"), (record.ALIASES, "record bag"),
              (convert.BAG_ALIASES, "convert bag"), (convert.COMMON_ALIASES, "convert video"),
              (sim.ALIASES, "sim"), (experiments.ALIASES, "experiments"),
              (evaluate.ALIASES, "evaluate"), (convert.IMAGES_ALIASES, "convert images")]  # fmt: skip
    for table, command in tables:
        schema = getattr(_parse(COMMANDS[command]), SCHEMA)
        for alias in table:
            assert alias.key is None or alias.key in schema.leaves, (command, alias)


def test_every_train_alias_names_a_key_of_a_method() -> None:
    """``train``'s model.* aliases are offered only for the methods whose config has the key (``--map`` for the
    hybrid): each must name a key of at least one method's schema, and be offered exactly there."""
    from pose2rgbd.cli import train
    from pose2rgbd.models.registry import family_names

    schemas = {m: getattr(_parse([*COMMANDS["train"], "--method", m]), SCHEMA) for m in family_names()}
    for alias in train.ALIASES:
        if alias.key is None:
            continue
        having = [m for m, sch in schemas.items() if alias.key in sch.leaves]
        assert having, alias
    assert "model.map" in schemas["hybrid"].leaves
    _parse([*COMMANDS["train"], "--method", "hybrid", "--map", "m"])  # offered to the hybrid
    with pytest.raises(SystemExit):
        _parse([*COMMANDS["train"], "--map", "m"])  # the default method has no map: no such flag


def _help(argv: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "pose2rgbd", *argv, "--help"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return " ".join(out.stdout.split())  # unwrapped


def test_record_and_convert_share_one_vocabulary() -> None:
    rec, conv = _help(["record", "bag"]), _help(["convert", "bag"])
    for text in (rec, conv):
        for flag in ("--datum LAT,LON,ALT", "--size WIDTHxHEIGHT", "--mount {", "--image-topic", "--camera-info-topic",
                     "--info-topic", "--gps-topic", "--odom-topic", "--mount.source"):  # fmt: skip
            assert flag in text, flag
        assert "first valid GPS fix" in text and "e.g. 640x480" in text
    for text in (rec, conv):
        for flag in ("--mount-rpy R,P,Y", "--mount-xyz X,Y,Z", "--jpg", "--mount.rpy_deg", "--mount.translation",
                     "--mount.base_frame", "--mount.camera_frame", "--topics.image", "--topics.camera_info",
                     "--topics.gps", "--topics.odom", "--output.rgb_encoding"):  # fmt: skip
            assert flag in text, flag
    # the same keys and formats in both configs
    import dataclasses

    from pose2rgbd.convert.config import ConvertConfig
    from pose2rgbd.geometry.mount import CameraMount
    from pose2rgbd.nodes.recorder import RecorderConfig

    assert type(RecorderConfig().mount) is type(ConvertConfig().mount) is CameraMount  # one mount section
    rec_topics = {f.name for f in dataclasses.fields(RecorderConfig().topics)}
    conv_topics = {f.name for f in dataclasses.fields(ConvertConfig().topics)}
    assert {"image", "camera_info", "gps", "odom"} <= rec_topics & conv_topics

    r = RecorderConfig(datum="44.43,26.1,80", size="320x240")
    c = ConvertConfig(datum="44.43,26.1,80", size="320x240")
    assert r.datum_obj() == c.datum_obj() and c.size_wh() == (320, 240)
    with pytest.raises(ConfigError, match="datum: expected 'lat,lon,alt'"):
        RecorderConfig(datum="44,26")
    with pytest.raises(ConfigError, match="datum: expected 'lat,lon,alt'"):
        ConvertConfig(datum="44,26")


def test_node_command_help_is_light() -> None:
    """`record bag --help` / `convert bag --help` / `render bag --help` do not import torch."""
    code = (
        "import sys, contextlib, io\n"
        "from pose2rgbd.cli.main import main\n"
        "for argv in (['record', 'bag', '-h'], ['convert', 'bag', '-h'], ['render', 'bag', '-h'],\n"
        "             ['localize', 'bag', '-h'], ['localize', 'images', '-h']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(','.join(sorted(m for m in ('torch', 'rclpy') if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == ""


def test_train_method_flag(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse([*COMMANDS["train"], "--method", "pose2rgbd", "--preset", "base"])
    assert config_from_args(args)["model"].preset == "base"
    with pytest.raises(ConfigError, match="unknown model kind 'nope'"):
        _parse([*COMMANDS["train"], "--method", "nope"])
    assert main([*COMMANDS["train"], "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "known kinds:" in err and "pose2rgbd" in err  # (kinds other tests registered may be listed too)


def test_mount_source_is_validated_by_both_configs() -> None:
    for command in ("convert bag", "record bag"):
        with pytest.raises(ConfigError, match=r"mount\.source must be one of \('auto', 'tf_static', 'config'\)"):
            config_from_args(_parse([*COMMANDS[command], "--set", "mount.source=tf"]))
    cfg = config_from_args(_parse([*COMMANDS["convert bag"], "--mount", "config", "--mount-rpy=0,-30,0"]))
    assert cfg.mount.source == "config" and cfg.mount.rpy_deg == [0.0, -30.0, 0.0]


# -- `pose2rgbd train --method <kind>` for a kind other than pose2rgbd --------------------------------------------
@dataclasses.dataclass
class ToyCliConfig:
    """A toy kind's config: no `preset`, `outputs` or `encoding` field."""

    size: int = 8
    hidden: int = 3
    scale: float = 1.0


class ToyCliModel(ToyRenderer):
    kind = "toy"


@pytest.fixture
def toy_kind() -> Any:
    from pose2rgbd.models.registry import ModelFamily, register_family, unregister_family

    fam = ModelFamily(
        kind="toy", config_cls=ToyCliConfig, build=ToyCliModel, engine="render",
        presets={"small": {"hidden": 2}, "wide": {"hidden": 6, "scale": 0.5}}, default_preset="small",
        train=lambda: toy_recipe(ToyCliModel),
    )  # fmt: skip
    register_family(fam)
    yield fam
    unregister_family("toy")


def test_train_cli_parses_the_chosen_kinds_schema_with_its_presets(toy_kind: Any, tmp_path: Path) -> None:
    toy = [*COMMANDS["train"], "--method", "toy"]
    # the default preset is the base (hidden 2, not the class default 3); --preset picks another one
    assert to_dict(config_from_args(_parse(toy))["model"]) == {"size": 8, "hidden": 2, "scale": 1.0}
    assert to_dict(config_from_args(_parse([*toy, "--preset", "wide"]))["model"]) == {
        "size": 8, "hidden": 6, "scale": 0.5,
    }  # fmt: skip
    # a config file, then flags / --set override the preset's values
    f = tmp_path / "toy.yaml"
    f.write_text("model:\n  scale: 0.75\n  size: 16\n")
    cfg = config_from_args(_parse([*toy, "--preset", "wide", "--config", str(f), "--size", "32"]))
    assert to_dict(cfg["model"]) == {"size": 32, "hidden": 6, "scale": 0.75}
    assert type(cfg["model"]) is ToyCliConfig  # the kind's own class, with the preset as its defaults
    # Pose2RGBD-only short spellings are not offered for a kind without those keys
    with pytest.raises(SystemExit):
        _parse([*toy, "--outputs", "rgb"])
    with pytest.raises(ConfigError, match=r"unknown toy preset 'huge'; choose one of \['small', 'wide'\]"):
        _parse([*toy, "--preset", "huge"])
    # pose2rgbd: --preset is the family preset, and model.preset (a field there) still works
    p2 = config_from_args(_parse([*COMMANDS["train"], "--preset", "base"]))["model"]
    assert p2.preset == "base" and p2.outputs == "rgbd"
    assert config_from_args(_parse([*COMMANDS["train"], "--set", "model.preset=slice32"]))["model"].preset == "slice32"
    assert config_from_args(_parse(COMMANDS["train"]))["model"].preset == "slice10"  # the default preset
    # the hybrid's default is the CPU-serving fill (8 channels, 3 levels), whose pretrained weights ship
    hy = config_from_args(_parse([*COMMANDS["train"], "--method", "hybrid"]))["model"]
    assert (hy.preset, hy.fill_channels, hy.fill_levels, hy.fill_init) == ("hybrid-fast", 8, 3, "pretrained")
    wide = config_from_args(_parse([*COMMANDS["train"], "--method", "hybrid", "--preset", "hybrid"]))["model"]
    assert (wide.preset, wide.fill_channels, wide.fill_levels) == ("hybrid", 16, 2)


@pytest.mark.parametrize(
    ("kind", "trained", "command"),
    [
        ("hybrid", ["--preset", "hybrid", "--set", "model.neighbours=3"], []),  # a run of the earlier default
        ("hybrid", ["--preset", "hybrid"], ["--set", "model.fill_channels=12"]),  # the command sets a preset key
        ("hybrid", ["--preset", "hybrid-fast", "--set", "model.trunk_channels=8,8,8,8,8,8"], ["--preset", "hybrid"]),
        ("pose2rgbd", ["--preset", "base+"], ["--preset", "slice10+"]),  # a preset of a preset and switches
        ("pose2rgbd", ["--preset", "slice10"], ["--preset", "base+"]),
    ],
)
def test_the_resume_hint_given_to_the_command_resumes(
    kind: str, trained: list[str], command: list[str], tmp_path: Path
) -> None:
    """The flags a refused resume names, added to the same command, give the checkpoint's model settings."""
    import shlex

    from pose2rgbd.models import get_family
    from pose2rgbd.models.checkpoint import LoadedCheckpoint
    from pose2rgbd.training.run_folder import check_resume

    def model(extra: list[str]) -> Any:
        return config_from_args(_parse([*COMMANDS["train"], "--method", kind, *extra]))["model"]

    fam, have = get_family(kind), model(trained)
    ck = LoadedCheckpoint(path=None, model=None, family=fam, model_config=have, dataset_fingerprint="f", camera=None)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="the model differs") as e:
        check_resume(tmp_path / "last.pt", ck, fam, model(command), None, "f")  # type: ignore[arg-type]
    assert "leave out the flags that change it" in str(e.value)  # --resume takes the run's own settings
    hint = str(e.value).rsplit("or give the checkpoint's (", 1)[1].split("); for another model", 1)[0]
    assert to_dict(model([*command, *shlex.split(hint)])) == to_dict(have), hint
    if kind == "hybrid" and not command:
        assert hint == "--preset hybrid --set model.neighbours=3"  # the preset, not each of its settings


def test_help_lists_the_known_kinds_and_the_presets_of_the_chosen_one(
    toy_kind: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _parse(["train", "--method", "toy", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    kinds = out.split("one of: ", 1)[1].split(" (default", 1)[0].split(", ")
    assert {"pose2rgbd", "posegan", "selfsup-depth", "toy"} <= set(kinds)  # every kind with a training recipe
    assert "ground-plane" not in kinds  # no recipe: not trainable
    assert "a preset of --method toy: small | wide (default: small)" in out
    assert "--model.hidden" in out and "(default: 2)" in out and "--model.preset" not in out


def test_train_cli_trains_a_toy_kind(toy_kind: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pose2rgbd.experiments.toy import make_toy_dataset
    from pose2rgbd.models import load_checkpoint

    ds = make_toy_dataset(tmp_path / "ds", n_survey=8, n_route=2, size=16)
    out = tmp_path / "run"
    argv = ["train", "--method", "toy", "--preset", "wide", "--dataset", str(ds), "--out", str(out),
            "--set", "model.scale=0.25", "--epochs", "1", "--batch-size", "4", "--train.max_steps", "2",
            "--device", "cpu", "--amp", "off", "--no-progress", "--no-tensorboard",
            "--cache-root", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained toy (wide) 8x8" in printed and "2 steps" in printed
    ck = load_checkpoint(out / "last.pt", expect_kind="toy")
    assert type(ck.model_config) is ToyCliConfig and to_dict(ck.model_config) == {"size": 8, "hidden": 6, "scale": 0.25}
    assert ck.step == 2 and yaml.safe_load((out / "config.yaml").read_text())["method"] == "toy"


def test_a_kinds_training_values_are_the_base_its_config_file_and_flags_override(tmp_path: Path) -> None:
    """The hybrid trains at lr 1e-3 unless told otherwise (its family's train_defaults); pose2rgbd keeps 0.01."""
    hybrid = [*COMMANDS["train"], "--method", "hybrid"]
    assert config_from_args(_parse(hybrid))["train"].lr == pytest.approx(1e-3)
    assert config_from_args(_parse(COMMANDS["train"]))["train"].lr == pytest.approx(0.01)
    assert config_from_args(_parse([*hybrid, "--lr", "0.005"]))["train"].lr == pytest.approx(0.005)
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.002\n")
    assert config_from_args(_parse([*hybrid, "--config", str(f)]))["train"].lr == pytest.approx(0.002)
    assert config_from_args(_parse([*hybrid, "--set", "train.lr=0.02"]))["train"].lr == pytest.approx(0.02)


def test_train_quick_takes_a_kinds_training_values_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Python entry the demo uses trains the hybrid at its own lr, as the command does; lr= still wins."""
    from pose2rgbd.training import quick

    seen: list[Any] = []

    class Result:
        checkpoint = tmp_path / "last.pt"

    monkeypatch.setattr(quick, "train", lambda kind, ds, out, mc, tc, **kw: seen.append((kind, tc)) or Result())
    quick.train_quick(tmp_path, tmp_path / "a", kind="hybrid", progress=False)
    quick.train_quick(tmp_path, tmp_path / "b", kind="hybrid", lr=0.004, progress=False)
    quick.train_quick(tmp_path, tmp_path / "c", kind="pose2rgbd", preset="base", progress=False)
    assert [tc.lr for _, tc in seen] == pytest.approx([1e-3, 0.004, 0.01])
    assert all(tc.epochs == 200 and tc.val_every == 5 for _, tc in seen)


def test_resume_without_method_continues_the_runs_kind(tmp_path: Path) -> None:
    """`train --resume` without --method takes the kind the run was started with (its config.yaml): its schema,
    presets and training values, not the default kind's."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("method: hybrid\nmodel: {}\ntrain:\n  lr: 0.001\n")
    argv = ["train", "--dataset", "d", "--out", str(out), "--resume"]
    cfg = config_from_args(_parse(argv))
    assert cfg["model"].preset == "hybrid-fast" and cfg["train"].lr == pytest.approx(1e-3)
    cfg = config_from_args(_parse(argv[:-1]))  # a new run: the default kind
    assert cfg["model"].preset == "slice10" and cfg["train"].lr == pytest.approx(0.01)


def test_a_resumed_run_at_another_lr_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run started at the trainer's 0.01 and resumed with the hybrid's own 1e-3 says which it continues at."""
    from pose2rgbd.cli.train import _note_changed_lr

    _note_changed_lr(tmp_path, 1e-3)  # no config.yaml: nothing to compare with
    (tmp_path / "config.yaml").write_text("method: hybrid\ntrain:\n  lr: 0.01\n")
    _note_changed_lr(tmp_path, 0.01)
    assert capsys.readouterr().out == ""
    _note_changed_lr(tmp_path, 1e-3)
    assert "started at lr 0.01; it continues at lr 0.001" in capsys.readouterr().out


@pytest.mark.parametrize("method", [None, "pose2rgbd"])
def test_train_without_method_on_metric_depth_points_to_the_hybrid(
    method: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=8, n_route=2, size=16)  # metric depth
    argv = ["train", "--dataset", str(ds), "--out", str(tmp_path / "run"), "--size", "64", "--epochs", "1",
            "--batch-size", "4", "--train.max_steps", "1", "--device", "cpu", "--amp", "off", "--no-progress",
            "--no-tensorboard", "--cache-root", str(tmp_path / "cache")]  # fmt: skip
    argv += ["--method", method] if method else []
    assert main(argv) == 0
    out = capsys.readouterr().out
    hinted = "metric depth: --method hybrid" in out
    assert hinted == (method is None), out  # a user who chose the paper's models is not told again
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"] == "pose2rgbd"


def test_moved_depth_keys_name_their_new_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'train\.depth_max' is now 'model\.depth_max'"):
        _parse([*COMMANDS["train"], "--set", "train.depth_max=50"])
    with pytest.raises(ConfigError, match=r"--train\.depth_max_percentile: 'train\.depth_max_percentile' is now"):
        _parse([*COMMANDS["train"], "--train.depth_max_percentile", "97"])
    f = tmp_path / "old.yaml"
    f.write_text("train:\n  depth_max: 50\n")
    with pytest.raises(ConfigError, match=r"old\.yaml: 'train\.depth_max' is now 'model\.depth_max'"):
        config_from_args(_parse([*COMMANDS["train"], "--config", str(f)]))  # refused as the file is read
    cfg = config_from_args(
        _parse([*COMMANDS["train"], "--model.depth_max", "50", "--set", "model.depth_max_percentile=97"])
    )
    assert (cfg["model"].depth_max, cfg["model"].depth_max_percentile) == (50.0, 97.0)
