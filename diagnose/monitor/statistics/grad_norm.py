"""grad_norm: L2 norm of each layer's own parameters' gradients, as the optimizer used them."""

from __future__ import annotations

import torch

from diagnose.monitor.statistics.base import Observation, ParameterStatistic, StepContext, register_statistic


@register_statistic
class GradNorm(ParameterStatistic):
    name = "grad_norm"
    columns = ("grad_norm",)
    plots = (("grad_norm", "gradient norm", True),)
    uses_grads = True

    def compute(self, ctx: StepContext) -> torch.Tensor:
        return ctx.grad_norms().reshape(1, -1)

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        if not obs.grads:
            return None
        return (float(torch.cat([g.double().flatten() for g in obs.grads]).norm()),)
