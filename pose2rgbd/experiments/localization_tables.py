"""The Markdown report of ``pose2rgbd experiments localization``: the Table 1 and Table 2 analogs per split
(each row averaged over the seeds), the refinement line, the localization targets met or not, the structure
localizer's table (:func:`pose2rgbd.experiments.structure_localization.structure_markdown`) and the figures'
names; and the names of the rows (:func:`label`).

``cfg`` is the run's :class:`~pose2rgbd.experiments.localization.LocalizationExperimentsConfig`, ``data`` the
``localization.json`` that :func:`~pose2rgbd.experiments.localization.run_localization_experiments` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LABELS = {
    "posegan": "PoseGAN",
    "configA": "PoseGAN-configA",
    "configB": "PoseGAN-configB",
    "configC": "PoseGAN-configC",
}
RETRIEVAL = "retrieval"


def label(preset: str) -> str:
    return LABELS.get(preset, preset)


# ----------------------------------------------------------------------------------------------------- tables
def _mean_rows(rows: list[dict[str, Any]], part: str) -> dict[str, Any]:
    """One row averaged over seeds (each statistic's mean over the seeds' values)."""
    parts = [r[part] for r in rows if part in r]
    out: dict[str, Any] = {"name": rows[0]["name"], "frames": int(np.mean([p["frames"] for p in parts]))}
    for q in ("position_m", "orientation_deg"):
        out[q] = {s: float(np.mean([p[q][s] for p in parts])) for s in ("median", "mean", "p90")}
    out["ms_per_frame"] = float(np.mean([p["ms_per_frame"] for p in parts]))
    out["seeds"] = len(parts)
    return out


def _order(cfg: Any) -> list[str]:
    return [*cfg.presets, RETRIEVAL]


def results_markdown(cfg: Any, data: dict[str, Any]) -> str:
    from pose2rgbd.evaluation.localization import summary_markdown

    m = data["machine"]
    md = ["# Localization experiments (PoseGAN Tables 1 and 2 analogs on the synthetic world)\n"]
    md.append(
        f"Machine: {m['cpu']} ({m.get('cpu_flags', '')}), {m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads). Total wall time {data['wall_s'] / 60:.1f} min.\n"
    )
    md.append(f"Command: `{data['command']}`\n")
    budget = ", ".join(
        b for b in (f"{cfg.steps} steps" if cfg.steps else "", f"{cfg.minutes:g} min" if cfg.minutes else "") if b
    )
    md.append(
        f"Data: {data['dataset']}. Model kind `{cfg.kind}` at {cfg.size}x{cfg.size}, batch {cfg.batch_size}, "
        f"training budget per run: {budget or 'none'} (whichever first), seeds {cfg.seeds}. Errors: position = "
        "distance of the camera centres (m), orientation = geodesic angle (deg); median as in the paper, plus "
        "mean and 90th percentile. Every row of a table is measured on the same test frames.\n"
    )
    for split in cfg.splits:
        runs = [r for r in data["runs"] if r["split"] == split]
        if not runs:
            continue
        by: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            by.setdefault(r["preset"], []).append(r)
        desc = runs[0].get("split_description", split)
        md.append(f"\n## Table 1 analog -- {split} split\n")
        md.append(f"{desc}: {runs[0]['train_frames']} training / {runs[0]['test_frames']} test frames.\n\n")
        rows = [_mean_rows(by[p], "color") for p in _order(cfg) if p in by]
        md.append(summary_markdown(rows))
        trained = [r for p in cfg.presets for r in by.get(p, [])]
        if trained:
            steps = sorted({int(r["steps"]) for r in trained})
            mins = [r["train_s"] / 60 for r in trained]
            md.append(f"\nTraining: {min(steps)}-{max(steps)} steps per run, {min(mins):.1f}-{max(mins):.1f} min.\n")
        ref = [r["refine"] for r in by.get(cfg.presets[0], []) if r.get("refine")]
        if ref:
            rf = ref[0]
            b, a = rf["before"], rf["after"]
            md.append(
                f"\nRefinement ({label(cfg.presets[0])} + render-and-compare, {rf['frames']} test frames, renderer "
                f"`{Path(rf['renderer']).name}`): median position error {b['position_m']['median']:.2f} -> "
                f"{a['position_m']['median']:.2f} m, orientation {b['orientation_deg']['median']:.2f} -> "
                f"{a['orientation_deg']['median']:.2f} deg (mean {b['position_m']['mean']:.2f} -> "
                f"{a['position_m']['mean']:.2f} m; improved on {100 * rf['improved_fraction']:.0f} % of the frames); "
                f"{rf['seconds_per_frame']['median']:.2f} s per frame (median), "
                f"{rf['iterations']['median']:.0f} iterations, residual {rf['residual_before']['median']:.3f} -> "
                f"{rf['residual_after']['median']:.3f}.\n"
            )
        md.append(_targets(cfg, by))
        failed = [r for r in data.get("structure", []) if r["split"] == split and "error" in r]
        for r in failed:
            md.append(f"\nStructure localizer (seed {r['seed']}): not evaluated -- {r['error']}\n")
        st = [r for r in data.get("structure", []) if r["split"] == split and "error" not in r]
        if st:
            from pose2rgbd.experiments.structure_localization import structure_markdown

            md.append(structure_markdown(st))
        if cfg.grayscale:
            md.append(f"\n## Table 2 analog -- grayscale test images, {split} split\n\n")
            grows = []
            for p in _order(cfg):
                if p in by and all("gray" in r for r in by[p]):
                    g = _mean_rows(by[p], "gray")
                    c = _mean_rows(by[p], "color")
                    g["name"] = (
                        f"{g['name']} (delta {g['position_m']['median'] - c['position_m']['median']:+.2f} m / "
                        f"{g['orientation_deg']['median'] - c['orientation_deg']['median']:+.2f} deg)"
                    )
                    grows.append(g)
            md.append(summary_markdown(grows))
        figs = data.get("figures", {}).get(split, {})
        if figs:
            md.append("\nFigures: " + ", ".join(f"{k} `{Path(v).name}`" for k, v in figs.items()) + ".\n")
    return "\n".join(md)


def _targets(cfg: Any, by: dict[str, list[dict[str, Any]]]) -> str:
    """The localization targets (PoseGAN below configA and retrieval, refinement halving the error), checked on
    this split: met or not met, with the numbers."""
    main = cfg.presets[0]
    if main not in by:
        return ""
    mm = _mean_rows(by[main], "color")
    lines = []

    def cmp(other: str, need: float) -> None:
        if other not in by:
            return
        o = _mean_rows(by[other], "color")
        for q, unit in (("position_m", "m"), ("orientation_deg", "deg")):
            a, b = mm[q]["median"], o[q]["median"]
            red = 1.0 - a / b if b > 0 else float("nan")
            ok = red >= need
            lines.append(
                f"{label(main)} median {q.split('_')[0]} {a:.2f} {unit} vs {o['name']} {b:.2f} {unit}: "
                f"{abs(100 * red):.0f} % {'lower' if red >= 0 else 'higher'} (target: at least "
                f"{100 * need:.0f} % lower): {'met' if ok else 'NOT met'}"
            )

    if len(cfg.presets) > 1 and "configA" in cfg.presets:
        cmp("configA", 0.30)
    cmp(RETRIEVAL, 0.0)
    ref = [r["refine"] for r in by[main] if r.get("refine")]
    if ref:
        b, a = ref[0]["before"]["position_m"]["median"], ref[0]["after"]["position_m"]["median"]
        ok = a <= 0.5 * b
        lines.append(f"refinement: median position error {b:.2f} -> {a:.2f} m (target: at most half): "
                     f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return "\nTargets: " + "; ".join(lines) + ".\n" if lines else ""
