"""Captum's FeatureAblation: the output change when each feature alone is set to the baseline."""

from __future__ import annotations

import torch
from captum.attr import FeatureAblation

from diagnose.explain import tokens
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


def attribute_tokens(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    """The output change when each token alone is replaced by the reference token."""
    values = FeatureAblation(tokens.forward(ctx)).attribute(
        x, baselines=ctx.token.baseline, target=targets, feature_mask=ctx.params.get("feature_mask"),
        additional_forward_args=tokens.extra_args(ctx),
        perturbations_per_eval=ctx.params.get("perturbations_per_eval", 16))
    return AdapterResult(values.to(ctx.dtype), tokens.base_outputs(ctx, targets))


register_method(MethodSpec("feature_ablation", attribute, "captum", additive=False, gradients=False,
                           reference="baseline", summary="output change when one feature is set to the baseline",
                           settings=('feature_mask', 'perturbations_per_eval'), tokens=attribute_tokens))
