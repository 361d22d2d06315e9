"""Trainer callbacks: CSV + TensorBoard logs, a tqdm progress bar, checkpoints (written in the background)."""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pose2rgbd.atomic import atomic_file, sweep_stale_siblings, write_text_atomic
from pose2rgbd.errors import ConfigError
from pose2rgbd.models.base import METRIC_MODES
from pose2rgbd.progress import bar
from pose2rgbd.training.trainer import Callback

if TYPE_CHECKING:
    from pose2rgbd.training.trainer import Trainer

log = logging.getLogger(__name__)

LOG_COLUMNS = ("wall_s", "step", "epoch", "phase", "name", "value")


class CSVLogger(Callback):
    """Long-format CSV (one row per value): ``wall_s, step, epoch, phase (train|val), name, value``.

    Training values are averaged over the ``every`` steps since the previous row. Appends on resume, after
    dropping the rows of steps past the resume point: a run killed after its last checkpoint logged steps that
    the resumed run does again, and their rows would appear twice (a torn last row goes too).
    """

    def __init__(self, path: str | Path, every: int = 10) -> None:
        self.path = Path(path)
        self.every = max(1, int(every))
        self._acc: dict[str, float] = {}
        self._n = 0
        self._f: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        if not new:
            _drop_rows_after(self.path, trainer.step)
        self._f = open(self.path, "a", newline="")  # noqa: SIM115 - closed in on_train_end
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(LOG_COLUMNS)

    def _write(self, trainer: Trainer, phase: str, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self._w.writerow([f"{trainer.elapsed_s:.2f}", trainer.step, trainer.epoch, phase, k, f"{v:.6g}"])
        self._f.flush()

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self._acc[k] = self._acc.get(k, 0.0) + v
        self._n += 1
        if self._n >= self.every:
            self._flush_train(trainer)

    def _flush_train(self, trainer: Trainer) -> None:
        if self._n:
            self._write(trainer, "train", {k: v / self._n for k, v in self._acc.items()})
        self._acc, self._n = {}, 0

    def on_validation_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        self._write(trainer, "val", {k.removeprefix("val/"): v for k, v in logs.items()})

    def on_train_end(self, trainer: Trainer) -> None:
        self._flush_train(trainer)
        if self._f is not None:
            self._f.close()
            self._f = None


def _drop_rows_after(path: Path, step: int) -> None:
    """Rewrite the log ``path`` (atomically) without rows of steps after ``step`` and without a torn row."""
    with open(path, newline="") as f:
        text = f.read()
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(rows[0]) != LOG_COLUMNS:
        return  # not ours to edit (train refuses a foreign folder before this)
    kept = [rows[0]]
    for r in rows[1:]:
        try:
            if len(r) == len(LOG_COLUMNS) and int(r[1]) <= step:
                kept.append(r)
        except ValueError:
            continue
    dropped = len(rows) - len(kept)
    if dropped == 0 and text.endswith("\n"):
        return
    buf = io.StringIO()
    csv.writer(buf).writerows(kept)
    write_text_atomic(path, buf.getvalue())
    if dropped:
        log.info("%s: dropped %d row(s) of steps after %d, logged by the run that stopped there", path, dropped, step)


class TensorBoardLogger(Callback):
    """TensorBoard scalars ``train/<name>`` every ``every`` steps and ``val/<name>`` after each validation."""

    def __init__(self, log_dir: str | Path, every: int = 10) -> None:
        self.log_dir = Path(log_dir)
        self.every = max(1, int(every))
        self._w: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run: TensorBoard hides the stopped run's events of steps after the resume point
        purge = trainer.step + 1 if trainer.step > 0 and self.log_dir.exists() else None
        self._w = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self._w is not None and trainer.step % self.every == 0:
            for k, v in logs.items():
                self._w.add_scalar(f"train/{k}", v, trainer.step)

    def on_validation_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self._w is not None:
            for k, v in logs.items():
                self._w.add_scalar(k, v, trainer.step)
            self._w.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None


class ProgressBar(Callback):
    """One tqdm bar for the run (out of the planned steps when they are known) with the epoch and the running
    ``loss`` (single objective) or, for a multi-objective model, one value per group: the first logged name of
    each ``<group>/`` prefix (e.g. ``generator/adv``). Each validation is logged (INFO)."""

    def __init__(self, desc: str = "train") -> None:
        self.desc = desc
        self._bar: Any = None
        self._start: tuple[int, float] = (0, 0.0)  # this run's first step and its training time then

    def on_train_start(self, trainer: Trainer) -> None:
        total = trainer.planned_steps or None
        self._bar = bar(total=total, initial=trainer.step, desc=self.desc, unit="step", leave=False)
        self._start = (trainer.step, trainer.elapsed_s)

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self._bar is not None:
            total = self.budget_total(trainer)
            if total is not None and total != self._bar.total:
                self._bar.total = total  # the bar's (and a log line's) time left follows
            self._bar.update(1)
            self._bar.set_postfix({"epoch": trainer.epoch + 1, **self.shown(logs)})

    def budget_total(self, trainer: Trainer) -> int | None:
        """With a time budget (``max_minutes``): the steps it ends at, at this run's rate so far -- fewer than the
        planned ones where it ends the run first (``convert video``'s depth training plans 1000 epochs and a budget
        of minutes ends it: its bar had said about 19,000 s left of a 3-minute budget). None: nothing to change."""
        budget = trainer.cfg.max_minutes * 60.0
        step0, t0 = self._start
        ran = trainer.elapsed_s - t0
        if budget <= 0 or trainer.step - step0 < 5 or ran <= 0:
            return None
        by_time = trainer.step + (trainer.step - step0) / ran * max(budget - trainer.elapsed_s, 0.0)
        planned = trainer.planned_steps or math.inf
        return int(min(planned, round(by_time)))

    @staticmethod
    def shown(logs: dict[str, float]) -> dict[str, str]:
        """What the bar shows for one step's ``logs``."""
        if "loss" in logs:
            return {"loss": f"{logs['loss']:.4f}"}
        picked: dict[str, str] = {}
        seen: set[str] = set()
        for k, v in logs.items():
            group = k.split("/", 1)[0] if "/" in k else ""
            if group not in seen:
                seen.add(group)
                picked[k] = f"{v:.4g}"
        return dict(list(picked.items())[:4])

    def on_validation_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if logs:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(logs.items()))
            log.info("step %d, epoch %d: %s", trainer.step, trainer.epoch, shown)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class BackgroundWriter:
    """Runs one write at a time in a background thread: :meth:`submit` waits for the previous write first;
    :meth:`check` raises the error of a finished write, :meth:`join` waits and raises it (the exception the write
    raised, e.g. the ``OSError`` of a full disk). The thread is not a
    daemon, so a write in progress completes before the interpreter exits."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._what = ""

    def submit(self, fn: Callable[[], Any], what: str = "checkpoint") -> None:
        self.join()
        self._what = what

        def run() -> None:
            try:
                fn()
            except BaseException as e:  # handed to the training thread by check() / join()
                self._error = e

        self._thread = threading.Thread(target=run, name="pose2rgbd-checkpoint-writer")
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check(self) -> None:
        """Raise the error of a write that has finished (nothing while one is still running)."""
        if self._thread is not None and not self._thread.is_alive():
            self.join()

    def join(self) -> None:
        th, self._thread = self._thread, None
        if th is not None:
            th.join()
        err, self._error = self._error, None
        if err is not None:
            log.error("writing %s failed: %s", self._what, err)
            raise err  # as it is: the CLI names an OSError's file and cause (disk full, read-only, ...)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a hidden temporary file renamed into place (fsynced first)."""
    sweep_stale_siblings(dst)
    with open(src, "rb") as fi, atomic_file(dst) as fo:
        shutil.copyfileobj(fi, fo, 16 << 20)


class CheckpointCallback(Callback):
    """Writes ``last.pt`` when the trainer's checkpoint cadence says so (:meth:`Callback.on_checkpoint` with
    ``last_due``) and at the end, and ``best.pt`` after a validation whose value ``monitor`` improved (when the
    trainer next offers a checkpoint: right after that validation, or at the end).

    Writing: either ``save(trainer, path)``, called in the training thread, or ``snapshot(trainer)``, called in
    the training thread, returning ``write(path)`` that writes what the snapshot copied; with ``background``
    that write runs in a :class:`BackgroundWriter` thread while training goes on (one write at a time; the
    next one and the end of training wait for it; its error stops training). When ``best.pt`` and ``last.pt``
    are due together, one is written and the other is an atomic copy of it.

    ``monitor`` / ``mode`` default to the model's ``best_metric`` (``("val/loss", "min")`` unless the model
    names another, e.g. ``("val/median_position_error_m", "min")`` or an accuracy with ``"max"``); a
    ``monitor`` given without ``mode`` is minimized unless it is the model's own metric. The best value is
    kept in ``trainer.extra_state["best <monitor>"]``, so it survives a resume.
    """

    def __init__(
        self,
        out_dir: str | Path,
        save: Callable[[Trainer, Path], Any] | None = None,
        *,
        snapshot: Callable[[Trainer], Callable[[Path], Any]] | None = None,
        background: bool = False,
        monitor: str | None = None,
        mode: str | None = None,
    ) -> None:
        if mode is not None and mode not in METRIC_MODES:
            raise ConfigError(f"CheckpointCallback mode {mode!r} is not one of {list(METRIC_MODES)}")
        if (save is None) == (snapshot is None):
            raise ConfigError("CheckpointCallback needs exactly one of save= and snapshot=")
        self.out_dir = Path(out_dir)
        self.save = save
        self.snapshot = snapshot
        self.writer = BackgroundWriter() if background and snapshot is not None else None
        self._monitor, self._mode = monitor, mode
        self.monitor = monitor or "val/loss"
        self.mode = mode or "min"
        self.best = math.inf
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        self._best_due = False
        self._warned = False
        self.writes = 0  # checkpoint files written (copies included)

    def _better(self, v: float, than: float) -> bool:
        return v < than if self.mode == "min" else v > than

    def on_train_start(self, trainer: Trainer) -> None:
        metric, metric_mode = trainer.model.best_metric
        self.monitor = self._monitor or metric
        self.mode = self._mode or (metric_mode if self.monitor == metric else "min")
        worst = math.inf if self.mode == "min" else -math.inf
        self.best = float(trainer.extra_state.get(f"best {self.monitor}", worst))  # survives a resume
        if (self.out_dir / "best.pt").exists() and math.isfinite(self.best):
            self.best_path = self.out_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.out_dir / "last.pt"

    def on_validation_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        v = logs.get(self.monitor)
        if v is None and logs and not self._warned:
            self._warned = True
            log.warning(
                "best.pt is not written: validation has no %r (it has %s); set the model's best_metric",
                self.monitor,
                sorted(logs),
            )
        if v is not None and math.isfinite(v) and self._better(v, self.best):
            self.best = v
            trainer.extra_state[f"best {self.monitor}"] = v
            self._best_due = True

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.check()  # a failed background write stops training here

    def on_checkpoint(self, trainer: Trainer, *, last_due: bool) -> None:
        self._write(trainer, last=last_due)

    def on_train_end(self, trainer: Trainer) -> None:
        self._write(trainer, last=True)
        if self.writer is not None:
            self.writer.join()

    def _write(self, trainer: Trainer, *, last: bool) -> None:
        paths = ([self.out_dir / "best.pt"] if self._best_due else []) + ([self.last] if last else [])
        if not paths:
            return
        if self._best_due:
            self.best_path = self.out_dir / "best.pt"
            self._best_due = False
        if last:
            self.last_path = self.last
        self.writes += len(paths)
        if self.save is not None:
            for p in paths:
                self.save(trainer, p)
            return
        assert self.snapshot is not None
        write = self.snapshot(trainer)

        def job() -> None:
            write(paths[0])
            for p in paths[1:]:
                atomic_copy(paths[0], p)

        if self.writer is not None:
            self.writer.submit(job, what=" and ".join(str(p) for p in paths))
        else:
            job()
