"""Regularizers: penalties added to the loss, and input transforms applied in training only.

Dropout and batch norm are layers of the model (see ``dg.mlp``); early stopping lives in
``early_stopping.py``; gradient clipping is a Trainer argument.
"""

from __future__ import annotations

import functools
import operator

import torch
from torch import nn

from diagnose import validate


class Regularizer:
    """Base class. Override ``penalty`` (a loss term) and/or ``transform`` (a training-input map)."""

    def penalty(self, model: nn.Module, outputs: torch.Tensor) -> torch.Tensor | None:
        """A scalar added to the training loss, or None."""
        return None

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Applied to each training batch's inputs; never to validation or prediction inputs."""
        return x

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _penalized(model: nn.Module, include_bias: bool) -> list[torch.Tensor]:
    # Goodfellow et al., Deep Learning §7.1: the norm penalty usually leaves biases (and the
    # affine parameters of normalization layers, which are 1-d too) unregularized.
    return [p for p in model.parameters() if p.requires_grad and (include_bias or p.ndim > 1)]


class _NormPenalty(Regularizer):
    """``lam * Σ term(w)`` over the weights (biases too with ``include_bias``)."""

    def __init__(self, lam: float, include_bias: bool = False) -> None:
        self.lam = validate.number("lam", lam, 0)
        self.include_bias = include_bias

    def term(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self, model: nn.Module, outputs: torch.Tensor) -> torch.Tensor | None:
        params = _penalized(model, self.include_bias)
        if not params or self.lam == 0:
            return None
        return self.lam * functools.reduce(operator.add, (self.term(p) for p in params))


class L1(_NormPenalty):
    """Lasso penalty ``lam * Σ|w|`` over the weights (biases too with ``include_bias``)."""

    def term(self, p: torch.Tensor) -> torch.Tensor:
        return p.abs().sum()


class L2(_NormPenalty):
    """Ridge penalty ``lam/2 * Σw²`` over the weights: its gradient is ``lam * w``, i.e. the same
    as torch.optim's ``weight_decay=lam`` for SGD (Goodfellow et al. §7.1.1)."""

    def term(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * p.pow(2).sum()


class Entropy(Regularizer):
    """Confidence penalty ``-beta * H(p(y|x))`` (Pereyra et al., 2017): rewards less confident
    output distributions. ``outputs`` are logits: softmax over the last dim, or a sigmoid for a
    single logit per row (binary)."""

    def __init__(self, beta: float) -> None:
        self.beta = validate.number("beta", beta, 0)

    def penalty(self, model: nn.Module, outputs: torch.Tensor) -> torch.Tensor | None:
        if self.beta == 0:
            return None
        return -self.beta * output_entropy(outputs).mean()


def output_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row entropy (nats) of the distribution the logits define."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        z = logits.reshape(logits.shape[0], -1)[:, 0]
        p = torch.sigmoid(z)
        # H = -p log p - (1-p) log(1-p), written with logsigmoid for stability.
        return -(p * nn.functional.logsigmoid(z) + (1 - p) * nn.functional.logsigmoid(-z))
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


class GaussianNoise(Regularizer):
    """Noise injection: ``x + std * N(0, 1)`` on training inputs only (Bishop, 1995)."""

    def __init__(self, std: float) -> None:
        self.std = validate.number("std", std, 0)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.std == 0 or not torch.is_floating_point(x):
            return x
        return x + self.std * torch.randn_like(x)
