"""Captum's Saliency: the gradient of the output (its absolute value by default). Not additive."""

from __future__ import annotations

import torch
from captum.attr import Saliency

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
    values = Saliency(captum_forward(ctx)).attribute(x, target=targets, abs=ctx.params.get("abs", True))
    return AdapterResult(values, reference_outputs(ctx, refs.baseline, targets))


register_method(MethodSpec("saliency", attribute, "captum", additive=False, gradients=True, reference="baseline",
                           summary="gradient magnitude",
                           settings=('abs',)))
