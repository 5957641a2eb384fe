"""grad_norm: L2 norm of each layer's own parameters' gradients, as the optimizer used them."""

from __future__ import annotations

import torch

from diagnose.monitor.statistics.base import ParameterStatistic, StepContext


class GradNorm(ParameterStatistic):
    columns = ("grad_norm",)
    uses_grads = True

    def compute(self, ctx: StepContext) -> torch.Tensor:
        return ctx.grad_norms().reshape(1, -1)
