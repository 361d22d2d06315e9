"""The demo reuses a finished training stage (same settings) and retrains otherwise."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pose2rgbd.cli import demo


def test_training_stage_reused_only_when_finished_with_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pose2rgbd.methods.pose2rgbd.recipe as recipe

    calls: list[str] = []

    def fake_train_quick(dataset: Path, run_dir: Path, **kw: object) -> Path:
        calls.append(str(kw["preset"]))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "best.pt").write_bytes(b"weights")
        return run_dir / "best.pt"

    monkeypatch.setattr(recipe, "train_quick", fake_train_quick)

    def run(preset: str = "base", overwrite: bool = False) -> Path:
        args = argparse.Namespace(
            out=tmp_path, preset=preset, model_size=64, train_minutes=0.1, seed=0, overwrite=overwrite
        )
        return demo._train_stage(args, {"dataset": tmp_path / "ds"})["checkpoint"]

    assert run() == tmp_path / "train" / "best.pt" and calls == ["base"]
    assert run() == tmp_path / "train" / "best.pt" and calls == ["base"]  # finished, same settings: reused
    run(preset="slice10")
    assert calls == ["base", "slice10"]  # other settings: trained again
    run(preset="slice10", overwrite=True)
    assert calls == ["base", "slice10", "slice10"]
    (tmp_path / "train" / "demo-trained.txt").unlink()  # an interrupted stage leaves no marker: trained again
    run(preset="slice10")
    assert len(calls) == 4
