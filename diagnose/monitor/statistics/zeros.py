"""act_zero_frac: the fraction of a module's outputs that are exactly zero."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diagnose.monitor.statistics.base import Observation, OutputStatistic, register_statistic


@register_statistic
class ZeroFraction(OutputStatistic):
    name = "zero_fraction"
    columns = ("act_zero_frac",)

    def partial(self, output: torch.Tensor, module: nn.Module) -> Sequence[torch.Tensor]:
        # bool().sum() counts non-zeros; on CPU it runs ~2x faster than count_nonzero single-threaded
        return (output.bool().sum(),)  # zeros = count - nonzeros, on the host

    def finalize(self, values: np.ndarray, count: int) -> tuple[float, ...]:
        return (float((count - values[0]) / count) if count else math.nan,)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        if not obs.outputs:
            return None
        values = torch.cat([o.flatten() for o in obs.outputs])
        return (float((values == 0).double().mean()),)
