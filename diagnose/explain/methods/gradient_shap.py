"""Captum's GradientShap: expected gradients over random points between the input and baselines
drawn from the background (plus optional Gaussian noise). Additive in expectation only."""

from __future__ import annotations

import torch
from captum.attr import GradientShap

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
    p = ctx.params
    torch.manual_seed(ctx.seed)
    values = GradientShap(captum_forward(ctx)).attribute(
        x, baselines=refs.background, target=targets, n_samples=p.get("n_samples", 50), stdevs=p.get("stdevs", 0.0))
    return AdapterResult(values, reference_outputs(ctx, refs.background, targets))


register_method(MethodSpec("gradient_shap", attribute, "captum", additive=True, gradients=True,
                           reference="background", summary="expected gradients over background baselines",
                           settings=('n_samples', 'stdevs'), sampling=True))
