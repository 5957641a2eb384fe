"""act_zero_frac: the fraction of a module's outputs that are exactly zero."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diagnose.monitor.layers import cpu_self_dot
from diagnose.monitor.statistics.base import Observation, OutputStatistic, register_statistic


@register_statistic
class ZeroFraction(OutputStatistic):
    name = "zero_fraction"
    columns = ("act_zero_frac",)

    def partial(self, output: torch.Tensor, module: nn.Module) -> Sequence[torch.Tensor]:
        # zeros = count - nonzeros, on the host; sign² counts the nonzeros in float work (a bool
        # mask summed as int64 takes 2-7x longer on the CPU; the BLAS dot fuses square and sum)
        signs = output.sign()
        nonzeros = cpu_self_dot(signs)
        if nonzeros is not None:
            return (nonzeros,)
        return (signs.abs_().sum(dtype=torch.float32 if signs.dtype in (torch.float16, torch.bfloat16) else None),)

    def finalize(self, values: np.ndarray, count: int) -> tuple[float, ...]:
        return (float((count - values[0]) / count) if count else math.nan,)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        if not obs.outputs:
            return None
        values = torch.cat([o.flatten() for o in obs.outputs])
        return (float((values == 0).double().mean()),)
