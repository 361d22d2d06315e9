"""The folder of a training run: what it holds (:data:`RUN_FILES`), the checks before a run writes into it, and
what ``--overwrite`` and ``--resume`` do with an earlier run there (:func:`pose2rgbd.training.train.train`).

* :func:`check_out_dir`: refuse an ``out_dir`` that is, contains or lies inside an input, a foreign folder, a
  folder where a file named as a run's (:data:`RUN_FILES`) is not a run's (:func:`not_the_runs`: a file is judged
  by what it holds, not by its name), or (without ``--resume`` / ``--overwrite``) an earlier run;
* :func:`move_aside` / :func:`restore`: ``--overwrite`` moves the earlier run into ``previous-run-<UTC time>/``
  and puts it back if the new run stops before its first checkpoint;
* :func:`present` / :func:`stopped`: a run stopped (Ctrl-C, an error) before its first checkpoint removes the run
  files it had written (its keyframe map, config.yaml, ...), so that the folder is as it was;
* :func:`resume_without_checkpoint`, :func:`check_resume`: ``--resume`` with no ``last.pt`` to continue from
  (e.g. after a killed ``--overwrite``), and a checkpoint whose model, dataset or data split differ from the
  requested ones.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pose2rgbd import config as cfgmod
from pose2rgbd.atomic import move_together, signals_held
from pose2rgbd.errors import CheckpointError, ConfigError
from pose2rgbd.models import LoadedCheckpoint, load_checkpoint
from pose2rgbd.models.registry import ModelFamily
from pose2rgbd.output_guard import TRAINING_RUN, OutputError, check_not_foreign_dir, check_output, refuse_existing
from pose2rgbd.training.callbacks import LOG_COLUMNS
from pose2rgbd.training.config import TrainConfig

log = logging.getLogger(__name__)

# Train-config fields that must not change when resuming (they define the data the model saw). Every model-config
# key is fixed on resume as well (see check_resume), method-owned data settings included.
RESUME_FIXED = ("split", "seed", "val_fraction", "test_fraction", "every_nth")
# Train-config fields a resume continues with where the command does not give them (the command may change them):
# how long the run is. Its time budget is summed over resumes, so a `--resume` that dropped it trained on to the
# epoch default (100 epochs) after a run of a few minutes was stopped.
RESUME_LENGTH = ("epochs", "max_steps", "max_minutes", "patience", "min_delta")

# What a training run writes into its folder (pose2rgbd.training.train._fit; "keyframes": the hybrid's keyframe
# map, pose2rgbd.methods.hybrid.recipe.KEYFRAME_MAP): the names output_guard's TRAINING_RUN looks for.
RUN_FILES = TRAINING_RUN.markers
CHECKPOINTS = ("last.pt", "best.pt")
# what TensorBoard's SummaryWriter names the files it writes into tb/
_TB_EVENTS = "events.out.tfevents."


def _is_dir(p: Path) -> str:
    return _dangling(p) or ("" if p.is_dir() else "a file, where a run has a folder")


def _is_file(p: Path) -> str:
    return _dangling(p) or ("" if p.is_file() else "a folder, where a run has a file")


def _dangling(p: Path) -> str:
    """Why a link to nothing is no run file ("" for anything else)."""
    return f"a link to nothing ({os.readlink(p)})" if p.is_symlink() and not p.exists() else ""


def _config_not_the_runs(p: Path) -> str:
    """config.yaml as train writes it: a YAML mapping with the sections 'model' and 'train' and the dataset's
    'dataset_fingerprint' (and, since runs name it, the 'method'); a --config file of the user's has no fingerprint."""
    try:
        d = yaml.safe_load(p.read_bytes())
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    except (yaml.YAMLError, ValueError):
        return "it is not YAML"
    if not isinstance(d, dict):
        return f"not the mapping a run writes ({type(d).__name__} at the top level)"
    missing = [k for k in ("model", "train") if not isinstance(d.get(k), dict)]
    missing += [k for k in ("dataset_fingerprint",) if not isinstance(d.get(k), str)]
    missing += [k for k in ("method",) if k in d and not isinstance(d[k], str)]
    if missing:
        named = ", ".join(repr(k) for k in missing[:-1]) + (" or " if len(missing) > 1 else "") + repr(missing[-1])
        return f"it has no {named} entry of the kind a run's config.yaml has"
    return ""


def _split_not_the_runs(p: Path) -> str:
    """split.json as train writes it (pose2rgbd.dataset.splits.Split.to_dict): a JSON object with the split's
    'kind' and its 'train' and 'val' frame lists."""
    try:
        d = json.loads(p.read_bytes())
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    except ValueError:
        return "it is not JSON"
    if not (isinstance(d, dict) and isinstance(d.get("kind"), str) and isinstance(d.get("train"), list)
            and isinstance(d.get("val"), list)):  # fmt: skip
        return "not a run's data split (a JSON object with 'kind', 'train' and 'val')"
    return ""


def _log_not_the_runs(p: Path) -> str:
    """log.csv as the trainer writes it: its header first (pose2rgbd.training.callbacks.LOG_COLUMNS), or empty (a run
    stopped before the header was flushed)."""
    header = ",".join(LOG_COLUMNS)
    try:
        with open(p, "rb") as f:
            first = f.read(len(header) + 2)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if first and first.split(b"\n", 1)[0].rstrip(b"\r") != header.encode():
        line = first.split(b"\n", 1)[0].decode("utf-8", "replace")
        return f"its first line is {line!r}..., not the trainer's header {header!r}"
    return ""


def _checkpoint_not_the_runs(p: Path) -> str:
    """A checkpoint pose2rgbd wrote: a torch archive whose dict says ``format: pose2rgbd-checkpoint``. Read with
    ``weights_only=True`` (no arbitrary objects unpickled) and its tensors memory-mapped, not loaded: cheap."""
    import torch

    from pose2rgbd.models.checkpoint import CHECKPOINT_FORMAT

    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    if head[:2] != b"PK" and head[:1] != b"\x80":  # a torch zip archive (or a legacy pickle)
        return f"not a torch file (it starts with {head!r})"
    try:
        data = torch.load(p, map_location="cpu", weights_only=True, mmap=head[:2] == b"PK")
    except Exception as e:  # whatever torch raises for a file it cannot read
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        return f"not a pose2rgbd checkpoint ({first})"
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        return f"a torch file that is not a pose2rgbd checkpoint (no 'format: {CHECKPOINT_FORMAT}')"
    return ""


def _tb_not_the_runs(p: Path) -> str:
    """tb/ as the run's TensorBoard logger writes it: event files only."""
    other = sorted(str(f.relative_to(p)) for f in p.rglob("*")
                   if f.is_file() and not f.name.startswith((_TB_EVENTS, ".")))  # fmt: skip  # (.DS_Store: no one's)
    if other:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        return f"it holds {shown}, which TensorBoard does not write"
    return ""


def _keyframes_not_the_runs(p: Path) -> str:
    """keyframes/ as the hybrid writes it: a keyframe map (its map.json says ``format: pose2rgbd-map``)."""
    from pose2rgbd.placemap.format import FORMAT_NAME, MANIFEST

    m = p / MANIFEST
    try:
        d = json.loads(m.read_bytes())
    except OSError:
        return f"no {MANIFEST} (a run's keyframes/ is a keyframe map)"
    except ValueError:
        return f"its {MANIFEST} is not JSON"
    if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
        return f"its {MANIFEST} does not say 'format: {FORMAT_NAME}'"
    return ""


_CHECKS = {
    "config.yaml": (_is_file, _config_not_the_runs),
    "split.json": (_is_file, _split_not_the_runs),
    "last.pt": (_is_file, _checkpoint_not_the_runs),
    "best.pt": (_is_file, _checkpoint_not_the_runs),
    "log.csv": (_is_file, _log_not_the_runs),
    "tb": (_is_dir, _tb_not_the_runs),
    "keyframes": (_is_dir, _keyframes_not_the_runs),
}


def not_the_runs(out: Path) -> dict[str, str]:
    """The entries of ``out`` named as a training run's (:data:`RUN_FILES`) that are not a run's, each with why:
    a file counts as the earlier run's only if it holds what a run writes there (a config.yaml that parses as the
    run's config, a log.csv with the trainer's header, a last.pt / best.pt that is a pose2rgbd checkpoint, a
    split.json of the run's shape, a tb/ of event files, a keyframes/ that is a keyframe map)."""
    found: dict[str, str] = {}
    for name in RUN_FILES:
        p = out / name
        if not (p.exists() or p.is_symlink()):
            continue
        kind_check, content_check = _CHECKS[name]
        why = kind_check(p) or content_check(p)
        if why:
            found[name] = why
    return found


def _run_not_ours(out: Path) -> str:
    """:attr:`~pose2rgbd.output_guard.OutputKind.not_ours` of :data:`RUN`: why a folder with files named as a run's
    is not a run's."""
    wrong = not_the_runs(out)
    if not wrong:
        return ""
    names = list(wrong)
    are = "is" if len(names) == 1 else "are"
    return f"{_listed(names)}, which {are} not a pose2rgbd training run's ({_why(wrong)})"


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _why(wrong: dict[str, str]) -> str:
    return "; ".join(f"{n}: {w}" for n, w in wrong.items())


# a training run judged by what its files hold, not by their names alone (TRAINING_RUN, the lower layer's, names
# them; the checks need the checkpoint, keyframe-map and log formats of the layers above it)
RUN = dataclasses.replace(TRAINING_RUN, not_ours=_run_not_ours)


def check_out_dir(
    out: Path, dataset: Path, others: Sequence[str | Path], *, resume: bool, overwrite: bool
) -> list[str]:
    """Refuse an ``out`` that would destroy the dataset or another input (a config file: a resume leaves the
    files in ``out`` alone, so there only the dataset counts), a folder where a file named as a run's is not a
    run's (:func:`not_the_runs`; whatever ``resume`` and ``overwrite`` say: continuing or replacing it would
    overwrite or delete the user's file), a foreign folder or (without resume / overwrite) an earlier run; returns
    the earlier run's files that ``overwrite`` will replace."""
    check_output(out, RUN, inputs=[dataset] if resume else [dataset, *others])
    if out.is_dir() and (wrong := not_the_runs(out)):
        names = list(wrong)
        them = "them" if len(names) > 1 else "it"
        raise OutputError(
            f"{out} holds {_listed(names)}, which {'are' if len(names) > 1 else 'is'} not a pose2rgbd training run's "
            f"({_why(wrong)}); a training run writes files of {'these names' if len(names) > 1 else 'this name'}, so "
            f"it neither continues (--resume) nor replaces (--overwrite) a folder holding {them}. Choose a new or "
            f"empty --out folder, or move {them} out of {out} (nothing was moved or deleted)"
        )
    check_output(out, RUN, overwrite=overwrite)
    if not out.exists():
        return []
    check_not_foreign_dir(out, RUN, what_to_do="choose a new or empty --out folder")
    earlier = [n for n in RUN_FILES if (out / n).exists()]
    if resume or not earlier:
        return []
    holds = (f"an earlier training run ({', '.join(earlier)})" if any(n in earlier for n in CHECKPOINTS) else
             f"the files of a training run stopped before its first checkpoint ({', '.join(earlier)})")  # fmt: skip
    refuse_existing(out, overwrite=overwrite, holds=holds, instead="pass --resume to continue it, or ",
                    nothing="nothing was changed", renamed_into_place=False)  # fmt: skip
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


def present(out: Path) -> set[str]:
    """The run files (:data:`RUN_FILES`) in ``out`` now: what a run found there before writing any of its own."""
    return {n for n in RUN_FILES if (out / n).exists() or (out / n).is_symlink()}


def stopped(out: Path, had: set[str], aside: Path | None, error: BaseException) -> None:
    """The run in ``out`` stopped with ``error``. Where it will not be kept -- it wrote no ``last.pt``, and no
    ``best.pt`` either or an earlier run is to be put back -- the run files it had written (those not in ``had``:
    its keyframe map, config.yaml, split.json, log.csv, tb/) are removed, so that the folder is as it was and the
    next ``train`` finds no partial run there; then an earlier run moved aside by ``--overwrite`` is put back
    (:func:`restore`). A kill runs nothing: only Ctrl-C / SIGTERM (``KeyboardInterrupt``) and errors clean up."""
    kept = (out / "last.pt").exists() or (aside is None and (out / "best.pt").exists())
    if not kept and isinstance(error, (KeyboardInterrupt, Exception)):
        made = [n for n in RUN_FILES if n not in had and ((out / n).exists() or (out / n).is_symlink())]
        with signals_held():  # all of them, before a (second) Ctrl-C is delivered
            for n in made:
                p = out / n
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        if made:
            log.info("the run stopped before its first checkpoint; removed what it had written in %s: %s", out,
                     ", ".join(made))  # fmt: skip
    if aside is not None:
        restore(out, aside)


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
