"""Losses by name: each a torch loss module and what its targets are (classes get accuracy logged)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diagnose.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A named loss: its torch module and whether targets are classes (accuracy is then logged)."""

    factory: Callable[[], nn.Module]
    classification: bool
    binary: bool = False


LOSSES: Registry[LossSpec] = Registry("loss")
LOSSES.add("cross_entropy", LossSpec(nn.CrossEntropyLoss, True))
LOSSES.add("nll", LossSpec(nn.NLLLoss, True))
LOSSES.add("bce", LossSpec(nn.BCEWithLogitsLoss, True, binary=True))
LOSSES.add("mse", LossSpec(nn.MSELoss, False))
LOSSES.add("l1", LossSpec(nn.L1Loss, False))
LOSSES.add("huber", LossSpec(nn.HuberLoss, False))


def list_losses() -> list[str]:
    """The loss names the Trainer accepts (besides any callable)."""
    return LOSSES.names()


def resolve_loss(loss: str | LossFn) -> tuple[LossFn, LossSpec | None]:
    """The loss function for a name (with its spec) or a callable ``(outputs, targets) -> scalar``."""
    if isinstance(loss, str):
        spec = LOSSES.get(loss)
        return spec.factory(), spec
    if callable(loss):
        return loss, None
    raise TypeError(f"loss: expected a name or a callable (outputs, targets) -> scalar, got {loss!r}")
