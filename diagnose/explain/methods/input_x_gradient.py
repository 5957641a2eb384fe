"""Captum's InputXGradient: input times gradient; the first-order Taylor term around zero."""

from __future__ import annotations

import torch
from captum.attr import InputXGradient, LayerGradientXActivation

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
    values = InputXGradient(captum_forward(ctx)).attribute(x, target=targets)
    return AdapterResult(values, reference_outputs(ctx, torch.zeros_like(refs.baseline), targets))


def attribute_tokens(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    """The token's embedding times the gradient there, summed over the embedding dimensions."""
    values = LayerGradientXActivation(tokens.forward(ctx), tokens.embedding_layer(ctx)).attribute(
        x, target=targets, additional_forward_args=tokens.extra_args(ctx))
    return AdapterResult(values.sum(dim=-1), tokens.layer_base_outputs(ctx, x, targets))


register_method(MethodSpec("input_x_gradient", attribute, "captum", additive=False, gradients=True,
                           reference="baseline", summary="input x gradient (reference: zeros)",
                           tokens=attribute_tokens))
