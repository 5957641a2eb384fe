"""update_ratio: ||Δθ|| / ||θ|| of a layer's parameters over one optimizer step.

Karpathy's heuristic (CS231n, "ratio of weights:updates"): around 1e-3 is healthy; far below
means the learning rate is too low for that layer, far above that it is too high.
"""

from __future__ import annotations

import torch

from diagnose.monitor.statistics.base import Observation, ParameterStatistic, StepContext, register_statistic


@register_statistic
class UpdateRatio(ParameterStatistic):
    name = "update_ratio"
    columns = ("update_ratio",)
    plots = (("update_ratio", "update / weight ratio (healthy ~1e-3)", True),)
    needs_snapshot = True

    def compute(self, ctx: StepContext) -> torch.Tensor:
        update = ctx.update_norms()
        if update is None:
            return torch.full((1, len(ctx.layers)), float("nan"), device=ctx.layers.device)
        return (update / ctx.weight_norms_before()).reshape(1, -1)  # 0/0 -> NaN for an all-zero layer

    def oracle(self, obs: Observation) -> tuple[float, ...] | None:
        if not obs.grads:
            return None
        delta = torch.cat([(a.double() - b.double()).flatten() for a, b in zip(obs.after, obs.before)])
        before = torch.cat([b.double().flatten() for b in obs.before])
        return (float(delta.norm() / before.norm()),)
