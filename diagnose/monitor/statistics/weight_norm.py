"""weight_norm: L2 norm of each layer's own parameters, before the step's update."""

from __future__ import annotations

import torch

from diagnose.monitor.statistics.base import ParameterStatistic, StepContext


class WeightNorm(ParameterStatistic):
    columns = ("weight_norm",)
    needs_snapshot = True  # the weights that produced this step's loss and gradient

    def compute(self, ctx: StepContext) -> torch.Tensor:
        return ctx.weight_norms_before().reshape(1, -1)
