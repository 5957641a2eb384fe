"""SHAP's GradientExplainer (expected gradients, Erion et al., 2021) over the background."""

from __future__ import annotations

import numpy as np
import shap
import torch
from torch import nn

from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import AdapterResult, MethodSpec, References, reference_outputs, register_method


class _Outputs(nn.Module):
    """The explained outputs as a module, as shap's explainers want one."""

    def __init__(self, ctx: ExplainContext) -> None:
        super().__init__()
        self.model, self.ctx = ctx.model, ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ctx.outputs(x)


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    explainer = shap.GradientExplainer(_Outputs(ctx), refs.background, batch_size=ctx.params.get("batch_size", 50))
    values = explainer.shap_values(x, nsamples=ctx.params.get("nsamples", 200), rseed=ctx.seed)
    values = np.asarray(values)
    if values.ndim == x.ndim:  # a single output: no class axis
        values = values[..., None]
    chosen = values[np.arange(len(x)), ..., targets.cpu().numpy()] if values.ndim == 3 else np.stack(
        [values[i, ..., t] for i, t in enumerate(targets.tolist())])
    return AdapterResult(torch.as_tensor(chosen, dtype=x.dtype), reference_outputs(ctx, refs.background, targets))


register_method(MethodSpec("shap_gradient", attribute, "shap", additive=True, gradients=True,
                           reference="background", summary="SHAP GradientExplainer (expected gradients)",
                           settings=('nsamples',), sampling=True))
