"""``pose2rgbd experiments localization``: the PoseGAN paper's Tables 1 and 2 on the synthetic world.

* Table 1 analog: median (and mean, 90th percentile) position / orientation errors of PoseGAN and its ablations
  configA (regression only), configB (no pose estimation of generated samples), configC (constant margin), of
  the image-retrieval baseline (:class:`~pose2rgbd.evaluation.localization.RetrievalLocalizer`) and of PoseGAN
  followed by render-and-compare refinement (:mod:`pose2rgbd.inference.refine`; errors before / after and the
  time it costs), on the random split (the paper's protocol) and the route split (held-out routes).
* Table 2 analog: the same localizers on the test images turned grayscale (3 channels).
* Figures: error CDF (all methods), estimated vs true trajectory (top view) on a held-out route, real vs G(y).

Every method of a (split, seed) is evaluated on the same test frames. Each training run lives in
``OUT/runs/<split>/<preset>-s<seed>/`` with its ``result.json`` (and ``refine.json``); a run whose result
exists with the same settings is reused, so an interrupted experiment continues where it stopped. The model kind
and presets are settings (``kind``, ``presets``): any registered image -> pose kind can be compared this way.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pose2rgbd import config as cfgmod
from pose2rgbd.atomic import write_text_atomic
from pose2rgbd.config import help_field
from pose2rgbd.errors import ConfigError
from pose2rgbd.experiments.localization_tables import RETRIEVAL, label, results_markdown
from pose2rgbd.inference.refine import RefineConfig
from pose2rgbd.jsonio import json_text

log = logging.getLogger(__name__)


@dataclass
class LocalizationExperimentsConfig:
    """Scale of the localization experiments (defaults: a small CPU budget)."""

    dataset: str = help_field("", "dataset to use; empty: export the synthetic world into OUT/data/sim")
    size: int = help_field(64, "image resolution of the models (square)")
    sim_seed: int = help_field(0, "seed of the synthetic world")
    sim_stride: int = help_field(15, "keep every k-th 30 Hz camera frame of the simulated routes")
    sim_survey_s: float = help_field(360.0, "duration of the simulated survey route (training route), s")
    sim_route_s: float = help_field(90.0, "duration of each held-out route, s")
    kind: str = help_field("posegan", "model kind of the trained localizers")
    presets: list[str] = help_field(
        ["posegan", "configA", "configB", "configC"], "presets of that kind to train; the first is the main model"
    )
    model_set: dict[str, Any] = help_field({}, "model config overrides applied to every preset (YAML mapping)")
    splits: list[str] = help_field(["random", "route"], "splits: random (the paper's) and/or route (held out)")
    seeds: list[int] = help_field([0], "seeds (weights, shuffling, random split); tables average over them")
    steps: int = help_field(0, "training budget per run: optimization steps (0: no limit)")
    minutes: float = help_field(3.0, "training budget per run: minutes (0: no limit)")
    epochs: int = help_field(1000, "epoch cap per run (the budget above normally stops first)")
    batch_size: int = help_field(16, "batch size (the paper: 16)")
    recalibrate_batches: int = help_field(16, "training batches for the final BatchNorm recalibration (0: none)")
    eval_max_frames: int = help_field(200, "evaluate at most this many test frames per split, evenly spread (0: all)")
    retrieval_thumb: int = help_field(16, "retrieval descriptor: grayscale thumbnail side (pixels)")
    grayscale: bool = help_field(True, "also evaluate on grayscale test images (Table 2 analog)")
    refine_frames: int = help_field(40, "refine the main model's estimate on this many test frames (0: no refinement)")
    refine_renderer: str = help_field(
        "", "pose -> image checkpoint used to render for refinement (empty: the main model's own, if it renders)"
    )
    refine: RefineConfig = field(default_factory=RefineConfig, metadata={"help": "refinement settings"})
    threads: int = help_field(0, "torch CPU threads (0: torch's default); 1 is faster on a busy machine")
    grid_frames: int = help_field(8, "frames in the real vs G(y) grid")
    structure: bool = help_field(True, "also evaluate the structure localizer (a place map of the training frames)")
    structure_size: int = help_field(256, "image size of the structure localizer's world copy (the map and queries)")
    structure_map: str = help_field("", "a prebuilt place map to evaluate instead (refused if it holds test frames)")
    sparse_every: int = help_field(10, "sparse-map mode: every N-th training frame in the map (0: skip the mode)")
    gps_noise_m: float = help_field(1.5, "GPS-prior mode: noise (standard deviation per axis) of the prior, m")
    posegan_prior_radius_m: float = help_field(150.0, "PoseGAN-prior mode: search radius around its estimate, m")
    wrong_m: float = help_field(5.0, "a fix off by more than this counts as wrong")

    def __post_init__(self) -> None:
        bad = set(self.splits) - {"random", "route"}
        if bad or not self.splits:
            raise ConfigError(f"localization.splits {self.splits}: use random and/or route")
        if not self.presets:
            raise ConfigError("localization.presets: name at least one preset")
        if not self.seeds:
            raise ConfigError("localization.seeds: give at least one seed")
        if self.steps < 0 or self.minutes < 0 or self.epochs < 1:
            raise ConfigError("localization: steps >= 0, minutes >= 0, epochs >= 1")


# ----------------------------------------------------------------------------------------------------- one run
def _model_config(cfg: LocalizationExperimentsConfig, preset: str) -> Any:
    from pose2rgbd.models.registry import get_family

    fam = get_family(cfg.kind)
    names = {f.name for f in fields(fam.config_cls)}
    over = dict(cfg.model_set)
    for k in ("size", "image_size", "resolution"):  # the kind's resolution field, whatever its name
        if k in names and k not in over:
            over[k] = cfg.size
            break
    return fam.make_config(preset, **over)


class FrameView:
    """Dataset frames as a model sees them at evaluation: the training cache at the size the model's recipe
    loads (``model.config.load_size`` when the kind has one, e.g. PoseGAN's 144 for 128, else the model's own
    size), then the model's ``prepare_images`` (e.g. the centre crop) when it has one. Every method of a
    comparison -- retrieval included -- gets the same images."""

    def __init__(self, model: Any, dataset: Path, *, progress: bool = False) -> None:
        from pose2rgbd.dataset import build_cache

        hw = model.input_hw if hasattr(model, "input_hw") else model.image_hw
        self.hw = (int(hw[0]), int(hw[1]))
        load = getattr(getattr(model, "config", None), "load_size", None)
        self.cache = build_cache(dataset, int(load or self.hw[0]), progress=progress)
        self._prepare = getattr(model, "prepare_images", None)

    def images(self, idx: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` of frames ``idx`` (any order) at the model's input size."""
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx)
        imgs = np.empty((len(idx), *self.cache.rgb.shape[1:]), np.uint8)
        imgs[order] = np.asarray(self.cache.rgb[idx[order]])  # memmap reads in increasing order
        if imgs.shape[1:3] != self.hw:
            if self._prepare is None:
                raise ConfigError(f"frames are {imgs.shape[1]}x{imgs.shape[2]}, the model takes {self.hw}")
            imgs = np.asarray(self._prepare(imgs))
        return imgs


def _test_frames(sp: Any, max_frames: int) -> np.ndarray:
    from pose2rgbd.evaluation.plots import evenly_spaced

    test = sp.val
    if max_frames and len(test) > max_frames:
        test = test[evenly_spaced(len(test), max_frames)]
    return np.sort(test)


def _eval_engine(loaded: Any) -> Any:
    from pose2rgbd.inference import EngineConfig, LocalizeEngine

    cfg = EngineConfig(device="cpu", precision="fp32", fuse_bn=False, channels_last=False, warmup=0)
    return LocalizeEngine(cfg.as_batch_job(), loaded)


def _run_key(cfg: LocalizationExperimentsConfig, dataset: Path, split: str, preset: str, seed: int) -> dict[str, Any]:
    return {"kind": cfg.kind, "preset": preset, "split": split, "seed": seed, "size": cfg.size,
            "model_set": cfg.model_set, "steps": cfg.steps, "minutes": cfg.minutes, "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "dataset": str(dataset), "eval_max_frames": cfg.eval_max_frames,
            "recalibrate_batches": cfg.recalibrate_batches}  # fmt: skip


def _train_eval(
    cfg: LocalizationExperimentsConfig, dataset: Path, split: str, preset: str, seed: int, out: Path, *, progress: bool
) -> dict[str, Any]:
    """Train one preset (or reuse a finished run) and localize its test frames (colour and grayscale)."""
    from pose2rgbd.evaluation.localization import LocalizationReport, localize_frames, to_grayscale
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training import TrainConfig
    from pose2rgbd.training.train import split_for, train

    run_dir = out / "runs" / split / f"{preset}-s{seed}"
    done = run_dir / "result.json"
    key = _run_key(cfg, dataset, split, preset, seed)
    if done.exists():
        prev: dict[str, Any] = json.loads(done.read_text())
        if prev.get("key") == key:
            log.info("reusing finished run %s", run_dir)
            return prev
    tc = TrainConfig(
        # the paper's two-way 80/20 split: nothing is selected on validation (val_every 0), so the validation
        # frames are the unbiased test frames every method is scored on (retrieval uses the same split)
        epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed, split=split, val_fraction=0.2, test_fraction=0.0,
        val_every=0, tensorboard=False,
        progress=progress, max_steps=cfg.steps, max_minutes=cfg.minutes,
        recalibrate_bn=cfg.recalibrate_batches > 0, recalibrate_bn_batches=max(cfg.recalibrate_batches, 1),
    )  # fmt: skip
    t0 = time.monotonic()
    tr = train(cfg.kind, dataset, run_dir, _model_config(cfg, preset), tc, overwrite=True)
    train_s = time.monotonic() - t0
    loaded = load_checkpoint(tr.last)
    engine = _eval_engine(loaded)
    view = FrameView(loaded.model, dataset, progress=progress)
    cache = view.cache
    sp = split_for(cache, tc)
    test = _test_frames(sp, cfg.eval_max_frames)
    images = view.images(test)
    T_true = cache.T_world_cam[test]
    T_est, sec = localize_frames(engine, images)
    rep = LocalizationReport(label(preset), T_est, T_true, sec)
    arrays: dict[str, np.ndarray] = {"test": test, "T_est": T_est}
    res: dict[str, Any] = {
        "key": key,
        "preset": preset,
        "name": label(preset),
        "split": split,
        "seed": seed,
        "split_description": sp.description,
        "train_frames": len(sp.train),
        "test_frames": len(test),
        "steps": tr.steps,
        "epochs": tr.epochs,
        "train_s": train_s,
        "stop_reason": tr.stop_reason,
        "parameters": tr.parameters,
        "checkpoint": str(tr.last),
        "input_size": int(engine.input_hw[0]),
        "color": rep.summary(),
    }
    if cfg.grayscale:
        T_gray, sec_g = localize_frames(engine, to_grayscale(images))
        res["gray"] = LocalizationReport(label(preset), T_gray, T_true, sec_g).summary()
        arrays["T_est_gray"] = T_gray
    _save_npz(run_dir / "estimates.npz", arrays)
    write_text_atomic(done, json_text(res, nan_as_null=False, default=float))
    return res


def _save_npz(path: Path, arrays: dict[str, Any]) -> None:
    from pose2rgbd.atomic import sibling_prefix

    tmp = path.with_name(f"{sibling_prefix(path, 'partial')}.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _retrieval(
    cfg: LocalizationExperimentsConfig, dataset: Path, split: str, seed: int, main: dict[str, Any], out: Path,
    *, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """The retrieval baseline on the main run's test frames, seeing the images as the main model does."""
    from pose2rgbd.evaluation.localization import LocalizationReport, RetrievalLocalizer, localize_frames, to_grayscale
    from pose2rgbd.models import load_checkpoint
    from pose2rgbd.training.train import split_for

    view = FrameView(load_checkpoint(main["checkpoint"]).model, dataset, progress=progress)
    cache = view.cache
    sp = split_for(cache, split, seed, 0.2, test_fraction=0.0)  # the main runs' split (_train_eval)
    test = _test_frames(sp, cfg.eval_max_frames)
    t0 = time.perf_counter()
    ret = RetrievalLocalizer(view.images(sp.train), cache.T_world_cam[sp.train], thumb=cfg.retrieval_thumb)
    build_s = time.perf_counter() - t0
    images = view.images(test)
    T_true = cache.T_world_cam[test]
    T_est, sec = localize_frames(ret, images)
    res: dict[str, Any] = {
        "preset": RETRIEVAL,
        "name": "image retrieval",
        "split": split,
        "seed": seed,
        "test_frames": len(test),
        "train_frames": len(sp.train),
        "index_build_s": build_s,
        "color": LocalizationReport("image retrieval", T_est, T_true, sec).summary(),
    }
    arrays = {"test": test, "T_est": T_est}
    if cfg.grayscale:
        T_gray, sec_g = localize_frames(ret, to_grayscale(images))
        res["gray"] = LocalizationReport("image retrieval", T_gray, T_true, sec_g).summary()
        arrays["T_est_gray"] = T_gray
    d = out / "runs" / split / f"retrieval-s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    _save_npz(d / "estimates.npz", arrays)
    return res


def _refine(
    cfg: LocalizationExperimentsConfig, dataset: Path, main: dict[str, Any], out: Path, *, progress: bool
) -> dict[str, Any] | None:
    """Refine the main model's estimates on ``refine_frames`` test frames; ``None`` when nothing can render."""
    from pose2rgbd.evaluation.localization import pose_errors, summarize
    from pose2rgbd.evaluation.plots import evenly_spaced
    from pose2rgbd.inference.refine import Refiner
    from pose2rgbd.models import PoseToImage, load_checkpoint

    run_dir = Path(main["checkpoint"]).parent
    done = run_dir / "refine.json"
    key = {"run": main["key"], "refine": cfgmod.to_dict(cfg.refine), "frames": cfg.refine_frames,
           "renderer": cfg.refine_renderer}  # fmt: skip
    if done.exists():
        prev: dict[str, Any] = json.loads(done.read_text())
        if prev.get("key") == key:
            return prev
    renderer_path = cfg.refine_renderer or main["checkpoint"]
    rl = load_checkpoint(renderer_path)
    if not isinstance(rl.model, PoseToImage) or not rl.model.has_rgb:
        log.warning("refinement skipped: %s (kind %r) does not render RGB from a pose", renderer_path, rl.kind)
        return None
    est = np.load(run_dir / "estimates.npz")
    test, T_est = est["test"], est["T_est"]
    pick = evenly_spaced(len(test), cfg.refine_frames)
    idx = test[pick]
    view = FrameView(rl.model, dataset, progress=progress)
    cache = view.cache
    refiner = Refiner(rl.model, cfg.refine)
    T0 = T_est[pick]
    T_ref = np.empty_like(T0)
    before_res, after_res, iters, secs = [], [], [], []
    for k in range(len(idx)):  # one frame at a time: the per-frame time is what a node would pay
        r = refiner.refine(view.images(idx[k : k + 1]), T0[k : k + 1])
        T_ref[k] = r.T_world_cam[0]
        before_res.append(float(r.residual_before[0]))
        after_res.append(float(r.residual_after[0]))
        iters.append(r.iterations)
        secs.append(r.seconds)
    T_true = cache.T_world_cam[idx]
    pb, ob = pose_errors(T0, T_true)
    pa, oa = pose_errors(T_ref, T_true)
    res = {
        "key": key,
        "renderer": str(renderer_path),
        "frames": len(idx),
        "before": {"position_m": summarize(pb), "orientation_deg": summarize(ob)},
        "after": {"position_m": summarize(pa), "orientation_deg": summarize(oa)},
        "residual_before": summarize(np.asarray(before_res)),
        "residual_after": summarize(np.asarray(after_res)),
        "iterations": summarize(np.asarray(iters, dtype=np.float64)),
        "seconds_per_frame": summarize(np.asarray(secs)),
        "improved_fraction": float(np.mean(pa < pb)) if len(pa) else float("nan"),
    }
    _save_npz(run_dir / "refined.npz", {"test": idx, "T_initial": T0, "T_refined": T_ref})
    write_text_atomic(done, json_text(res, nan_as_null=False, default=float))
    return res


# ----------------------------------------------------------------------------------------------------- figures
def _figures(
    cfg: LocalizationExperimentsConfig, dataset: Path, split: str, rows: list[dict[str, Any]], out: Path,
    *, progress: bool,
) -> dict[str, str]:  # fmt: skip
    from pose2rgbd.dataset import build_cache
    from pose2rgbd.evaluation.localization import (
        LocalizationReport,
        error_cdf_figure,
        real_vs_generated_grid,
        trajectory_figure,
    )
    from pose2rgbd.evaluation.plots import evenly_spaced
    from pose2rgbd.models import PoseToImage, load_checkpoint

    seed = cfg.seeds[0]
    figs: dict[str, str] = {}
    ests: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r in rows:
        if r["seed"] != seed:
            continue
        d = out / "runs" / split / (f"{r['preset']}-s{seed}")
        if (d / "estimates.npz").exists():
            z = np.load(d / "estimates.npz")
            ests[r["name"]] = (z["test"], z["T_est"])
    if not ests:
        return figs
    first = next(iter(ests.values()))[0]
    main_run = next((r for r in rows if r["seed"] == seed and r["preset"] == cfg.presets[0]), None)
    cache = build_cache(dataset, cfg.size, progress=progress)  # poses and sources only
    T_true = cache.T_world_cam[first]
    reports = [LocalizationReport(n, T, T_true) for n, (t, T) in ests.items() if np.array_equal(t, first)]
    figs["cdf"] = str(error_cdf_figure(reports, out / f"cdf_{split}.png", title=f"localization errors, {split} split"))
    # trajectory: the test frames of one route (the largest held-out source on the route split), in time order
    sid = cache.source_id[first]
    src = int(np.bincount(sid).argmax())
    sel = np.flatnonzero(sid == src)
    sel = sel[np.argsort(cache.stamp_ns[first[sel]], kind="stable")]
    what = "held-out route" if split == "route" else "test frames of one source (random split)"
    traj = {n: T[sel] for n, (t, T) in ests.items() if np.array_equal(t, first)}
    figs["trajectory"] = str(trajectory_figure(T_true[sel], traj, out / f"trajectory_{split}.png",
                                               title=f"{what} (source {src}), top view"))  # fmt: skip
    if main_run is not None:
        loaded = load_checkpoint(main_run["checkpoint"])
        if isinstance(loaded.model, PoseToImage) and loaded.model.has_rgb:
            from pose2rgbd.evaluation.evaluate import evaluation_engine, predict

            pick = np.sort(first[evenly_spaced(len(first), cfg.grid_frames)])
            gen = predict(evaluation_engine(loaded, "cpu"), cache.T_world_cam[pick])["rgb"]
            if gen is not None:
                figs["grid"] = str(real_vs_generated_grid(
                    FrameView(loaded.model, dataset).images(pick), gen, out / f"real_vs_generated_{split}.png",
                    labels=[f"frame {int(i)}" for i in pick], title=f"{label(cfg.presets[0])}: real vs G(y), {split}",
                ))  # fmt: skip
    return figs


# ----------------------------------------------------------------------------------------------------- driver
def machine() -> dict[str, Any]:
    from pose2rgbd.experiments.machine import machine_description

    return machine_description()  # with cpu_flags


def run_localization_experiments(
    out_dir: str | Path, cfg: LocalizationExperimentsConfig, *, command: str = "", progress: bool = True
) -> dict[str, Any]:
    """Run everything; writes ``OUT/localization.md`` and ``OUT/localization.json`` and returns the JSON."""
    from pose2rgbd.dataset import Dataset, build_cache
    from pose2rgbd.experiments.runner import ExperimentsConfig, prepare_dataset
    from pose2rgbd.models.registry import get_family

    fam = get_family(cfg.kind)
    if fam.engine != "localize":
        raise ConfigError(f"model kind {cfg.kind!r} does not localize images (its engine is {fam.engine!r})")
    for p in cfg.presets:
        if p not in fam.presets:
            raise ConfigError(f"{cfg.kind} has no preset {p!r}; presets: {list(fam.presets)}")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    t0 = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ecfg = ExperimentsConfig(dataset=cfg.dataset, size=cfg.size, sim_seed=cfg.sim_seed, sim_stride=cfg.sim_stride,
                             sim_survey_s=cfg.sim_survey_s, sim_route_s=cfg.sim_route_s)  # fmt: skip
    dpath = prepare_dataset(ecfg, out, progress=progress)
    ds = Dataset(dpath)
    build_cache(ds, cfg.size, progress=progress)
    dataset_info = f"`{dpath}` ({len(ds)} frames, {len(ds.manifest.sources)} sources)"
    data: dict[str, Any] = {"config": cfgmod.to_dict(cfg), "machine": machine(), "command": command,
                            "dataset": dataset_info, "runs": [], "figures": {}, "wall_s": 0.0}  # fmt: skip
    plan = [(s, seed, p) for s in cfg.splits for seed in cfg.seeds for p in cfg.presets]
    for i, (split, seed, preset) in enumerate(plan):
        log.info("[%d/%d] %s split, seed %d: %s", i + 1, len(plan), split, seed, preset)
        res = _train_eval(cfg, dpath, split, preset, seed, out, progress=progress)
        if preset == cfg.presets[0] and cfg.refine_frames > 0:
            log.info("refining %s estimates on %d frames", preset, cfg.refine_frames)
            ref = _refine(cfg, dpath, res, out, progress=progress)
            if ref is not None:
                res = {**res, "refine": ref}
        data["runs"].append(res)
        if preset == cfg.presets[-1]:
            main = next(r for r in data["runs"] if r["split"] == split and r["seed"] == seed
                        and r["preset"] == cfg.presets[0])  # fmt: skip
            data["runs"].append(_retrieval(cfg, dpath, split, seed, main, out, progress=progress))
            if cfg.structure:
                from pose2rgbd.experiments.structure_localization import run_structure
                from pose2rgbd.placemap import MapError

                est = Path(main["checkpoint"]).parent / "estimates.npz"
                try:
                    st = run_structure(cfg, split, seed, np.load(est)["test"], est, out, progress=progress)
                except (MapError, ConfigError) as e:  # e.g. a world too plain to map: the other rows still stand
                    log.warning("structure localizer, %s split, seed %d: not evaluated: %s", split, seed, e)
                    st = {"split": split, "seed": seed, "error": str(e)}
                data.setdefault("structure", []).append(st)
        data["wall_s"] = time.monotonic() - t0
        _write(out, cfg, data)
    for split in cfg.splits:
        rows = [r for r in data["runs"] if r["split"] == split]
        data["figures"][split] = _figures(cfg, dpath, split, rows, out, progress=progress)
    data["wall_s"] = time.monotonic() - t0
    return _write(out, cfg, data)


def _write(out: Path, cfg: LocalizationExperimentsConfig, data: dict[str, Any]) -> dict[str, Any]:
    write_text_atomic(out / "localization.json", json_text(data, nan_as_null=False, default=float))
    write_text_atomic(out / "localization.md", results_markdown(cfg, data))
    return data
