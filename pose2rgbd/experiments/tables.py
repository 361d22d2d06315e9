"""``pose2rgbd experiments``, tables: runs aggregated over seeds and written as docs-ready Markdown."""

from __future__ import annotations

import json
from typing import Any

from pose2rgbd.experiments.plan import (
    PAPER_LR,
    PAPER_TABLE1,
    PAPER_TABLE2,
    PRESET_LABEL,
    ExperimentsConfig,
    parse_variant,
)


def _fmt(v: Any, fmt: str) -> str:
    """A number, or ``(mean, std, n)`` of several seeds as ``mean ± std``; ``n/a`` for none / not finite."""
    import math

    if isinstance(v, tuple):
        mean, std, n = v
        if n > 1 and math.isfinite(mean):
            return f"{format(mean, fmt)} ± {format(std, fmt)}"
        v = mean
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _mean_std(values: list[Any]) -> tuple[float, float, int]:
    import math

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return (float("nan"), float("nan"), 0)
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return (m, sd, len(vals))


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs that differ only in their seed -> one row each: every metric of ``model``, ``baseline`` and
    ``reprojection`` as ``(mean, sample std, n)``, ``train_s`` and ``steps`` averaged, ``seeds`` listed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        spec = {k: v for k, v in r["spec"].items() if k != "seed"}
        groups.setdefault(json.dumps(spec, sort_keys=True, default=str), []).append(r)
    rows = []
    for rs in groups.values():
        row = dict(rs[0])
        row["spec"] = {k: v for k, v in rs[0]["spec"].items() if k != "seed"}
        row["seeds"] = [r["spec"].get("seed", 0) for r in rs]
        for part in ("model", "baseline", "reprojection"):
            keys = {k for r in rs for k in (r.get(part) or {})}
            row[part] = {k: _mean_std([(r.get(part) or {}).get(k) for r in rs]) for k in sorted(keys)}
        row["train_s"] = sum(float(r["train_s"]) for r in rs) / len(rs)
        row["steps"] = sum(int(r.get("steps", 0)) for r in rs) / len(rs)
        row["evaluated_step"] = sum(int(r.get("evaluated_step", r.get("steps", 0))) for r in rs) / len(rs)
        rows.append(row)
    return rows


def _steps(row: dict[str, Any]) -> str:
    """Optimization steps of a table row (mean over seeds); with the step of the evaluated checkpoint when
    validation selected one (``best.pt``) earlier than the last step."""
    steps = f"{row.get('steps', 0):.0f}"
    ev = row.get("evaluated_step")
    if row.get("evaluated") == "best.pt" and ev is not None and round(ev) != round(row.get("steps", 0)):
        steps += f" (best {ev:.0f})"
    return steps


def _table(rows: list[dict[str, Any]], first_cols: list[tuple[str, Any]], paper: dict[Any, Any], unit: str) -> str:
    cols = [c for c, _ in first_cols]
    head = (
        "| " + " | ".join(cols) + f" | RGB MAE (px) | depth MAE ({unit}) | PSNR (dB) | SSIM | AbsRel "
        f"| paper RGB (px) | paper depth (m) | steps | train (min) |\n"
        "|" + "---|" * len(cols) + "---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        m = r["model"]
        pk = tuple(f(r) for _, f in first_cols if f is not None)
        prgb, pdep = paper.get(pk[-2:] if len(pk) >= 2 else pk, (None, None))
        cells = [str(f(r)) if f is not None else "" for _, f in first_cols]
        lines.append(
            "| " + " | ".join(cells) + f" | {_fmt(m.get('rgb_mae_px'), '.2f')} | {_fmt(m.get('depth_mae'), '.2f')} "
            f"| {_fmt(m.get('rgb_psnr_db'), '.2f')} | {_fmt(m.get('rgb_ssim'), '.3f')} "
            f"| {_fmt(m.get('depth_absrel'), '.3f')} "
            f"| {_fmt(prgb, '.2f')} | {_fmt(pdep, '.2f')} | {_steps(r)} | {r['train_s'] / 60:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def _baseline_line(rows: list[dict[str, Any]], unit: str) -> str:
    b = next((r["baseline"] for r in rows if r["spec"]["outputs"] == "rgbd" and r.get("baseline")), None)
    if not b:
        return ""
    line = (
        f"\nNearest-pose baseline on the same test frames: RGB MAE {_fmt(b.get('rgb_mae_px'), '.2f')} px, "
        f"depth MAE {_fmt(b.get('depth_mae'), '.2f')} {unit}, PSNR {_fmt(b.get('rgb_psnr_db'), '.2f')} dB, "
        f"SSIM {_fmt(b.get('rgb_ssim'), '.3f')}, AbsRel {_fmt(b.get('depth_absrel'), '.3f')}.\n"
    )
    rp = next((r["reprojection"] for r in rows if r["spec"]["outputs"] == "rgbd" and r.get("reprojection")), None)
    if rp:
        k = rp.get("k")
        k_txt = _fmt(k[0] if isinstance(k, tuple) else k, ".0f")
        hole = rp.get("hole_fraction")
        hole_pct = (hole[0] * 100, hole[1] * 100, hole[2]) if isinstance(hole, tuple) else (hole or 0) * 100
        line += (
            f"Reprojection baseline ({k_txt} nearest training frames warped with their depth, z-buffered; holes "
            f"filled from the nearest frame, hole fraction {_fmt(hole_pct, '.1f')} %): RGB MAE "
            f"{_fmt(rp.get('rgb_mae_px'), '.2f')} px, depth MAE {_fmt(rp.get('depth_mae'), '.2f')} {unit}, PSNR "
            f"{_fmt(rp.get('rgb_psnr_db'), '.2f')} dB, SSIM {_fmt(rp.get('rgb_ssim'), '.3f')}, AbsRel "
            f"{_fmt(rp.get('depth_absrel'), '.3f')}.\n"
        )
    return line


def _geometry_table(cfg: ExperimentsConfig, rows: list[dict[str, Any]], unit: str) -> str:
    """Table g: one row per variant, then retrieval and reprojection on the same test frames."""
    head = (
        "| variant | preset + settings | seeds | RGB MAE (px) | depth MAE (" + unit + ") | PSNR (dB) | SSIM "
        "| AbsRel | RGB vs retrieval | depth vs retrieval | steps | train (min) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    import math

    def first(v: Any) -> Any:
        return v[0] if isinstance(v, tuple) else v

    def gain(m: Any, b: Any) -> str:
        m, b = first(m), first(b)
        if m is None or b is None or math.isnan(b) or math.isnan(m) or b == 0:
            return "n/a"
        return f"{(1 - m / b) * 100:+.0f} %"

    lines, base_row = [], None
    for v in cfg.geometry_variants:
        label, preset, over = parse_variant(v)
        r = next(
            (
                r
                for r in rows
                if r["spec"]["preset"] == preset
                and r["spec"]["outputs"] == "rgbd"
                and r["spec"]["encoding"] == "6dof-quat"
                and r["spec"]["epochs"] == cfg.epochs_table2
                and r["spec"]["lr"] == cfg.lr
                and r["spec"].get("overrides", {}) == dict(over)
            ),
            None,
        )
        if r is None:
            continue
        base_row = base_row or r
        m, b = r["model"], r.get("baseline") or {}
        settings = preset + "".join(f", {k}={val}" for k, val in over)
        lines.append(
            f"| {label} | {settings} | {len(r.get('seeds', [0]))} | {_fmt(m.get('rgb_mae_px'), '.2f')} "
            f"| {_fmt(m.get('depth_mae'), '.2f')} | {_fmt(m.get('rgb_psnr_db'), '.2f')} "
            f"| {_fmt(m.get('rgb_ssim'), '.3f')} | {_fmt(m.get('depth_absrel'), '.3f')} "
            f"| {gain(m.get('rgb_mae_px'), b.get('rgb_mae_px'))} | {gain(m.get('depth_mae'), b.get('depth_mae'))} "
            f"| {_steps(r)} | {r['train_s'] / 60:.1f} |"
        )
    if base_row is not None:
        for name, key in (("nearest-pose retrieval", "baseline"), ("reprojection", "reprojection")):
            m = base_row.get(key) or {}
            if m:
                lines.append(
                    f"| {name} | -- | -- | {_fmt(m.get('rgb_mae_px'), '.2f')} | {_fmt(m.get('depth_mae'), '.2f')} "
                    f"| {_fmt(m.get('rgb_psnr_db'), '.2f')} | {_fmt(m.get('rgb_ssim'), '.3f')} "
                    f"| {_fmt(m.get('depth_absrel'), '.3f')} | | | | |"
                )
    return head + "\n".join(lines) + "\n"


def results_markdown(cfg: ExperimentsConfig, results: list[dict[str, Any]], table4: list[dict[str, Any]],
                     machine: dict[str, Any], dataset_info: str, command: str, wall_s: float) -> str:  # fmt: skip
    from pose2rgbd.experiments.table4 import table4_markdown
    from pose2rgbd.methods.pose2rgbd import PAPER_PARAMETERS

    unit = results[0]["depth_unit"] if results else "m"
    md = ["# Experiments (the paper's Tables 1, 2 and 4 on the synthetic world)\n"]
    gpu = f"GPU {machine['gpu']} (training and evaluation ran on it)" if machine.get("gpu") else "no GPU"
    md.append(
        f"Machine: {machine['cpu']} ({machine.get('cpu_flags') or 'SIMD flags unknown'}), {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB RAM, {gpu}; torch {machine['torch']} ({machine['torch_threads']} threads). "
        f"Total wall time {wall_s / 60:.1f} min"
        + (
            f"; the runs' training and evaluation, summed over runs (earlier invocations and shards included): "
            f"{sum(float(r.get('train_s', 0)) + float(r.get('eval_s', 0)) for r in results) / 60:.1f} min"
            if results
            else ""
        )
        + ".\n"
    )
    md.append(f"Command: `{command}`\n")
    md.append(
        f"Data: {dataset_info}. Resolution {cfg.size}x{cfg.size}, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} "
        f"(fixed), seed {cfg.seed}. Table 1 runs: {cfg.epochs_table1} epochs; "
        f"Table 2 runs: {cfg.epochs_table2} epochs.\n"
    )
    if cfg.lr != PAPER_LR:
        md.append(
            f"Learning rate: {cfg.lr:g} instead of the paper's {PAPER_LR:g} -- with a few epochs the paper's rate "
            "stays at about the mean image"
            + (
                "; the `lr 0.01` rows of Table 1 are the control.\n"
                if cfg.paper_lr_control and "1" in cfg.tables
                else ".\n"
            )
        )
    seeds = cfg.seed_list
    if len(seeds) > 1:
        md.append(
            f"Seeds {seeds}: every number is the mean ± sample standard deviation over the {len(seeds)} seeds "
            "(weights, shuffling and, on the random split, the split itself).\n"
        )
    if cfg.budget_minutes or cfg.max_steps or cfg.patience:
        stop = "off"
        if cfg.patience:
            stop = f"after {cfg.patience} validations without a {cfg.min_delta:g} relative val-loss improvement"
        md.append(
            f"Budget per run: {cfg.budget_minutes:g} min (0: none), {cfg.max_steps} steps (0: none), "
            f"early stopping {stop}.\n"
        )
    reasons: dict[str, int] = {}
    for r in results:
        why = str(r.get("stop_reason") or "epochs done")
        why = "early stopping (validation plateau)" if "early" in why.lower() or "plateau" in why.lower() else why
        why = "time budget" if why.startswith("time budget") else ("step limit" if "step" in why.lower() else why)
        reasons[why] = reasons.get(why, 0) + 1
    if reasons:
        md.append(
            "Why the runs stopped: " + ", ".join(f"{why} {n}" for why, n in sorted(reasons.items()))
            + (" -- runs stopped by a budget had not reached a validation plateau (not converged)."
               if any(k in reasons for k in ("time budget", "step limit")) and cfg.patience else "")
            + "\n"
        )  # fmt: skip
    for split in cfg.splits:
        rs = aggregate([r for r in results if r["spec"]["split"] == split])
        if not rs:
            continue
        desc = rs[0]["split"]
        ntr, nte = rs[0]["train_frames"], rs[0]["test_frames"]
        if "1" in cfg.tables:
            t1 = [
                r
                for r in rs
                if r["spec"]["preset"] == "base"
                and r["spec"]["epochs"] == cfg.epochs_table1
                and not r["spec"].get("overrides")
            ]
            t1.sort(
                key=lambda r: (
                    r["spec"]["lr"] != cfg.lr,
                    r["spec"]["encoding"],
                    ["depth", "rgb", "rgbd"].index(r["spec"]["outputs"]),
                )
            )
            md.append(f"\n## Table 1 analog -- Base, Euler vs quaternion input ({split} split)\n")
            md.append(f"{desc}: {ntr} training / {nte} test frames.\n\n")
            cols = [
                ("lr", lambda r: f"{r['spec']['lr']:g}"),
                ("input", lambda r: r["spec"]["encoding"]),
                ("output", lambda r: r["spec"]["outputs"]),
            ]
            md.append(_table(t1, cols, PAPER_TABLE1, unit))
            md.append(_baseline_line(t1, unit))
        if "2" in cfg.tables:
            t2 = [
                r
                for r in rs
                if r["spec"]["encoding"] == "6dof-quat"
                and r["spec"]["outputs"] in ("depth", "rgbd")
                and not r["spec"].get("overrides")
                and r["spec"]["preset"] in PRESET_LABEL
                and r["spec"]["epochs"] == cfg.epochs_table2
                and r["spec"]["lr"] == cfg.lr
            ]
            order = ["base", "slice10", "slice32", "slice64"]
            t2.sort(key=lambda r: (order.index(r["spec"]["preset"]), r["spec"]["outputs"]))
            md.append(f"\n## Table 2 analog -- Base vs Slice models, 6dof-quat ({split} split)\n")
            md.append(f"{desc}: {ntr} training / {nte} test frames.\n\n")
            cols = [("model", lambda r: r["spec"]["preset"]), ("output", lambda r: r["spec"]["outputs"])]
            md.append(_table(t2, cols, PAPER_TABLE2, unit))
            md.append(_baseline_line(t2, unit))
        if "g" in cfg.tables:
            md.append(f"\n## Geometry-aware training (beyond the paper), RGBD, 6dof-quat ({split} split)\n")
            md.append(
                f"{desc}: {ntr} training / {nte} test frames. 'vs retrieval': how much lower the error is than "
                "nearest-pose retrieval's on the same frames (positive: the model is better).\n\n"
            )
            md.append(_geometry_table(cfg, rs, unit))
    if table4:
        md.append(
            f"\n## Table 4 analog -- inference cost at {cfg.bench_size}x{cfg.bench_size} (depth output, 6dof-quat)\n\n"
        )
        md.append(table4_markdown(table4, PAPER_PARAMETERS))
        md.append(
            "\nRSS added = resident memory after the forward pass (outputs alive) minus before; peak added = peak "
            "resident memory during the pass minus before. fp32, no autograd, one fresh process per row. "
            "GPU columns: not measured: no CUDA device on the benchmark machine.\n"
        )
    return "\n".join(md)
