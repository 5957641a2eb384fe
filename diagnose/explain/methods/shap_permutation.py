"""SHAP's PermutationExplainer: model-agnostic Shapley values from antithetic feature permutations."""

from __future__ import annotations

import numpy as np
import shap
import torch

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


register_method(MethodSpec("shap_permutation", attribute, "shap", additive=True, gradients=False,
                           reference="background", summary="SHAP PermutationExplainer (model-agnostic)", costly=True,
                           settings=('max_evals',), sampling=True))
