"""SHAP's KernelExplainer: model-agnostic Shapley values from weighted linear regression over
feature coalitions (exact when nsamples covers every coalition). The sample budget grows with the
feature count (shap's ``nsamples="auto"``: 2 x features + 2048 coalitions), and no feature is
regularised away unless ``l1_reg`` asks for it."""

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
    # l1_reg=False: every feature keeps its value (shap's default regularises down to 10 features
    # once there are more, and the dropped ones read as 0 while the sum still adds up)
    values = np.asarray(explainer.shap_values(rows, nsamples=ctx.params.get("nsamples", "auto"),
                                              l1_reg=ctx.params.get("l1_reg", False), silent=not ctx.progress))
    if values.ndim == 2:
        values = values[..., None]
    t = targets.cpu().numpy()
    chosen = values[np.arange(len(rows)), :, t]
    base = np.asarray(explainer.expected_value, dtype=float).reshape(-1)[t]
    return AdapterResult(torch.as_tensor(chosen, dtype=x.dtype).reshape(x.shape), torch.as_tensor(base))


register_method(MethodSpec("shap_kernel", attribute, "shap", additive=True, gradients=False,
                           reference="background", summary="SHAP KernelExplainer (model-agnostic)", costly=True,
                           settings=('nsamples', 'l1_reg'), sampling=True))
