"""The folder of a training run: what it holds (:data:`RUN_FILES`), the checks before a run writes into it, and
what ``--overwrite`` and ``--resume`` do with an earlier run there (:func:`pose2rgbd.training.train.train`).

* :func:`check_out_dir`: refuse an ``out_dir`` that is, contains or lies inside an input, a foreign folder, or
  (without ``--resume`` / ``--overwrite``) an earlier run;
* :func:`move_aside` / :func:`restore`: ``--overwrite`` moves the earlier run into ``previous-run-<UTC time>/``
  and puts it back if the new run stops before its first checkpoint;
* :func:`resume_without_checkpoint`, :func:`check_resume`: ``--resume`` with no ``last.pt`` to continue from
  (e.g. after a killed ``--overwrite``), and a checkpoint whose model, dataset or data split differ from the
  requested ones.
"""

from __future__ import annotations

import datetime
import logging
import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pose2rgbd import config as cfgmod
from pose2rgbd.atomic import move_together, signals_held
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.models import LoadedCheckpoint, load_checkpoint
from pose2rgbd.models.registry import ModelFamily
from pose2rgbd.output_guard import TRAINING_RUN, OutputError, check_not_foreign_dir, check_output, refuse_existing
from pose2rgbd.training.config import TrainConfig

log = logging.getLogger(__name__)

# Train-config fields that must not change when resuming (they define the data the model saw). Every model-config
# key is fixed on resume as well (see check_resume), method-owned data settings included.
RESUME_FIXED = ("split", "seed", "val_fraction", "test_fraction", "every_nth")
# Train-config fields a resume continues with where the command does not give them (the command may change them):
# how long the run is. Its time budget is summed over resumes, so a `--resume` that dropped it trained on to the
# epoch default (100 epochs) after a run of a few minutes was stopped.
RESUME_LENGTH = ("epochs", "max_steps", "max_minutes", "patience", "min_delta")

# What a training run writes into its folder (pose2rgbd.training.train.train_one_process; "keyframes": the
# hybrid's keyframe map, pose2rgbd.methods.hybrid.recipe).
RUN_FILES = ("config.yaml", "split.json", "last.pt", "best.pt", "log.csv", "tb", "keyframes")


def check_out_dir(
    out: Path, dataset: Path, others: Sequence[str | Path], *, resume: bool, overwrite: bool
) -> list[str]:
    """Refuse an ``out`` that would destroy the dataset or another input (a config file: a resume leaves the
    files in ``out`` alone, so there only the dataset counts), a foreign folder or (without resume / overwrite)
    an earlier run; returns the earlier run's files that ``overwrite`` will replace."""
    check_output(out, TRAINING_RUN, inputs=[dataset] if resume else [dataset, *others], overwrite=overwrite)
    if not out.exists():
        return []
    check_not_foreign_dir(out, TRAINING_RUN, what_to_do="choose a new or empty --out folder")
    earlier = [n for n in RUN_FILES if (out / n).exists()]
    if resume or not earlier:
        return []
    refuse_existing(out, overwrite=overwrite, holds=f"an earlier training run ({', '.join(earlier)})",
                    instead="pass --resume to continue it, or ", nothing="nothing was changed",
                    renamed_into_place=False)  # fmt: skip
    return earlier


def resume_without_checkpoint(out: Path) -> None:
    """``--resume`` and ``out`` has no ``last.pt``: refuse when an earlier run moved aside by an ``--overwrite``
    that was killed is there (continuing it or starting anew is the user's choice), else say where the run starts:
    from ``best.pt`` where there is one (train resumes from it), else from its first step."""
    here = [n for n in RUN_FILES if (out / n).exists()]
    for aside in sorted(out.glob("previous-run-*"), reverse=True):
        ck = aside / "last.pt"
        if not ck.is_file():
            continue
        try:
            st = load_checkpoint(ck)
            where = f"its last.pt is at step {st.step}, epoch {st.epoch}"
        except CheckpointError as e:
            where = f"its last.pt cannot be read: {e}"
        stopped = f" (its {', '.join(here)} are in {out})" if here else ""
        raise OutputError(
            f"{out}: --resume found no last.pt to continue from. A run started with --overwrite was stopped before "
            f"its first checkpoint{stopped}, and the earlier run it was replacing is in {aside} ({where}). To "
            f"continue the earlier run, delete the stopped run's files from {out}, move the files of {aside} back "
            f"into {out} and run with --resume again; to start the new run from its beginning, run it with "
            f"--overwrite instead of --resume ({aside} stays until you delete it). Nothing was changed"
        )
    if "best.pt" in here:  # train resumes from it: the weights and trainer state of its best validation
        log.warning(
            "%s: no last.pt to resume from (a run stopped before writing it); resuming from best.pt, the step of its "
            "best validation: the steps after it are trained again",
            out,
        )
    elif here:
        log.warning(
            "%s: no last.pt to resume from (%s are there: a run stopped before its first checkpoint); starting from "
            "step 0",
            out, ", ".join(here),
        )  # fmt: skip
    else:
        log.info("%s: no last.pt to resume from; starting a new run", out)


def move_aside(out: Path, names: list[str]) -> Path:
    """Move the earlier run's ``names`` into ``out/previous-run-<UTC time>/``, all or none
    (:func:`pose2rgbd.atomic.move_together`: Ctrl-C / SIGTERM held, any failure or interruption undone)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = out / f"previous-run-{stamp}"
    aside.mkdir()
    try:
        move_together([(out / n, aside / n) for n in names])
    except BaseException:
        aside.rmdir()  # every file went back: it is empty
        raise
    log.info("replacing the earlier run in %s: its files are in %s until the new run finishes", out, aside)
    left = sorted(p.name for p in out.iterdir() if p.name not in RUN_FILES and not p.name.startswith("previous-run-"))
    if left:  # evaluations, exports, renders: the user's or made from the earlier run; either way not touched
        shown = ", ".join(left[:6]) + (f" and {len(left) - 6} more" if len(left) > 6 else "")
        log.warning(
            "%s: left as they are: %s (not the training run's own files). Any made from the earlier run's "
            "checkpoints (evaluate's eval-*, export's .onnx, renders) describe that run, not the new best.pt: make "
            "them again, or move them away",
            out, shown,
        )  # fmt: skip
    return aside


def restore(out: Path, aside: Path) -> None:
    """The new run failed: bring the earlier run back unless the new one already wrote a checkpoint."""
    if (out / "last.pt").exists():
        log.warning("the new run stopped after writing %s; the earlier run is kept in %s", out / "last.pt", aside)
        return
    with signals_held():  # all files back before a (second) Ctrl-C is delivered
        for p in sorted(aside.iterdir()):
            dst = out / p.name
            if dst.is_dir():
                shutil.rmtree(dst)  # the stopped run's own file
            elif dst.exists():
                dst.unlink()
            os.replace(p, dst)
        aside.rmdir()
    log.info("the new run stopped before its first checkpoint; the earlier run in %s was put back", out)


def _closest_preset(family: ModelFamily, config: dict[str, object]) -> tuple[str, dict[str, object]] | None:
    """The family preset ``config`` was made from, with that preset's settings: among the presets that give its
    ``preset`` field, the one most of whose own settings it keeps (pose2rgbd's ``base+`` is ``base`` with
    switches). None where the family's configs have no ``preset`` field or no preset gives it."""
    best: tuple[int, str, dict[str, object]] | None = None
    for name, values in family.presets.items():
        try:
            made = cfgmod.to_dict(family.make_config(name))
        except ConfigError:
            continue
        if "preset" not in made or made["preset"] != config.get("preset"):
            continue
        kept = sum(config.get(k) == made.get(k) for k in values)
        if best is None or kept > best[0]:
            best = (kept, name, made)
    return None if best is None else (best[1], best[2])


def _set_flag(key: str, value: object) -> str:
    """``--set model.KEY=VALUE`` as a shell takes it (a list as ``a,b,c``, quoted where needed)."""
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"--set {shlex.quote(f'model.{key}={text}')}"


def _resume_flags(family: ModelFamily, have: dict[str, object], want: dict[str, object]) -> list[str]:
    """The flags that turn the requested model settings ``want`` into the checkpoint's ``have``: ``--preset P``
    where the checkpoint was trained with another preset of the family (a run from before a default preset
    changed), then ``--set`` for each setting that still differs once the command names P. A setting the command
    gave itself (it differs from its own preset's value) stays as given and gets a ``--set`` where it differs."""
    flags: list[str] = []
    theirs, ours = _closest_preset(family, have), _closest_preset(family, want)
    if have.get("preset") != want.get("preset") and theirs is not None and ours is not None:
        name, made = theirs
        flags.append(f"--preset {name}")
        wanted = ours[1]
        by_preset = set().union(*(set(v) for v in family.presets.values()))
        # a setting a preset sets follows the new preset unless the command gave it a value of its own
        want = {**want, **{k: made[k] for k in by_preset if k in made and k in want and want[k] == wanted.get(k)}}
    flags += [_set_flag(k, have.get(k)) for k, v in want.items() if have.get(k) != v]
    return flags


def check_resume(
    path: Path, ck: LoadedCheckpoint, family: ModelFamily, mc: Any, tc: TrainConfig, fingerprint: str
) -> None:
    if ck.kind != family.kind:
        raise CheckpointError(f"{path}: cannot resume, it holds a {ck.kind!r} model, not {family.kind!r}")
    have, want = cfgmod.to_dict(ck.model_config), cfgmod.to_dict(mc)
    diff = [f"{k}: checkpoint {have.get(k)!r} vs requested {v!r}" for k, v in want.items() if have.get(k) != v]
    if diff:
        raise CheckpointError(
            f"{path}: cannot resume, the model differs ({'; '.join(diff)}); to resume it, leave out the flags that "
            f"change it (--resume takes the run's own settings from its config.yaml) or give the checkpoint's "
            f"({' '.join(_resume_flags(family, have, want))}); for another model, train into a new --out"
        )
    if ck.dataset_fingerprint != fingerprint:
        raise CheckpointError(
            f"{path}: cannot resume, trained on dataset {ck.dataset_fingerprint}, this dataset is {fingerprint}: "
            "if another dataset was given, leave it out (--resume trains on the run's own, as its config.yaml names "
            "it); if the run's own dataset has changed since (frames added), a resume cannot continue on it: train "
            "on it into a new --out"
        )
    old, tdict = ck.train_config, cfgmod.to_dict(tc)
    diff = [
        f"{k}: {old.get(k)!r} vs {tdict[k]!r}"
        for k in RESUME_FIXED
        if k in old and k in tdict and old.get(k) != tdict[k]
    ]
    if diff:
        raise CheckpointError(f"{path}: cannot resume with another data split ({'; '.join(diff)})")
    if not ck.optimizers:  # written for serving (an export, a bundle, a dataset's depth network): no moments
        raise CheckpointError(
            f"{path}: cannot resume, it holds no optimizer state (a checkpoint written for serving: an export, a "
            "bundle or the depth network a dataset keeps, or one written without it by an older version); resume "
            "from the training run's last.pt, or train anew"
        )
