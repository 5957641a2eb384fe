"""SHAP's KernelExplainer: model-agnostic Shapley values from weighted linear regression over
feature coalitions (exact when nsamples covers every coalition). The sample budget grows with the
feature count (shap's ``nsamples="auto"``: 2 x features + 2048 coalitions), and no feature is
regularised away unless ``l1_reg`` asks for it."""

from __future__ import annotations

import numpy as np
import shap
import torch

from diagnose.explain import tokens
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


def attribute_tokens(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    """Kernel SHAP over the row's tokens against the reference row (a masked token reads the
    reference token; padding outside the attention mask is not a player)."""
    per_row, bases = [], []
    for i in range(len(x)):
        f, row, reference = tokens.row_function(ctx, x, i)
        t = int(targets[i])
        if len(row) == 0:
            per_row.append(np.zeros(0))
            bases.append(float(f(reference[None])[0, t]))
            continue
        explainer = shap.KernelExplainer(f, reference[None])
        values = np.asarray(explainer.shap_values(row[None], nsamples=ctx.params.get("nsamples", "auto"),
                                                  l1_reg=ctx.params.get("l1_reg", False), silent=True))[0]
        per_row.append(values[:, t] if values.ndim == 2 else values)
        bases.append(float(np.asarray(explainer.expected_value, dtype=float).reshape(-1)[t]))
    return AdapterResult(tokens.scatter_rows(ctx, per_row, ctx.dtype), torch.as_tensor(bases))


register_method(MethodSpec("shap_kernel", attribute, "shap", additive=True, gradients=False,
                           reference="background", summary="SHAP KernelExplainer (model-agnostic)", costly=True,
                           settings=('nsamples', 'l1_reg'), sampling=True, tokens=attribute_tokens))
