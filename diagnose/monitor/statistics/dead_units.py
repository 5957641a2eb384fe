"""dead_frac: the fraction of a rectifier's units that produced no positive output in the window.

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

# Activations whose output is <= 0 exactly where the unit passes (almost) no signal.
RECTIFIERS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish,
)


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
        return isinstance(module, RECTIFIERS)

    def partial(self, output: torch.Tensor, module: nn.Module) -> Sequence[torch.Tensor]:
        if output.ndim == 0:
            return (output.reshape(1),)
        dim = unit_dim(output)
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
