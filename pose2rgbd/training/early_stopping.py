"""Early stopping: a trainer callback that ends training when the validation loss plateaus (``train.patience``, the
experiments runner's ``patience``)."""

from __future__ import annotations

import logging
import math
from typing import Any

from pose2rgbd.errors import ConfigError
from pose2rgbd.training.trainer import Callback

log = logging.getLogger(__name__)


class EarlyStopping(Callback):
    """Stop when ``monitor`` (a validation value, lower is better) has not improved by more than ``min_delta``
    (relative: ``best * (1 - min_delta)``) for ``patience`` validations in a row.

    Its counters live in ``trainer.extra_state`` so a resumed run continues the count where it stopped.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, monitor: str = "val/loss") -> None:
        if patience < 1:
            raise ConfigError(f"early stopping: patience must be >= 1 validations, got {patience}")
        if not (min_delta >= 0.0 and math.isfinite(min_delta)):
            raise ConfigError(f"early stopping: min_delta must be a finite number >= 0, got {min_delta}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.monitor = monitor

    def _state(self, trainer: Any) -> dict[str, Any]:
        st: dict[str, Any] = trainer.extra_state.setdefault("early_stopping", {"best": None, "bad": 0})
        return st

    def on_train_start(self, trainer: Any) -> None:
        """A run resumed from the checkpoint written when it stopped (e.g. killed during its evaluation) stops
        again before training a step, instead of training on to the next validation."""
        st = self._state(trainer)
        if int(st["bad"]) >= self.patience:
            trainer.should_stop = True
            trainer.stop_reason = (
                f"early stop: {self.monitor} {st['best']:.5g} not improved by > {self.min_delta:g} (relative) "
                f"for {self.patience} validations"
            )

    def on_validation_end(self, trainer: Any, logs: dict[str, float]) -> None:
        v = logs.get(self.monitor)
        if v is None or not math.isfinite(float(v)):
            return
        st = self._state(trainer)
        best = st["best"]
        if best is None or float(v) < best - abs(best) * self.min_delta:
            st["best"], st["bad"] = float(v), 0
            return
        st["bad"] = int(st["bad"]) + 1
        if st["bad"] >= self.patience:
            trainer.should_stop = True
            trainer.stop_reason = (
                f"early stop: {self.monitor} {best:.5g} not improved by > {self.min_delta:g} (relative) "
                f"for {self.patience} validations"
            )
            log.info("%s", trainer.stop_reason)
