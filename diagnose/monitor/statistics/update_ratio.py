"""update_ratio: ||Δθ|| / ||θ|| of a layer's parameters over one optimizer step.

Karpathy's heuristic (CS231n, "ratio of weights:updates"): around 1e-3 is healthy; far below
means the learning rate is too low for that layer, far above that it is too high.
"""

from __future__ import annotations

import torch

from diagnose.monitor.statistics.base import ParameterStatistic, StepContext


class UpdateRatio(ParameterStatistic):
    columns = ("update_ratio",)
    needs_snapshot = True

    def compute(self, ctx: StepContext) -> torch.Tensor:
        update = ctx.update_norms()
        if update is None:
            return torch.full((1, len(ctx.layers)), float("nan"), device=ctx.layers.device)
        return (update / ctx.weight_norms_before()).reshape(1, -1)  # 0/0 -> NaN for an all-zero layer
