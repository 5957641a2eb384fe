"""dead_frac: the fraction of a rectifier's units that produced no positive output in the window.

Only activations with a flat zero region are rectifiers here (ReLU, ReLU6, ReLU squared): a unit
whose inputs all fall in that region gets exactly zero gradient and cannot recover ("dying ReLU").
GELU, SiLU, Mish, ELU and the leaky variants have no flat region: a unit that is negative for every
example still gets a gradient and moves, so "no positive output" is not death for them and they
are not counted.

A unit is a feature: the channel of an image-like output (N, C, H, W[, D]), the last dimension
of a 2-d or sequence output (N, F) / (N, L, F). A unit is dead over the window when its largest
output, over every example and position of every forward pass of the recorded step, is <= 0.
An activation module called several times in one forward pass (a reused ReLU) feeds different
units each time, so each call position keeps its own mask; repeated forward passes in one step
(gradient accumulation) share them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diagnose.monitor.statistics.base import Observation, OutputStatistic, register_statistic

# Activations that are exactly zero, with zero derivative, on all inputs <= 0.
RECTIFIERS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
# The same, from libraries this package does not import (matched by class name): transformers'
# "relu2" activation.
RECTIFIER_NAMES = frozenset({"ReLUSquaredActivation"})


def is_rectifier(module: nn.Module) -> bool:
    """Whether ``module`` has a flat zero region (see the module docstring)."""
    return isinstance(module, RECTIFIERS) or type(module).__name__ in RECTIFIER_NAMES


def unit_dim(output: torch.Tensor) -> int:
    """The dimension that indexes units (see the module docstring)."""
    return 1 if output.ndim >= 4 else output.ndim - 1


@register_statistic
class DeadUnits(OutputStatistic):
    name = "dead_units"
    columns = ("dead_frac",)
    plots = (("dead_frac", "dead-unit fraction", False),)
    width = 2  # dead units, units
    single_tensor_only = True

    def applies_to(self, module: nn.Module) -> bool:
        return is_rectifier(module)

    def partial(self, output: torch.Tensor, module: nn.Module) -> Sequence[torch.Tensor]:
        if output.ndim == 0:
            return (output.reshape(1),)
        dim = unit_dim(output)
        if 0 < dim < output.ndim - 1:  # NCHW: the batch first, then the positions (2x faster than both at once)
            per_position = output.amax(dim=tuple(range(dim)))
            return (per_position.amax(dim=tuple(range(1, per_position.ndim))),)
        others = tuple(d for d in range(output.ndim) if d != dim)
        return (output.amax(dim=others) if others else output,)  # the largest output of each unit

    def combine(self, partials: list[tuple[int, Sequence[torch.Tensor]]]) -> Sequence[torch.Tensor | float]:
        by_call: dict[int, torch.Tensor] = {}
        for call, (p,) in partials:
            prev = by_call.get(call)
            by_call[call] = p if prev is None or prev.shape != p.shape else torch.maximum(prev, p)
        maxima = list(by_call.values())
        units = sum(m.numel() for m in maxima)  # known on the host: no device work
        dead = sum((m <= 0).sum() for m in maxima)
        return (dead, float(units))

    def finalize(self, values: np.ndarray, count: int) -> tuple[float, ...]:
        return (float(values[0] / values[1]) if values[1] else math.nan,)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        if not self.applies_to(obs.module) or not obs.outputs:
            return None
        largest: dict[tuple[int, ...], torch.Tensor] = {}  # per unit; one module call position each
        for out in obs.outputs:
            units = out.double().movedim(unit_dim(out), -1).reshape(-1, out.shape[unit_dim(out)]).amax(dim=0)
            key = tuple(out.shape[1:])
            largest[key] = units if key not in largest else torch.maximum(largest[key], units)
        dead = sum(int((u <= 0).sum()) for u in largest.values())
        return (dead / sum(u.numel() for u in largest.values()),)
