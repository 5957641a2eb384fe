"""Early stopping with Keras's semantics (keras.callbacks.EarlyStopping, Keras 3), as a Callback
(Lightning's way): at each epoch's end it sets ``trainer.should_stop``; at the end of the fit it
restores the best weights if asked to.

Epochs are counted from 0, as in Keras. ``update`` is called once per epoch with the epoch's
logged values and returns True when training should stop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from diagnose import validate
from diagnose.trainer.callbacks import Callback

if TYPE_CHECKING:
    from diagnose.trainer.trainer import Trainer

Mode = Literal["auto", "min", "max"]

# Keras's "auto" mode: metrics that are better when larger.
_MAX_HINTS = ("acc", "auc", "precision", "recall", "f1", "fmeasure", "r2")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: logged name to watch (``val_loss``, ``val_accuracy``, ``train_loss``, ...).
        mode: ``min``, ``max`` or ``auto`` (max for accuracy-like names, else min).
        patience: epochs with no improvement after which training stops.
        min_delta: smallest change that counts as an improvement.
        baseline: training stops if the monitor does not beat it within ``patience`` epochs.
        restore_best_weights: at the end of training, load the weights of the best epoch.
        start_from_epoch: epochs to wait before watching (a warm-up).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: Mode = "auto",
        patience: int = 0,
        min_delta: float = 0.0,
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor: expected a logged metric name, got {monitor!r}")
        validate.one_of("mode", mode, ("auto", "min", "max"))
        validate.integer("patience", patience, minimum=0)
        validate.number("min_delta", min_delta)
        validate.integer("start_from_epoch", start_from_epoch, minimum=0)
        self.monitor = monitor
        self.patience = patience
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        if mode == "auto":
            mode = "max" if any(h in monitor.lower() for h in _MAX_HINTS) else "min"
        self.mode: Literal["min", "max"] = mode
        # Keras folds the sign into min_delta: an improvement is (current - min_delta) beating
        # the reference in the direction of `mode`.
        self.min_delta = abs(min_delta) if mode == "max" else -abs(min_delta)
        self.reset()

    def reset(self) -> None:
        """Forget any previous run (called by the trainer at the start of ``fit``)."""
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _is_improvement(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value - self.min_delta < reference
        return value - self.min_delta > reference

    def update(self, epoch: int, logs: Mapping[str, float], model: nn.Module | None = None) -> bool:
        """Record the epoch's value of ``monitor``; True means stop training now."""
        if self.monitor not in logs:
            raise ValueError(
                f"monitor: {self.monitor!r} is never logged; logged names are {sorted(logs)}"
            )
        current = float(logs[self.monitor])
        if epoch < self.start_from_epoch or math.isnan(current):
            return False
        if self.restore_best_weights and self.best_weights is None and model is not None:
            # Keras: if the best weights were never set, the current weights are the best.
            self.best_weights = _snapshot(model)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights and model is not None:
                self.best_weights = _snapshot(model)
            # Restart the wait only if we beat both the baseline and the previous best.
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return False
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            return True
        return False

    # -- as a Trainer callback -----------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        self.reset()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, float]) -> None:
        if self.update(epoch, logs, trainer.model):
            trainer.should_stop = True

    def on_fit_end(self, trainer: Trainer) -> None:
        self.restore(trainer.model)

    def restore(self, model: nn.Module) -> bool:
        """Load the best epoch's weights into ``model`` if asked to; True if it did."""
        if self.restore_best_weights and self.best_weights is not None:
            model.load_state_dict(self.best_weights)
            return True
        return False

    def __repr__(self) -> str:
        return (f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, patience={self.patience}, "
                f"min_delta={abs(self.min_delta)}, restore_best_weights={self.restore_best_weights}, "
                f"start_from_epoch={self.start_from_epoch})")


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    # Parameters and buffers (BatchNorm running statistics too), detached copies.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
