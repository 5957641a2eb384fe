"""saturated_frac: the fraction of a squashing activation's outputs in its flat tails.

In the tails the derivative is (near) zero, so little gradient flows back (Glorot & Bengio, 2010,
watched exactly this for sigmoid and tanh layers). The thresholds below put the derivative under
about 2-4 % of its peak. Covered: the sigmoid and tanh families (Sigmoid, Tanh, Softsign,
Hardsigmoid, Hardtanh), the upper bound of ReLU6 (its zero region is a rectifier's, counted by
dead_frac), and clipped activations such as transformers' ``ClippedGELUActivation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from diagnose.monitor.statistics.base import Observation, OutputStatistic, register_statistic

TANH_TAIL = 0.99      # |tanh| > 0.99  <=>  1 - y^2 < 0.02: under 2 % of the peak derivative 1
SIGMOID_TAIL = 0.01   # y < 0.01 or y > 0.99  <=>  y(1 - y) < 0.0099: under 4 % of the peak 0.25


def _tail_test(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return lambda y: y.abs() > TANH_TAIL
    if isinstance(module, nn.Sigmoid):
        return lambda y: (y - 0.5).abs() > 0.5 - SIGMOID_TAIL
    if isinstance(module, nn.Hardsigmoid):
        return lambda y: (y <= 0) | (y >= 1)
    if isinstance(module, nn.ReLU6):  # before Hardtanh, its base class: only the upper bound saturates
        return lambda y: y >= 6.0
    if isinstance(module, nn.Hardtanh):
        lo, hi = module.min_val, module.max_val
        return lambda y: (y <= lo) | (y >= hi)
    if type(module).__name__ == "ClippedGELUActivation":  # transformers' gelu_10: clipped to [min, max]
        lo, hi = float(getattr(module, "min", -10.0)), float(getattr(module, "max", 10.0))
        return lambda y: (y <= lo) | (y >= hi)
    return None


@register_statistic
class Saturation(OutputStatistic):
    name = "saturation"
    columns = ("saturated_frac",)
    plots = (("saturated_frac", "saturated fraction", False),)
    single_tensor_only = True

    def applies_to(self, module: nn.Module) -> bool:
        return _tail_test(module) is not None

    def partial(self, output: torch.Tensor, module: nn.Module) -> Sequence[torch.Tensor]:
        in_tail = _tail_test(module)
        assert in_tail is not None  # applies_to() said so
        return (in_tail(output).sum(),)

    def finalize(self, values: np.ndarray, count: int) -> tuple[float, ...]:
        return (float(values[0] / count) if count else math.nan,)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        in_tail = _tail_test(obs.module)
        if in_tail is None or not obs.outputs:
            return None
        values = torch.cat([o.flatten() for o in obs.outputs])
        return (float(in_tail(values).double().mean()),)
