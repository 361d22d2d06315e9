"""The experiments command: run plan, Markdown tables, Table 4 measurement (one tiny row)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pose2rgbd.errors import ConfigError
from pose2rgbd.experiments.machine import machine_description
from pose2rgbd.experiments.runner import ExperimentsConfig, planned_runs, results_markdown
from pose2rgbd.experiments.table4 import run_table4, table4_markdown


def test_plan_covers_tables_and_shares_runs() -> None:
    cfg = ExperimentsConfig(epochs_table1=3, epochs_table2=3)
    runs = planned_runs(cfg)
    # per split: 6 Table 1 runs + 1 paper-lr control + 8 Table 2 runs - 2 shared (Base depth / rgbd, quat)
    assert len(runs) == 2 * 13
    assert sum(r.lr == 0.01 for r in runs) == 2
    cfg2 = ExperimentsConfig(epochs_table1=8, epochs_table2=3, splits=["random"])
    runs2 = planned_runs(cfg2)
    assert len(runs2) == 15 and {r.split for r in runs2} == {"random"}
    assert {r.preset for r in runs2} == {"base", "slice10", "slice32", "slice64"}
    with pytest.raises(ConfigError):
        ExperimentsConfig(splits=["diagonal"])


def test_plan_takes_a_subset_of_outputs_and_slice_models() -> None:
    cfg = ExperimentsConfig(
        epochs_table1=9, epochs_table2=9, splits=["route"], tables=["1", "2"], outputs=["rgbd"],
        slice_presets=["slice10"], paper_lr_control=False, seeds=[0, 1],
    )  # fmt: skip
    runs = planned_runs(cfg)
    # Euler and quaternion Base, Slice-10 (Table 2's Base is Table 1's quaternion run at equal epochs), 2 seeds
    assert sorted({(r.preset, r.encoding) for r in runs}) == [
        ("base", "6dof-euler"), ("base", "6dof-quat"), ("slice10", "6dof-quat")
    ]  # fmt: skip
    assert len(runs) == 6 and {r.outputs for r in runs} == {"rgbd"}
    base_only = planned_runs(ExperimentsConfig(splits=["route"], tables=["2"], slice_presets=[], outputs=["depth"]))
    assert [(r.preset, r.outputs) for r in base_only] == [("base", "depth")]
    # the paper-lr control is an RGBD run: not trained when RGBD is not among the outputs
    depth_only = planned_runs(ExperimentsConfig(splits=["route"], tables=["1"], outputs=["depth"]))
    assert {(r.outputs, r.lr) for r in depth_only} == {("depth", 1e-3)}
    with pytest.raises(ConfigError, match="outputs"):
        ExperimentsConfig(outputs=["normals"])
    with pytest.raises(ConfigError, match="slice_presets"):
        ExperimentsConfig(slice_presets=["slice7"])


def test_steps_cell_names_the_selected_checkpoint() -> None:
    from pose2rgbd.experiments.runner import _steps

    assert _steps({"steps": 1200.0, "evaluated": "best.pt", "evaluated_step": 900.0}) == "1200 (best 900)"
    assert _steps({"steps": 1200.0, "evaluated": "best.pt", "evaluated_step": 1200.0}) == "1200"
    assert _steps({"steps": 1200.0, "evaluated": "last.pt", "evaluated_step": 1200.0}) == "1200"


def _fake(
    split: str, preset: str, outputs: str, enc: str, epochs: int, rgb: float, depth: float, lr: float = 1e-3
) -> dict:
    m = {"frames": 10.0}
    if outputs != "depth":
        m.update(rgb_mae_px=rgb, rgb_psnr_db=20.0, rgb_ssim=0.5)
    if outputs != "rgb":
        m.update(depth_mae=depth, depth_rmse=depth * 2, depth_absrel=0.1)
    return {
        "spec": {"split": split, "preset": preset, "outputs": outputs, "encoding": enc, "epochs": epochs, "lr": lr},
        "model": m,
        "baseline": {"rgb_mae_px": 33.0, "depth_mae": 9.0},
        "train_s": 60.0,
        "split": f"{split} split",
        "train_frames": 80,
        "test_frames": 20,
        "depth_unit": "m",
    }


def test_results_markdown_has_paper_columns() -> None:
    cfg = ExperimentsConfig(epochs_table1=2, epochs_table2=2, splits=["route"], tables=["1", "2"])
    results = [
        _fake("route", "base", o, e, 2, 25.5, 7.25)
        for e in ("6dof-euler", "6dof-quat")
        for o in ("depth", "rgb", "rgbd")
    ]
    results += [
        _fake("route", p, o, "6dof-quat", 2, 24.0, 6.5)
        for p in ("slice10", "slice32", "slice64")
        for o in ("depth", "rgbd")
    ]
    md = results_markdown(cfg, results, [], machine_description(), "toy", "pose2rgbd experiments --out X", 60.0)
    # the machine line names the SIMD flags and the runs' summed time (12 runs of 1 min), not only this wall time
    assert f"({machine_description()['cpu_flags']})" in md and "summed over runs" in md and ": 12.0 min." in md
    assert "Table 1 analog" in md and "Table 2 analog" in md
    assert "| 0.001 | 6dof-euler | rgbd | 25.50 | 7.25 |" in md
    assert "| 21.45 | 8.85 |" in md  # paper's Euler RGBD row
    assert "| slice32 | depth | n/a | 6.50 |" in md and "| n/a | 6.31 |" in md
    assert "Nearest-pose baseline on the same test frames: RGB MAE 33.00 px" in md


def test_table4_one_row() -> None:
    rows = run_table4(["base"], [2], size=64, min_seconds=0.0, min_runs=1, progress=False)
    r = rows[0]
    assert "error" not in r, r
    assert r["batch"] == 2 and r["parameters"] > 2_000_000 and r["fps"] > 0 and r["rss_added_mib"] > 0
    md = table4_markdown(rows, {"base": 2_928_673})
    assert "2,928,673" in md and "not measured: no CUDA device on the benchmark machine" in md


def test_plan_seeds_variants_and_bad_variant() -> None:
    from pose2rgbd.experiments.runner import parse_variant

    cfg = ExperimentsConfig(tables=["g"], splits=["route"], seeds=[0, 1, 2],
                            geometry_variants=["base=base", "cons=base:consistency_weight=0.1"])  # fmt: skip
    runs = planned_runs(cfg)
    assert len(runs) == 6 and sorted({r.seed for r in runs}) == [0, 1, 2]
    assert {r.overrides for r in runs} == {(), (("consistency_weight", 0.1),)}
    assert len({r.name for r in runs}) == 6  # one folder per run and seed
    assert parse_variant("aug=slice10+:pose_augment_radius_m=0.25") == (
        "aug", "slice10+", (("pose_augment_radius_m", 0.25),)
    )  # fmt: skip
    with pytest.raises(ConfigError, match="LABEL=PRESET"):
        ExperimentsConfig(geometry_variants=["x=nonsense"])
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        ExperimentsConfig(geometry_variants=["x=base:no_such_setting=1"])
    with pytest.raises(ConfigError, match="each seed once"):
        ExperimentsConfig(seeds=[1, 1])
    # another pose -> image kind of the registry: KIND/PRESET, its own config fields
    from pose2rgbd.experiments.runner import _model_config

    assert parse_variant("gp=ground-plane/default:hfov_deg=60") == ("gp", "ground-plane/default", (("hfov_deg", 60),))
    cfg = ExperimentsConfig(tables=["g"], splits=["route"], geometry_variants=["gp=ground-plane/default:hfov_deg=60"])
    (run,) = planned_runs(cfg)
    assert run.name.startswith("ground-plane-default-hfov_deg60-rgbd") and "/" not in run.name
    mc = _model_config(run, 32)
    assert type(mc).__name__ == "GroundPlaneConfig" and mc.size == 32 and mc.hfov_deg == 60
    bads = ("x=ground-plane/nope", "x=toy-localizer/default", "x=ground-plane/default:no_such=1",
            "=hybrid/hybrid", "x=hybrid/hybrid:size=128", "x=base:outputs=rgb")  # fmt: skip
    for bad in bads:  # no label; a setting the run itself sets (size / outputs / encoding / preset)
        with pytest.raises(ConfigError):
            ExperimentsConfig(geometry_variants=[bad])


def test_aggregate_mean_std_over_seeds_in_markdown() -> None:
    from pose2rgbd.experiments.runner import aggregate

    rows = []
    for seed, (rgb, depth) in enumerate([(20.0, 5.0), (22.0, 7.0)]):
        r = _fake("route", "base", "rgbd", "6dof-quat", 2, rgb, depth)
        r["spec"]["seed"] = seed
        r["reprojection"] = {"rgb_mae_px": 30.0 + seed, "depth_mae": 4.0, "hole_fraction": 0.25, "k": 3.0}
        rows.append(r)
    agg = aggregate(rows)
    assert len(agg) == 1 and agg[0]["seeds"] == [0, 1]
    mean, std, n = agg[0]["model"]["rgb_mae_px"]
    assert (mean, n) == (21.0, 2) and std == pytest.approx(2**0.5)
    cfg = ExperimentsConfig(epochs_table2=2, splits=["route"], tables=["2", "g"], seeds=[0, 1],
                            geometry_variants=["plain=base"])  # fmt: skip
    md = results_markdown(cfg, rows, [], machine_description(), "toy", "cmd", 1.0)
    assert "| base | rgbd | 21.00 ± 1.41 | 6.00 ± 1.41 |" in md
    assert "Reprojection baseline (3 nearest training frames" in md and "hole fraction 25.0 ± 0.0 %" in md
    assert "| plain | base | 2 | 21.00 ± 1.41 |" in md and "| +36 % | +33 % |" in md  # vs 33 px / 9 m
    assert "| reprojection | -- | -- | 30.50 ± 0.71 | 4.00 ± 0.00 |" in md


def test_runner_tiny_budget_seeds_resume_and_reprojection(tmp_path, monkeypatch) -> None:
    import json

    from pose2rgbd.experiments import runner
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=64)
    cfg = ExperimentsConfig(
        dataset=str(ds), size=64, splits=["route"], tables=["g"], seeds=[0, 1], max_steps=2, batch_size=4,
        epochs_table2=3, patience=1, min_delta=0.5, eval_max_frames=3, fly_frames=2, reprojection_k=2,
        geometry_variants=["aug=base:pose_augment_weight=0.5"],
    )  # fmt: skip
    out = tmp_path / "exp"
    data = runner.run_experiments(out, cfg, command="test", progress=False)
    assert len(data["runs"]) == 2 and all(r["steps"] <= 2 for r in data["runs"])
    # early stopping selects on validation frames, so the held-out test frames score best.pt
    assert {r["evaluated"] for r in data["runs"]} == {"best.pt"}
    assert all(0 < r["evaluated_step"] <= r["steps"] for r in data["runs"])
    assert (out / "validation_route.png").stat().st_size > 0  # the validation curves of the runs
    rp = data["runs"][0]["reprojection"]
    assert rp["k"] == 2 and 0.0 <= rp["hole_fraction"] < 1.0 and rp["rgb_mae_px"] > 0 and rp["frames"] == 3
    assert json.loads((out / "progress.json").read_text())["done"] == 2
    md = (out / "results.md").read_text()
    assert "| aug | base, pose_augment_weight=0.5 | 2 |" in md and "| reprojection |" in md
    # a finished run is skipped; a run interrupted after its last.pt resumes from it
    calls: list[dict] = []
    real = runner.__dict__.get("_run_one")
    run_dir = out / "runs" / "route" / planned_runs(cfg)[1].name
    (run_dir / "result.json").unlink()

    import pose2rgbd.training as training

    orig = training.train_model

    def spy(*a, **kw):
        calls.append({**kw, "tc": a[3]})
        res = orig(*a, **kw)
        return replace(res, elapsed_s=1e4)  # as if the interrupted invocation had trained for hours

    monkeypatch.setattr(training, "train_model", spy)
    data2 = runner.run_experiments(out, cfg, command="test", progress=False)
    assert real is not None and len(calls) == 1 and calls[0].get("resume") is True
    # patience counts validations at the epoch cadence, never thinned by the trainer's once-a-minute floor
    assert calls[0]["tc"].val_every == cfg.val_every and calls[0]["tc"].val_min_seconds == 0.0
    assert [r["name"] for r in data2["runs"]] == [r["name"] for r in data["runs"]]
    # the resumed run's training time is the trainer's, summed over its invocations, not this invocation's alone
    assert data2["runs"][1]["train_s"] == 1e4 and data2["runs"][0]["train_s"] < 1e4


def test_early_stopping_counts_plateaus_and_keeps_state_for_resume() -> None:
    from types import SimpleNamespace

    from pose2rgbd.training.early_stopping import EarlyStopping

    tr = SimpleNamespace(extra_state={}, should_stop=False, stop_reason="")
    es = EarlyStopping(patience=2, min_delta=0.1)
    for v in (1.0, 0.8, 0.75):  # 0.75 is not 10 % below 0.8: one bad validation
        es.on_validation_end(tr, {"val/loss": v})
    assert not tr.should_stop and tr.extra_state["early_stopping"] == {"best": 0.8, "bad": 1}
    es2 = EarlyStopping(patience=2, min_delta=0.1)  # a resumed run: the count goes on from the saved state
    es2.on_validation_end(tr, {"val/loss": 0.79})
    assert tr.should_stop and "early stop" in tr.stop_reason
    with pytest.raises(ConfigError):
        EarlyStopping(patience=0)
    # a run resumed from the checkpoint written when it stopped (killed during its evaluation) stops at once
    stopped = SimpleNamespace(
        extra_state={"early_stopping": {"best": 0.8, "bad": 2}}, should_stop=False, stop_reason=""
    )
    EarlyStopping(patience=2, min_delta=0.1).on_train_start(stopped)
    assert stopped.should_stop and "early stop" in stopped.stop_reason
    going = SimpleNamespace(extra_state={"early_stopping": {"best": 0.8, "bad": 1}}, should_stop=False, stop_reason="")
    EarlyStopping(patience=2, min_delta=0.1).on_train_start(going)
    assert not going.should_stop


def test_shards_split_the_runs_and_the_full_command_reuses_them(tmp_path, monkeypatch) -> None:
    import json

    import pose2rgbd.training as training
    from pose2rgbd.experiments import runner
    from pose2rgbd.experiments.toy import make_toy_dataset

    ds = make_toy_dataset(tmp_path / "ds", n_survey=12, n_route=4, size=64)
    base = dict(dataset=str(ds), size=64, splits=["route"], tables=["g"], seeds=[0, 1, 2], max_steps=1,
                batch_size=4, epochs_table2=1, eval_max_frames=2, fly_frames=2, reprojection_k=0,
                geometry_variants=["b=base"])  # fmt: skip
    out = tmp_path / "exp"
    trained: list[str] = []
    orig = training.train_model

    def spy(dataset, run_dir, *a, **kw):
        trained.append(Path(run_dir).name)
        return orig(dataset, run_dir, *a, **kw)

    monkeypatch.setattr(training, "train_model", spy)
    names = [r.name for r in planned_runs(ExperimentsConfig(**base))]
    for k in (0, 1):
        data = runner.run_experiments(out, ExperimentsConfig(**base, shard=f"{k}/2"), progress=False)
        assert [r["name"] for r in data["runs"]] == names[k::2]
        assert json.loads((out / f"progress.shard{k}.json").read_text())["done"] == len(names[k::2])
    assert sorted(trained) == sorted(names) and not (out / "results.md").exists()
    trained.clear()
    data = runner.run_experiments(out, ExperimentsConfig(**base), progress=False)
    assert trained == [] and [r["name"] for r in data["runs"]] == names  # every run reused, none trained twice
    assert "| b | base | 3 |" in (out / "results.md").read_text()
    for bad in ("2/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="K/N"):
            ExperimentsConfig(shard=bad)


def test_validation_curves_plot_runs_with_validations_only(tmp_path) -> None:
    from pose2rgbd.evaluation.plots import validation_curves

    log = tmp_path / "log.csv"
    log.write_text(
        "wall_s,step,epoch,phase,name,value\n1,10,0,train,loss,0.5\n2,10,0,val,loss,0.4\n3,20,1,val,loss,0.3\n"
    )
    no_val = tmp_path / "train_only.csv"
    no_val.write_text("wall_s,step,epoch,phase,name,value\n1,10,0,train,loss,0.5\n")
    assert validation_curves([("a", no_val), ("b", tmp_path / "missing.csv")], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    p = validation_curves([("a", log), ("a", log), ("b", no_val)], tmp_path / "v.png", title="t")
    assert p is not None and p.stat().st_size > 0


def test_read_log_keeps_the_resumed_rows_where_a_run_went_back(tmp_path) -> None:
    from pose2rgbd.evaluation.plots import read_log

    log = tmp_path / "log.csv"
    rows = [(10, 0.5), (20, 0.4), (30, 0.3), (40, 0.2)]  # interrupted after 40; its checkpoint was at step 20
    rows += [(30, 0.35), (40, 0.25), (50, 0.2)]  # the resumed run
    log.write_text("wall_s,step,epoch,phase,name,value\n" + "".join(f"0,{s},0,val,loss,{v}\n" for s, v in rows))
    steps, values = read_log(log)[("val", "loss")]
    assert steps.tolist() == [10, 20, 30, 40, 50] and values.tolist() == [0.5, 0.4, 0.35, 0.25, 0.2]
    # the resumed run validates first at the very step the interrupted one last did
    log.write_text("wall_s,step,epoch,phase,name,value\n" + "".join(f"0,{s},0,val,loss,{v}\n" for s, v in
                   [(12, 0.7), (24, 0.6), (36, 0.5), (36, 0.55), (48, 0.45)]))  # fmt: skip
    steps, values = read_log(log)[("val", "loss")]
    assert steps.tolist() == [12, 24, 36, 48] and values.tolist() == [0.7, 0.6, 0.55, 0.45]


def test_a_figure_that_fails_costs_no_table(tmp_path, monkeypatch) -> None:
    from pose2rgbd.experiments import runner

    def broken(*a, **kw):
        raise ValueError("could not convert string to float: ''")

    monkeypatch.setattr(runner, "_validation_figures", broken)
    cfg = ExperimentsConfig(splits=["route"], tables=["1"])
    runner._write(tmp_path, cfg, [], [], machine_description(), "toy", "test", 1.0)
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.json").exists()


def test_the_machine_is_named_by_its_cpu_flags_and_cores_without_torch() -> None:
    """Every table and benchmark names the CPU one way; naming it does not import torch (a benchmark that measures
    a child process's peak memory forks it after naming the machine)."""
    import os
    import subprocess
    import sys

    from pose2rgbd.experiments.machine import SIMD_FLAGS, cpu_flags, cpu_line, cpu_model

    flags = cpu_flags()
    assert flags == "unknown" or set(flags.split()) <= set(SIMD_FLAGS)
    assert cpu_line() == f"{cpu_model()}, {os.cpu_count()} cores ({flags})"
    code = "import sys; from pose2rgbd.experiments.machine import cpu_line; cpu_line(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
