"""``pose2rgbd experiments``, figures: the validation curves of the runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pose2rgbd.experiments.plan import ExperimentsConfig


def _validation_figures(out: Path, cfg: ExperimentsConfig, results: list[dict[str, Any]]) -> None:
    """``OUT/validation_<split>.png``: every run's validation loss against the step (seeds of one setting share
    a colour), where runs validated (early stopping): it shows whether the curves had flattened."""
    from pose2rgbd.evaluation.plots import validation_curves

    for split in cfg.splits:
        runs = []
        for r in results:
            spec = r["spec"]
            if spec["split"] != split:
                continue
            over = "".join(f" {k}={v}" for k, v in (spec.get("overrides") or {}).items())
            enc = "quat" if spec["encoding"] == "6dof-quat" else "euler"
            label = f"{spec['preset']}{over} {spec['outputs']} {enc} e{spec['epochs']} lr {spec['lr']:g}"
            if r.get("name"):
                runs.append((label, out / "runs" / split / r["name"] / "log.csv"))
        validation_curves(runs, out / f"validation_{split}.png", title=f"validation loss, {split} split")
