"""Trainer callbacks: CSV + TensorBoard logs, a tqdm progress bar, checkpoints."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    Training values are averaged over the ``every`` steps since the previous row. Appends on resume.
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


class TensorBoardLogger(Callback):
    """TensorBoard scalars ``train/<name>`` every ``every`` steps and ``val/<name>`` after each validation."""

    def __init__(self, log_dir: str | Path, every: int = 10) -> None:
        self.log_dir = Path(log_dir)
        self.every = max(1, int(every))
        self._w: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._w = SummaryWriter(log_dir=str(self.log_dir))

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
    """A tqdm bar per epoch with the running ``loss`` (single objective) or, for a multi-objective model, one
    value per group: the first logged name of each ``<group>/`` prefix (e.g. ``generator/adv``)."""

    def __init__(self, desc: str = "train") -> None:
        self.desc = desc
        self._bar: Any = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        import math

        n = math.ceil(len(trainer.train_set) / trainer.cfg.batch_size)  # type: ignore[arg-type]
        self._bar = bar(
            total=n, desc=f"{self.desc} epoch {trainer.epoch + 1}/{trainer.cfg.epochs}", unit="step", leave=False
        )

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(self.shown(logs))

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

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if trainer.last_val:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(trainer.last_val.items()))
            log.info("epoch %d: %s", trainer.epoch, shown)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._bar is not None:  # the validation of the last epoch was logged by on_epoch_end already
            self._bar.close()
            self._bar = None


class CheckpointCallback(Callback):
    """Calls ``save(trainer, path)`` for ``last.pt`` after every ``every`` epochs and at the end, and for
    ``best.pt`` whenever the validation value ``monitor`` improves.

    ``monitor`` / ``mode`` default to the model's ``best_metric`` (``("val/loss", "min")`` unless the model
    names another, e.g. ``("val/median_position_error_m", "min")`` or an accuracy with ``"max"``); a
    ``monitor`` given without ``mode`` is minimized unless it is the model's own metric. The best value is
    kept in ``trainer.extra_state["best <monitor>"]``, so it survives a resume.
    """

    def __init__(
        self,
        out_dir: str | Path,
        save: Callable[[Trainer, Path], Any],
        *,
        every: int = 1,
        monitor: str | None = None,
        mode: str | None = None,
    ) -> None:
        if mode is not None and mode not in METRIC_MODES:
            raise ConfigError(f"CheckpointCallback mode {mode!r} is not one of {list(METRIC_MODES)}")
        self.out_dir = Path(out_dir)
        self.save = save
        self.every = max(1, int(every))
        self._monitor, self._mode = monitor, mode
        self.monitor = monitor or "val/loss"
        self.mode = mode or "min"
        self.best = math.inf
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        self._warned = False

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

    def on_epoch_end(self, trainer: Trainer) -> None:
        v = trainer.last_val.get(self.monitor)
        if v is None and trainer.last_val and not self._warned:
            self._warned = True
            log.warning(
                "best.pt is not written: validation has no %r (it has %s); set the model's best_metric",
                self.monitor,
                sorted(trainer.last_val),
            )
        if v is not None and math.isfinite(v) and self._better(v, self.best):
            self.best = v
            trainer.extra_state[f"best {self.monitor}"] = v
            self.best_path = self.out_dir / "best.pt"
            self.save(trainer, self.best_path)
        if trainer.epoch % self.every == 0:
            self.save(trainer, self.last)
            self.last_path = self.last

    def on_train_end(self, trainer: Trainer) -> None:
        self.save(trainer, self.last)
        self.last_path = self.last
