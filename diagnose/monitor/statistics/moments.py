"""act_mean and act_std of a module's output, from its sum and sum of squares."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diagnose.monitor.layers import cpu_self_dot
from diagnose.monitor.statistics.base import Observation, OutputStatistic, register_statistic


@register_statistic
class ActivationMoments(OutputStatistic):
    name = "activation_moments"
    columns = ("act_mean", "act_std")
    plots = (("act_std", "activation standard deviation", True),)
    width = 2
    first_is_sum = True

    def partial(self, output: torch.Tensor, module: nn.Module) -> Sequence[torch.Tensor]:
        # the squared L2 norm is the sum of squares in one fused reduction; half and bfloat16
        # outputs accumulate in float32 (a dtype argument costs a dispatch, so float32 and float64
        # outputs go without it)
        if output.dtype in (torch.float32, torch.float64):
            squares = cpu_self_dot(output)
            return (output.sum(), torch.linalg.vector_norm(output).square() if squares is None else squares)
        return (output.sum(dtype=torch.float32), torch.linalg.vector_norm(output, dtype=torch.float32).square())

    def finalize(self, values: np.ndarray, count: int) -> tuple[float, ...]:
        if count == 0:
            return (math.nan, math.nan)
        mean = values[0] / count
        var = values[1] / count - mean * mean  # population variance; clipped at 0 against rounding
        return (float(mean), float(math.sqrt(max(var, 0.0))) if math.isfinite(var) else math.nan)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        if not obs.outputs:
            return None
        values = torch.cat([o.double().flatten() for o in obs.outputs])
        return (float(values.mean()), float(values.std(correction=0)))
