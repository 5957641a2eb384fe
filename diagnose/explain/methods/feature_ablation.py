"""Captum's FeatureAblation: the output change when each feature alone is set to the baseline."""

from __future__ import annotations

import torch
from captum.attr import FeatureAblation

from diagnose.explain.context import ExplainContext
from diagnose.explain.registry import (
    AdapterResult,
    MethodSpec,
    References,
    captum_forward,
    reference_outputs,
    register_method,
)


def attribute(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    values = FeatureAblation(captum_forward(ctx)).attribute(
        x, baselines=refs.baseline, target=targets, feature_mask=ctx.params.get("feature_mask"),
        perturbations_per_eval=ctx.params.get("perturbations_per_eval", 16))
    return AdapterResult(values, reference_outputs(ctx, refs.baseline, targets))


register_method(MethodSpec("feature_ablation", attribute, "captum", additive=False, gradients=False,
                           reference="baseline", summary="output change when one feature is set to the baseline",
                           settings=('feature_mask', 'perturbations_per_eval')))
