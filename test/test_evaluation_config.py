"""Evaluation settings: EvaluateConfig validation, keyword / config precedence of evaluate(), and the CLI
building the config through the one override path (old flag spellings included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.evaluation import EvaluateConfig, evaluate_config


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"split": "test"}, r"split 'test' is not one of random \| route \| blocks \| every-nth \| all"),
        ({"rot_weight_m": 0.0}, "rot_weight_m must be a positive number"),
        ({"rot_weight_m": float("nan")}, "rot_weight_m must be a positive number"),
        ({"max_frames": -1}, "max_frames must be >= 0"),
        ({"grid_rows": 0}, "grid_rows must be >= 1"),
        ({"fly_frames": 0}, "fly_frames must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"fps": 0.0}, "fps must be a positive frame rate"),
        ({"device": " "}, "device is empty"),
    ],
)
def test_invalid_settings_name_the_key(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EvaluateConfig(**kw)


def test_defaults_are_the_former_keyword_defaults() -> None:
    c = EvaluateConfig()
    assert (c.split, c.baseline, c.rot_weight_m, c.max_frames, c.grid_rows, c.fly_frames, c.fps, c.batch_size,
            c.device, c.allow_other_dataset, c.progress) == (
        None, True, None, 0, 4, 120, 10.0, 16, "auto", False, True)  # fmt: skip


def test_keywords_override_the_config_and_a_positional_split_wins() -> None:
    base = EvaluateConfig(split="route", max_frames=10, fps=5.0)
    c = evaluate_config(base, max_frames=3, baseline=False)
    assert (c.split, c.max_frames, c.fps, c.baseline) == ("route", 3, 5.0, False)
    assert base.max_frames == 10  # the given config is not modified
    assert evaluate_config(base, split="all").split == "all"
    assert evaluate_config(base, split=None).split == "route"  # None: keep the config's
    assert evaluate_config(fps=30).fps == 30.0 and isinstance(evaluate_config(fps=30).fps, float)
    with pytest.raises(ConfigError, match="did you mean fly_frames"):
        evaluate_config(fly_frame=3)
    with pytest.raises(ConfigError, match="max_frames must be >= 0"):
        evaluate_config(base, max_frames=-2)


def test_cli_builds_the_config_and_passes_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import pose2rgbd.evaluation as ev
    from pose2rgbd.cli.main import main

    seen: dict[str, Any] = {}

    def fake_evaluate(checkpoint: Any, dataset: Any, split: Any = None, **kw: Any) -> Any:
        seen.update(kw, checkpoint=checkpoint, dataset=dataset, split=split)
        (tmp_path / "metrics.md").write_text("| table |\n")
        return ev.EvaluationResult(tmp_path, {}, {"grid": tmp_path / "grid.png"}, "route", 1, "m")

    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text("grid_rows: 6\nfps: 4\n")
    rc = main(["evaluate", "--checkpoint", "c.pt", "--dataset", "d", "--out", str(tmp_path / "o"),
               "--config", str(cfg_file), "--split", "route", "--no-baseline", "--rot-weight", "20",
               "--max-frames", "8", "--fly-frames", "5", "--fps", "12", "--device", "cpu", "--allow-other-dataset",
               "--no-progress", "--set", "batch_size=2", "--cache-root", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    assert seen["checkpoint"] == Path("c.pt") and seen["dataset"] == Path("d") and seen["split"] is None
    assert seen["out_dir"] == tmp_path / "o" and seen["cache_root"] == tmp_path / "cache"
    assert seen["config"] == EvaluateConfig(split="route", baseline=False, rot_weight_m=20.0, max_frames=8,
                                            grid_rows=6, fly_frames=5, fps=12.0, batch_size=2, device="cpu",
                                            allow_other_dataset=True, progress=False)  # fmt: skip
    out = capsys.readouterr().out
    assert "| table |" in out and "grid" in out
    # defaults when no flag is given
    assert main(["evaluate", "--checkpoint", "c.pt", "--dataset", "d"]) == 0
    assert seen["config"] == EvaluateConfig() and seen["out_dir"] is None
    # a bad value is a message naming the key, not a traceback
    assert main(["evaluate", "--checkpoint", "c.pt", "--dataset", "d", "--fly-frames", "0"]) == 2
    assert "fly_frames must be >= 1" in capsys.readouterr().err


def test_help_names_every_baseline_evaluate_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """evaluate runs the nearest-pose, reprojection and fused-geometry baselines (the last two where the dataset has
    depth); its help says so, and that --no-baseline skips all three."""
    from pose2rgbd.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for what in ("nearest-pose baseline", "reprojection baseline", "fused-geometry baseline",
                 "--no-baseline skip all three baselines", "OUT/depth_sigma.png"):  # fmt: skip
        assert what in out, what
