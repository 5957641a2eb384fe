"""SHAP's KernelExplainer: model-agnostic Shapley values from weighted linear regression over
feature coalitions (exact when nsamples covers every coalition)."""

from __future__ import annotations

import numpy as np
import shap
import torch

from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import AdapterResult, MethodSpec, References, register_method


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    background = refs.background.reshape(len(refs.background), -1).double().cpu().numpy()
    explainer = shap.KernelExplainer(ctx.numpy_function(), background)
    rows = x.reshape(len(x), -1).double().cpu().numpy()
    values = np.asarray(explainer.shap_values(rows, nsamples=ctx.params.get("nsamples", "auto"),
                                              silent=not ctx.progress))
    if values.ndim == 2:
        values = values[..., None]
    t = targets.cpu().numpy()
    chosen = values[np.arange(len(rows)), :, t]
    base = np.asarray(explainer.expected_value, dtype=float).reshape(-1)[t]
    return AdapterResult(torch.as_tensor(chosen, dtype=x.dtype).reshape(x.shape), torch.as_tensor(base))


register_method(MethodSpec("shap_kernel", attribute, "shap", additive=True, gradients=False,
                           reference="background", summary="SHAP KernelExplainer (model-agnostic)", costly=True))
