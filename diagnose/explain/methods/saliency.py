"""Captum's Saliency: the gradient of the output (its absolute value by default). Not additive."""

from __future__ import annotations

import torch
from captum.attr import LayerGradientXActivation, Saliency

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
    values = Saliency(captum_forward(ctx)).attribute(x, target=targets, abs=ctx.params.get("abs", True))
    return AdapterResult(values, reference_outputs(ctx, refs.baseline, targets))


def attribute_tokens(ctx: ExplainContext, x: torch.Tensor, targets: torch.Tensor, refs: References) -> AdapterResult:
    """The norm of the gradient at the token's embedding (a signed gradient has no per-token sum)."""
    if not ctx.params.get("abs", True):
        raise ValueError("abs: saliency of token ids is the norm of the gradient at each token's embedding; "
                         "abs=False has no per-token meaning (use input_x_gradient for a signed score)")
    grads = LayerGradientXActivation(tokens.forward(ctx), tokens.embedding_layer(ctx), multiply_by_inputs=False
                                     ).attribute(x, target=targets, additional_forward_args=tokens.extra_args(ctx))
    return AdapterResult(torch.linalg.vector_norm(grads, dim=-1), tokens.layer_base_outputs(ctx, x, targets))


register_method(MethodSpec("saliency", attribute, "captum", additive=False, gradients=True, reference="baseline",
                           summary="gradient magnitude",
                           settings=('abs',), tokens=attribute_tokens))
