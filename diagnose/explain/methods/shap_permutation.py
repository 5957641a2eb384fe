"""SHAP's PermutationExplainer: model-agnostic Shapley values from antithetic feature permutations."""

from __future__ import annotations

import numpy as np
import shap
import torch

from diagnose.explain import tokens
from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import AdapterResult, MethodSpec, References, register_method


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    background = refs.background.reshape(len(refs.background), -1).double().cpu().numpy()
    masker = shap.maskers.Independent(background, max_samples=len(background))
    rows = x.reshape(len(x), -1).double().cpu().numpy()
    n_features = rows.shape[1]
    explainer = shap.PermutationExplainer(ctx.numpy_function(), masker, seed=ctx.seed)
    result = explainer(rows, max_evals=ctx.params.get("max_evals", max(500, 20 * n_features + 1)),
                       silent=not ctx.progress)
    values, base = np.asarray(result.values), np.asarray(result.base_values)
    if values.ndim == 2:
        values, base = values[..., None], base.reshape(len(rows), 1)
    t = targets.cpu().numpy()
    idx = np.arange(len(rows))
    return AdapterResult(torch.as_tensor(values[idx, :, t], dtype=x.dtype).reshape(x.shape),
                         torch.as_tensor(base[idx, t]))


def attribute_tokens(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    """Shapley values over the row's tokens: a masked token is replaced by the reference token
    (padding outside the attention mask is not a player)."""
    per_row, bases = [], []
    for i in range(len(x)):
        f, row, reference = tokens.row_function(ctx, x, i)
        if len(row) == 0:
            per_row.append(np.zeros(0))
            bases.append(float(f(reference[None])[0, int(targets[i])]))
            continue
        masker = shap.maskers.Independent(reference[None], max_samples=1)
        explainer = shap.PermutationExplainer(f, masker, seed=ctx.seed + i)
        result = explainer(row[None], max_evals=ctx.params.get("max_evals", max(500, 20 * len(row) + 1)),
                           silent=not ctx.progress)
        values, base = np.asarray(result.values)[0], np.asarray(result.base_values).reshape(-1)
        t = int(targets[i])
        per_row.append(values[:, t] if values.ndim == 2 else values)
        bases.append(float(base[t] if len(base) > 1 else base[0]))
    return AdapterResult(tokens.scatter_rows(ctx, per_row, ctx.dtype), torch.as_tensor(bases))


register_method(MethodSpec("shap_permutation", attribute, "shap", additive=True, gradients=False,
                           reference="background", summary="SHAP PermutationExplainer (model-agnostic)", costly=True,
                           settings=('max_evals',), sampling=True, tokens=attribute_tokens))
