"""Typed no-op hooks the Trainer calls; subclass and override what you need (Lightning-style)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diagnose.trainer.trainer import Trainer


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch."""

    def on_step_end(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        """After optimizer step ``step`` (0-based); ``loss`` is the step's data loss (on device)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, float]) -> None:
        """After epoch ``epoch`` (0-based) with its logged metrics."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch (also after early stopping)."""
