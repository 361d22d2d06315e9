"""The demo reuses a finished training stage (same settings) and retrains otherwise."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pose2rgbd.cli import demo


def test_training_stage_reused_only_when_finished_with_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pose2rgbd.training.quick as quick

    calls: list[str] = []

    def fake_train_quick(dataset: Path, run_dir: Path, **kw: object) -> Path:
        calls.append(f"{kw['kind']}/{kw['preset']}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "best.pt").write_bytes(b"weights")
        return run_dir / "best.pt"

    monkeypatch.setattr(quick, "train_quick", fake_train_quick)

    def run(preset: str | None = None, overwrite: bool = False, method: str = demo.DEMO_METHOD) -> Path:
        args = argparse.Namespace(
            out=tmp_path, method=method, preset=preset, model_size=64, train_minutes=0.1, seed=0, overwrite=overwrite
        )
        return demo._train_stage(args, {"dataset": tmp_path / "ds"})["checkpoint"]

    d = f"{demo.DEMO_METHOD}/{demo.DEMO_PRESET}"
    assert run() == tmp_path / "train" / "best.pt" and calls == [d]  # no --preset: the demo's preset
    assert run() == tmp_path / "train" / "best.pt" and calls == [d]  # finished, same settings: reused
    run(preset="slice10", method="pose2rgbd")
    assert calls == [d, "pose2rgbd/slice10"]  # other settings: trained again
    run(preset="slice10", method="pose2rgbd", overwrite=True)
    assert calls == [d, "pose2rgbd/slice10", "pose2rgbd/slice10"]
    (tmp_path / "train" / "demo-trained.txt").unlink()  # an interrupted stage leaves no marker: trained again
    run(preset="slice10", method="pose2rgbd")
    assert len(calls) == 4


def test_quick_model_config_sets_the_fields_a_kind_has_and_refuses_non_renderers() -> None:
    from pose2rgbd.errors import ConfigError
    from pose2rgbd.training.quick import quick_model_config

    mc = quick_model_config("pose2rgbd", "slice10", size=64, outputs="depth", encoding="6dof-euler")
    assert (mc.size, mc.outputs, mc.encoding, mc.preset) == (64, "depth", "6dof-euler", "slice10")
    gp = quick_model_config("ground-plane", None, size=32)  # no outputs / encoding fields: left out
    assert gp.size == 32
    with pytest.raises(ConfigError, match="not a pose -> image model kind"):
        quick_model_config("toy-localizer", None, size=64)


def test_a_preset_of_another_kind_is_refused_before_the_simulation(tmp_path: Path) -> None:
    from pose2rgbd.errors import ConfigError

    args = argparse.Namespace(out=tmp_path / "d", method=demo.DEMO_METHOD, preset="slice10", model_size=64, size=64,
                              seed=0, train_minutes=0.1, overwrite=False)  # fmt: skip
    with pytest.raises(ConfigError, match=r"slice10.*--method pose2rgbd"):
        demo._run(args)
    assert not (tmp_path / "d").exists()  # nothing simulated, nothing written
