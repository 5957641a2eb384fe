"""weight_norm: L2 norm of each layer's own parameters, before the step's update."""

from __future__ import annotations

import torch

from diagnose.monitor.statistics.base import Observation, ParameterStatistic, StepContext, register_statistic


@register_statistic
class WeightNorm(ParameterStatistic):
    name = "weight_norm"
    columns = ("weight_norm",)
    needs_snapshot = True  # the weights that produced this step's loss and gradient

    def compute(self, ctx: StepContext) -> torch.Tensor:
        return ctx.weight_norms_before().reshape(1, -1)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        if not obs.grads:  # recorded for the layers the step updated
            return None
        return (float(torch.cat([p.double().flatten() for p in obs.before]).norm()),)
